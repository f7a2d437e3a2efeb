"""Credentials and TLS against nodes that demand them.

* ``scripts/cassandra --auth``: a node with PasswordAuthenticator (CQL port
  9142). The test creates a role with a password of its own; the right
  credentials work, wrong ones fail with an authentication error at start
  (or at first use with lazy connect), and neither password ever shows in
  logs (everything, the driver's DEBUG included), exception messages and
  tracebacks, error responses, CLI output or the extension's reprs.
* ``scripts/cassandra --tls``: a node that requires client encryption (CQL
  port 9144), with a certificate signed by a CA this test makes. The
  ``CASSANDRA_SSL`` key, as certificate paths or as an ``ssl.SSLContext``,
  connects over TLS; a wrong CA, or no TLS at all, fails clearly and fast.
* ``CASSANDRA_CLOUD`` (DataStax Astra's secure connect bundle) against the
  same node, with the test playing Astra's metadata service (see below).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable
from flask import Flask, jsonify

from flask_cqlalchemy import CQLAlchemy

from .support.certs import make_ca, make_server_cert
from .support.launcher import local_cluster

pytestmark = pytest.mark.slow

KEYSPACE = "security_tests"
ROLE = "flask_app"
# Distinctive, so a leak cannot hide behind a common word ("cassandra").
PASSWORD = "pw-" + secrets.token_hex(12)
WRONG_PASSWORD = "wrong-" + secrets.token_hex(12)
SECRETS = (PASSWORD, WRONG_PASSWORD)
FAIL_FAST = 15.0  # seconds a failed connection attempt may take at most

db = CQLAlchemy()


class SecureNote(db.Model):
    note_id = db.columns.Integer(primary_key=True)
    body = db.columns.Text()


def auth_app(node, password: str, **config: Any) -> Flask:
    app = Flask(f"auth_{secrets.token_hex(3)}")
    app.config.update(
        CASSANDRA_HOSTS=node.hosts,
        CASSANDRA_PORT=node.port,
        CASSANDRA_KEYSPACE=KEYSPACE,
        CASSANDRA_USERNAME=ROLE,
        CASSANDRA_PASSWORD=password,
        SECRET_KEY="security",
        **config,
    )

    @app.get("/notes/<int:note_id>")
    async def read_note(note_id: int):
        note = await SecureNote.aget_or_404(note_id=note_id)
        return jsonify(body=note.body)

    return app


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (
            f"a password appears in {where}: ...{text[max(0, text.find(secret) - 300) : text.find(secret) + 50]}"
        )


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: str, repr and the full formatted traceback (with causes)."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture(scope="module")
def auth_node():
    with local_cluster("auth") as node:
        # As the default superuser: the app's keyspace and a role of its own.
        admin = Cluster(
            node.hosts,
            port=node.port,
            protocol_version=5,
            auth_provider=PlainTextAuthProvider("cassandra", "cassandra"),
        )
        try:
            session = admin.connect()
            session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} "
                "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
            )
            session.execute(f"CREATE ROLE IF NOT EXISTS {ROLE} WITH PASSWORD = %s AND LOGIN = true", (PASSWORD,))
            session.execute(f"GRANT ALL PERMISSIONS ON KEYSPACE {KEYSPACE} TO {ROLE}")
        finally:
            admin.shutdown()
        yield node


@pytest.fixture()
def logs(caplog):
    """Every log record of every logger, the driver's DEBUG included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_right_credentials_work(auth_node):
    app = auth_app(auth_node, PASSWORD)
    db.init_app(app)
    try:
        with app.app_context():
            db.sync_db()
            SecureNote.create(note_id=1, body="for your eyes only")
            assert SecureNote.get(note_id=1).body == "for your eyes only"
            assert asyncio.run(SecureNote.aget(note_id=1)).body == "for your eyes only"
        response = app.test_client().get("/notes/1")
        assert response.status_code == 200 and response.json == {"body": "for your eyes only"}
    finally:
        db.shutdown()


def test_wrong_password_fails_at_start_with_an_authentication_error(auth_node, logs):
    app = auth_app(auth_node, WRONG_PASSWORD)
    started = time.monotonic()
    with pytest.raises(NoHostAvailable) as info:
        db.init_app(app)
    took = time.monotonic() - started
    text = exception_text(info.value)
    assert "AuthenticationFailed" in text and "Bad credentials" in text, text
    assert took < FAIL_FAST
    assert "cqlalchemy" not in app.extensions
    assert_no_secret(text, "the exception raised by init_app")
    assert_no_secret(logs.text, "the logs")


def test_wrong_password_with_lazy_connect_fails_at_each_use_with_an_authentication_error(auth_node, logs):
    app = auth_app(auth_node, WRONG_PASSWORD, CASSANDRA_LAZY_CONNECT=True)
    db.init_app(app)  # nothing is sent yet
    try:
        client = app.test_client()
        for attempt in range(2):  # the first use, and every later one, says why
            with app.app_context(), pytest.raises(NoHostAvailable) as info:
                SecureNote.get(note_id=1)
            text = exception_text(info.value)
            assert "AuthenticationFailed" in text and "Bad credentials" in text, f"use {attempt + 1}: {text}"
            assert_no_secret(text, f"the exception of use {attempt + 1}")

            with app.app_context(), pytest.raises(NoHostAvailable) as info:
                asyncio.run(SecureNote.aget(note_id=1))
            assert "Bad credentials" in exception_text(info.value)

            response = client.get("/notes/1")
            assert response.status_code == 503, response.text
            assert response.json["error"] == "database unavailable"
            assert_no_secret(response.text, "the 503 response")
    finally:
        db.shutdown()
    assert_no_secret(logs.text, "the logs")


def test_passwords_never_appear_in_logs_errors_cli_or_reprs(auth_node, logs):
    seen: list[tuple[str, str]] = []

    good = auth_app(
        auth_node,
        PASSWORD,
        CASSANDRA_BINDS={"archive": {"CASSANDRA_HOSTS": auth_node.hosts, "CASSANDRA_KEYSPACE": KEYSPACE}},
    )
    db.init_app(good)
    state = good.extensions["cqlalchemy"]
    try:
        with good.app_context():
            db.sync_db()
            SecureNote.create(note_id=2, body="x")
            asyncio.run(SecureNote.aget(note_id=2))
            seen += [
                ("repr(db)", repr(db)),
                ("repr(db.aio)", repr(db.aio)),
                ("repr(app.extensions['cqlalchemy'])", repr(state)),
                ("str(app.extensions['cqlalchemy'])", str(state)),
                ("repr(settings)", repr(state.settings)),
                ("repr(settings.cluster_options())", repr(state.settings.cluster_options())),
                ("repr(binds)", repr(state.binds)),
                ("repr(connection)", repr(state.connection)),
            ]
        cli = good.test_cli_runner().invoke(args=["cql", "status"])
        seen.append(("flask cql status", cli.output + (exception_text(cli.exception) if cli.exception else "")))
    finally:
        db.shutdown()

    bad = auth_app(auth_node, WRONG_PASSWORD, CASSANDRA_LAZY_CONNECT=True)
    db.init_app(bad)
    try:
        seen.append(("repr(app.extensions['cqlalchemy']) (wrong password)", repr(bad.extensions["cqlalchemy"])))
        response = bad.test_client().get("/notes/2")
        seen.append(("503 response", response.text))
        cli = bad.test_cli_runner().invoke(args=["cql", "status"])
        seen.append(
            ("flask cql status (wrong password)", cli.output + (exception_text(cli.exception) if cli.exception else ""))
        )
        with bad.app_context(), pytest.raises(NoHostAvailable) as info:
            SecureNote.get(note_id=2)
        seen.append(("exception", exception_text(info.value)))
    finally:
        db.shutdown()

    assert any(r.name.startswith("cassandra") and r.levelno == logging.DEBUG for r in logs.records), (
        "driver DEBUG logs were not captured"
    )
    seen.append(("logs", logs.text))
    for where, text in seen:
        assert_no_secret(text, where)


# -- TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    ca = make_ca(folder, "test-ca")
    node_cert = make_server_cert(folder, "node", ca)
    wrong_ca = make_ca(folder, "wrong-ca")
    with local_cluster(
        "tls", env={"CASSANDRA_TLS_CERT": str(node_cert.cert), "CASSANDRA_TLS_KEY": str(node_cert.key)}
    ) as node:
        yield node, ca, wrong_ca


def tls_app(node, ssl_config: Any, **config: Any) -> Flask:
    app = Flask(f"tls_{secrets.token_hex(3)}")
    app.config.update(CASSANDRA_HOSTS=node.hosts, CASSANDRA_PORT=node.port, CASSANDRA_KEYSPACE=KEYSPACE, **config)
    if ssl_config is not None:
        app.config["CASSANDRA_SSL"] = ssl_config
    return app


def assert_works_over_tls(app: Flask) -> dict:
    tls_db = CQLAlchemy(app)
    try:
        with app.app_context():
            assert tls_db.execute("SELECT release_version FROM system.local").one()["release_version"]
            rows = asyncio.run(tls_db.aio.execute("SELECT cluster_name FROM system.local"))
            assert rows[0]["cluster_name"] == "flask-cqlalchemy-test-tls"
            sockets = [pool._connection._socket for pool in tls_db.session._pools.values()]
            sockets.append(tls_db.cluster.control_connection._connection._socket)
            for sock in sockets:
                assert isinstance(sock, ssl.SSLSocket), type(sock)
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
            return {"version": sockets[0].version(), "peer": sockets[0].getpeercert()}
    finally:
        tls_db.shutdown()


def test_tls_with_certificate_paths(tls):
    node, ca, _ = tls
    info = assert_works_over_tls(tls_app(node, {"ca_file": str(ca.cert), "check_hostname": True}))
    assert ("IP Address", "127.0.0.1") in info["peer"]["subjectAltName"]


def test_tls_with_an_ssl_context(tls, record_figure):
    node, ca, _ = tls
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # well-formed certificates (the default from Python 3.13)
    info = assert_works_over_tls(tls_app(node, context))
    record_figure(f"tls: connected over {info['version']} to a node whose certificate the test's CA signed")


def test_tls_with_a_wrong_ca_fails_clearly(tls):
    node, _, wrong_ca = tls
    started = time.monotonic()
    with pytest.raises(NoHostAvailable) as info:
        CQLAlchemy(tls_app(node, {"ca_file": str(wrong_ca.cert)}))
    assert time.monotonic() - started < FAIL_FAST
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), str(info.value)


def test_plaintext_client_is_refused_fast(tls):
    node, _, _ = tls
    started = time.monotonic()
    with pytest.raises(NoHostAvailable):
        CQLAlchemy(tls_app(node, None))
    assert time.monotonic() - started < FAIL_FAST


# -- DataStax Astra's secure connect bundle, against the TLS node ------------------
# No Astra here. Astra's driver path is: read the bundle (config.json + the
# client certificate), ask the metadata service named in config.json over TLS
# for the SNI proxy's address and the nodes' host ids, then connect through
# the proxy over TLS with each host id as the SNI name. The test plays the
# metadata service (HTTPS, certificate from the test's CA) and points the
# "proxy" at the --tls node, which ignores the SNI name: CASSANDRA_CLOUD then
# goes the whole of that path to a real node. What it cannot show is Astra's
# proxy routing by SNI and Astra's authentication.


class MetadataService:
    """An HTTPS ``/metadata`` endpoint like Astra's, counting its requests."""

    def __init__(self, cert, proxy: str, host_ids: list[str], port: int = 0) -> None:
        import http.server
        import json
        import threading

        body = json.dumps(
            {
                "version": 1,
                "region": "local",
                "contact_info": {
                    "type": "sni_proxy",
                    "local_dc": "datacenter1",
                    "contact_points": host_ids,
                    "sni_proxy_address": proxy,
                },
            }
        ).encode()
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                paths.append(self.path)
                self.send_response(200 if self.path == "/metadata" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert.cert), str(cert.key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def secure_connect_bundle(folder: Path, ca, client, metadata_port: int, keyspace: str) -> Path:
    import json
    import zipfile

    path = folder / "secure-connect-test.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"host": "127.0.0.1", "port": metadata_port, "keyspace": keyspace}))
        archive.write(ca.cert, "ca.crt")
        archive.write(client.cert, "cert")
        archive.write(client.key, "key")
    return path


# The driver's bundle reader makes its context with ssl.PROTOCOL_TLS.
DRIVER_CLOUD_SSL = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")


@DRIVER_CLOUD_SSL
def test_cloud_bundle_connects_through_its_metadata_service(tls, tmp_path, record_figure):
    node, ca, _ = tls
    metadata_cert = make_server_cert(tmp_path, "metadata", ca)
    client_cert = make_server_cert(tmp_path, "client", ca)  # presented, not checked: the node asks for none
    host_id = str(uuid.uuid4())  # Astra names its nodes by host id; the proxy routes on it
    service = MetadataService(metadata_cert, f"{node.address()}:{node.port}", [host_id])
    try:
        app = Flask(f"astra_{secrets.token_hex(3)}")
        app.config.update(
            CASSANDRA_CLOUD={
                "secure_connect_bundle": secure_connect_bundle(tmp_path, ca, client_cert, service.port, KEYSPACE)
            },
            CASSANDRA_USERNAME="client-id",
            CASSANDRA_PASSWORD="client-secret",
        )
        cloud_db = CQLAlchemy(app)
        try:
            with app.app_context():
                assert service.paths == ["/metadata"]
                assert cloud_db.cluster.protocol_version == 4
                row = cloud_db.execute("SELECT cluster_name, release_version FROM system.local").one()
                assert row["cluster_name"] == "flask-cqlalchemy-test-tls"
                rows = asyncio.run(cloud_db.aio.execute("SELECT cluster_name FROM system.local"))
                assert rows[0]["cluster_name"] == "flask-cqlalchemy-test-tls"
                (endpoint,) = [pool.host.endpoint for pool in cloud_db.session._pools.values()]
                assert (endpoint.address, endpoint.port) == (node.address(), node.port)
                sock = cloud_db.cluster.control_connection._connection._socket
                assert isinstance(sock, ssl.SSLSocket) and sock.server_hostname == host_id
                tls_version = sock.version()
                assert app.extensions["cqlalchemy"].keyspace == KEYSPACE  # from the bundle's config.json
        finally:
            cloud_db.shutdown()
    finally:
        service.close()
    record_figure(
        f"astra: CASSANDRA_CLOUD bundle -> local metadata service -> TLS node over SNI "
        f"(protocol v4, {tls_version}); no live Astra"
    )


@DRIVER_CLOUD_SSL
def test_cloud_metadata_service_down_is_no_host_available(tls, tmp_path):
    """The metadata service is Astra's "no node answers": NoHostAvailable at
    start (nothing left registered), and with RETRY_CONNECT a 503 JSON in a
    view, then a working app once the service is up."""
    from cassandra.cqlengine import connection as cqlengine_connection

    node, ca, _ = tls
    client_cert = make_server_cert(tmp_path, "client", ca)
    metadata_cert = make_server_cert(tmp_path, "metadata", ca)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]

    def cloud_app(**config: Any) -> Flask:
        app = Flask(f"astra_down_{secrets.token_hex(3)}")
        app.config.update(
            CASSANDRA_CLOUD={
                "secure_connect_bundle": secure_connect_bundle(tmp_path, ca, client_cert, port, KEYSPACE),
                "connect_timeout": 2,
            },
            CASSANDRA_USERNAME="client-id",
            CASSANDRA_PASSWORD="client-secret",
            **config,
        )
        return app

    registered = set(cqlengine_connection._connections)
    started = time.monotonic()
    with pytest.raises(NoHostAvailable, match=f"metadata service at https://127.0.0.1:{port}/metadata"):
        CQLAlchemy(cloud_app())
    assert time.monotonic() - started < FAIL_FAST
    assert set(cqlengine_connection._connections) == registered  # nothing left behind

    app = cloud_app(CASSANDRA_RETRY_CONNECT=True)
    retrying = CQLAlchemy(app)
    try:

        @app.get("/version")
        async def version():
            rows = await retrying.aio.execute("SELECT release_version FROM system.local")
            return {"version": rows[0]["release_version"]}

        client = app.test_client()
        response = client.get("/version")
        assert response.status_code == 503
        assert response.json == {"error": "database unavailable", "message": "NoHostAvailable"}
        # The service comes up on that port: the next request connects.
        service = MetadataService(metadata_cert, f"{node.address()}:{node.port}", [str(uuid.uuid4())], port=port)
        try:
            response = client.get("/version")
            assert response.status_code == 200, response.data
            assert response.json["version"].startswith("5.")
        finally:
            service.close()
    finally:
        retrying.shutdown()


# -- the launcher's readiness probe against these nodes ----------------------------

PROBE = Path(__file__).resolve().parents[1] / "scripts" / "cassandra.d" / "cql_probe.py"


def stdlib_probe(*args: object) -> subprocess.CompletedProcess[str]:
    """scripts/cassandra's CQL probe with no site-packages (-S): no cassandra-driver."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(PROBE), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_readiness_probe_logs_in_to_the_auth_node(auth_node):
    host, port = auth_node.hosts[0], auth_node.port
    answered = stdlib_probe(host, port, "cassandra", "cassandra")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[-1].startswith("5.")
    refused = stdlib_probe(host, port)
    assert refused.returncode == 1 and "requires authentication" in refused.stderr, refused.stderr
    wrong = stdlib_probe(host, port, "cassandra", "not-the-password")
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr, wrong.stderr


def test_readiness_probe_speaks_tls_to_the_tls_node(tls):
    node, _, _ = tls
    host, port = node.hosts[0], node.port
    answered = stdlib_probe(host, port, "--ssl")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[-1].startswith("5.")
    plain = stdlib_probe(host, port)
    assert plain.returncode == 1 and "closed the connection" in plain.stderr, plain.stderr

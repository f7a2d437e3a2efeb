"""The Flask notes service of ``examples/async_app``: what is particular to
it (its event loops, its configuration, its commands, waitress in-process).

Its HTTP behaviours (create, read, list, delete, dashboard, errors, an
outage) run in tests/test_notes_service.py, over the Flask app under
waitress and the Quart app under three transports, from one set of tests.
The helpers and data here are shared with that module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cassandra.cluster import Cluster
from waitress import wasyncore
from waitress.server import create_server

from examples.async_app import connect, create_app, init_schema
from examples.async_app.app import config_from_env
from examples.async_app.extensions import adb
from flask_cqlalchemy import runner
from flask_cqlalchemy.errors import ConfigError

from .conftest import HOSTS, KEYSPACE

ROOT = Path(__file__).resolve().parent.parent
SERVING_LOOPS: list[asyncio.AbstractEventLoop] = []
TIMEOUT = 30


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve ``app`` with waitress on a free port; yield its base URL."""
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Let the requests in progress finish, then close every socket of the
        # server (listener, trigger, open channels) from the server's own
        # thread, between two selects, so that its loop returns (closing them
        # from here raced the select: EBADF in the server thread).
        server.task_dispatcher.shutdown()
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            # The trigger's pipe is already closed. Seen once in CI, only in
            # test_cluster_lost_while_serving_is_503_json_then_recovers (a
            # driver reconnecting through a cut relay); cause not found. The
            # test had already passed; close what is left from here.
            wasyncore.close_all(server._map)
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def app():
    app = create_app({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "SECRET_KEY": "async-app-tests"})

    @app.get("/_loop")
    async def which_loop():  # which event loop serves this request (tests only)
        SERVING_LOOPS.append(asyncio.get_running_loop())
        return "ok"

    init_schema(app)
    yield app
    adb.sync.shutdown()


@pytest.fixture(scope="module")
def base(app) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def cql():
    """A driver session of its own, to check what really is in the tables."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect(KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(autouse=True)
def empty_tables(app):
    with app.app_context():
        adb.sync.truncate()


# -- helpers -------------------------------------------------------------------


def post(base: str, user: str, payload: Any = None, **kwargs: Any) -> requests.Response:
    if payload is not None:
        kwargs["json"] = payload
    return requests.post(f"{base}/users/{user}/notes", timeout=TIMEOUT, **kwargs)


def get(base: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, timeout=TIMEOUT)


def stored(cql, user: str) -> list[Any]:
    return list(cql.execute("SELECT * FROM notes WHERE user_id = %s", [user]))


def table_sizes(cql) -> tuple[int, int]:
    notes = cql.execute("SELECT COUNT(*) FROM notes").one()[0]
    stats = cql.execute("SELECT COUNT(*) FROM user_stats").one()[0]
    return notes, stats


def notes_written(cql, user: str) -> int:
    row = cql.execute("SELECT notes_written FROM user_stats WHERE user_id = %s", [user]).one()
    return row.notes_written if row else 0


def assert_error(response: requests.Response, status: int, field: Any = "<absent>") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    if field != "<absent>":
        assert body["field"] == field, body
    return body


def assert_notes_schema(cql: Any, keyspace: str) -> None:
    """``keyspace`` holds the notes service's tables as ``init-db`` makes them (RF 1)."""
    cql.cluster.refresh_schema_metadata()
    meta = cql.cluster.metadata.keyspaces[keyspace]
    assert meta.replication_strategy.replication_factor == 1
    assert set(meta.tables) == {"notes", "user_stats"}
    notes = meta.tables["notes"]
    assert [c.name for c in notes.partition_key] == ["user_id"]
    assert [(c.name, c.cql_type) for c in notes.clustering_key] == [("note_id", "timeuuid")]
    assert "CLUSTERING ORDER BY (note_id DESC)" in notes.export_as_string()


def flip(cursor: str, index: int) -> str:
    return cursor[:index] + ("B" if cursor[index] == "A" else "A") + cursor[index + 1 :]


# -- rejected input (tests/test_notes_service.py runs them) -------------------------


REJECTED_NOTES = [
    pytest.param({}, "title", id="missing-title"),
    pytest.param({"title": None}, "title", id="null-title"),
    pytest.param({"title": ""}, "title", id="empty-title"),
    pytest.param({"title": "   \t"}, "title", id="blank-title"),
    pytest.param({"title": "t" * 201}, "title", id="title-201-chars"),
    pytest.param({"title": 42}, "title", id="title-number"),
    pytest.param({"title": ["a"]}, "title", id="title-list"),
    pytest.param({"title": "\ud800"}, "title", id="title-lone-surrogate"),
    pytest.param({"title": "t", "body": "b" * 10_001}, "body", id="body-10001-chars"),
    pytest.param({"title": "t", "body": {"text": "b"}}, "body", id="body-object"),
    pytest.param({"title": "t", "tags": "work"}, "tags", id="tags-string"),
    pytest.param({"title": "t", "tags": {"work": True}}, "tags", id="tags-object"),
    pytest.param({"title": "t", "tags": ["work", 7]}, "tags", id="tags-with-number"),
    pytest.param({"title": "t", "tags": [None]}, "tags", id="tags-with-null"),
    pytest.param({"title": "t", "tags": ["work", ""]}, "tags", id="tags-with-empty"),
    pytest.param({"title": "t", "tags": ["x" * 51]}, "tags", id="tag-51-chars"),
    pytest.param({"title": "t", "tags": [f"t{i}" for i in range(21)]}, "tags", id="21-tags"),
    pytest.param({"title": "t", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"title": "t", "note_id": str(uuid.uuid1())}, "note_id", id="client-chosen-id"),
    pytest.param({"title": "t", "created": "2020-01-01T00:00:00Z"}, "created", id="client-chosen-date"),
]


# -- the cluster is down ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bind_below_ephemeral_ports(sock: socket.socket) -> None:
    """Bind ``sock`` to a free loopback port below the kernel's range for
    outgoing connections: while the relay is cut, a port from that range can
    be handed to any connection opened on the machine (the driver's own
    reconnection attempts included), and the relay could not listen again."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            lowest_ephemeral = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    candidates = list(range(max(1024, lowest_ephemeral - 12000), lowest_ephemeral))
    random.shuffle(candidates)
    for port in candidates:
        try:
            sock.bind(("127.0.0.1", port))
            return
        except OSError:
            continue
    raise AssertionError(f"no free port below {lowest_ephemeral}")


class Relay:
    """A TCP relay to the node that can be cut and restored, as a network
    partition would: the app talks to the node only through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        """Listen, on the same port every time (the driver reconnects to it)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.port:
            # The last listener leaves LISTEN only once its accept() call has
            # returned (cut() wakes it): give a loaded machine a moment.
            deadline = time.monotonic() + 5
            while True:
                try:
                    listener.bind(("127.0.0.1", self.port))
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        else:
            _bind_below_ephemeral_ports(listener)
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._listener is not None
        listener, self._listener = self._listener, None
        # close() alone leaves the socket listening while the accept thread
        # is inside accept(); shutdown() takes it out of LISTEN at once.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while listener is self._listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _wait_for(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _close_app_connection(app) -> None:
    app.extensions["cqlalchemy"].ext.shutdown(app)


def _first_burst(app, paths: list[str]) -> list[int]:
    with serve(app) as url:
        barrier = threading.Barrier(len(paths))

        def fetch(path: str) -> int:
            barrier.wait()
            return requests.get(url + path, timeout=TIMEOUT).status_code

        with ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(fetch, paths))


def _lazy_app():
    return create_app(
        {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "CASSANDRA_LAZY_CONNECT": True, "SECRET_KEY": "lazy"}
    )


BURST = ["/health", "/users/alice/notes", "/users/alice/dashboard"] * 4


def test_lazy_app_connected_before_serving_answers_a_first_burst():
    lazy = _lazy_app()
    try:
        assert connect(lazy)  # what the gunicorn post_worker_init hook does
        assert _first_burst(lazy, BURST) == [200] * len(BURST)
    finally:
        _close_app_connection(lazy)


# -- configuration, command line, WSGI server ---------------------------------------------------------


def test_config_from_environment():
    config = config_from_env({})
    assert (config["CASSANDRA_HOSTS"], config["CASSANDRA_KEYSPACE"]) == ("127.0.0.1", "notes_demo")
    assert (config["CASSANDRA_LAZY_CONNECT"], config["CASSANDRA_RETRY_CONNECT"]) == (False, False)
    config = config_from_env(
        {
            "CASSANDRA_HOSTS": "10.0.0.1, 10.0.0.2",
            "NOTES_KEYSPACE": "notes_prod",
            "CASSANDRA_LAZY_CONNECT": "True",
            "CASSANDRA_PORT": "9142",
            "NOTES_REPLICATION_FACTOR": "3",
            "SECRET_KEY": "s",
        }
    )
    assert config["CASSANDRA_HOSTS"] == "10.0.0.1, 10.0.0.2" and config["CASSANDRA_KEYSPACE"] == "notes_prod"
    assert (config["CASSANDRA_LAZY_CONNECT"], config["CASSANDRA_PORT"], config["NOTES_REPLICATION_FACTOR"]) == (
        True,
        9142,
        3,
    )
    assert "CASSANDRA_ASYNC_LOOPS" not in config_from_env({})
    assert config_from_env({"CASSANDRA_ASYNC_LOOPS": "per-request"})["CASSANDRA_ASYNC_LOOPS"] == "per-request"
    with pytest.raises(ValueError, match="CASSANDRA_LAZY_CONNECT"):
        config_from_env({"CASSANDRA_LAZY_CONNECT": "maybe"})
    with pytest.raises(ValueError, match="CASSANDRA_PORT"):
        config_from_env({"CASSANDRA_PORT": "ninety"})


def test_the_service_runs_its_views_on_one_loop_per_thread(app, base):
    assert runner.uses_thread_loops(app)
    SERVING_LOOPS.clear()
    assert [requests.get(f"{base}/_loop", timeout=10).text for _ in range(30)] == ["ok"] * 30
    # each of waitress's 8 threads keeps its loop open for its next request
    loops = {id(loop): loop for loop in SERVING_LOOPS}.values()
    assert 1 <= len(loops) <= 8 and not any(loop.is_closed() for loop in loops), SERVING_LOOPS


def test_a_bad_async_loops_setting_stops_the_app_naming_the_key():
    with pytest.raises(ConfigError, match="CASSANDRA_ASYNC_LOOPS"):
        create_app({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_ASYNC_LOOPS": "per-process", "SECRET_KEY": "s"})


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASSANDRA_", "NOTES_", "FLASK_"))}
    return {**env, "CASSANDRA_HOSTS": ",".join(HOSTS), **extra}


def test_init_db_command_creates_keyspace_and_tables(cql):
    keyspace = "flask_cqlalchemy_notes_cli"
    cql.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "examples.async_app.wsgi", "init-db"],
            cwd=ROOT,
            env=_env(NOTES_KEYSPACE=keyspace, SECRET_KEY="cli"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"keyspace {keyspace} is ready" in result.stdout
        assert_notes_schema(cql, keyspace)
    finally:
        cql.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_waitress_serve_command_runs_the_wsgi_app(tmp_path):
    port = _closed_port()
    log_path = tmp_path / "waitress.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "waitress",
                f"--listen=127.0.0.1:{port}",
                "--threads=4",
                "examples.async_app.wsgi:app",
            ],
            cwd=ROOT,
            env=_env(NOTES_KEYSPACE=KEYSPACE, SECRET_KEY="serve"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=30)

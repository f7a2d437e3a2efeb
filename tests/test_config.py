"""Every config key: missing or malformed gives a ConfigError naming the key."""

from __future__ import annotations

import socket
import ssl

import pytest
from cassandra import ConsistencyLevel
from flask import Flask

from flask_cqlalchemy import ConfigError, CQLAlchemy
from flask_cqlalchemy.config import read_settings

from .conftest import HOSTS, KEYSPACE

BASE = {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE}


def settings(**overrides):
    config = {**BASE, **overrides}
    return read_settings({k: v for k, v in config.items() if v is not ...})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CASSANDRA_HOSTS", ..., "is required"),
        ("CASSANDRA_HOSTS", [], "is required"),
        ("CASSANDRA_HOSTS", 42, "non-empty list"),
        ("CASSANDRA_HOSTS", ["127.0.0.1", ""], "non-empty string"),
        ("CASSANDRA_KEYSPACE", ..., "is required"),
        ("CASSANDRA_KEYSPACE", "bad'; DROP KEYSPACE x", "keyspace name"),
        ("CASSANDRA_KEYSPACE", 7, "keyspace name"),
        ("CASSANDRA_CONSISTENCY", "MOSTLY", "unknown consistency level"),
        ("CASSANDRA_CONSISTENCY", 99, "not a ConsistencyLevel"),
        ("CASSANDRA_CONSISTENCY", 1.5, "expected a ConsistencyLevel"),
        ("CASSANDRA_LAZY_CONNECT", "yes", "True or False"),
        ("CASSANDRA_RETRY_CONNECT", 1, "True or False"),
        ("CASSANDRA_SETUP_KWARGS", ["port", 9042], "dict"),
        ("CASSANDRA_SETUP_KWARGS", {"username": "u"}, "CASSANDRA_USERNAME"),
        ("CASSANDRA_PORT", "9042", "whole number"),
        ("CASSANDRA_PORT", 70000, "whole number"),
        ("CASSANDRA_PROTOCOL_VERSION", 2, "whole number from 3"),
        ("CASSANDRA_USERNAME", "", "non-empty string"),
        ("CASSANDRA_MAX_PER_PAGE", 0, "whole number"),
        ("CASSANDRA_SSL", "yes", "SSLContext"),
        ("CASSANDRA_SSL", {"cert_file": "x"}, "ca_file is required"),
        ("CASSANDRA_SSL", {"ca_file": "/nonexistent/ca.pem"}, "cannot load"),
        ("CASSANDRA_CURSOR_SECRET", 12, "string or bytes"),
    ],
)
def test_bad_config_names_the_key(key, value, message):
    overrides = {key: value}
    if key == "CASSANDRA_USERNAME":
        overrides["CASSANDRA_PASSWORD"] = "secret"
    with pytest.raises(ConfigError) as info:
        settings(**overrides)
    assert info.value.key == key
    assert key in str(info.value) and message in str(info.value)


def test_password_without_username_names_the_missing_key():
    with pytest.raises(ConfigError, match="CASSANDRA_USERNAME: is required"):
        settings(CASSANDRA_PASSWORD="secret")


def test_protocol_version_conflict_is_refused():
    with pytest.raises(ConfigError, match="disagrees"):
        settings(CASSANDRA_PROTOCOL_VERSION=5, CASSANDRA_SETUP_KWARGS={"protocol_version": 4})


def test_init_app_refuses_bad_config_before_connecting():
    app = Flask("bad")
    app.config["CASSANDRA_HOSTS"] = HOSTS
    db = CQLAlchemy()
    with pytest.raises(ConfigError, match="CASSANDRA_KEYSPACE"):
        db.init_app(app)
    assert "cqlalchemy" not in app.extensions


def test_consistency_by_name_or_value():
    assert settings(CASSANDRA_CONSISTENCY="local_quorum").consistency == ConsistencyLevel.LOCAL_QUORUM
    assert settings(CASSANDRA_CONSISTENCY=ConsistencyLevel.ONE).consistency == ConsistencyLevel.ONE


def test_hosts_as_comma_separated_string():
    assert settings(CASSANDRA_HOSTS="10.0.0.1, 10.0.0.2").hosts == ("10.0.0.1", "10.0.0.2")


def test_cluster_options_carry_port_auth_protocol_and_passthrough():
    options = settings(
        CASSANDRA_PORT=19042,
        CASSANDRA_USERNAME="app",
        CASSANDRA_PASSWORD="s3cret-pw",
        CASSANDRA_SETUP_KWARGS={"connect_timeout": 3},
    ).cluster_options()
    assert options["port"] == 19042
    assert options["protocol_version"] == 5
    assert options["connect_timeout"] == 3
    assert options["auth_provider"].username == "app"


def test_password_never_in_repr():
    s = settings(CASSANDRA_USERNAME="app", CASSANDRA_PASSWORD="s3cret-pw")
    assert "s3cret-pw" not in repr(s)
    assert "s3cret-pw" not in repr(s.cluster_options())


def test_ssl_context_passes_through():
    context = ssl.create_default_context()
    assert settings(CASSANDRA_SSL=context).cluster_options()["ssl_context"] is context


def test_tcp_nodelay_by_default_and_setup_kwargs_win():
    nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert settings().cluster_options()["sockopts"] == [nodelay]
    keepalive = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    assert settings(CASSANDRA_SETUP_KWARGS={"sockopts": keepalive}).cluster_options()["sockopts"] == keepalive


# -- datacenters (CASSANDRA_LOCAL_DC) ------------------------------------------------


def policy_of(options):
    from cassandra.cluster import EXEC_PROFILE_DEFAULT

    token_aware = options["execution_profiles"][EXEC_PROFILE_DEFAULT].load_balancing_policy
    return token_aware._child_policy


def test_local_dc_makes_a_token_aware_dc_aware_policy():
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    options = settings(CASSANDRA_LOCAL_DC="dc1", CASSANDRA_USED_HOSTS_PER_REMOTE_DC=1).cluster_options()
    from cassandra.cluster import EXEC_PROFILE_DEFAULT

    assert isinstance(options["execution_profiles"][EXEC_PROFILE_DEFAULT].load_balancing_policy, TokenAwarePolicy)
    policy = policy_of(options)
    assert isinstance(policy, DCAwareRoundRobinPolicy)
    assert (policy.local_dc, policy.used_hosts_per_remote_dc) == ("dc1", 1)
    unset = policy_of(settings().cluster_options())
    assert (unset.local_dc, unset.used_hosts_per_remote_dc) == ("", 0)


@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        ({"CASSANDRA_LOCAL_DC": ""}, "CASSANDRA_LOCAL_DC", "datacenter name"),
        ({"CASSANDRA_LOCAL_DC": ["dc1"]}, "CASSANDRA_LOCAL_DC", "datacenter name"),
        ({"CASSANDRA_LOCAL_DC": "dc1'; DROP"}, "CASSANDRA_LOCAL_DC", "datacenter name"),
        ({"CASSANDRA_USED_HOSTS_PER_REMOTE_DC": 1}, "CASSANDRA_USED_HOSTS_PER_REMOTE_DC", "needs CASSANDRA_LOCAL_DC"),
        (
            {"CASSANDRA_LOCAL_DC": "dc1", "CASSANDRA_USED_HOSTS_PER_REMOTE_DC": -1},
            "CASSANDRA_USED_HOSTS_PER_REMOTE_DC",
            "whole number",
        ),
        (
            {"CASSANDRA_LOCAL_DC": "dc1", "CASSANDRA_SETUP_KWARGS": {"execution_profiles": {}}},
            "CASSANDRA_LOCAL_DC",
            "bring their own load-balancing policy",
        ),
    ],
)
def test_bad_datacenter_config_names_the_key(config, key, message):
    with pytest.raises(ConfigError) as info:
        settings(**config)
    assert info.value.key == key and message in str(info.value)


def test_local_quorum_by_name():
    assert settings(CASSANDRA_CONSISTENCY="LOCAL_QUORUM").consistency == ConsistencyLevel.LOCAL_QUORUM
    assert settings(CASSANDRA_CONSISTENCY="local_one").consistency == ConsistencyLevel.LOCAL_ONE


def test_a_bind_names_its_own_datacenter_and_cloud():
    from flask_cqlalchemy.config import read_binds

    binds = read_binds(
        {
            **BASE,
            "CASSANDRA_LOCAL_DC": "dc1",
            "CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
            "CASSANDRA_BINDS": {"other": {"CASSANDRA_HOSTS": ["10.0.0.9"], "CASSANDRA_KEYSPACE": "elsewhere"}},
        }
    )
    assert binds["other"].local_dc is None  # another cluster has its own datacenter names
    assert binds["other"].consistency == ConsistencyLevel.LOCAL_QUORUM  # other keys are inherited


# -- DataStax Astra (CASSANDRA_CLOUD) -------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    from .support.certs import make_ca, make_server_cert

    folder = tmp_path_factory.mktemp("bundle-certs")
    ca = make_ca(folder, "astra-ca")
    return ca, make_server_cert(folder, "client", ca)


@pytest.fixture()
def bundle(certificates):
    ca, client = certificates

    def make(folder, name="bundle.zip", *, omit=(), config_json=None, key=None):
        """A zip laid out like a secure connect bundle, with certificates
        that load (the tests stop before any connection)."""
        return write_bundle(folder, name, ca, client, omit=omit, config_json=config_json, key=key)

    return make


def write_bundle(folder, name, ca, client, *, omit=(), config_json=None, key=None):
    import json
    import zipfile

    path = folder / name
    files = {
        "config.json": config_json
        if config_json is not None
        else json.dumps({"host": "db.example.invalid", "port": 29080, "keyspace": "astra_ks"}),
        "ca.crt": ca.cert.read_text(),
        "cert": client.cert.read_text(),
        "key": key if key is not None else client.key.read_text(),
    }
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            if member not in omit:
                archive.writestr(member, text)
    return path


HOST = {"host": "db.example.invalid", "port": 29080}
CLOUD_LOGIN = {"CASSANDRA_USERNAME": "client-id", "CASSANDRA_PASSWORD": "client-secret"}


def cloud_settings(cloud, **overrides):
    config = {"CASSANDRA_CLOUD": cloud, **CLOUD_LOGIN, **overrides}
    return read_settings({k: v for k, v in config.items() if v is not ...})


def test_cloud_needs_no_hosts_and_takes_the_bundles_keyspace(tmp_path, bundle):
    path = bundle(tmp_path)
    s = cloud_settings({"secure_connect_bundle": str(path)})
    assert s.hosts == () and s.keyspace == "astra_ks"
    options = s.cluster_options()
    assert options["cloud"] == {"secure_connect_bundle": str(path)}
    assert options["protocol_version"] == 4  # Astra's; v5 would not be negotiated down
    assert options["auth_provider"].username == "client-id"
    assert "port" not in options and "ssl_context" not in options
    explicit = cloud_settings({"secure_connect_bundle": path}, CASSANDRA_KEYSPACE="mine", CASSANDRA_PROTOCOL_VERSION=5)
    assert (explicit.keyspace, explicit.protocol_version) == ("mine", 5)
    assert explicit.cluster_options()["cloud"]["secure_connect_bundle"] == str(path)  # a Path becomes a str


def test_cloud_bundle_errors_name_the_key_before_any_connection(tmp_path, bundle):
    import json

    (tmp_path / "folder.zip").mkdir()
    (tmp_path / "text.zip").write_text("not a zip")
    cases = [
        ({"secure_connect_bundle": str(tmp_path / "missing.zip")}, "does not exist"),
        ({"secure_connect_bundle": str(tmp_path / "folder.zip")}, "is a directory"),
        ({"secure_connect_bundle": str(tmp_path / "text.zip")}, "not a readable zip file"),
        ({"secure_connect_bundle": str(bundle(tmp_path, "a.zip", omit=("config.json",)))}, "has no config.json"),
        ({"secure_connect_bundle": str(bundle(tmp_path, "b.zip", omit=("key", "cert")))}, "has no cert, key"),
        ({"secure_connect_bundle": str(bundle(tmp_path, "c.zip", config_json="{nope"))}, "config.json is not JSON"),
        (
            {"secure_connect_bundle": str(bundle(tmp_path, "d.zip", config_json=json.dumps({"keyspace": "k"})))},
            "does not name the metadata service",
        ),
        ({}, "secure_connect_bundle is required"),
        ("/path/bundle.zip", "expected a dict"),
        ({"secure_connect_bundle": str(bundle(tmp_path)), "bundle": "x"}, "unknown entries ['bundle']"),
        ({"secure_connect_bundle": str(bundle(tmp_path)), "connect_timeout": 0}, "connect_timeout"),
        ({"secure_connect_bundle": str(bundle(tmp_path)), "ssl_context": "ctx"}, "ssl.SSLContext"),
        ({"secure_connect_bundle": str(bundle(tmp_path)), "use_default_tempdir": "no"}, "use_default_tempdir"),
        (
            {"secure_connect_bundle": str(bundle(tmp_path, "e.zip", key="-----BEGIN PRIVATE KEY-----\nAAAA\n"))},
            "its certificates (ca.crt, cert, key) do not load",
        ),
        (
            {
                "secure_connect_bundle": str(
                    bundle(tmp_path, "f.zip", config_json=json.dumps({**HOST, "keyspace": "x-y"}))
                )
            },
            "expected a keyspace name",
        ),
    ]
    for cloud, message in cases:
        with pytest.raises(ConfigError) as info:
            cloud_settings(cloud)
        assert info.value.key == "CASSANDRA_CLOUD", cloud
        assert message in str(info.value), (cloud, str(info.value))


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"CASSANDRA_HOSTS": ["127.0.0.1"]}, "CASSANDRA_HOSTS", "cannot be set with CASSANDRA_CLOUD"),
        ({"CASSANDRA_PORT": 9042}, "CASSANDRA_PORT", "cannot be set with CASSANDRA_CLOUD"),
        ({"CASSANDRA_SSL": {"ca_file": "x"}}, "CASSANDRA_SSL", "cannot be set with CASSANDRA_CLOUD"),
        ({"CASSANDRA_USERNAME": ..., "CASSANDRA_PASSWORD": ...}, "CASSANDRA_USERNAME", "client id"),
        (
            {"CASSANDRA_SETUP_KWARGS": {"contact_points": ["10.0.0.1"], "ssl_options": {}}},
            "CASSANDRA_SETUP_KWARGS",
            "['contact_points', 'ssl_options'] cannot be given with CASSANDRA_CLOUD",
        ),
        (
            {"CASSANDRA_SETUP_KWARGS": {"cloud": {"secure_connect_bundle": "/other.zip"}}},
            "CASSANDRA_SETUP_KWARGS",
            "cannot be given with CASSANDRA_CLOUD",
        ),
    ],
)
def test_cloud_conflicts_name_the_key(tmp_path, bundle, overrides, key, message):
    with pytest.raises(ConfigError) as info:
        cloud_settings({"secure_connect_bundle": str(bundle(tmp_path))}, **overrides)
    assert info.value.key == key and message in str(info.value)


def test_cloud_credentials_may_come_from_an_auth_provider(tmp_path, bundle):
    from cassandra.auth import PlainTextAuthProvider

    provider = PlainTextAuthProvider("token", "AstraCS:x")
    s = cloud_settings(
        {"secure_connect_bundle": str(bundle(tmp_path))},
        CASSANDRA_USERNAME=...,
        CASSANDRA_PASSWORD=...,
        CASSANDRA_SETUP_KWARGS={"auth_provider": provider},
    )
    assert s.cluster_options()["auth_provider"] is provider
    with pytest.raises(ConfigError, match="CASSANDRA_SETUP_KWARGS: 'cloud' is configured with CASSANDRA_CLOUD"):
        settings(CASSANDRA_SETUP_KWARGS={"cloud": {"secure_connect_bundle": "/b.zip"}})


def test_binds_and_cloud_do_not_share_where_and_who(tmp_path, bundle):
    from flask_cqlalchemy.config import read_binds

    cloud = {"secure_connect_bundle": str(bundle(tmp_path))}
    # An Astra app and a plain bind: the token is not the other cluster's password.
    binds = read_binds(
        {
            "CASSANDRA_CLOUD": cloud,
            **CLOUD_LOGIN,
            "CASSANDRA_MAX_PER_PAGE": 50,
            "CASSANDRA_BINDS": {"plain": {"CASSANDRA_HOSTS": ["10.0.0.9"], "CASSANDRA_KEYSPACE": "k"}},
        }
    )
    assert (binds["plain"].cloud, binds["plain"].username, binds["plain"].protocol_version) == (None, None, 5)
    assert binds["plain"].max_per_page == 50  # the rest is inherited
    # A plain app with a port and TLS, and an Astra bind.
    binds = read_binds(
        {
            **BASE,
            "CASSANDRA_PORT": 19042,
            "CASSANDRA_SSL": ssl.create_default_context(),
            "CASSANDRA_USERNAME": "app",
            "CASSANDRA_PASSWORD": "pw",
            "CASSANDRA_BINDS": {"astra": {"CASSANDRA_CLOUD": cloud, **CLOUD_LOGIN}},
        }
    )
    astra = binds["astra"]
    assert (astra.port, astra.ssl_context, astra.username, astra.keyspace) == (None, None, "client-id", "astra_ks")
    # A bind never takes the app's bundle: without hosts of its own it has none.
    with pytest.raises(ConfigError) as info:
        read_binds({"CASSANDRA_CLOUD": cloud, **CLOUD_LOGIN, "CASSANDRA_BINDS": {"b": {"CASSANDRA_KEYSPACE": "k"}}})
    assert info.value.key == "CASSANDRA_BINDS['b'].CASSANDRA_HOSTS"


def test_cloud_error_at_init_app_connects_nothing(tmp_path):
    app = Flask("astra_missing")
    app.config.update(CASSANDRA_CLOUD={"secure_connect_bundle": str(tmp_path / "nope.zip")}, **CLOUD_LOGIN)
    with pytest.raises(ConfigError, match="CASSANDRA_CLOUD"):
        CQLAlchemy(app)
    assert "cqlalchemy" not in app.extensions


def test_tracing_and_json_provider_flags():
    assert (settings().tracing, settings().json_provider) == (False, True)
    s = settings(CASSANDRA_TRACING=True, CASSANDRA_JSON_PROVIDER=False)
    assert (s.tracing, s.json_provider) == (True, False)
    for key in ("CASSANDRA_TRACING", "CASSANDRA_JSON_PROVIDER"):
        with pytest.raises(ConfigError, match=key):
            settings(**{key: "yes"})


def test_tracing_without_the_opentelemetry_api_names_the_key_and_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def without_otel_api(name, *args):
        if name.startswith("opentelemetry.trace"):
            return None  # as with opentelemetry-proto installed alone: the namespace, no API
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_otel_api)
    with pytest.raises(ConfigError) as info:
        settings(CASSANDRA_TRACING=True)
    assert info.value.key == "CASSANDRA_TRACING" and "flask-cqlalchemy[otel]" in str(info.value)
    assert settings(CASSANDRA_TRACING=False).tracing is False  # off needs nothing

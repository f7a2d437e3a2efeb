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

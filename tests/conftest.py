"""Shared fixtures: every database test talks to a real Cassandra node.

The node comes from ``scripts/cassandra start`` (``make test`` runs it), or
from the cluster named by ``CASSANDRA_HOSTS``. No node is a failure, never a
skip.
"""

from __future__ import annotations

import os

import pytest
from cassandra.cluster import Cluster, NoHostAvailable
from flask import Flask

from flask_cqlalchemy import CQLAlchemy

HOSTS = [h.strip() for h in os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip()]
KEYSPACE = "flask_cqlalchemy_tests"


def make_app(name: str = "test_app", **config: object) -> Flask:
    """A Flask app configured for the test node."""
    app = Flask(name)
    app.config.update({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "SECRET_KEY": "tests", **config})
    return app


@pytest.fixture(scope="session", autouse=True)
def cassandra_node() -> str:
    """Fail the whole run, loudly, if no node answers; create the test keyspace."""
    cluster = Cluster(HOSTS, protocol_version=5)
    try:
        session = cluster.connect()
    except NoHostAvailable as exc:
        pytest.exit(
            f"No Cassandra node answers at {HOSTS}: start one with `scripts/cassandra start` "
            f"(make test does) or set CASSANDRA_HOSTS. {exc}",
            returncode=3,
        )
    version = session.execute("SELECT release_version FROM system.local").one()[0]
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    cluster.shutdown()
    return str(version)


def pytest_report_header(config: pytest.Config) -> str:
    return f"cassandra hosts: {HOSTS}"


@pytest.fixture(scope="module")
def module_db(request: pytest.FixtureRequest):
    """The module's ``db`` (module attribute ``db``), synced once per module, shut down after."""
    db: CQLAlchemy = request.module.db
    db.sync_db()
    yield db
    db.shutdown()


@pytest.fixture()
def clean_db(module_db: CQLAlchemy) -> CQLAlchemy:
    """``module_db`` with every table emptied before the test."""
    module_db.truncate()
    return module_db


FIGURES: list[str] = []


@pytest.fixture()
def record_figure():
    """Record a measured figure; all are printed at the end of the run."""

    def record(text: str) -> None:
        FIGURES.append(text)

    return record


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if FIGURES:
        terminalreporter.section("measured figures")
        for line in FIGURES:
            terminalreporter.write_line(line)

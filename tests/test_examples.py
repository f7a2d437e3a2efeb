"""The original README's examples and shell sessions, run as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cassandra.cluster import Cluster

from .conftest import HOSTS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def cqlengine_keyspace():
    """The README assumes keyspace ``cqlengine`` exists."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS cqlengine "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    yield session
    session.execute("DROP TABLE IF EXISTS cqlengine.user")
    session.execute("DROP TABLE IF EXISTS cqlengine.users")
    session.execute("DROP TYPE IF EXISTS cqlengine.address")
    cluster.shutdown()


def shell(session: str) -> str:
    """Feed ``session`` to an interactive Python started in examples/, return what it printed."""
    result = subprocess.run(
        [sys.executable, "-i", "-q"],
        input=session,
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CASSANDRA_HOSTS": ",".join(HOSTS), "PYTHONWARNINGS": "error::UserWarning"},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_example_app_shell_session(cqlengine_keyspace):
    out = shell(
        "from example_app import db, User\n"
        "db.sync_db()\n"
        "user1 = User.create(username='John Doe')\n"
        "print(User.get(uid=user1.uid).username)\n"
    )
    assert out.strip() == "John Doe"
    rows = list(cqlengine_keyspace.execute("SELECT username FROM cqlengine.user"))
    assert ("John Doe",) in [tuple(r) for r in rows]


def test_example_app_udt_shell_session(cqlengine_keyspace):
    out = shell(
        "from example_app_udt import db, address, users\n"
        "db.sync_db()\n"
        'user_address = address(street="Easy St.", zipcode=99999)\n'
        "users.create(name='Joe', addr=user_address)\n"
        "user = users.get(name='Joe')\n"
        "user\n"
        "user.addr\n"
        "user.addr.street\n"
        "user.addr.zipcode\n"
    )
    lines = out.strip().splitlines()
    assert re.fullmatch(r"users\(name='Joe', addr=<example_app_udt\.address object at 0x[0-9a-f]+>\)", lines[-4]), lines
    assert re.fullmatch(r"<example_app_udt\.address object at 0x[0-9a-f]+>", lines[-3])
    assert lines[-2:] == ["'Easy St.'", "99999"]

"""Migrations on the three-node cluster profile (``scripts/cassandra start --cluster``).

* After every DDL statement the runner waits until the three nodes report
  the same schema version, before the next statement; when they cannot
  agree (a node paused), the migration fails saying so, and resumes.
* Two runners (two processes of the real ``flask`` command) started at the
  same moment: exactly one migrates, the other waits, or exits with the
  lock's exit code when told not to wait; every migration ran once.
* A runner killed (SIGKILL) in the middle: its lock expires by its TTL,
  ``status`` shows the migration IN_PROGRESS, and ``upgrade --resume``
  completes it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from flask import Flask

from flask_cqlalchemy import CQLAlchemy
from flask_cqlalchemy.migrations import EXIT_LOCKED, EXIT_NEEDS_ATTENTION, Migrator, SchemaAgreementTimeout, targets

from .support.launcher import local_cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).parent / "flask"
#: Nodes sharing two cores with the suite's node answer schema queries slowly.
SLOW_CLUSTER = {"connect_timeout": 10, "control_connection_timeout": 10}


@pytest.fixture(scope="module")
def cluster():
    with local_cluster("cluster", nodes=3) as nodes:
        yield nodes


class NodeVersions:
    """One session per node, each asking only its own node for its schema version."""

    def __init__(self, cluster: Any) -> None:
        self.clusters = []
        self.sessions = {}
        for host in cluster.hosts:
            profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]))
            probe = Cluster(
                [host], port=cluster.port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
            )
            self.clusters.append(probe)
            self.sessions[host] = probe.connect()

    def now(self) -> dict[str, Any]:
        return {
            host: session.execute("SELECT schema_version FROM system.local").one().schema_version
            for host, session in self.sessions.items()
        }

    def close(self) -> None:
        for probe in self.clusters:
            probe.shutdown()


@pytest.fixture(scope="module")
def versions(cluster):
    probe = NodeVersions(cluster)
    yield probe
    probe.close()


@pytest.fixture()
def keyspace(cluster, versions, request):
    name = f"migc_{request.node.name[5:30].lower()}"
    session = next(iter(versions.sessions.values()))
    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)
    replication = "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    session.execute(f"CREATE KEYSPACE {name} WITH replication = {replication}", timeout=60)
    deadline = time.monotonic() + 30
    while len(set(versions.now().values())) > 1:
        assert time.monotonic() < deadline, "the nodes never agreed on the new keyspace"
        time.sleep(0.1)
    yield name
    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)


def make_app(cluster: Any, keyspace: str, directory: Path, **config: Any) -> tuple[Flask, CQLAlchemy]:
    db = CQLAlchemy()
    app = Flask(f"migc_{keyspace}")
    app.config.update(
        CASSANDRA_HOSTS=cluster.hosts,
        CASSANDRA_PORT=cluster.port,
        CASSANDRA_KEYSPACE=keyspace,
        CASSANDRA_MIGRATIONS_DIR=str(directory),
        CASSANDRA_CONSISTENCY="QUORUM",
        **config,
    )
    db.init_app(app)
    return app, db


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text))


def test_every_ddl_statement_is_followed_by_schema_agreement(cluster, versions, keyspace, tmp_path):
    # The driver's own wait after DDL is off: agreement is the runner's doing.
    app, db = make_app(
        cluster, keyspace, tmp_path, CASSANDRA_SETUP_KWARGS={**SLOW_CLUSTER, "max_schema_agreement_wait": 0}
    )
    write(
        tmp_path,
        "1_schema.cql",
        """
        CREATE TYPE address (street text, city text);
        CREATE TABLE people (id int PRIMARY KEY, name text);
        ALTER TABLE people ADD home frozen<address>;
        CREATE INDEX people_name ON people (name);
        ALTER TYPE address ADD zip text;
        INSERT INTO people (id, name, home) VALUES (1, 'Ada', {street: 'x', city: 'y', zip: 'z'});
        """,
    )
    write(
        tmp_path,
        "2_data.py",
        """
        AFTER = []

        def upgrade(session):
            session.execute(f"CREATE TABLE {session.keyspace}.audit (id int PRIMARY KEY)")
            AFTER.append(session.cluster.metadata.keyspaces)
            session.execute(f"INSERT INTO {session.keyspace}.audit (id) VALUES (1)")
        """,
    )
    seen: list[tuple[int, int]] = []
    up: list[set[str]] = []

    def check(file: Any, number: int, statement: str) -> None:
        # Agreement is among the nodes the driver sees up (its rule, and
        # ours): on two busy cores a node can miss heartbeats for a while.
        live = {h.address for h in db.cluster.metadata.all_hosts() if h.is_up}
        now = versions.now()
        up.append(live)
        seen.append((number, len({now[host] for host in live})))

    try:
        with app.app_context():
            (target,) = targets(app, db.state())
            ran = Migrator(target, after_statement=check).upgrade()
        assert [e.filename for e in ran] == ["1_schema.cql", "2_data.py"]
        assert seen == [(n, 1) for n in range(1, 7)], f"a node still had another schema after a statement (up: {up})"
        assert sum(len(live) == 3 for live in up) >= 4, f"too few statements saw all three nodes up: {up}"
        session = versions.sessions[cluster.hosts[2]]
        assert session.execute(f"SELECT home FROM {keyspace}.people WHERE id = 1").one().home.zip == "z"
        assert session.execute(f"SELECT id FROM {keyspace}.audit").one().id == 1
    finally:
        db.shutdown(app)


def test_no_agreement_in_time_fails_the_migration_and_resume_completes_it(cluster, versions, keyspace, tmp_path):
    # The app talks to nodes 1 and 2 only. Node 3 is paused (SIGSTOP) right
    # after statement 1, so it cannot take statement 2's table and the nodes
    # cannot agree; within the 3 s wait the driver still counts it as up.
    # (Paxos still sends to node 3 and times out now and then: the state
    # table's lightweight transactions are retried, see StateTable.cas.)
    only_first_two = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy(cluster.hosts[:2]))
    app, db = make_app(
        cluster,
        keyspace,
        tmp_path,
        CASSANDRA_SCHEMA_AGREEMENT_WAIT=3,
        CASSANDRA_SETUP_KWARGS={**SLOW_CLUSTER, "execution_profiles": {EXEC_PROFILE_DEFAULT: only_first_two}},
    )
    write(
        tmp_path,
        "1_three.cql",
        """
        CREATE TABLE one (k int PRIMARY KEY);
        CREATE TABLE two (k int PRIMARY KEY);
        CREATE TABLE three (k int PRIMARY KEY);
        """,
    )
    paused = []

    def pause_after_the_first(file: Any, number: int, statement: str) -> None:
        if number == 1:
            cluster.pause(3)
            paused.append(time.monotonic())

    try:
        with app.app_context():
            (target,) = targets(app, db.state())
            try:
                with pytest.raises(SchemaAgreementTimeout) as caught:
                    Migrator(target, after_statement=pause_after_the_first).upgrade()
            finally:
                if paused:
                    cluster.resume(3)
            message = str(caught.value)
            assert "the nodes did not agree on the schema within 3 s after statement 2 of 1_three.cql" in message
            assert "CASSANDRA_SCHEMA_AGREEMENT_WAIT" in message
            (entry,) = Migrator(target).status()
            assert (entry.status, entry.record.statements_done) == ("failed", 2)
            assert (
                versions.sessions[cluster.hosts[0]]
                .execute(
                    "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'three'",
                    (keyspace,),
                )
                .one()
                is None
            ), "statement 3 ran after the agreement failed"

            ran = Migrator(target).upgrade(resume=True)
            assert [e.filename for e in ran] == ["1_three.cql"]
            (entry,) = Migrator(target).status()
            assert (entry.status, entry.record.statements_done) == ("applied", 3)
    finally:
        db.shutdown(app)


# -- runners in separate processes ------------------------------------------------------------------


def flask_migrate(cluster: Any, keyspace: str, directory: Path, *args: str, **env: Any) -> subprocess.Popen[str]:
    """Start ``flask --app tests.migrate_app:create_app() cql migrate ARGS`` against the cluster."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CASSANDRA_HOSTS": ",".join(cluster.hosts),
        "MIGRATE_PORT": str(cluster.port),
        "MIGRATE_KEYSPACE": keyspace,
        "MIGRATE_DIR": str(directory),
        **{k: str(v) for k, v in env.items()},
    }
    return subprocess.Popen(
        [str(FLASK), "--app", "tests.migrate_app:create_app()", "cql", "migrate", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


RACE_MIGRATIONS = {
    "1_runs.cql": """
        CREATE TABLE runs (id timeuuid PRIMARY KEY, migration int);
        INSERT INTO runs (id, migration) VALUES (now(), 1);
    """,
    # Longer than the lock's TTL (5 s): the lock must be renewed meanwhile.
    "2_slow.py": """
        import time

        def upgrade(session):
            session.execute(f"INSERT INTO {session.keyspace}.runs (id, migration) VALUES (now(), 2)")
            time.sleep(8)
    """,
    "3_more.cql": """
        ALTER TABLE runs ADD note text;
        INSERT INTO runs (id, migration, note) VALUES (now(), 3, 'last');
    """,
}


@pytest.mark.parametrize("wait", [60, 0], ids=["second-waits", "second-exits"])
def test_two_runners_started_at_once_migrate_once(cluster, versions, keyspace, tmp_path, wait):
    for name, text in RACE_MIGRATIONS.items():
        write(tmp_path, name, text)
    start_at = time.time() + 8  # both processes have loaded the app by then
    runners = [
        flask_migrate(
            cluster,
            keyspace,
            tmp_path,
            "upgrade",
            MIGRATE_START_AT=start_at,
            MIGRATE_LOCK_TTL=5,
            MIGRATE_LOCK_WAIT=wait,
        )
        for _ in range(2)
    ]
    results = sorted((finish(r) for r in runners), key=lambda r: "applied 3" not in r[1])
    (first_code, first_out), (second_code, second_out) = results
    assert first_code == 0 and "applied 3 migration(s)" in first_out, first_out + second_out
    if wait:
        assert second_code == 0, second_out
        assert "waiting for the migration lock held by" in second_out
        assert "up to date: nothing to run" in second_out
    else:
        assert second_code == EXIT_LOCKED, second_out
        assert "another runner holds the migration lock" in second_out

    session = versions.sessions[cluster.hosts[0]]
    runs = sorted(r.migration for r in session.execute(f"SELECT migration FROM {keyspace}.runs"))
    assert runs == [1, 2, 3], "a migration ran twice or not at all"
    rows = list(session.execute(f"SELECT version, state, run_by FROM {keyspace}.schema_migrations"))
    assert sorted((r.version, r.state) for r in rows) == [("1", "SUCCEEDED"), ("2", "SUCCEEDED"), ("3", "SUCCEEDED")]
    assert len({r.run_by for r in rows}) == 1, "two runners recorded migrations"
    assert list(session.execute(f"SELECT * FROM {keyspace}.schema_migrations_lock")) == []


def test_a_killed_runner_leaves_in_progress_and_resume_completes_it(cluster, versions, keyspace, tmp_path):
    marker = tmp_path / "reached"
    write(tmp_path / "m", "1_table.cql", "CREATE TABLE steps (step int PRIMARY KEY);")
    write(
        tmp_path / "m",
        "2_long.py",
        f"""
        import pathlib
        import time

        MARKER = pathlib.Path({str(marker)!r})

        def upgrade(session):
            session.execute(f"INSERT INTO {{session.keyspace}}.steps (step) VALUES (1)")
            if not MARKER.exists():  # the first run is killed here
                MARKER.write_text("reached")
                time.sleep(300)
            session.execute(f"INSERT INTO {{session.keyspace}}.steps (step) VALUES (2)")
        """,
    )
    runner = flask_migrate(cluster, keyspace, tmp_path / "m", "upgrade", MIGRATE_LOCK_TTL=10)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline, "the runner never reached the middle of its migration"
        time.sleep(0.1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    killed_at = time.monotonic()

    code, out = finish(flask_migrate(cluster, keyspace, tmp_path / "m", "status"))
    assert code == EXIT_NEEDS_ATTENTION, out
    assert re.search(r"2_long.py +in progress", out) and re.search(r"1_table.cql +applied", out), out

    code, out = finish(flask_migrate(cluster, keyspace, tmp_path / "m", "upgrade", "--resume", MIGRATE_LOCK_WAIT=0))
    if time.monotonic() - killed_at < 8:  # the dead runner's lock still lives
        assert code == EXIT_LOCKED, out
        assert "expires by itself" in out

    code, out = finish(flask_migrate(cluster, keyspace, tmp_path / "m", "upgrade", MIGRATE_LOCK_WAIT=30))
    assert code == EXIT_NEEDS_ATTENTION, out
    assert "2_long.py is IN_PROGRESS after 1 statement(s)" in out and "--resume" in out

    code, out = finish(flask_migrate(cluster, keyspace, tmp_path / "m", "upgrade", "--resume", MIGRATE_LOCK_WAIT=30))
    assert code == 0, out
    assert "2_long.py: resuming" in out
    session = versions.sessions[cluster.hosts[0]]
    assert sorted(r.step for r in session.execute(f"SELECT step FROM {keyspace}.steps")) == [1, 2]
    code, out = finish(flask_migrate(cluster, keyspace, tmp_path / "m", "status"))
    assert code == 0 and "2 applied" in out, out

"""``flask cql``: through click's test runner and through the real ``flask`` command.

Everything happens in the keyspaces ``flask_cqlalchemy_cli`` and
``flask_cqlalchemy_cli_nts``, made and dropped here; the app is tests/cli_app.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

from . import cli_app
from .cli_app import KEYSPACE, CliEvent, CliUser

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: The app of tests/cli_app.py under each framework, for the real command.
APP_SPECS = {"flask": "tests.cli_app", "quart": "tests.cli_app:create_quart_app(lazy=True)"}
NTS_KEYSPACE = "flask_cqlalchemy_cli_nts"
db = cli_app.db
app = cli_app.app


def cql(*args: str, input: str | None = None, on=None) -> Result:  # noqa: A002 - click's name
    """Run ``flask cql ARGS`` on ``on`` (the module's app by default) with click's runner."""
    target = on if on is not None else app
    return target.test_cli_runner().invoke(args=["cql", *args], input=input)


def flask_cql(
    *args: str,
    app_spec: str = "tests.cli_app",
    command: str = "flask",
    input: str | None = None,  # noqa: A002 - subprocess's name
) -> subprocess.CompletedProcess[str]:
    """Run the real ``flask --app APP cql ARGS`` (or ``quart ...``) in a subprocess."""
    return subprocess.run(
        [str(BIN / command), "--app", app_spec, "cql", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def keyspaces() -> set[str]:
    with app.app_context():
        db.cluster.refresh_schema_metadata()
        return set(db.cluster.metadata.keyspaces)


def schema(keyspace: str = KEYSPACE) -> tuple[dict[str, set[str]], set[str]]:
    """Tables (with their columns) and user types of ``keyspace``, read anew."""
    with app.app_context():
        db.cluster.refresh_schema_metadata()
        meta = db.cluster.metadata.keyspaces[keyspace]
        return {name: set(t.columns) for name, t in meta.tables.items()}, set(meta.user_types)


def drop(keyspace: str) -> None:
    with app.app_context():
        # cqlengine drops only keyspaces the driver's metadata knows of, and a
        # keyspace made through another connection reaches it after a delay.
        db.cluster.refresh_schema_metadata()
        db.drop_keyspace(keyspace)


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    """Start and end without this module's keyspaces; close the app's connection after."""
    drop(KEYSPACE)
    drop(NTS_KEYSPACE)
    yield
    drop(KEYSPACE)
    drop(NTS_KEYSPACE)
    db.shutdown()


@pytest.fixture()
def no_keyspace() -> None:
    drop(KEYSPACE)


@pytest.fixture()
def empty_keyspace() -> str:
    drop(KEYSPACE)
    with app.app_context():
        db.create_keyspace_simple(KEYSPACE, 1)
    return KEYSPACE


# -- status ---------------------------------------------------------------------


def test_status_missing_keyspace_fails_after_showing_the_cluster(no_keyspace):
    result = cql("status")
    assert result.exit_code == 1, result.output
    assert "release:   Cassandra 5." in result.output
    assert "protocol:  v5" in result.output
    assert " up " in result.output
    assert f"keyspace:  {KEYSPACE} (missing)" in result.output
    assert (
        f"keyspace {KEYSPACE!r} does not exist; create it with `flask cql create-keyspace {KEYSPACE}`" in result.output
    )


def test_status_reports_each_model_table(empty_keyspace):
    with app.app_context():
        db.execute(
            f"CREATE TABLE {KEYSPACE}.cli_event (user_id uuid, at timeuuid, kind int, "
            "PRIMARY KEY (user_id, at)) WITH CLUSTERING ORDER BY (at DESC)"
        )
    result = cql("status")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  Cli")}
    assert "cli_user" in lines["CliUser"] and "table missing" in lines["CliUser"]
    assert "missing columns: tags" in lines["CliEvent"]
    assert "column kind is int in the table, text in the model" in lines["CliEvent"]
    assert "type missing" in lines["CliAddress"]
    assert "schema:    out of sync" in result.output

    checked = cql("status", "--check")
    assert checked.exit_code == 1, checked.output


# -- sync -------------------------------------------------------------------------


def test_sync_dry_run_prints_create_statements_and_runs_nothing(empty_keyspace):
    result = cql("sync", "--dry-run")
    assert result.exit_code == 0, result.output
    statements = [s.strip() for s in result.output.split(";\n") if s.strip()]
    assert statements[0] == f"CREATE TYPE {KEYSPACE}.cli_address (street text, city text)"
    assert any(s.startswith(f"CREATE TABLE {KEYSPACE}.cli_user (") for s in statements)
    assert any(
        s.startswith(f"CREATE TABLE {KEYSPACE}.cli_event (") and 'CLUSTERING ORDER BY ("at" DESC)' in s
        for s in statements
    )
    assert f'CREATE INDEX ON {KEYSPACE}.cli_user ("email")' in statements
    # Not a single statement ran.
    assert schema() == ({}, set())


def test_sync_dry_run_on_existing_table_prints_alter_for_missing_columns(empty_keyspace):
    with app.app_context():
        db.execute(
            f"CREATE TABLE {KEYSPACE}.cli_event (user_id uuid, at timeuuid, "
            "PRIMARY KEY (user_id, at)) WITH CLUSTERING ORDER BY (at DESC)"
        )
    result = cql("sync", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f'ALTER TABLE {KEYSPACE}.cli_event ADD "kind" text;' in result.output
    assert f'ALTER TABLE {KEYSPACE}.cli_event ADD "tags" set<text>;' in result.output
    assert f"CREATE TABLE {KEYSPACE}.cli_event" not in result.output
    assert schema() == ({"cli_event": {"user_id", "at"}}, set())


def test_sync_dry_run_refuses_a_changed_primary_key(empty_keyspace):
    with app.app_context():
        db.execute(f"CREATE TABLE {KEYSPACE}.cli_event (user_id uuid PRIMARY KEY, at timeuuid)")
    result = cql("sync", "--dry-run")
    assert result.exit_code == 1
    assert "PRIMARY KEY composition does not match" in result.output


def test_sync_then_status_in_sync_then_dry_run_has_nothing_to_do(empty_keyspace):
    result = cql("sync")
    assert result.exit_code == 0, result.output
    assert "synced 2 table(s) and 1 user type(s)" in result.output
    tables, types = schema()
    assert tables == {
        "cli_user": {"uid", "name", "email", "address"},
        "cli_event": {"user_id", "at", "kind", "tags"},
    }
    assert types == {"cli_address"}

    status = cql("status", "--check")
    assert status.exit_code == 0, status.output
    assert "schema:    in sync" in status.output
    assert status.output.count("  ok") == 3  # two tables, one type

    again = cql("sync", "--dry-run")
    assert again.exit_code == 0
    assert again.output == "-- the schema is up to date: nothing to run\n"

    with app.app_context():
        user = CliUser.create(name="Ada")
        CliEvent.create(user_id=user.uid, kind="signup")
        assert CliEvent.objects(user_id=user.uid).count() == 1


def test_sync_without_keyspace_is_a_clear_error(no_keyspace):
    for args in (["sync"], ["sync", "--dry-run"]):
        result = cql(*args)
        assert result.exit_code == 1
        assert f"keyspace {KEYSPACE!r} does not exist" in result.output
        assert "Traceback" not in result.output


# -- keyspaces ----------------------------------------------------------------------


def test_create_keyspace_simple_then_again(no_keyspace):
    result = cql("create-keyspace", KEYSPACE, "--replication-factor", "1")
    assert result.exit_code == 0, result.output
    assert f"created keyspace {KEYSPACE} (SimpleStrategy, replication_factor 1)" in result.output
    assert KEYSPACE in keyspaces()

    again = cql("create-keyspace", KEYSPACE, "-r", "3")
    assert again.exit_code == 0
    assert "already exists" in again.output and "left unchanged" in again.output


@pytest.mark.parametrize("strategy", [["--strategy", "NetworkTopologyStrategy"], []], ids=["explicit", "implied-by-dc"])
def test_create_keyspace_network_topology(strategy):
    result = cql("create-keyspace", NTS_KEYSPACE, *strategy, "--dc", "datacenter1=1")
    assert result.exit_code == 0, result.output
    assert "NetworkTopologyStrategy, datacenter1=1" in result.output
    with app.app_context():
        db.cluster.refresh_schema_metadata()
        replication = db.cluster.metadata.keyspaces[NTS_KEYSPACE].replication_strategy.export_for_schema()
    assert "NetworkTopologyStrategy" in replication and "'datacenter1': '1'" in replication
    drop(NTS_KEYSPACE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "SimpleStrategy", "--dc", "datacenter1=1"], "--dc is for NetworkTopologyStrategy"),
        (["--dc", "datacenter1=1", "--dc", "dc9=1"], "datacenter(s) dc9 (its datacenters: datacenter1)"),
        (["--strategy", "NetworkTopologyStrategy"], "needs at least one --dc DC=N"),
        (["--strategy", "NetworkTopologyStrategy", "--dc", "datacenter1"], "expected DC=N"),
        (["--strategy", "NetworkTopologyStrategy", "--dc", "dc1=0"], "expected DC=N"),
        (["--dc", "datacenter1=1", "--dc", "datacenter1=2"], "datacenter 'datacenter1' is given twice"),
        (
            ["--strategy", "NetworkTopologyStrategy", "-r", "2", "--dc", "dc1=1"],
            "--replication-factor is for SimpleStrategy",
        ),
        (["-r", "0"], "0 is not in the range x>=1"),
    ],
)
def test_create_keyspace_bad_options_are_usage_errors(args, message):
    result = cql("create-keyspace", NTS_KEYSPACE, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert NTS_KEYSPACE not in keyspaces()


def test_create_keyspace_bad_name_runs_nothing():
    result = cql("create-keyspace", "bad-name; DROP KEYSPACE system")
    assert result.exit_code == 1
    assert "expected a keyspace name" in result.output


def test_drop_keyspace_asks_first(empty_keyspace):
    declined = cql("drop-keyspace", KEYSPACE, input="n\n")
    assert declined.exit_code == 1
    assert f"Drop keyspace {KEYSPACE} (no tables) and all its data? [y/N]" in declined.output
    assert "Aborted" in declined.output
    assert KEYSPACE in keyspaces()

    accepted = cql("drop-keyspace", KEYSPACE, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert f"dropped keyspace {KEYSPACE}" in accepted.output
    assert KEYSPACE not in keyspaces()


def test_drop_keyspace_yes_missing_and_system(empty_keyspace):
    result = cql("drop-keyspace", KEYSPACE, "--yes")
    assert result.exit_code == 0, result.output
    assert KEYSPACE not in keyspaces()

    missing = cql("drop-keyspace", KEYSPACE, "--yes")
    assert missing.exit_code == 1
    assert "does not exist; nothing dropped" in missing.output

    system = cql("drop-keyspace", "system_schema", "--yes")
    assert system.exit_code == 1
    assert "refusing to drop it" in system.output


# -- an unreachable cluster -------------------------------------------------------------


@pytest.mark.parametrize("same_app", [False, True], ids=["new-app", "same-app"])
def test_unreachable_cluster_is_a_one_line_error(same_app):
    # With the same app, every command after the first meets the connection
    # that cqlengine shut down after the failed lazy connect.
    unreachable = cli_app.create_app(lazy=True, port=1)
    for args in (
        ["status"],
        ["sync", "--dry-run"],
        ["sync"],
        ["create-keyspace", NTS_KEYSPACE],
        ["drop-keyspace", "x", "-y"],
    ):
        if not same_app:
            unreachable = cli_app.create_app(lazy=True, port=1)
        result = cql(*args, on=unreachable)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith(f"Error: cannot reach Cassandra at {cli_app.HOSTS[0]}:1 ("), result.output
        assert "Check CASSANDRA_HOSTS and CASSANDRA_PORT" in result.output
        assert "Traceback" not in result.output


# -- the real flask command --------------------------------------------------------------


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_status_and_sync(empty_keyspace, command):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return flask_cql(*args, app_spec=APP_SPECS[command], command=command)

    dry = run("sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"CREATE TABLE {KEYSPACE}.cli_user" in dry.stdout
    assert schema() == ({}, set())

    synced = run("sync")
    assert synced.returncode == 0, synced.stderr
    assert set(schema()[0]) == {"cli_user", "cli_event"}

    status = run("status", "--check")
    assert status.returncode == 0, status.stderr
    assert "release:   Cassandra 5." in status.stdout
    assert "protocol:  v5" in status.stdout
    assert f"keyspace:  {KEYSPACE} ({{'class': 'SimpleStrategy', 'replication_factor': '1'}})" in status.stdout
    assert "schema:    in sync" in status.stdout


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_create_and_drop_keyspace(no_keyspace, command):
    created = flask_cql("create-keyspace", KEYSPACE, app_spec=APP_SPECS[command], command=command)
    assert created.returncode == 0, created.stderr
    assert KEYSPACE in keyspaces()
    dropped = flask_cql("drop-keyspace", KEYSPACE, "--yes", app_spec=APP_SPECS[command], command=command)
    assert dropped.returncode == 0, dropped.stderr
    assert KEYSPACE not in keyspaces()
    refused = flask_cql("drop-keyspace", "system", "--yes", app_spec=APP_SPECS[command], command=command)
    assert refused.returncode == 1 and "system" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_drop_keyspace_declined_aborts(empty_keyspace, command):
    declined = flask_cql("drop-keyspace", KEYSPACE, app_spec=APP_SPECS[command], command=command, input="n\n")
    assert declined.returncode == 1
    assert f"Drop keyspace {KEYSPACE} (no tables) and all its data? [y/N]" in declined.stdout
    assert declined.stderr.strip() == "Aborted!", declined.stderr
    assert KEYSPACE in keyspaces()


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_help_names_its_own_command(command):
    shown = flask_cql("sync", "--help", app_spec=APP_SPECS[command], command=command)
    assert shown.returncode == 0, shown.stderr
    assert f"make them first with `{command} cql create-" in " ".join(shown.stdout.split())  # wrapped at the hyphen
    assert ({"flask", "quart"} - {command}).pop() not in shown.stdout


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_missing_keyspace(no_keyspace, command):
    status = flask_cql("status", app_spec=APP_SPECS[command], command=command)
    assert status.returncode == 1
    assert (
        f"Error: keyspace {KEYSPACE!r} does not exist; create it with `{command} cql create-keyspace {KEYSPACE}`"
        in status.stderr
    )
    assert "Traceback" not in status.stderr


@pytest.mark.parametrize("command", APP_SPECS)
def test_flask_command_unreachable_lazy_app(command):
    factory = "create_quart_app" if command == "quart" else "create_app"
    result = flask_cql("status", app_spec=f"tests.cli_app:{factory}(port=1, lazy=True)", command=command)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach Cassandra at {cli_app.HOSTS[0]}:1 ("), result.stderr
    assert "Traceback" not in result.stderr


def test_flask_command_unreachable_eager_app_fails_while_loading():
    # init_app connects eagerly: the app itself cannot be made, before any
    # command runs. The driver's error names the host; docs/cli.md recommends
    # CASSANDRA_LAZY_CONNECT for command-line use.
    result = flask_cql("status", app_spec="tests.cli_app:create_app(port=1)")
    assert result.returncode != 0
    assert "NoHostAvailable" in result.stderr and f"{cli_app.HOSTS[0]}:1" in result.stderr


# -- binds: a model on another cluster connection -------------------------------------------

BIND_KEYSPACE = "flask_cqlalchemy_cli_bind"


def test_binds_are_checked_and_synced_on_their_own_connection():
    from flask import Flask

    from flask_cqlalchemy import CQLAlchemy

    bind_db = CQLAlchemy()

    class CliBound(bind_db.Model):
        __bind__ = "side"
        key = bind_db.columns.Text(primary_key=True)
        value = bind_db.columns.Integer()

    bind_app = Flask("cli_bind_app")
    bind_app.config.update(
        CASSANDRA_HOSTS=cli_app.HOSTS,
        CASSANDRA_KEYSPACE=KEYSPACE,
        CASSANDRA_BINDS={"side": {"CASSANDRA_HOSTS": cli_app.HOSTS, "CASSANDRA_KEYSPACE": BIND_KEYSPACE}},
    )
    bind_db.init_app(bind_app)
    try:
        with bind_app.app_context():
            bind_db.drop_keyspace(BIND_KEYSPACE)
            bind_db.create_keyspace_simple(KEYSPACE, 1)
        missing = cql("sync", "--dry-run", on=bind_app)
        assert missing.exit_code == 1
        assert f"keyspace {BIND_KEYSPACE!r} does not exist on bind 'side'" in missing.output

        assert cql("create-keyspace", BIND_KEYSPACE, on=bind_app).exit_code == 0
        dry = cql("sync", "--dry-run", on=bind_app)
        assert dry.exit_code == 0, dry.output
        assert dry.output.startswith(f"CREATE TABLE {BIND_KEYSPACE}.cli_bound (")

        assert cql("sync", on=bind_app).exit_code == 0
        status = cql("status", "--check", on=bind_app)
        assert status.exit_code == 0, status.output
        assert f"bind side: {cli_app.HOSTS[0]}:9042, keyspace {BIND_KEYSPACE} (exists)" in status.output
        assert f"CliBound  {BIND_KEYSPACE}.cli_bound  ok  [bind side]" in status.output
    finally:
        with bind_app.app_context():
            bind_db.cluster.refresh_schema_metadata()
            bind_db.drop_keyspace(BIND_KEYSPACE)
        bind_db.shutdown()

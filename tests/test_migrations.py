"""``flask cql migrate``: every command against the test node.

Each test gets its own keyspace and migrations directory (a fresh app on a
fresh extension, so its models are its own), and checks what a user checks:
the schema the node ends with, the rows of the state table, what the
command printed and its exit code. The three-node cases (schema agreement,
two runners at once, a runner killed) are in test_migrations_cluster.py.
"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args
from click.testing import Result
from flask import Flask

from flask_cqlalchemy import CQLAlchemy
from flask_cqlalchemy.migrations import (
    EXIT_LOCKED,
    EXIT_NEEDS_ATTENTION,
    EXIT_PENDING,
    MigrationFileError,
)
from flask_cqlalchemy.migrations.files import discover, split_cql

from .conftest import HOSTS

_keyspaces = itertools.count(1)


@pytest.fixture(scope="module")
def admin():
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    yield session
    cluster.shutdown()


class Project:
    """One app with its keyspace and migrations directory."""

    def __init__(
        self, admin: Any, directory: Path, framework: type[Any] = Flask, keyspace: str | None = None, **config: Any
    ) -> None:
        self.admin = admin
        self.keyspace = keyspace or f"mig_{next(_keyspaces)}_{uuid.uuid4().hex[:6]}"
        self.directory = directory
        self.db = CQLAlchemy()
        self.app = framework(f"migrations_{self.keyspace}")
        self.app.config.update(
            CASSANDRA_HOSTS=HOSTS,
            CASSANDRA_KEYSPACE=self.keyspace,
            CASSANDRA_MIGRATIONS_DIR=str(directory),
            CASSANDRA_LAZY_CONNECT=True,
            **config,
        )
        if keyspace is not None:
            return
        admin.execute(
            f"CREATE KEYSPACE {self.keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )

    def start(self) -> Project:
        self.db.init_app(self.app)
        return self

    def write(self, name: str, text: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        path.write_text(textwrap.dedent(text))
        return path

    def cql(self, *args: str, input: str | None = None) -> Result:  # noqa: A002 - click's name
        return self.app.test_cli_runner().invoke(args=["cql", *args], input=input)

    def migrate(self, *args: str) -> Result:
        return self.cql("migrate", *args)

    def rows(self, table: str = "schema_migrations") -> dict[str, Any]:
        return {r.version: r for r in self.admin.execute(f"SELECT * FROM {self.keyspace}.{table}")}

    def tables(self) -> dict[str, set[str]]:
        rows = self.admin.execute(
            "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = %s", (self.keyspace,)
        )
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row.table_name, set()).add(row.column_name)
        return found

    def close(self) -> None:
        if self.app.extensions.get("cqlalchemy") is not None:
            self.db.shutdown(self.app)
        self.admin.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}")


@pytest.fixture()
def project(admin, tmp_path):
    made: list[Project] = []

    def make(framework: type[Any] = Flask, *, like: Project | None = None, **config: Any) -> Project:
        """A new project, or (``like``) a new app with new models on the same keyspace and directory."""
        if like is not None:
            made.append(Project(admin, like.directory, framework, keyspace=like.keyspace, **config))
        else:
            made.append(Project(admin, tmp_path / f"migrations{len(made)}", framework, **config))
        return made[-1]

    yield make
    for item in made:
        item.close()


def output(result: Result) -> str:
    """What the command printed, standard error included."""
    return result.output


# -- files --------------------------------------------------------------------------------


def test_cql_is_split_at_semicolons_outside_strings_names_and_comments():
    text = """
    -- a comment; not a statement
    CREATE TABLE t (k int PRIMARY KEY, "odd;name" text); // trailing; comment
    INSERT INTO t (k, "odd;name") VALUES (1, 'it''s; fine');
    /* a block;
       comment */ UPDATE t SET "odd;name" = $$two;
    lines$$ WHERE k = 1
    ;;
    """
    assert split_cql(text) == [
        'CREATE TABLE t (k int PRIMARY KEY, "odd;name" text)',
        "INSERT INTO t (k, \"odd;name\") VALUES (1, 'it''s; fine')",
        'UPDATE t SET "odd;name" = $$two;\n    lines$$ WHERE k = 1',
    ]


@pytest.mark.parametrize(
    ("text", "what"),
    [("SELECT 'x;", "string"), ('SELECT "x;', "quoted name"), ("/* x;", "comment"), ("SELECT $$x;", "$$ string")],
)
def test_an_unterminated_string_or_comment_is_an_error_naming_the_file_and_line(text, what):
    with pytest.raises(MigrationFileError, match=rf"0001_x.cql has a .*{what.split()[-1]}.* never ends \(line 2\)"):
        split_cql("-- one\n" + text, "0001_x.cql")


def test_a_batch_is_one_statement():
    text = """
    BEGIN UNLOGGED BATCH
      INSERT INTO t (k, v) VALUES (1, 'a;b');
      INSERT INTO t (k, v) VALUES (2, 'c');
    APPLY BATCH;
    begin counter batch UPDATE c SET n = n + 1 WHERE k = 1; apply batch;
    SELECT k FROM t;
    """
    statements = split_cql(text)
    assert len(statements) == 3, statements
    assert statements[0].startswith("BEGIN UNLOGGED BATCH") and statements[0].endswith("APPLY BATCH")
    assert "VALUES (2, 'c');" in statements[0]
    assert statements[1] == "begin counter batch UPDATE c SET n = n + 1 WHERE k = 1; apply batch"
    with pytest.raises(MigrationFileError, match="BEGIN BATCH without its APPLY BATCH"):
        split_cql("BEGIN BATCH INSERT INTO t (k) VALUES (1);", "x.cql")


def test_line_ends_and_a_byte_order_mark_do_not_change_a_file(tmp_path):
    text = "-- one\nCREATE TABLE a (k int PRIMARY KEY);\nCREATE TABLE b (k int PRIMARY KEY);\n"
    (tmp_path / "lf").mkdir()
    (tmp_path / "crlf").mkdir()
    (tmp_path / "lf" / "1_a.cql").write_bytes(text.encode())
    (tmp_path / "crlf" / "1_a.cql").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    (lf,), (crlf,) = discover(tmp_path / "lf"), discover(tmp_path / "crlf")
    assert lf.checksum == crlf.checksum
    assert (
        crlf.statements()
        == lf.statements()
        == ["CREATE TABLE a (k int PRIMARY KEY)", "CREATE TABLE b (k int PRIMARY KEY)"]
    )


def test_files_run_in_version_order_and_bad_names_are_refused(tmp_path):
    for name in ("10_c.cql", "9_b.py", "0001_a.cql", "README.md", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "__pycache__").mkdir()
    assert [(f.version, f.kind) for f in discover(tmp_path)] == [("1", "cql"), ("9", "py"), ("10", "cql")]

    (tmp_path / "1_again.cql").write_text("")
    with pytest.raises(MigrationFileError, match="same version as 0001_a.cql"):
        discover(tmp_path)
    (tmp_path / "1_again.cql").unlink()
    (tmp_path / "add-tags.cql").write_text("")
    with pytest.raises(MigrationFileError, match=r"add-tags.cql is not named <version>_<name>.cql or .py"):
        discover(tmp_path)


# -- upgrade, status, exit codes --------------------------------------------------------------


def test_upgrade_runs_pending_files_in_order_and_records_them(project):
    p = project().start()
    p.write(
        "1_notes.cql",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);\nINSERT INTO notes (id, body) VALUES (1, 'a');",
    )
    p.write("2_tags.cql", "ALTER TABLE notes ADD tags set<text>;")

    status = p.migrate("status")
    assert status.exit_code == EXIT_PENDING, output(status)
    assert "1_notes.cql  pending" in status.output and "2 pending" in status.output

    dry = p.migrate("upgrade", "--dry-run")
    assert dry.exit_code == 0, output(dry)
    assert "ALTER TABLE notes ADD tags set<text>;" in dry.output and "2 migration(s) would run" in dry.output
    assert p.tables() == {}, "a dry run changes nothing, not even the state table"

    done = p.migrate("upgrade")
    assert done.exit_code == 0, output(done)
    assert "applied 2 migration(s)" in done.output
    assert p.tables()["notes"] == {"id", "body", "tags"}
    rows = p.rows()
    assert [(v, r.state, r.statements_done, r.statements_total, r.how) for v, r in sorted(rows.items())] == [
        ("1", "SUCCEEDED", 2, 2, "ran"),
        ("2", "SUCCEEDED", 1, 1, "ran"),
    ]
    assert rows["1"].checksum == discover(p.directory)[0].checksum
    assert rows["1"].run_by and rows["1"].started_at <= rows["1"].finished_at

    again = p.migrate("upgrade")
    assert again.exit_code == 0 and "up to date" in again.output
    status = p.migrate("status")
    assert status.exit_code == 0, output(status)
    assert "2 applied" in status.output


def test_upgrade_to_a_version_stops_there_and_an_unknown_version_is_refused(project):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    p.write("2_b.cql", "CREATE TABLE b (k int PRIMARY KEY);")
    assert p.migrate("upgrade", "--to", "1").exit_code == 0
    assert set(p.tables()) == {"a", "schema_migrations", "schema_migrations_lock"}

    unknown = p.migrate("upgrade", "--to", "7")
    assert unknown.exit_code == EXIT_NEEDS_ATTENTION
    assert "no migration of version 7" in output(unknown)
    assert "b" not in p.tables()


def test_a_file_changed_after_it_ran_is_refused_until_restored_or_stamped(project):
    p = project().start()
    first = p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    assert p.migrate("upgrade").exit_code == 0
    first.write_text("CREATE TABLE a (k int PRIMARY KEY, v int);")
    p.write("2_b.cql", "CREATE TABLE b (k int PRIMARY KEY);")

    refused = p.migrate("upgrade")
    assert refused.exit_code == EXIT_NEEDS_ATTENTION
    assert "1_a.cql changed after it ran" in output(refused)
    assert "b" not in p.tables(), "nothing runs while a file differs from what ran"
    status = p.migrate("status")
    assert status.exit_code == EXIT_NEEDS_ATTENTION
    assert "1_a.cql  changed" in status.output and "file changed after it ran" in status.output

    stamped = p.migrate("stamp", "1")
    assert stamped.exit_code == 0, output(stamped)
    assert p.rows()["1"].checksum == discover(p.directory)[0].checksum
    assert p.rows()["1"].how == "stamped"
    assert p.migrate("upgrade").exit_code == 0
    assert "b" in p.tables() and p.tables()["a"] == {"k"}, "stamping records, it does not run"


def test_a_failed_statement_leaves_the_migration_failed_and_blocks_later_ones(project):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    broken = p.write(
        "2_grow.cql",
        """
        ALTER TABLE a ADD x int;
        ALTER TABLE missing_table ADD y int;
        ALTER TABLE a ADD z int;
        """,
    )
    p.write("3_c.cql", "CREATE TABLE c (k int PRIMARY KEY);")

    failed = p.migrate("upgrade")
    assert failed.exit_code == 1
    message = output(failed)
    assert "2_grow.cql failed at statement 2" in message and "missing_table" in message
    assert "1 statement(s) of it ran and stay applied" in message
    row = p.rows()["2"]
    assert (row.state, row.statements_done) == ("FAILED", 1)
    assert row.error.startswith("statement 2: InvalidRequest")
    assert p.tables()["a"] == {"k", "x"} and "c" not in p.tables()

    refused = p.migrate("upgrade")
    assert refused.exit_code == EXIT_NEEDS_ATTENTION
    assert "2_grow.cql is FAILED after 1 statement(s)" in output(refused)
    assert "flask cql migrate upgrade --resume" in output(refused)
    assert "c" not in p.tables()
    status = p.migrate("status")
    assert status.exit_code == EXIT_NEEDS_ATTENTION and "2_grow.cql  failed" in status.output

    # The user fixes the statement; --resume goes on after statement 1, which
    # would fail if sent again (x exists).
    broken.write_text(broken.read_text().replace("missing_table", "a"))
    resumed = p.migrate("upgrade", "--resume")
    assert resumed.exit_code == 0, output(resumed)
    assert "resuming after statement 1" in resumed.output
    assert p.tables()["a"] == {"k", "x", "y", "z"} and "c" in p.tables()
    row = p.rows()["2"]
    assert (row.state, row.statements_done, row.error) == ("SUCCEEDED", 3, None)


def test_resume_refuses_a_file_whose_statements_that_ran_changed(project):
    p = project().start()
    path = p.write(
        "1_grow.cql",
        """
        CREATE TABLE a (k int PRIMARY KEY);
        CREATE TABLE b (k int PRIMARY KEY, v nosuchtype);
        """,
    )
    assert p.migrate("upgrade").exit_code == 1
    # A statement added before the one that failed would be skipped by --resume.
    path.write_text("CREATE TABLE audit (k int PRIMARY KEY);\n" + path.read_text().replace("nosuchtype", "int"))
    refused = p.migrate("upgrade", "--resume")
    assert refused.exit_code == EXIT_NEEDS_ATTENTION
    assert "its first 1 statement(s), which ran, are not the same any more" in output(refused)
    assert "audit" not in p.tables() and "b" not in p.tables()

    path.write_text(path.read_text().replace("CREATE TABLE audit (k int PRIMARY KEY);\n", ""))
    assert p.migrate("upgrade", "--resume").exit_code == 0
    assert {"a", "b"} <= set(p.tables())


def test_a_use_statement_is_refused_before_anything_runs(project, admin):
    p = project().start()
    p.write("1_elsewhere.cql", "CREATE TABLE a (k int PRIMARY KEY);\nUSE system;\nCREATE TABLE b (k int PRIMARY KEY);")
    result = p.migrate("upgrade")
    assert result.exit_code == EXIT_NEEDS_ATTENTION
    assert "statement 2 is a USE statement" in output(result)
    assert "a" not in p.tables() and "1" not in p.rows()


def test_a_failed_migration_completed_by_hand_is_stamped(project):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);\nCREATE INDEX ON a (nope);")
    p.write("2_b.cql", "CREATE TABLE b (k int PRIMARY KEY);")
    assert p.migrate("upgrade").exit_code == 1
    assert p.rows()["1"].state == "FAILED"

    stamped = p.migrate("stamp", "1")
    assert stamped.exit_code == 0, output(stamped)
    assert "1_a.cql: recorded as applied (was failed), not run" in stamped.output
    assert (p.rows()["1"].state, p.rows()["1"].how) == ("SUCCEEDED", "stamped")
    assert p.migrate("upgrade").exit_code == 0
    assert {"a", "b"} <= set(p.tables())


def test_baseline_adopts_an_existing_keyspace_without_running_anything(project, admin):
    p = project().start()
    admin.execute(f"CREATE TABLE {p.keyspace}.legacy (k int PRIMARY KEY, v text)")
    # Would fail if run: the table exists and there is no IF NOT EXISTS.
    p.write("1_legacy.cql", "CREATE TABLE legacy (k int PRIMARY KEY, v text);")
    p.write("2_more.cql", "CREATE TABLE more (k int PRIMARY KEY);")
    done = p.migrate("baseline")
    assert done.exit_code == 0, output(done)
    assert "baseline of 2 migration(s)" in done.output
    assert {v: (r.state, r.how) for v, r in p.rows().items()} == {
        "1": ("SUCCEEDED", "baseline"),
        "2": ("SUCCEEDED", "baseline"),
    }
    assert "more" not in p.tables()

    p.write("3_new.cql", "CREATE TABLE newer (k int PRIMARY KEY);")
    assert p.migrate("upgrade").exit_code == 0
    assert "newer" in p.tables()
    again = p.migrate("baseline")
    assert again.exit_code == EXIT_NEEDS_ATTENTION and "already has 3 recorded migration(s)" in output(again)


def test_a_missing_keyspace_is_a_clear_error(project, admin):
    p = project().start()
    admin.execute(f"DROP KEYSPACE {p.keyspace}")
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    result = p.migrate("upgrade")
    assert result.exit_code == 1
    assert f"keyspace '{p.keyspace}' does not exist" in output(result)
    assert f"flask cql create-keyspace {p.keyspace}" in output(result)


# -- the lock ---------------------------------------------------------------------------------


def test_a_held_lock_makes_a_second_runner_wait_then_exit_with_its_own_code(project, admin):
    p = project(CASSANDRA_MIGRATIONS_LOCK_WAIT=2).start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    assert p.migrate("status").exit_code == EXIT_PENDING
    # The state tables exist once anything ran; make them, then hold the lock.
    assert p.migrate("stamp", "1").exit_code == 0
    admin.execute(f"DELETE FROM {p.keyspace}.schema_migrations WHERE version = '1'")
    admin.execute(
        f"INSERT INTO {p.keyspace}.schema_migrations_lock (name, owner, acquired_at) "
        f"VALUES ('migrate', 'deploy-host:4242:abcd', toTimestamp(now())) IF NOT EXISTS USING TTL 30"
    )
    locked = p.migrate("upgrade")
    assert locked.exit_code == EXIT_LOCKED
    message = output(locked)
    assert "another runner holds the migration lock" in message and "deploy-host:4242:abcd" in message
    assert "waited 2 s (CASSANDRA_MIGRATIONS_LOCK_WAIT)" in message
    assert "a" not in p.tables()

    # Released while the second runner waits: it goes on.
    timer = threading.Timer(
        1.0, lambda: admin.execute(f"DELETE FROM {p.keyspace}.schema_migrations_lock WHERE name = 'migrate'")
    )
    timer.start()
    waited = p.migrate("upgrade")
    timer.join()
    assert waited.exit_code == 0, output(waited)
    assert "waiting for the migration lock held by deploy-host:4242:abcd" in waited.output
    assert "a" in p.tables()
    assert list(admin.execute(f"SELECT * FROM {p.keyspace}.schema_migrations_lock")) == [], "released after use"


# -- Python data migrations ---------------------------------------------------------------------


def test_a_python_migration_pages_through_ten_thousand_rows(project, admin):
    p = project().start()
    admin.execute(f"CREATE TABLE {p.keyspace}.users (id int PRIMARY KEY, name text)")
    insert = admin.prepare(f"INSERT INTO {p.keyspace}.users (id, name) VALUES (?, ?)")
    results = execute_concurrent_with_args(admin, insert, [(i, f"User {i}") for i in range(10_000)], concurrency=100)
    assert all(ok for ok, _ in results)
    p.write(
        "1_lower_names.py",
        """
        from cassandra.concurrent import execute_concurrent_with_args
        from cassandra.query import SimpleStatement

        PAGES = []


        def upgrade(session):
            session.execute(f"ALTER TABLE {session.keyspace}.users ADD lower_name text")
            rows = session.execute(SimpleStatement(f"SELECT id, name FROM {session.keyspace}.users", fetch_size=500))
            update = session.prepare(f"UPDATE {session.keyspace}.users SET lower_name = ? WHERE id = ?")
            seen = 0
            while True:
                page = rows.current_rows
                PAGES.append(len(page))
                results = execute_concurrent_with_args(session.raw, update, [(r.name.lower(), r.id) for r in page])
                assert all(ok for ok, _ in results)
                seen += len(page)
                if not rows.has_more_pages:
                    break
                rows.fetch_next_page()
            assert seen == 10_000
            assert PAGES[:20] == [500] * 20 and sum(PAGES) == 10_000, PAGES  # really page by page
        """,
    )
    done = p.migrate("upgrade")
    assert done.exit_code == 0, output(done)
    values = {r.id: r.lower_name for r in admin.execute(f"SELECT id, lower_name FROM {p.keyspace}.users")}
    assert len(values) == 10_000
    assert all(values[i] == f"user {i}" for i in range(10_000))
    row = p.rows()["1"]
    assert (row.state, row.statements_done, row.statements_total) == ("SUCCEEDED", 2, None)


def test_a_failing_python_migration_is_recorded_and_reruns_whole_on_resume(project):
    p = project().start()
    path = p.write(
        "1_data.py",
        """
        def upgrade(session):
            session.execute(f"CREATE TABLE IF NOT EXISTS {session.keyspace}.data (k int PRIMARY KEY)")
            raise RuntimeError("source data not ready")
        """,
    )
    failed = p.migrate("upgrade")
    assert failed.exit_code == 1
    assert "RuntimeError: source data not ready" in output(failed)
    assert (p.rows()["1"].state, p.rows()["1"].statements_done) == ("FAILED", 1)

    path.write_text(path.read_text().replace('    raise RuntimeError("source data not ready")\n', ""))
    assert p.migrate("upgrade", "--resume").exit_code == 0
    assert p.rows()["1"].state == "SUCCEEDED" and "data" in p.tables()


def test_a_python_file_without_upgrade_is_refused_before_anything_is_recorded(project):
    p = project().start()
    p.write("1_data.py", "def migrate(session):\n    pass\n")
    result = p.migrate("upgrade")
    assert result.exit_code == 1
    assert "1_data.py has no function upgrade(session)" in output(result)
    assert "1" not in p.rows()


# -- new, new --auto --------------------------------------------------------------------------------


def test_new_writes_an_empty_file_in_version_order(project):
    p = project().start()
    first = p.migrate("new", "Add tags!")
    second = p.migrate("new", "backfill", "--py")
    assert first.exit_code == 0 and second.exit_code == 0, output(first) + output(second)
    files = discover(p.directory)
    assert [(f.name, f.kind) for f in files] == [("add_tags", "cql"), ("backfill", "py")]
    assert files[0].number < files[1].number
    assert files[0].statements() == []
    assert "def upgrade(session)" in files[1].path.read_text()


def _auto(p: Project, name: str = "auto") -> tuple[Result, str]:
    result = p.migrate("new", name, "--auto")
    assert result.exit_code == 0, output(result)
    files = discover(p.directory)
    return result, files[-1].path.read_text() if files else ""


def test_autogenerate_writes_the_safe_changes_and_running_it_syncs_the_schema(project):
    p = project()
    db = p.db

    class Address(db.UserType):
        street = db.columns.Text()

    class Person(db.Model):
        id = db.columns.UUID(primary_key=True)
        name = db.columns.Text()
        home = db.columns.UserDefinedType(Address)

    p.start()
    result, text = _auto(p, "initial")
    assert "CREATE TYPE" in text and "CREATE TABLE" in text and "-- REVIEW" not in text
    assert p.migrate("upgrade").exit_code == 0
    assert p.cql("status", "--check").exit_code == 0

    # The next version of the models, on a new extension.
    p2 = project(like=p)
    db = p2.db

    class Address2(db.UserType):  # a field added to the type
        __type_name__ = "address"
        street = db.columns.Text()
        city = db.columns.Text()

    class Person2(db.Model):
        __table_name__ = "person"
        id = db.columns.UUID(primary_key=True)
        name = db.columns.Text()
        email = db.columns.Text(index=True)  # a column and its index
        home = db.columns.UserDefinedType(Address2)
        __options__ = {"comment": "people"}

    class Event(db.Model):  # a new table
        id = db.columns.TimeUUID(primary_key=True)

    p2.start()
    result, text = _auto(p2, "grow")
    statements = [line for line in text.splitlines() if line and not line.startswith("--")]
    assert any(s.startswith("ALTER TYPE") and "city" in s for s in statements), text
    assert any(s.startswith("ALTER TABLE") and 'ADD "email" text' in s for s in statements), text
    assert any(s.startswith("CREATE INDEX") and "email" in s for s in statements), text
    assert any(s.startswith("CREATE TABLE event ") for s in statements), text
    assert p2.keyspace not in "\n".join(statements), "names are written without the keyspace"
    assert any(s.startswith("ALTER TABLE") and "WITH comment" in s for s in statements), text
    assert "-- REVIEW" not in text and result.stderr == ""

    assert p2.migrate("upgrade").exit_code == 0
    assert p2.cql("status", "--check").exit_code == 0
    again = p2.migrate("new", "nothing", "--auto")
    assert again.exit_code == 0 and "no difference" in again.output
    assert len(discover(p.directory)) == 2


def test_autogenerate_comments_out_what_is_not_safe_and_warns(project, admin):
    p = project()
    db = p.db

    class Kept(db.Model):
        __table_name__ = "kept"
        id = db.columns.Integer(primary_key=True)
        count = db.columns.Text()  # int in the table: a type change

    class Rekeyed(db.Model):
        __table_name__ = "rekeyed"
        a = db.columns.Integer(primary_key=True)
        b = db.columns.Integer(primary_key=True)  # the table's key is (a) only

    p.start()
    ks = p.keyspace
    admin.execute(f"CREATE TYPE {ks}.unused (x int)")
    admin.execute(f"CREATE TABLE {ks}.kept (id int PRIMARY KEY, count int, old text, flag boolean)")
    admin.execute(f"CREATE INDEX kept_flag_idx ON {ks}.kept (flag)")
    admin.execute(f"CREATE TABLE {ks}.rekeyed (a int PRIMARY KEY, b int)")
    admin.execute(f"CREATE TABLE {ks}.orphan (k int PRIMARY KEY)")

    result, text = _auto(p, "review")
    statements = [line for line in text.splitlines() if line and not line.startswith("--")]
    assert statements == [], "nothing here is safe to run as is"
    expected = {
        "-- ALTER TABLE kept DROP old;": "column old of",
        "-- ALTER TABLE kept DROP flag;": "column flag of",
        "-- ALTER TABLE kept ADD count_new text;": "Cassandra cannot change a column's type",
        "-- DROP INDEX kept_flag_idx;": "index kept_flag_idx",
        "-- DROP TABLE orphan;": "belongs to no model",
        "-- DROP TYPE unused;": f"user type {ks}.unused",
    }
    for statement, warning in expected.items():
        assert statement in text, text
        assert warning in result.stderr, result.stderr
    assert "-- REVIEW: the primary key of" in text and "-- CREATE TABLE rekeyed" in text
    # Cassandra refuses to drop a column an index depends on: the index comes first.
    assert text.index("-- DROP INDEX kept_flag_idx;") < text.index("-- ALTER TABLE kept DROP flag;")
    assert "ALTER TABLE kept DROP count;" not in text, "re-adding a dropped column with another type is refused"
    assert "Cassandra cannot change a primary key" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: review")]
    assert len(warnings) == 7, result.stderr  # the five drops, the type change, the key
    before = p.tables()
    assert p.migrate("upgrade").exit_code == 0
    assert p.tables() == {**before, **{t: c for t, c in p.tables().items() if t.startswith("schema_")}}


def test_autogenerate_is_refused_while_migrations_are_pending(project):
    p = project()

    class Thing(p.db.Model):
        id = p.db.columns.Integer(primary_key=True)

    p.start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    result = p.migrate("new", "x", "--auto")
    assert result.exit_code == EXIT_NEEDS_ATTENTION
    assert "(1_a.cql: pending): apply them first (`flask cql migrate upgrade`)" in output(result)
    assert len(discover(p.directory)) == 1


# -- binds ----------------------------------------------------------------------------------------


def test_each_bind_has_its_own_directory_and_state_table(project, admin, tmp_path):
    other = f"{'migb'}_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE KEYSPACE {other} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}")
    try:
        p = project(CASSANDRA_BINDS={"analytics": {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": other}}).start()
        p.write("1_main.cql", "CREATE TABLE main_table (k int PRIMARY KEY);")
        bind_dir = p.directory / "analytics"
        bind_dir.mkdir()
        (bind_dir / "1_events.cql").write_text("CREATE TABLE events (k int PRIMARY KEY);")
        (bind_dir / "2_more.cql").write_text("ALTER TABLE events ADD v int;")

        status = p.migrate("status")
        assert status.exit_code == EXIT_PENDING
        assert f"keyspace {p.keyspace}:" in status.output and f"bind analytics (keyspace {other}):" in status.output

        (bind_dir / "3_broken.cql").write_text("ALTER TABLE missing ADD x int;")
        broken = p.migrate("upgrade", "--bind", "analytics")
        assert broken.exit_code == 1
        # The hints name the bind: without it, stamp would record the app keyspace's migrations.
        assert "`flask cql migrate upgrade --resume --bind analytics`" in output(broken)
        assert "`flask cql migrate stamp 3 --bind analytics`" in output(broken)
        (bind_dir / "3_broken.cql").write_text("ALTER TABLE events ADD x int;")
        only = p.migrate("upgrade", "--bind", "analytics", "--resume")
        assert only.exit_code == 0, output(only)
        assert "main_table" not in p.tables()
        bind_rows = {r.version: r.state for r in admin.execute(f"SELECT * FROM {other}.schema_migrations")}
        assert bind_rows == {"1": "SUCCEEDED", "2": "SUCCEEDED", "3": "SUCCEEDED"}

        assert p.migrate("upgrade").exit_code == 0
        assert "main_table" in p.tables() and set(p.rows()) == {"1"}
        assert p.migrate("status").exit_code == 0
        unknown = p.migrate("status", "--bind", "nope")
        assert unknown.exit_code == 1 and "has no bind 'nope' (binds: analytics)" in output(unknown)
    finally:
        admin.execute(f"DROP KEYSPACE IF EXISTS {other}")


def test_two_binds_sharing_one_state_table_is_a_config_error(project):
    p = project()
    p.app.config["CASSANDRA_BINDS"] = {"same": {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": p.keyspace}}
    p.start()
    result = p.migrate("status")
    assert result.exit_code == 1
    assert "CASSANDRA_BINDS['same']" in output(result) and "CASSANDRA_MIGRATIONS_TABLE" in output(result)


# -- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CASSANDRA_MIGRATIONS_TABLE", "bad-name", "expected a table name"),
        ("CASSANDRA_MIGRATIONS_LOCK_TTL", 1, "from 5 to 86400"),
        ("CASSANDRA_MIGRATIONS_LOCK_WAIT", -1, "from 0 to 86400"),
        ("CASSANDRA_SCHEMA_AGREEMENT_WAIT", "10", "from 1 to 3600"),
        ("CASSANDRA_MIGRATIONS_DIR", "", "expected a directory path"),
    ],
)
def test_bad_migration_config_names_the_key(key, value, message):
    from flask_cqlalchemy.errors import ConfigError

    app = Flask("bad_config")
    app.config.update(CASSANDRA_HOSTS=HOSTS, CASSANDRA_KEYSPACE="x", CASSANDRA_LAZY_CONNECT=True, **{key: value})
    with pytest.raises(ConfigError, match=message) as caught:
        CQLAlchemy(app)
    assert caught.value.key == key


def test_the_default_directory_is_migrations_beside_the_app(admin, tmp_path):
    from flask_cqlalchemy.migrations import targets

    db = CQLAlchemy()
    app = Flask("default_dir", root_path=str(tmp_path))
    app.config.update(CASSANDRA_HOSTS=HOSTS, CASSANDRA_KEYSPACE="x", CASSANDRA_LAZY_CONNECT=True)
    db.init_app(app)
    try:
        with app.app_context():
            (target,) = targets(app, db.state())
        assert target.directory == tmp_path / "migrations"
    finally:
        db.shutdown(app)


# -- async and Quart --------------------------------------------------------------------------------


def test_adb_migrate_runs_off_the_loop_in_an_async_view(project):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);\nCREATE TABLE b (k int PRIMARY KEY);")
    adb = p.db.aio
    threads: list[str] = []

    @p.app.post("/migrate")
    async def migrate() -> Any:
        loop_thread = threading.current_thread().name
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        ran = await adb.migrate(echo=lambda line: threads.append(threading.current_thread().name))
        ticker.cancel()
        return {"ran": [e.filename for e in ran], "loop_thread": loop_thread, "ticks": ticks}

    body = p.app.test_client().post("/migrate").get_json()
    assert body["ran"] == ["1_a.cql"]
    assert {"a", "b"} <= set(p.tables())
    assert threads and body["loop_thread"] not in threads, "the migration ran on the loop's thread"
    assert body["ticks"] > 0, "the loop was blocked while migrating"


def test_quart_app_migrates_before_serving_and_has_the_commands(project):
    from quart import Quart

    p = project(framework=Quart).start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    status = p.migrate("status")
    assert status.exit_code == EXIT_PENDING, output(status)
    assert "1_a.cql  pending" in status.output
    refused = p.migrate("upgrade", "--to", "9")
    assert refused.exit_code == EXIT_NEEDS_ATTENTION and "no migration of version 9" in output(refused)

    @p.app.before_serving
    async def migrate() -> None:
        await p.db.aio.migrate()

    @p.app.get("/tables")
    async def tables() -> Any:
        return {"tables": sorted(p.tables())}

    async def serve() -> Any:
        async with p.app.test_app():
            return await (await p.app.test_client().get("/tables")).get_json()

    assert "a" in asyncio.run(serve())["tables"]
    assert p.migrate("status").exit_code == 0


def test_autogenerate_writes_vector_columns_and_storage_attached_indexes(project, admin):
    p = project()
    db = p.db

    class Doc(db.Model):
        id = db.columns.Integer(primary_key=True)
        tag = db.columns.Text(index="sai", index_options={"case_sensitive": False})
        embedding = db.columns.Vector(
            db.columns.Float, 3, index="sai", index_options={"similarity_function": "dot_product"}
        )

    p.start()
    admin.execute(f"CREATE TABLE {p.keyspace}.doc (id int PRIMARY KEY, tag text)")
    result, text = _auto(p, "vectors")
    statements = [line for line in text.splitlines() if line and not line.startswith("--")]
    assert statements == [
        'ALTER TABLE doc ADD "embedding" vector<float, 3>;',
        "CREATE CUSTOM INDEX IF NOT EXISTS doc_tag_sai_idx ON doc (\"tag\") USING 'StorageAttachedIndex' "
        "WITH OPTIONS = {'case_sensitive': 'false'};",
        'CREATE CUSTOM INDEX IF NOT EXISTS doc_embedding_sai_idx ON doc ("embedding") '
        "USING 'StorageAttachedIndex' WITH OPTIONS = {'similarity_function': 'dot_product'};",
    ], text
    assert p.migrate("upgrade").exit_code == 0
    indexes = {
        r.index_name: r.options["class_name"]
        for r in admin.execute("SELECT * FROM system_schema.indexes WHERE keyspace_name = %s", (p.keyspace,))
    }
    assert indexes == {
        "doc_tag_sai_idx": "StorageAttachedIndex",
        "doc_embedding_sai_idx": "StorageAttachedIndex",
    }
    with p.app.app_context():
        Doc.create(id=1, tag="Mixed", embedding=[0.5, 0.25, 1.0])
        assert Doc.objects.filter(tag="mixed").get().embedding == [0.5, 0.25, 1.0]
    again = p.migrate("new", "nothing", "--auto")
    assert again.exit_code == 0 and "no difference" in again.output, again.output


def test_db_migrate_runs_the_pending_migrations_from_a_script(project):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    lines: list[str] = []
    with p.app.app_context():
        ran = p.db.migrate(echo=lines.append)
        assert [e.filename for e in ran] == ["1_a.cql"]
        assert p.db.migrate() == []
    assert "a" in p.tables()
    assert any(line.startswith("  [1/1] CREATE TABLE a") for line in lines), lines


def test_autogenerate_leaves_state_tables_and_full_class_names_alone(project, admin):
    p = project()

    class Event(p.db.Model):
        __options__ = {"compaction": {"class": "LeveledCompactionStrategy"}}
        id = p.db.columns.Integer(primary_key=True)

    # A bind on the same keyspace, with its own state table (as the docs allow).
    p.app.config["CASSANDRA_BINDS"] = {
        "other": {
            "CASSANDRA_HOSTS": HOSTS,
            "CASSANDRA_KEYSPACE": p.keyspace,
            "CASSANDRA_MIGRATIONS_TABLE": "b_migrations",
        }
    }
    p.start()
    result, text = _auto(p, "initial")
    assert "compaction" in text and "b_migrations" not in text
    assert p.migrate("upgrade").exit_code == 0
    assert p.migrate("status", "--bind", "other").exit_code == 0  # makes nothing: no files for it
    admin.execute(f"CREATE TABLE {p.keyspace}.b_migrations (version text PRIMARY KEY)")
    admin.execute(f"CREATE TABLE {p.keyspace}.b_migrations_lock (name text PRIMARY KEY)")
    # The node stores org.apache.cassandra.db.compaction.LeveledCompactionStrategy.
    again = p.migrate("new", "again", "--auto")
    assert again.exit_code == 0 and "no difference" in again.output, again.output


def test_a_python_migration_runs_at_the_apps_consistency(project):
    p = project(CASSANDRA_CONSISTENCY="QUORUM").start()
    p.write(
        "1_levels.py",
        """
        def upgrade(session):
            session.execute(f"CREATE TABLE {session.keyspace}.levels (k int PRIMARY KEY, level int)")
            result = session.execute(f"SELECT * FROM {session.keyspace}.levels")
            level = result.response_future.message.consistency_level
            session.execute(f"INSERT INTO {session.keyspace}.levels (k, level) VALUES (1, %s)", (level,))
        """,
    )
    assert p.migrate("upgrade").exit_code == 0
    (row,) = p.admin.execute(f"SELECT level FROM {p.keyspace}.levels")
    assert row.level == ConsistencyLevel.QUORUM


def test_a_migration_left_in_progress_before_its_first_statement_resumes(project, admin):
    p = project().start()
    p.write("1_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    assert p.migrate("stamp", "1").exit_code == 0  # the state tables
    # As a runner killed right after recording the start leaves it.
    admin.execute(
        f"UPDATE {p.keyspace}.schema_migrations SET state = 'IN_PROGRESS', how = 'ran', run_by = 'dead:1:x', "
        f"statements_done = 0, statements_total = 1 WHERE version = '1'"
    )
    assert p.migrate("upgrade").exit_code == EXIT_NEEDS_ATTENTION
    resumed = p.migrate("upgrade", "--resume")
    assert resumed.exit_code == 0, output(resumed)
    assert "a" in p.tables() and p.rows()["1"].state == "SUCCEEDED"

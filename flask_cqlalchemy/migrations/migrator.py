"""Running migrations against one keyspace: upgrade, status, stamp, baseline.

A :class:`Migrator` works on one :class:`Target`: the app's default
connection and keyspace, or one bind (``CASSANDRA_BINDS``), each with its
own migrations directory and state table. Everything that changes the
cluster runs under the migration lock (:class:`~.state.MigrationLock`).

Cassandra cannot roll DDL back, so nothing here pretends to: a statement
that fails leaves its migration ``FAILED`` with the number of statements
that ran and the error, and ``upgrade`` refuses to go on until the user
fixes it and runs ``upgrade --resume`` (continue after the last statement
that ran) or ``stamp`` (record it done by hand). Nothing is retried silently.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassandra import OperationTimedOut
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.cluster import Cluster as DriverCluster
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.query import SimpleStatement

from ..errors import ConfigError
from .errors import LockLost, MigrationError, MigrationFailed, MigrationRefused, SchemaAgreementTimeout
from .files import MigrationFile, discover
from .state import (
    BASELINE,
    FAILED,
    IN_PROGRESS,
    STAMPED,
    SUCCEEDED,
    MigrationLock,
    Record,
    StateTable,
    runner_id,
)

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, ResultSet, Session
    from flask.sansio.app import App

    from ..config import Settings
    from ..extension import AppState

#: The directory of the app's own migrations when CASSANDRA_MIGRATIONS_DIR is not set.
DEFAULT_DIRECTORY = "migrations"
#: Client-side timeout of each statement of a ``.cql`` migration: DDL on a
#: busy cluster takes longer than the driver's default 10 s.
STATEMENT_TIMEOUT = 120.0
#: How often a ``.py`` migration's count of statements is recorded (seconds).
PROGRESS_INTERVAL = 1.0

_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\b", re.IGNORECASE)


def statements_digest(statements: list[str]) -> str:
    """What identifies the statements of a migration that ran (for ``--resume``)."""
    return hashlib.sha256("\0".join(statements).encode()).hexdigest()


# What status says of each migration.
APPLIED, PENDING, CHANGED, MISSING = "applied", "pending", "changed", "file missing"
STATUS_OF_STATE = {FAILED: "failed", IN_PROGRESS: "in progress"}


@dataclass(frozen=True)
class Target:
    """One keyspace migrated from one directory: the app's, or a bind's."""

    #: The bind's name, None for the app's default connection.
    bind: str | None
    connection_name: str
    keyspace: str
    directory: Path
    settings: Settings

    @property
    def label(self) -> str:
        where = f"keyspace {self.keyspace}"
        return f"bind {self.bind} ({where})" if self.bind else where


def targets(app: App, state: AppState, bind: str | None = None, *, every: bool = True) -> list[Target]:
    """The app's targets: its default connection first, then each bind.

    With ``bind`` given, only that bind; with ``every`` False and no bind,
    only the default connection.

    The default connection's directory is ``CASSANDRA_MIGRATIONS_DIR``
    (default ``migrations``), a bind's is its own ``CASSANDRA_MIGRATIONS_DIR``
    (default: the bind's name inside the app's directory); relative paths
    are relative to the app's root path.

    Raises :class:`~flask_cqlalchemy.errors.ConfigError` for an unknown bind
    and for two targets that would share one state table.
    """
    root = Path(app.root_path)
    main_directory = root / (state.settings.migrations_dir or DEFAULT_DIRECTORY)
    found = [Target(None, state.connection_name, state.keyspace, main_directory, state.settings)]
    for name, bind_state in state.binds.items():
        directory = root / bind_state.settings.migrations_dir if bind_state.settings.migrations_dir else None
        found.append(
            Target(
                name,
                bind_state.connection_name,
                bind_state.keyspace,
                directory or main_directory / name,
                bind_state.settings,
            )
        )
    seen: dict[tuple[Any, ...], Target] = {}
    for target in found:
        key = (
            frozenset(target.settings.hosts),
            target.settings.port,
            target.keyspace,
            target.settings.migrations_table,
        )
        if key in seen:
            other = seen[key]
            raise ConfigError(
                f"CASSANDRA_BINDS[{target.bind!r}]",
                f"migrates keyspace {target.keyspace} of the same cluster as {other.label}, with the same state "
                f"table {target.settings.migrations_table}: give it its own CASSANDRA_MIGRATIONS_TABLE",
            )
        seen[key] = target
    if bind is not None:
        if bind not in state.binds:
            known = ", ".join(sorted(state.binds)) or "none"
            raise ConfigError("CASSANDRA_BINDS", f"app {state.app_name!r} has no bind {bind!r} (binds: {known})")
        return [t for t in found if t.bind == bind]
    return found if every else found[:1]


@dataclass
class Entry:
    """One migration as ``status`` shows it: its file, its record, or both."""

    version: str
    file: MigrationFile | None
    record: Record | None
    status: str

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def filename(self) -> str:
        if self.file is not None:
            return self.file.filename
        return f"{self.version}_{self.record.name if self.record else '?'}"

    @property
    def needs_attention(self) -> bool:
        return self.status in ("failed", "in progress", CHANGED)


def entries_of(files: list[MigrationFile], records: dict[str, Record]) -> list[Entry]:
    """Every migration known from the directory or the state table, in version order."""
    entries = []
    for file in files:
        record = records.get(file.version)
        if record is None:
            status = PENDING
        elif record.state != SUCCEEDED:
            status = STATUS_OF_STATE.get(record.state, record.state.lower())
        elif record.checksum != file.checksum:
            status = CHANGED
        else:
            status = APPLIED
        entries.append(Entry(file.version, file, record, status))
    known = {f.version for f in files}
    for version, record in records.items():
        if version not in known:
            entries.append(Entry(version, None, record, MISSING))
    return sorted(entries, key=lambda e: e.number)


class MigrationSession:
    """The ``session`` a ``.py`` migration's ``upgrade(session)`` receives:
    the driver session of the keyspace being migrated, where
    :meth:`execute` also checks the migration lock before each statement,
    counts it, and after a DDL statement waits for the nodes to agree on
    the schema. ``session.raw`` is the driver session itself (its calls are
    neither counted nor followed by a wait).

    A ``.py`` migration runs again from its start under ``upgrade --resume``:
    write it so that a second run is harmless (Cassandra writes are upserts).
    """

    def __init__(self, migrator: Migrator, file: MigrationFile) -> None:
        self._migrator = migrator
        self._file = file
        self.raw: Session = migrator.keyspace_session()
        self.keyspace = migrator.target.keyspace
        #: Statements sent through :meth:`execute` so far.
        self.statements = 0
        self._recorded = 0.0  # the first statement is recorded at once

    @property
    def cluster(self) -> Cluster:
        return self.raw.cluster

    def execute(self, query: Any, parameters: Any = None, **kwargs: Any) -> ResultSet:
        """``Session.execute``; a later page of its result is fetched when
        iterated. The timeout is 120 s unless given (DDL on a busy cluster)."""
        self._migrator.lock_check()
        kwargs.setdefault("timeout", STATEMENT_TIMEOUT)
        result = self.raw.execute(query, parameters, **kwargs)
        self.statements += 1
        if time.monotonic() - self._recorded >= PROGRESS_INTERVAL:
            self._migrator.table.progress(self._file.version, self.statements, self._migrator.owner)
            self._recorded = time.monotonic()
        text = getattr(query, "query_string", query)
        if (isinstance(text, str) and _DDL.match(text)) or not result.response_future.is_schema_agreed:
            self._migrator.wait_for_agreement(f"statement {self.statements} of {self._file.filename}", result)
        return result

    def prepare(self, query: str) -> Any:
        """``Session.prepare``."""
        return self.raw.prepare(query)


class Migrator:
    """Migrations of one :class:`Target`.

    ``echo`` receives one line per step (the CLI prints them);
    ``after_statement(file, number, statement)`` is called after each
    statement of a ``.cql`` migration has run and the schema agreed.
    """

    def __init__(
        self,
        target: Target,
        *,
        echo: Callable[[str], None] | None = None,
        after_statement: Callable[[MigrationFile, int, str], None] | None = None,
    ) -> None:
        self.target = target
        self.echo = echo or (lambda line: None)
        self.after_statement = after_statement
        self._connection = cqlengine_connection.get_connection(target.connection_name)
        self._lock: MigrationLock | None = None
        self._keyspace_session: Session | None = None
        self.table = StateTable(self.session, target.keyspace, target.settings.migrations_table, self._agree_on_table)

    @property
    def session(self) -> Session:
        return self._connection.session  # connects if lazy

    @property
    def cluster(self) -> Cluster:
        return self._connection.cluster

    def keyspace_session(self) -> Session:
        """A session whose keyspace is the target's (the statements of a
        migration name their tables without a keyspace), on a connection of
        its own to the target's cluster, made from the same settings and
        closed when :meth:`upgrade` returns.

        Not a session of the app's cluster: a new session there registers
        every user type cqlengine registered on it, and fails while a
        migration has yet to create one. Its rows are the driver's named
        tuples, as in the driver's documentation; its consistency is the
        app's ``CASSANDRA_CONSISTENCY``.
        """
        if self._keyspace_session is None:
            settings = self.target.settings
            # The driver's own wait after DDL is off: ours, with
            # CASSANDRA_SCHEMA_AGREEMENT_WAIT, follows every DDL statement.
            options = {**settings.cluster_options(), "max_schema_agreement_wait": 0}
            profiles = options.get("execution_profiles") or {}
            if settings.consistency is not None and EXEC_PROFILE_DEFAULT in profiles:
                profile = copy.copy(profiles[EXEC_PROFILE_DEFAULT])  # the app's own stays as it is
                profile.consistency_level = settings.consistency
                options["execution_profiles"] = {**profiles, EXEC_PROFILE_DEFAULT: profile}
            cluster = DriverCluster(list(settings.hosts), **options)
            try:
                self._keyspace_session = cluster.connect(self.target.keyspace)
            except BaseException:
                cluster.shutdown()
                raise
        return self._keyspace_session

    def _close_keyspace_session(self) -> None:
        session, self._keyspace_session = self._keyspace_session, None
        if session is not None:
            session.cluster.shutdown()

    # -- reading ---------------------------------------------------------------

    def files(self) -> list[MigrationFile]:
        return discover(self.target.directory)

    def status(self) -> list[Entry]:
        """Every migration and where it stands; changes nothing."""
        self._require_keyspace()
        return entries_of(self.files(), self.table.records())

    # -- upgrade ---------------------------------------------------------------

    def upgrade(self, to: str | None = None, *, dry_run: bool = False, resume: bool = False) -> list[Entry]:
        """Run every pending migration (up to version ``to``) in version order.

        With ``dry_run``, print what would run and change nothing. With
        ``resume``, first continue the migration left ``FAILED`` or
        ``IN_PROGRESS`` after its last statement that ran.

        Returns the migrations run (or that would run). Raises
        :class:`MigrationRefused` (nothing ran) when a migration failed or
        is in progress without ``resume``, when an applied file changed, or
        ``to`` is unknown; :class:`MigrationFailed` when a statement failed;
        :class:`~.errors.LockTimeout` when another runner keeps the lock.
        """
        self._require_keyspace()
        files = self.files()
        limit = self._limit(files, to)
        if not files and not self.table.exists():
            self.echo(f"  no migration files in {self.target.directory}")
            return []
        if dry_run:
            todo = self._todo(entries_of(files, self.table.records()), limit, resume)
            for entry in todo:
                self._show(entry)
            return todo
        self.table.ensure()
        try:
            with self._locked():
                todo = self._todo(entries_of(files, self.table.records()), limit, resume)
                for entry in todo:
                    self._apply(entry)
        finally:
            self._close_keyspace_session()
        return todo

    def stamp(self, version: str) -> list[Entry]:
        """Record every migration up to ``version`` as applied without running
        it, and an applied file's current checksum as its own (for a change
        made on purpose). Returns the migrations recorded."""
        self._require_keyspace()
        files = self.files()
        limit = self._limit(files, version)
        self.table.ensure()
        with self._locked():
            entries = entries_of(files, self.table.records())
            stamped = [e for e in entries if e.file is not None and e.number <= limit and e.status != APPLIED]
            for entry in stamped:
                assert entry.file is not None
                self.table.mark_applied(
                    entry.version, entry.file.name, entry.file.checksum, STAMPED, self._owner, entry.record
                )
                self.echo(f"  {entry.filename}: recorded as applied (was {entry.status}), not run")
        return stamped

    def baseline(self) -> list[Entry]:
        """Adopt an existing keyspace: record every migration file present as
        applied without running it. Refused once any migration is recorded."""
        self._require_keyspace()
        files = self.files()
        self.table.ensure()
        with self._locked():
            records = self.table.records()
            if records:
                raise MigrationRefused(
                    f"{self.target.label} already has {len(records)} recorded migration(s) in "
                    f"{self.table.qualified}: baseline is for a keyspace with none; use `stamp VERSION`"
                )
            entries = entries_of(files, {})
            for entry in entries:
                assert entry.file is not None
                self.table.mark_applied(
                    entry.version, entry.file.name, entry.file.checksum, BASELINE, self._owner, None
                )
                self.echo(f"  {entry.filename}: recorded as applied (baseline), not run")
        return entries

    # -- used by MigrationSession ----------------------------------------------

    def lock_check(self) -> None:
        if self._lock is not None:
            self._lock.check()

    def wait_for_agreement(self, after: str, result: ResultSet | None = None) -> None:
        """Wait until every live node reports the schema version of the node
        that ran the statement of ``result``.

        Asked of that node (the driver does the same after DDL): it knows the
        new version first, and its peers' versions reach it by gossip once
        they have applied the change. Asked of any other node, the question
        can be answered "agreed" on the old version, before the change has
        reached it: measured on the three-node cluster, right after a CREATE
        INDEX. Raises :class:`SchemaAgreementTimeout` after
        ``CASSANDRA_SCHEMA_AGREEMENT_WAIT`` seconds.
        """
        wait = self.target.settings.schema_agreement_wait
        future = result.response_future if result is not None else None
        connection = getattr(future, "_connection", None)
        cluster = future.session.cluster if future is not None else self.cluster
        if not cluster.control_connection.wait_for_schema_agreement(connection=connection, wait_time=wait):
            raise SchemaAgreementTimeout(
                f"the nodes did not agree on the schema within {wait} s after {after} "
                f"(CASSANDRA_SCHEMA_AGREEMENT_WAIT); check `nodetool describecluster`",
                version="",
                statement=0,
            )

    # -- plumbing ----------------------------------------------------------------

    _owner: str = ""

    @property
    def owner(self) -> str:
        """Who this runner is in the state table while it holds the lock."""
        return self._owner

    def _agree_on_table(self, result: ResultSet) -> None:
        self.wait_for_agreement(f"creating {self.table.qualified}", result)

    def _require_keyspace(self) -> None:
        metadata = self.cluster.metadata
        if self.target.keyspace not in metadata.keyspaces:
            self.cluster.refresh_schema_metadata()
        if self.target.keyspace not in self.cluster.metadata.keyspaces:
            raise MigrationError(
                f"keyspace {self.target.keyspace!r} does not exist; migrations never create keyspaces: "
                f"create it with `create-keyspace {self.target.keyspace}`"
            )

    def _limit(self, files: list[MigrationFile], to: str | None) -> int:
        if to is None:
            return max((f.number for f in files), default=0)
        if not str(to).isdigit() or str(int(to)) not in {f.version for f in files}:
            known = ", ".join(f.filename for f in files) or "none"
            raise MigrationRefused(f"no migration of version {to} in {self.target.directory} (files: {known})")
        return int(to)

    def _todo(self, entries: list[Entry], limit: int, resume: bool) -> list[Entry]:
        changed = [e for e in entries if e.status == CHANGED]
        if changed:
            names = ", ".join(e.filename for e in changed)
            raise MigrationRefused(
                f"{names} changed after it ran (its checksum differs from the one recorded): restore the file, "
                f"or, if the change is intended and must not run, record it with "
                f"`{self._cmd(f'stamp {changed[-1].version}')}`"
            )
        stuck = [e for e in entries if e.status in ("failed", "in progress")]
        if stuck and not resume:
            entry = stuck[0]
            record = entry.record
            assert record is not None
            detail = f": {record.error}" if record.error else f" (by {record.run_by})"
            raise MigrationRefused(
                f"{entry.filename} is {record.state} after {record.statements_done} statement(s){detail}. "
                f"Fix it, then run `{self._cmd('upgrade --resume')}` to continue after the last statement that ran, "
                f"or `{self._cmd(f'stamp {entry.version}')}` once you have completed it by hand"
            )
        for entry in entries:
            if entry.status == MISSING:
                self.echo(f"warning: {entry.filename} is recorded in {self.table.qualified} but its file is gone")
        return [e for e in entries if e.status in (PENDING, "failed", "in progress") and e.number <= limit]

    def _cmd(self, command: str) -> str:
        """``command`` as the user types it for this target (a bind needs ``--bind``)."""
        return f"{command} --bind {self.target.bind}" if self.target.bind else command

    @contextlib.contextmanager
    def _locked(self) -> Iterator[MigrationLock]:
        self._owner = runner_id()
        settings = self.target.settings
        lock = MigrationLock(self.table, self._owner, settings.migrations_lock_ttl, settings.migrations_lock_wait)
        lock.acquire(on_wait=self.echo)
        self._lock = lock
        try:
            yield lock
        finally:
            self._lock = None
            lock.release()

    def _show(self, entry: Entry) -> None:
        file = entry.file
        assert file is not None
        start = entry.record.statements_done if entry.record is not None and file.kind == "cql" else 0
        if file.kind == "py":
            self.echo(f"-- {file.filename}: upgrade(session) would run")
            return
        statements = file.statements()
        self.echo(
            f"-- {file.filename}: {len(statements) - start} statement(s)"
            + (f", from statement {start + 1}" if start else "")
        )
        for statement in statements[start:]:
            self.echo(f"{statement};")

    def _apply(self, entry: Entry) -> None:
        from ..extension import _schema_change

        file = entry.file
        assert file is not None
        record = entry.record
        statements = file.statements() if file.kind == "cql" else []
        for number, statement in enumerate(statements, 1):
            if _USE.match(statement):
                raise MigrationRefused(
                    f"{file.filename}: statement {number} is a USE statement; a migration runs in the keyspace it "
                    f"migrates ({self.target.keyspace}): name tables of other keyspaces as keyspace.table instead"
                )
        total = len(statements) if file.kind == "cql" else None
        start = record.statements_done if record is not None and file.kind == "cql" else 0
        if start and record is not None and record.ran_digest != statements_digest(statements[:start]):
            raise MigrationRefused(
                f"{file.filename}: its first {start} statement(s), which ran, are not the same any more (a "
                f"statement was added, removed or changed before statement {start + 1}); --resume continues after "
                f"statement {start}, so it would skip or repeat work. Restore the statements that ran and change "
                f"only the ones after them"
            )
        upgrade = file.load_upgrade() if file.kind == "py" else None
        if record is None:
            self.table.begin(file.version, file.name, file.checksum, total, self._owner)
        else:
            self.table.resume(record, file.checksum, total, self._owner)
        began = time.monotonic()
        how = f"resuming after statement {start}" if record is not None else "running"
        self.echo(
            f"{file.filename}: {how}" + (f" ({total} statement(s))" if total is not None else " (upgrade(session))")
        )
        done = start
        try:
            with _schema_change():
                if upgrade is not None:
                    session = MigrationSession(self, file)
                    try:
                        upgrade(session)
                    finally:
                        done = session.statements
                else:
                    for number, statement in enumerate(statements[start:], start + 1):
                        self.lock_check()
                        sent = time.monotonic()
                        session = self.keyspace_session()
                        result = session.execute(SimpleStatement(statement), timeout=STATEMENT_TIMEOUT)
                        done = number
                        if _DDL.match(statement) or not result.response_future.is_schema_agreed:
                            self.wait_for_agreement(f"statement {number} of {file.filename}", result)
                        self.table.progress(file.version, done, self._owner, statements_digest(statements[:done]))
                        self.echo(f"  [{number}/{total}] {_first_line(statement)} ({time.monotonic() - sent:.2f} s)")
                        if self.after_statement is not None:
                            self.after_statement(file, number, statement)
        except LockLost:
            raise
        except Exception as exc:
            failed_at = done + 1 if not isinstance(exc, SchemaAgreementTimeout) else done
            error = f"statement {failed_at}: {type(exc).__name__}: {exc}"
            try:
                digest = statements_digest(statements[:done]) if file.kind == "cql" else None
                self.table.fail(file.version, done, error, self._owner, digest)
            except Exception as record_error:  # the original error matters more
                error += f" (and recording the failure failed: {record_error})"
            failure = SchemaAgreementTimeout if isinstance(exc, SchemaAgreementTimeout) else MigrationFailed
            unknown = ""
            if isinstance(exc, OperationTimedOut):
                # No answer: the node may have run it. --resume sends it again.
                unknown = (
                    f"; statement {failed_at} got no answer in time, so it may or may not have run: "
                    f"check the schema before resuming"
                )
            raise failure(
                f"{file.filename} failed at {error}. {done} statement(s) of it ran and stay applied "
                f"(Cassandra cannot roll DDL back){unknown}; it is recorded FAILED. Fix the cause or the file, then "
                f"run `{self._cmd('upgrade --resume')}`, or `{self._cmd(f'stamp {file.version}')}` once you have "
                f"completed it by hand",
                version=file.version,
                statement=failed_at,
            ) from exc
        self.table.succeed(file.version, done, self._owner)
        self.echo(f"{file.filename}: done in {time.monotonic() - began:.2f} s")


def _first_line(statement: str, width: int = 72) -> str:
    line = " ".join(statement.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def upgrade_app(
    app: App,
    state: AppState,
    to: str | None = None,
    *,
    bind: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Entry]:
    """Run the pending migrations of ``app``: its default connection's, then
    each bind's (only ``bind``'s when given; only the default connection's
    when ``to`` is given without a bind). Returns the migrations run."""
    ran: list[Entry] = []
    for target in targets(app, state, bind, every=to is None):
        ran += Migrator(target, echo=echo).upgrade(to)
    return ran

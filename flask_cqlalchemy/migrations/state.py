"""What ran where: the state table and the runner's lock, in the cluster.

Both live in the keyspace being migrated: ``<table>`` (one row per
migration) and ``<table>_lock`` (one row while a runner works). Every write
is a lightweight transaction conditioned on what the writer expects, so a
second runner, or a runner whose lock expired, can never overwrite the
record of another. Reads and the commit of each transaction use QUORUM:
what one runner recorded is what the next one reads.

Several app instances deploying at once may all create these tables at the
same moment. Tables created concurrently on different nodes would get
different ids and the schema would never agree, so each is created with an
id derived from its keyspace and name: every runner creates the same table.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, WriteTimeout
from cassandra.protocol import ErrorMessage
from cassandra.query import SimpleStatement

from .errors import LockLost, LockTimeout, MigrationError

if TYPE_CHECKING:
    from cassandra.cluster import ResultSet, Session

log = logging.getLogger("flask_cqlalchemy.migrations")

IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"

#: How a SUCCEEDED migration got there.
RAN, STAMPED, BASELINE = "ran", "stamped", "baseline"

_LOCK_NAME = "migrate"
#: Attempts of a lightweight transaction that times out (see StateTable.cas).
CAS_ATTEMPTS = 5
#: Cassandra's "CAS operation result is unknown" (two proposers at once: the
#: proposal was accepted by some replicas, not a quorum); the driver knows
#: no class for it.
CAS_WRITE_UNKNOWN = 0x1700
#: Namespace of the table ids (see the module docstring).
_TABLE_ID_NAMESPACE = uuid.UUID("5f0c9f5e-3d1b-4a59-9a3c-0c3c6e2f6b71")


def runner_id() -> str:
    """Who is running: host, process and a random part (one process may run twice)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Record:
    """One migration's row of the state table."""

    version: str
    name: str
    checksum: str
    state: str
    statements_done: int
    statements_total: int | None
    #: Digest of the statements of a .cql migration that ran (see migrator.statements_digest).
    ran_digest: str | None
    error: str | None
    run_by: str | None
    how: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None


class StateTable:
    """The state table and lock table of one keyspace.

    ``wait_for_agreement(result)`` is called after each DDL statement this
    class sends (it raises if the nodes do not agree).
    """

    def __init__(
        self, session: Session, keyspace: str, table: str, wait_for_agreement: Callable[[ResultSet], None]
    ) -> None:
        self.session = session
        self.keyspace = keyspace
        self.table = table
        self.lock_table = f"{table}_lock"
        self._wait_for_agreement = wait_for_agreement

    @property
    def qualified(self) -> str:
        return f"{self.keyspace}.{self.table}"

    def exists(self) -> bool:
        rows = self._run(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name IN (%s, %s)",
            (self.keyspace, self.table, self.lock_table),
            consistency=ConsistencyLevel.ONE,
        )
        return len(list(rows)) == 2

    def ensure(self) -> None:
        """Create both tables unless they exist."""
        if self.exists():
            return
        definitions = {
            self.table: (
                "version text PRIMARY KEY, name text, checksum text, state text, statements_done int, "
                "statements_total int, ran_digest text, error text, run_by text, how text, started_at timestamp, "
                "finished_at timestamp"
            ),
            self.lock_table: "name text PRIMARY KEY, owner text, acquired_at timestamp, renewed_at timestamp",
        }
        for name, columns in definitions.items():
            table_id = uuid.uuid5(_TABLE_ID_NAMESPACE, f"{self.keyspace}.{name}")
            result = self._run(
                f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{name} ({columns}) "
                f"WITH ID = {table_id} AND comment = 'flask-cqlalchemy migrations'",
                consistency=ConsistencyLevel.ONE,
            )
            self._wait_for_agreement(result)

    # -- records ---------------------------------------------------------------

    def records(self) -> dict[str, Record]:
        """Every recorded migration by version (empty if the table does not exist)."""
        if not self.exists():
            return {}
        rows = self._run(
            f"SELECT version, name, checksum, state, statements_done, statements_total, ran_digest, error, run_by, "
            f"how, started_at, finished_at FROM {self.qualified}"
        )
        records = {}
        for row in map(_as_dict, rows):
            records[row["version"]] = Record(
                version=row["version"],
                name=row["name"],
                checksum=row["checksum"],
                state=row["state"],
                statements_done=row["statements_done"] or 0,
                statements_total=row["statements_total"],
                ran_digest=row["ran_digest"],
                error=row["error"],
                run_by=row["run_by"],
                how=row["how"],
                started_at=_utc(row["started_at"]),
                finished_at=_utc(row["finished_at"]),
            )
        return records

    def begin(self, version: str, name: str, checksum: str, total: int | None, run_by: str) -> None:
        """Record a migration as started (it must have no row yet)."""
        self._lwt(
            f"INSERT INTO {self.qualified} (version, name, checksum, state, statements_done, statements_total, "
            f"run_by, how, started_at) VALUES (%s, %s, %s, %s, 0, %s, %s, %s, %s) IF NOT EXISTS",
            (version, name, checksum, IN_PROGRESS, total, run_by, RAN, _now()),
            f"migration {version} was recorded by another runner meanwhile",
            lambda row: row.get("run_by") == run_by,
        )

    def resume(self, record: Record, checksum: str, total: int | None, run_by: str) -> None:
        """Take over a FAILED or IN_PROGRESS migration, keeping its count of statements done."""
        self._lwt(
            f"UPDATE {self.qualified} SET state = %s, checksum = %s, statements_total = %s, run_by = %s, "
            f"error = null, started_at = %s WHERE version = %s IF state = %s AND run_by = %s",
            (IN_PROGRESS, checksum, total, run_by, _now(), record.version, record.state, record.run_by),
            f"migration {record.version} changed state meanwhile",
            lambda row: row.get("state") == IN_PROGRESS and row.get("run_by") == run_by,
        )

    def progress(self, version: str, done: int, run_by: str, ran_digest: str | None = None) -> None:
        self._lwt(
            f"UPDATE {self.qualified} SET statements_done = %s, ran_digest = %s WHERE version = %s "
            f"IF state = %s AND run_by = %s",
            (done, ran_digest, version, IN_PROGRESS, run_by),
            f"migration {version} is no longer ours to record",
            lambda row: False,  # a retry applies again if the first one did
        )

    def succeed(self, version: str, done: int, run_by: str) -> None:
        self._lwt(
            f"UPDATE {self.qualified} SET state = %s, statements_done = %s, finished_at = %s "
            f"WHERE version = %s IF state = %s AND run_by = %s",
            (SUCCEEDED, done, _now(), version, IN_PROGRESS, run_by),
            f"migration {version} is no longer ours to record",
            lambda row: row.get("state") == SUCCEEDED and row.get("run_by") == run_by,
        )

    def fail(self, version: str, done: int, error: str, run_by: str, ran_digest: str | None = None) -> None:
        self._lwt(
            f"UPDATE {self.qualified} SET state = %s, statements_done = %s, ran_digest = %s, error = %s, "
            f"finished_at = %s WHERE version = %s IF state = %s AND run_by = %s",
            (FAILED, done, ran_digest, error[:2000], _now(), version, IN_PROGRESS, run_by),
            f"migration {version} is no longer ours to record",
            lambda row: row.get("state") == FAILED and row.get("run_by") == run_by,
        )

    def mark_applied(
        self, version: str, name: str, checksum: str, how: str, run_by: str, previous: Record | None
    ) -> None:
        """Record a migration as SUCCEEDED without running it (stamp, baseline)."""
        now = _now()
        if previous is None:
            self._lwt(
                f"INSERT INTO {self.qualified} (version, name, checksum, state, statements_done, run_by, how, "
                f"started_at, finished_at) VALUES (%s, %s, %s, %s, 0, %s, %s, %s, %s) IF NOT EXISTS",
                (version, name, checksum, SUCCEEDED, run_by, how, now, now),
                f"migration {version} was recorded by another runner meanwhile",
                lambda row: row.get("run_by") == run_by,
            )
        else:
            self._lwt(
                f"UPDATE {self.qualified} SET state = %s, name = %s, checksum = %s, run_by = %s, how = %s, "
                f"finished_at = %s WHERE version = %s IF state = %s AND checksum = %s",
                (SUCCEEDED, name, checksum, run_by, how, now, version, previous.state, previous.checksum),
                f"migration {version} changed state meanwhile",
                lambda row: row.get("state") == SUCCEEDED and row.get("checksum") == checksum,
            )

    # -- plumbing --------------------------------------------------------------

    def _run(self, cql: str, params: Any = None, *, consistency: int = ConsistencyLevel.QUORUM) -> Any:
        return self.session.execute(SimpleStatement(cql, consistency_level=consistency), params)

    def cas(self, cql: str, params: Any, ours: Callable[[dict[str, Any]], bool]) -> tuple[bool, dict[str, Any]]:
        """Run a lightweight transaction; return whether it applied and the row it returned.

        A transaction that times out, or whose result the node reports as
        unknown (runners contending for the lock), may or may not have
        applied: it is sent again, and a retry that does not apply but finds the row as this
        writer left it (``ours(row)``) counts as applied.
        """
        retried = False
        for attempt in range(1, CAS_ATTEMPTS + 1):
            try:
                result = self._run(cql, params)
            except (WriteTimeout, ReadTimeout, OperationTimedOut, ErrorMessage) as exc:
                if isinstance(exc, ErrorMessage) and exc.code != CAS_WRITE_UNKNOWN:
                    raise
                if attempt == CAS_ATTEMPTS:
                    raise
                log.warning("lightweight transaction timed out (attempt %s of %s): %s", attempt, CAS_ATTEMPTS, exc)
                retried = True
                time.sleep(0.25 * attempt)
                continue
            row = _as_dict(result.one())
            return bool(result.was_applied) or (retried and ours(row)), row
        raise AssertionError("unreachable")  # pragma: no cover

    def _lwt(self, cql: str, params: Any, conflict: str, ours: Callable[[dict[str, Any]], bool]) -> None:
        applied, _ = self.cas(cql, params, ours)
        if not applied:
            raise MigrationError(f"{conflict}; nothing was overwritten (run `status` to see it)")


def _as_dict(row: Any) -> dict[str, Any]:
    """A row as a dict, whatever the session's row factory (cqlengine's gives dicts)."""
    if row is None:
        return {}
    if isinstance(row, dict):
        return row
    return dict(row._asdict())


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    return value.replace(tzinfo=datetime.timezone.utc) if value is not None and value.tzinfo is None else value


class MigrationLock:
    """The one-runner-at-a-time lock: a row inserted with ``IF NOT EXISTS``
    and a TTL, renewed by a background thread at a third of the TTL while
    held. A runner killed while holding it leaves a row that expires by
    itself after the TTL.

    Use as a context manager, or :meth:`acquire` then :meth:`release`.
    :meth:`check` raises :class:`LockLost` once the lock could not be kept.
    """

    def __init__(self, table: StateTable, owner: str, ttl: int, wait: float) -> None:
        self.table = table
        self.owner = owner
        self.ttl = ttl
        self.wait = wait
        self._held = False
        self._acquired_at = _now()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def _qualified(self) -> str:
        return f"{self.table.keyspace}.{self.table.lock_table}"

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock, waiting up to ``wait`` seconds for another runner.

        Raises :class:`LockTimeout` naming the holder when it is not free in time.
        """
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            self._acquired_at = _now()
            applied, holder = self.table.cas(
                f"INSERT INTO {self._qualified} (name, owner, acquired_at, renewed_at) VALUES (%s, %s, %s, %s) "
                f"IF NOT EXISTS USING TTL %s",
                (_LOCK_NAME, self.owner, self._acquired_at, self._acquired_at, self.ttl),
                lambda row: row.get("owner") == self.owner,
            )
            if applied:
                break
            who = holder.get("owner") or "another runner"
            since = holder.get("acquired_at")
            description = f"{who}" + (f" (since {_utc(since):%Y-%m-%d %H:%M:%S} UTC)" if since else "")
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another runner holds the migration lock of keyspace {self.table.keyspace}: {description}; "
                    f"waited {self.wait:g} s (CASSANDRA_MIGRATIONS_LOCK_WAIT). If that runner died, its lock "
                    f"expires by itself within CASSANDRA_MIGRATIONS_LOCK_TTL seconds; then run `upgrade --resume` "
                    f"if `status` shows a migration IN_PROGRESS"
                )
            if on_wait is not None and not told:
                on_wait(f"waiting for the migration lock held by {description}")
                told = True
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._held = True
        self._lost = None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_released, name="cql-migrate-lock", daemon=True)
        self._renewer.start()

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock could not be kept."""
        if self._lost is not None:
            raise LockLost(self._lost)

    def release(self) -> None:
        """Stop renewing and delete the lock row if it is still ours."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self.table.cas(
                f"DELETE FROM {self._qualified} WHERE name = %s IF owner = %s",
                (_LOCK_NAME, self.owner),
                lambda row: not row.get("owner"),
            )
        except Exception as exc:  # it expires by itself: report, do not mask the real outcome
            log.warning("could not release the migration lock (it expires within %s s): %s", self.ttl, exc)

    def _renew_until_released(self) -> None:
        interval = self.ttl / 3
        last_renewed = time.monotonic()
        wait = interval
        while not self._stop.wait(wait):
            try:
                applied, _ = self.table.cas(
                    f"UPDATE {self._qualified} USING TTL %s SET owner = %s, acquired_at = %s, renewed_at = %s "
                    f"WHERE name = %s IF owner = %s",
                    (self.ttl, self.owner, self._acquired_at, _now(), _LOCK_NAME, self.owner),
                    lambda row: False,  # a retry applies again while the lock is ours
                )
            except Exception as exc:
                log.warning("could not renew the migration lock: %s", exc)
                # The row expires ttl seconds after the last renewal: give up
                # while there is still time to stop before another runner can
                # take it, and retry often until then.
                if time.monotonic() - last_renewed >= self.ttl * 2 / 3:
                    self._lost = f"the migration lock could not be renewed for {self.ttl * 2 / 3:g} s ({exc})"
                    return
                wait = min(interval, 1.0)
                continue
            if not applied:
                self._lost = "the migration lock expired or was taken by another runner while this one was running"
                return
            last_renewed = time.monotonic()
            wait = interval

    def __enter__(self) -> MigrationLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

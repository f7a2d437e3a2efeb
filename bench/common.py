"""What every scenario shares: the node, the keyspace, the models, the data.

Three separate driver clusters talk to the same node, one per family of
contenders, so that no contender runs through another one's code:

* the Flask app's own connection, made by ``AsyncCQLAlchemy.init_app`` (the
  facade, and the sync view of scenario 4);
* a plain cqlengine connection registered as cqlengine's default connection
  (aiocqlengine and sync cqlengine in a thread pool: what a user would have
  without this project);
* a bare ``Cluster`` with the cheapest row factory (``tuple_factory``) for the
  raw-driver limit.

All three use the same cluster options (protocol v5, driver defaults
otherwise). The facade's models are declared on ``adb.Model`` before any app
exists (the app factory pattern), so importing this module connects nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.cqlengine import columns
from cassandra.cqlengine import connection as cqlengine_connection
from cassandra.cqlengine import models as cqlengine_models
from cassandra.query import tuple_factory
from flask import Flask

from flask_cqlalchemy.aio import AsyncCQLAlchemy

HOSTS = [h.strip() for h in os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip()]
PORT = int(os.environ.get("CASSANDRA_PORT", "9042"))
KEYSPACE = "flask_cqlalchemy_bench"
PROTOCOL_VERSION = 5
PLAIN_CONNECTION = "bench_plain_cqlengine"
PRELOADED_ROWS = 10_000
#: Rows written by the insert scenario expire after a day, so repeated runs
#: do not grow the bench keyspace without bound.
INSERT_TTL = 86_400

# -- the models --------------------------------------------------------------
# One table read by scenarios 1, 3, 4, 5 (pre-loaded, never written after),
# one table written by scenario 2. Each contender family declares its own
# model class over the same two tables.

adb = AsyncCQLAlchemy()


def _user_columns() -> dict[str, Any]:
    return {
        "id": columns.UUID(primary_key=True, default=uuid.uuid4),
        "name": columns.Text(),
        "email": columns.Text(),
        "city": columns.Text(),
        "age": columns.Integer(),
        "score": columns.Integer(),
    }


def _model(base: type, name: str, table: str, extra: dict[str, Any] | None = None) -> Any:
    attrs: dict[str, Any] = {"__table_name__": table, "__keyspace__": KEYSPACE, "__module__": __name__}
    attrs.update(_user_columns())
    attrs.update(extra or {})
    return type(base)(name, (base,), attrs)


_insert_options = {"__options__": {"default_time_to_live": INSERT_TTL}}

#: The facade's models (this project).
BenchUser = _model(adb.Model, "BenchUser", "bench_user")
BenchInsert = _model(adb.Model, "BenchInsert", "bench_insert", _insert_options)

#: Plain cqlengine models on cqlengine's default connection (no flask_cqlalchemy code).
PlainUser = _model(cqlengine_models.Model, "PlainUser", "bench_user", {"__connection__": PLAIN_CONNECTION})
PlainInsert = _model(
    cqlengine_models.Model, "PlainInsert", "bench_insert", {"__connection__": PLAIN_CONNECTION, **_insert_options}
)


def user_values(i: int) -> dict[str, Any]:
    """The column values of pre-loaded row ``i`` (and of inserted rows)."""
    return {
        "name": f"user {i}",
        "email": f"user{i}@example.com",
        "city": ("Lyon", "Oslo", "Lima", "Pune", "Kobe")[i % 5],
        "age": 18 + i % 60,
        "score": i * 7 % 1000,
    }


def preloaded_id(i: int) -> uuid.UUID:
    """Deterministic keys: re-running the pre-load rewrites the same 10,000 rows."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"flask-cqlalchemy-bench/{i}")


PRELOADED_IDS = [preloaded_id(i) for i in range(PRELOADED_ROWS)]


def key_sequence(count: int, seed: int) -> list[uuid.UUID]:
    """``count`` keys drawn from the pre-loaded rows; the same seed gives every contender the same keys."""
    rng = random.Random(seed)
    return [PRELOADED_IDS[rng.randrange(PRELOADED_ROWS)] for _ in range(count)]


# -- connections -------------------------------------------------------------


@dataclass
class Node:
    """Everything connected: the Flask app (facade), the plain cqlengine connection, the raw session."""

    app: Flask
    raw_cluster: Cluster
    raw: Session
    plain: Any  # cqlengine Connection
    closers: list[Any] = field(default_factory=list)

    @property
    def facade_session(self) -> Session:
        return adb.sync.session

    def shutdown(self) -> None:
        adb.sync.shutdown()
        cqlengine_connection.unregister_connection(PLAIN_CONNECTION)
        self.raw_cluster.shutdown()


def cluster_options() -> dict[str, Any]:
    """Cluster() options of the contenders' own clusters. TCP_NODELAY is what
    the facade's clusters get by default; every contender gets it too, so
    that only the layers above the driver differ."""
    return {
        "port": PORT,
        "protocol_version": PROTOCOL_VERSION,
        "sockopts": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    }


def app_config() -> dict[str, Any]:
    """The config of every benchmark app, Flask's or Quart's: this node, the bench keyspace."""
    return {
        "CASSANDRA_HOSTS": HOSTS,
        "CASSANDRA_KEYSPACE": KEYSPACE,
        "CASSANDRA_PORT": PORT,
        "CASSANDRA_PROTOCOL_VERSION": PROTOCOL_VERSION,
        "SECRET_KEY": "bench",
    }


def make_app(name: str = "bench") -> Flask:
    app = Flask(name)
    app.config.update(app_config())
    return app


def connect(app_name: str = "bench", config: dict[str, Any] | None = None) -> Node:
    """Connect the three clusters (order matters: like the original extension,
    every init_app makes its app's connection cqlengine's default; the plain
    cqlengine connection, registered after it, takes that role back).
    ``config`` adds to the Flask app's config before ``init_app`` reads it."""
    raw_cluster = Cluster(
        HOSTS,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(row_factory=tuple_factory)},
        **cluster_options(),
    )
    raw = raw_cluster.connect()
    raw.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    app = make_app(app_name)
    app.config.update(config or {})
    adb.init_app(app)
    plain = cqlengine_connection.register_connection(
        PLAIN_CONNECTION, hosts=HOSTS, cluster_options=cluster_options(), default=True
    )
    return Node(app=app, raw_cluster=raw_cluster, raw=raw, plain=plain)


def ensure_schema_and_data(node: Node, log: Any = print) -> float:
    """Create the tables and (re)write the 10,000 pre-loaded rows; return seconds taken."""
    started = time.perf_counter()
    with node.app.app_context():
        adb.sync.sync_db()
    insert = node.raw.prepare(
        f"INSERT INTO {KEYSPACE}.bench_user (id, name, email, city, age, score) VALUES (?, ?, ?, ?, ?, ?)"
    )
    rows = []
    for i, key in enumerate(PRELOADED_IDS):
        v = user_values(i)
        rows.append((key, v["name"], v["email"], v["city"], v["age"], v["score"]))
    count = -1
    for _attempt in range(2):
        results = execute_concurrent_with_args(node.raw, insert, rows, concurrency=100, raise_on_first_error=True)
        assert all(ok for ok, _ in results)
        count = node.raw.execute(f"SELECT COUNT(*) FROM {KEYSPACE}.bench_user", timeout=60).one()[0]
        if count == PRELOADED_ROWS:
            break
        # Rows left by something else in the benchmark's own keyspace: start afresh.
        log(f"{KEYSPACE}.bench_user holds {count} rows, not {PRELOADED_ROWS}: truncating it and loading again")
        node.raw.execute(f"TRUNCATE {KEYSPACE}.bench_user", timeout=120)
    if count != PRELOADED_ROWS:
        raise RuntimeError(f"{KEYSPACE}.bench_user holds {count} rows after reloading, expected {PRELOADED_ROWS}")
    took = time.perf_counter() - started
    log(f"pre-loaded {PRELOADED_ROWS:,} rows into {KEYSPACE}.bench_user in {took:.1f} s")
    return took


def cassandra_version(node: Node) -> str:
    return str(node.raw.execute("SELECT release_version FROM system.local").one()[0])


def node_process() -> Any:
    """The local Cassandra process listening on the CQL port (psutil.Process), or None."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == PORT and conn.pid:
                return psutil.Process(conn.pid)
    except Exception:  # noqa: BLE001 - not permitted, not local: the figure is just left out
        return None
    return None


def cpu_seconds(process: Any) -> float:
    if process is None:
        return float("nan")
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except Exception:  # noqa: BLE001
        return float("nan")


# -- the raw-driver bridge ---------------------------------------------------


def bridge(loop: asyncio.AbstractEventLoop, response: Any) -> asyncio.Future[Any]:
    """The minimal ResponseFuture -> asyncio future bridge of the raw-driver limit:
    the driver's callback hands the first page's rows to the loop, nothing else."""
    future = loop.create_future()

    def ok(rows: Any) -> None:
        loop.call_soon_threadsafe(_set_result, future, rows)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_set_exception, future, exc)

    response.add_callbacks(ok, failed)
    return future


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# -- measuring helpers --------------------------------------------------------


class Ticker:
    """Largest interval between wake-ups of a task sleeping 1 ms at a time.

    Reported as measured (it includes the 1 ms sleep itself), so it is an
    upper bound of the longest time the loop could not run a ready task.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.largest_gap = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.ticks += 1
            if now - last > self.largest_gap:
                self.largest_gap = now - last
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class GcPauses:
    """Collects the duration of every garbage collection while active."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        import gc

        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._callback)

    @property
    def largest(self) -> float:
        return max(self.pauses, default=0.0)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rotated(items: list[Any], round_index: int) -> list[Any]:
    """The contenders in the order of round ``round_index``: each one goes first in turn."""
    if not items:
        return []
    shift = round_index % len(items)
    return items[shift:] + items[:shift]

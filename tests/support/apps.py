"""App factories the tests serve in a separate process.

Every factory builds ``examples/async_app`` (the notes service, all of its
views ``async def`` on flask-cqlalchemy's async facade) for one test's
Cassandra node, plus a few ``/_test/...`` routes that report on the serving
process from the inside: its threads, file descriptors, memory, event loops
and driver connections.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from flask import Flask, jsonify, request

from examples.async_app import create_app, init_schema
from examples.async_app.extensions import adb


def notes_app(
    *,
    hosts: list[str],
    keyspace: str,
    port: int | None = None,
    request_timeout: float | None = None,
    connect_timeout: float | None = None,
    reconnect_delay: float | None = None,
    lazy_connect: bool = False,
    retry_connect: bool = False,
    consistency: str | None = None,
    replication_factor: int = 1,
    create_schema: bool = True,
    async_loops: str | None = None,
) -> Flask:
    """The notes service for ``hosts``; creates its keyspace and tables unless
    ``create_schema`` is false (e.g. when the node is meant to be down).
    ``async_loops`` sets ``CASSANDRA_ASYNC_LOOPS`` ("per-request" or
    "per-thread"); None keeps the example's own setting (per-thread)."""
    setup: dict[str, Any] = {}
    if request_timeout is not None:
        # The driver's default policy, spelled out (it warns otherwise).
        policy = TokenAwarePolicy(DCAwareRoundRobinPolicy())
        setup["execution_profiles"] = {
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=policy, request_timeout=request_timeout)
        }
    if connect_timeout is not None:
        setup["connect_timeout"] = connect_timeout
        setup["control_connection_timeout"] = connect_timeout
    if reconnect_delay is not None:
        setup["reconnection_policy"] = ConstantReconnectionPolicy(reconnect_delay, max_attempts=None)
    config: dict[str, Any] = {
        "CASSANDRA_HOSTS": hosts,
        "CASSANDRA_KEYSPACE": keyspace,
        "CASSANDRA_LAZY_CONNECT": lazy_connect,
        "CASSANDRA_RETRY_CONNECT": retry_connect,
        "CASSANDRA_SETUP_KWARGS": setup,
        "SECRET_KEY": "reliability-tests",
    }
    if port is not None:
        config["CASSANDRA_PORT"] = port
    if consistency is not None:
        config["CASSANDRA_CONSISTENCY"] = consistency
    if async_loops is not None:
        config["CASSANDRA_ASYNC_LOOPS"] = async_loops
    app = create_app(config)
    if create_schema:
        init_schema(app, replication_factor)
    add_test_routes(app)
    return app


def add_test_routes(app: Flask) -> None:
    app.add_url_rule("/_test/stats", view_func=stats)
    app.add_url_rule("/_test/whoami", view_func=whoami)
    app.add_url_rule("/_test/raise", view_func=raising)
    app.before_request(note_serving_thread)


#: Names of the server threads that have served a request (a sync
#: before_request function runs in the server's own thread, whatever runs
#: the async view).
SERVING_THREADS: set[str] = set()


def note_serving_thread() -> None:
    SERVING_THREADS.add(threading.current_thread().name)


def process_stats(collect: bool = True) -> dict[str, Any]:
    """Threads, fds, RSS and event loops of this process, after a full GC
    unless ``collect`` is false (then as the process is, garbage and all)."""
    if collect:
        gc.collect()
    # type(), not isinstance(): isinstance() on a dead weakref.proxy raises.
    loops = [obj for obj in gc.get_objects() if issubclass(type(obj), asyncio.AbstractEventLoop)]
    with open("/proc/self/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "pid": os.getpid(),
        "threads": threading.active_count(),
        "thread_names": sorted(t.name for t in threading.enumerate()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss_kib,
        "loops_alive": len(loops),
        "loops_open": sum(not loop.is_closed() for loop in loops),
        "serving_threads": sorted(SERVING_THREADS),
    }


def stats() -> Any:
    """``?gc=0``: the figures without a garbage collection first."""
    return jsonify(process_stats(collect=request.args.get("gc") != "0"))


class ViewFailed(Exception):
    """What /_test/raise raises: an unhandled error, so a 500."""


async def raising() -> Any:
    """An async view that awaits a query, then raises (Flask answers 500)."""
    await adb.execute("SELECT release_version FROM system.local")
    raise ViewFailed("raised on purpose by /_test/raise")


def driver_local_ports() -> list[int]:
    """Local ports of the sockets this process's driver objects use (the
    control connection and one pool connection per host)."""
    cluster, session = adb.sync.cluster, adb.sync.session
    connections = [cluster.control_connection._connection]
    connections += [getattr(pool, "_connection", None) for pool in list(session._pools.values())]
    ports = []
    for connection in connections:
        sock = getattr(connection, "_socket", None)
        if sock is None or connection.is_closed:
            continue
        try:
            ports.append(sock.getsockname()[1])
        except OSError:
            continue
    return sorted(ports)


async def whoami() -> Any:
    """Which process answered, after one awaited and one blocking query."""
    awaited = await adb.execute("SELECT release_version FROM system.local")
    blocking = adb.sync.execute("SELECT release_version FROM system.local").one()
    await asyncio.sleep(0.02)  # so concurrent requests spread over the workers
    return jsonify(
        pid=os.getpid(),
        ppid=os.getppid(),
        release_version=awaited[0]["release_version"],
        blocking_release_version=blocking["release_version"],
        driver_ports=driver_local_ports(),
    )

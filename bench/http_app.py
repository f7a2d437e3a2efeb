"""Scenario 4's server: one Flask app, one view per contender, each doing 10
independent point reads by primary key; served by waitress (threads) on a
loopback port, in its own process (``python -m bench.http_app --port 0``).

Prints ``PORT <n>`` on stdout once it listens.

Views (each picks 10 random pre-loaded keys):

* ``/sync``        a plain ``def`` view doing the 10 reads one after another
                   with this project's sync API (``BenchUser.get``): the baseline;
* ``/facade``      ``async def``, ``asyncio.gather`` of 10 ``BenchUser.aget``;
* ``/raw``         ``async def``, ``asyncio.gather`` of 10 prepared
                   ``execute_async`` reads through the minimal bridge (the limit);
* ``/threadpool``  ``async def``, ``asyncio.gather`` of 10
                   ``sync_to_async(PlainUser.get, thread_sensitive=False)``;
* ``/noop_sync``, ``/noop_async``  no database at all: the fixed cost of a
                   request and of Flask's async bridge;
* ``/aiocqlengine_bound_once``, ``/aiocqlengine_rebound``  aiocqlengine
                   gathers, its session bound to a loop once at start-up or
                   re-bound to the request's loop by every request: probes of
                   whether it can serve Flask's per-request loops at all.

The "HTTP runners" scenario (:mod:`bench.runners_scenario`) uses the views
``/runners/<endpoint>/sync`` and ``/runners/<endpoint>/async`` (see
:data:`RUNNER_ENDPOINTS`), on servers started with ``--async-loops
per-request`` or ``--async-loops per-thread``: the app's
``CASSANDRA_ASYNC_LOOPS`` (without the option the key is not set at all).
``/runners/loops`` tells how many distinct event loops ran the async runner
views so far, and whether the extension replaced ``app.async_to_sync``.
Before ``PORT``, the server prints ``INFO <json>``: the loop mode asked for
and whether ``app.async_to_sync`` was replaced. The work of the one-read and
dashboard endpoints (:func:`read_one`, :func:`dashboard_gathered`, ...) is
in module-level functions that return the JSON body, which the Quart server
of the same scenario (:mod:`bench.quart_app`) serves too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import sys
import threading
import uuid
import weakref
from collections import Counter
from typing import Any

from flask import Flask, jsonify

from . import common
from .common import KEYSPACE, BenchInsert, BenchUser, PlainUser

READS_PER_REQUEST = 10

#: The runners scenario's endpoints: name -> what the sync and the async view do.
RUNNER_ENDPOINTS = {
    "read": ("BenchUser.get", "await BenchUser.aget"),
    "create": ("BenchInsert.create", "await BenchInsert.acreate"),
    "dashboard": ("5 queries one after another", "asyncio.gather of the same 5 queries"),
    "reads10": ("10 BenchUser.get one after another", "asyncio.gather of 10 BenchUser.aget"),
}
#: The values ``--async-loops`` accepts (the app's ``CASSANDRA_ASYNC_LOOPS``).
ASYNC_LOOP_MODES = ("per-request", "per-thread")
DASHBOARD_LATEST = 5
DASHBOARD_HISTOGRAM_KEYS = 5


def build(node: common.Node) -> Any:
    from asgiref.sync import sync_to_async

    app = node.app
    raw = node.raw
    select = raw.prepare(f"SELECT * FROM {KEYSPACE}.bench_user WHERE id = ?")
    name_index = [column[2] for column in select.result_metadata].index("name")
    get_in_thread = sync_to_async(PlainUser.get, thread_sensitive=False)

    def keys() -> list[Any]:
        return random.sample(common.PRELOADED_IDS, READS_PER_REQUEST)

    @app.get("/sync")
    def sync_view() -> Any:
        users = [BenchUser.get(id=k) for k in keys()]
        return jsonify(names=[u.name for u in users])

    @app.get("/facade")
    async def facade_view() -> Any:
        users = await asyncio.gather(*(BenchUser.aget(id=k) for k in keys()))
        return jsonify(names=[u.name for u in users])

    @app.get("/raw")
    async def raw_view() -> Any:
        loop = asyncio.get_running_loop()
        pages = await asyncio.gather(*(common.bridge(loop, raw.execute_async(select, (k,))) for k in keys()))
        return jsonify(names=[rows[0][name_index] for rows in pages])

    @app.get("/threadpool")
    async def threadpool_view() -> Any:
        users = await asyncio.gather(*(get_in_thread(id=k) for k in keys()))
        return jsonify(names=[u.name for u in users])

    @app.get("/noop_sync")
    def noop_sync() -> Any:
        return jsonify(names=[])

    @app.get("/noop_async")
    async def noop_async() -> Any:
        return jsonify(names=[])

    aio_error: list[str] = []
    try:
        from aiocqlengine.models import AioModel
        from aiocqlengine.session import aiosession_for_cqlengine

        aio_user_model = common._model(AioModel, "AioUser", "bench_user", {"__connection__": common.PLAIN_CONNECTION})
        # "Bound once": what its README does, in a process whose requests each
        # get a fresh loop from Flask. At start-up there is no running loop,
        # so this is the main thread's (never run) loop.
        startup_loop = asyncio.new_event_loop()
        aiosession_for_cqlengine(node.plain.session, loop=startup_loop)
    except Exception as exc:  # noqa: BLE001 - reported by the probe
        aio_error.append(f"{type(exc).__name__}: {exc}")

    @app.get("/aiocqlengine_bound_once")
    async def aiocqlengine_bound_once() -> Any:
        if aio_error:
            return jsonify(error=aio_error[0]), 500
        users = await asyncio.gather(*(aio_user_model.async_get(id=k) for k in keys()))
        return jsonify(names=[u.name for u in users])

    @app.get("/aiocqlengine_rebound")
    async def aiocqlengine_rebound() -> Any:
        if aio_error:
            return jsonify(error=aio_error[0]), 500
        aiosession_for_cqlengine(node.plain.session, loop=asyncio.get_running_loop())
        users = await asyncio.gather(*(aio_user_model.async_get(id=k) for k in keys()))
        return jsonify(names=[u.name for u in users])

    add_runner_views(app)

    @app.errorhandler(Exception)
    def failed(exc: Exception) -> Any:
        return jsonify(error=f"{type(exc).__name__}: {exc}"), 500

    return app


class LoopTally:
    """Counts the async runner views' requests and the distinct event loops
    that ran them (per-request: one loop per request; per-thread: at most one
    per server thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.requests = 0
        self.loops = 0

    def note(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self.requests += 1
            if loop not in self._seen:
                self._seen.add(loop)
                self.loops += 1


def async_to_sync_replaced(app: Flask) -> bool:
    """Whether something (the extension's ``CASSANDRA_ASYNC_LOOPS``) replaced Flask's ``async_to_sync``."""
    return getattr(app.async_to_sync, "__func__", None) is not Flask.async_to_sync


# The one-read and dashboard endpoints' work, shared with the Quart server
# (bench.quart_app): each returns the JSON body as a dict, and each
# framework's view turns it into its own response.


def read_one_sync() -> dict[str, Any]:
    return {"name": BenchUser.get(id=random.choice(common.PRELOADED_IDS)).name}


async def read_one() -> dict[str, Any]:
    return {"name": (await BenchUser.aget(id=random.choice(common.PRELOADED_IDS))).name}


def dashboard_queries() -> tuple[Any, Any, Any, Any, Any]:
    """The dashboard: five independent queries of kinds a dashboard makes (like
    examples/async_app's): a count, the first rows of a scan, one row, a
    streamed histogram over several partitions, a filtered count."""
    keys = random.sample(common.PRELOADED_IDS, 3 + DASHBOARD_HISTOGRAM_KEYS)
    counted, first, filtered, streamed = keys[0], keys[1], keys[2], keys[3:]
    return (
        BenchUser.objects(id=counted),
        BenchUser.objects.limit(DASHBOARD_LATEST),
        BenchUser.objects(id=first),
        BenchUser.objects.filter(id__in=streamed).only(["city"]).fetch_size(500),
        BenchUser.objects(id=filtered).filter(city="Lyon").allow_filtering(),
    )


def dashboard_body(count: int, latest: list[Any], one: Any, cities: Counter[str], lyon: int) -> dict[str, Any]:
    return {
        "count": count,
        "latest": [u.name for u in latest],
        "user": one.name if one is not None else None,
        "cities": sorted(cities.items()),
        "in_lyon": lyon,
    }


def dashboard_sequential() -> dict[str, Any]:
    """The five queries one after another (the sync view)."""
    counted, latest, first, streamed, filtered = dashboard_queries()
    cities: Counter[str] = Counter(u.city for u in streamed)
    return dashboard_body(counted.count(), list(latest), first.first(), cities, filtered.count())


async def dashboard_gathered() -> dict[str, Any]:
    """The same five queries, awaited together (``asyncio.gather``)."""
    counted, latest, first, streamed, filtered = dashboard_queries()

    async def histogram() -> Counter[str]:
        cities: Counter[str] = Counter()
        async for u in streamed:
            cities[u.city] += 1
        return cities

    count, rows, one, cities, lyon = await asyncio.gather(
        counted.acount(), latest.aall(), first.afirst(), histogram(), filtered.acount()
    )
    return dashboard_body(count, rows, one, cities, lyon)


def add_runner_views(app: Flask) -> None:
    """The runners scenario's views: each endpoint of :data:`RUNNER_ENDPOINTS`
    as a plain ``def`` view (``/runners/<name>/sync``) and an ``async def``
    one (``/runners/<name>/async``), on the facade's models."""
    tally = LoopTally()
    counter = itertools.count()

    def new_user() -> dict[str, Any]:
        return {"id": uuid.uuid4(), **common.user_values(next(counter) % common.PRELOADED_ROWS)}

    @app.get("/runners/read/sync")
    def read_sync() -> Any:
        return jsonify(read_one_sync())

    @app.get("/runners/read/async")
    async def read_async() -> Any:
        tally.note()
        return jsonify(await read_one())

    @app.get("/runners/create/sync")
    def create_sync() -> Any:
        return jsonify(id=str(BenchInsert.create(**new_user()).id))

    @app.get("/runners/create/async")
    async def create_async() -> Any:
        tally.note()
        return jsonify(id=str((await BenchInsert.acreate(**new_user())).id))

    @app.get("/runners/dashboard/sync")
    def dashboard_sync() -> Any:
        return jsonify(dashboard_sequential())

    @app.get("/runners/dashboard/async")
    async def dashboard_async() -> Any:
        tally.note()
        return jsonify(await dashboard_gathered())

    @app.get("/runners/reads10/sync")
    def reads10_sync() -> Any:
        keys = random.sample(common.PRELOADED_IDS, READS_PER_REQUEST)
        return jsonify(names=[BenchUser.get(id=k).name for k in keys])

    @app.get("/runners/reads10/async")
    async def reads10_async() -> Any:
        tally.note()
        keys = random.sample(common.PRELOADED_IDS, READS_PER_REQUEST)
        users = await asyncio.gather(*(BenchUser.aget(id=k) for k in keys))
        return jsonify(names=[u.name for u in users])

    @app.get("/runners/loops")
    def loops() -> Any:
        return jsonify(
            async_requests=tally.requests,
            event_loops=tally.loops,
            async_loops=app.config.get("CASSANDRA_ASYNC_LOOPS"),
            async_to_sync_replaced=async_to_sync_replaced(app),
        )


def connect(async_loops: str | None) -> common.Node:
    """:func:`bench.common.connect`, with ``CASSANDRA_ASYNC_LOOPS`` in the
    app's config when ``async_loops`` is given."""
    config = {} if async_loops is None else {"CASSANDRA_ASYNC_LOOPS": async_loops}
    return common.connect("bench_http", config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--async-loops",
        choices=ASYNC_LOOP_MODES,
        help="the app's CASSANDRA_ASYNC_LOOPS (default: not set, Flask's own bridge)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from waitress.server import create_server

    node = connect(args.async_loops)
    app = build(node)
    server = create_server(app, host="127.0.0.1", port=args.port, threads=args.threads)
    info = {"async_loops": args.async_loops, "async_to_sync_replaced": async_to_sync_replaced(app)}
    print(f"INFO {json.dumps(info)}", flush=True)
    print(f"PORT {server.effective_port}", flush=True)
    try:
        server.run()
    finally:
        server.close()


if __name__ == "__main__":
    main()

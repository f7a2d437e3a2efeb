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
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from typing import Any

from flask import jsonify

from . import common
from .common import KEYSPACE, BenchUser, PlainUser

READS_PER_REQUEST = 10


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

    @app.errorhandler(Exception)
    def failed(exc: Exception) -> Any:
        return jsonify(error=f"{type(exc).__name__}: {exc}"), 500

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from waitress.server import create_server

    node = common.connect("bench_http")
    app = build(node)
    server = create_server(app, host="127.0.0.1", port=args.port, threads=args.threads)
    print(f"PORT {server.effective_port}", flush=True)
    try:
        server.run()
    finally:
        server.close()


if __name__ == "__main__":
    main()

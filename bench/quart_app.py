"""Scenario 6's Quart server: the one-read and dashboard endpoints of
:mod:`bench.http_app` as Quart views, served by hypercorn on a loopback port,
in its own process (``python -m bench.quart_app --port 0``).

The app is a ``Quart`` app set up with the same ``AsyncCQLAlchemy`` (the
facade's models of :mod:`bench.common`) and the same config as the Flask
apps; the views do the same work as the Flask async views, through the
functions :mod:`bench.http_app` shares (:func:`~bench.http_app.read_one`,
:func:`~bench.http_app.dashboard_gathered`):

* ``/runners/read/async``       ``await BenchUser.aget(...)``;
* ``/runners/dashboard/async``  ``asyncio.gather`` of the dashboard's 5 queries;
* ``/runners/loops``            how many distinct event loops ran those views
                                (one: Quart serves every request on hypercorn's loop).

hypercorn runs as one would deploy it on a 2-core machine whose Cassandra
node shares the cores: one worker process (as each waitress server of the
scenario is one process) on asyncio's own event loop (worker class
``asyncio``; the INFO line says whether uvloop is installed, which the
bench extra does not install), idle keep-alive connections kept open for
:data:`KEEP_ALIVE_TIMEOUT` s as waitress keeps its channels, so that no
client reconnects between two batches of a round; no access log (waitress
writes none either).

It is served through ``hypercorn.asyncio.serve``, the worker code that
``hypercorn --workers 1 --worker-class asyncio`` runs in its one worker
process, without the idle supervising parent. Prints ``INFO <json>`` (the
hypercorn settings) then ``PORT <n>`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import socket
import sys
from importlib import metadata
from typing import Any

from . import common
from .http_app import LoopTally, dashboard_gathered, read_one

#: The endpoints of :data:`bench.http_app.RUNNER_ENDPOINTS` this server has.
ENDPOINTS = ("read", "dashboard")
WORKERS = 1
WORKER_CLASS = "asyncio"
#: Seconds an idle keep-alive connection stays open (hypercorn's default is 5;
#: waitress closes idle channels after 120).
KEEP_ALIVE_TIMEOUT = 120.0


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def build() -> Any:
    """The Quart app: the facade's extension initialised on it, the two endpoints, ``/runners/loops``."""
    from quart import Quart

    app = Quart("bench_quart")
    app.config.update(common.app_config())
    common.adb.init_app(app)
    tally = LoopTally()

    @app.get("/runners/read/async")
    async def read_async() -> Any:
        tally.note()
        return await read_one()

    @app.get("/runners/dashboard/async")
    async def dashboard_async() -> Any:
        tally.note()
        return await dashboard_gathered()

    @app.get("/runners/loops")
    async def loops() -> Any:
        return {"async_requests": tally.requests, "event_loops": tally.loops}

    @app.errorhandler(Exception)
    async def failed(exc: Exception) -> Any:
        return {"error": f"{type(exc).__name__}: {exc}"}, 500

    return app


def listening_socket(port: int, backlog: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free port), so clients may
    connect (and wait in the backlog) as soon as ``PORT`` is printed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(backlog)
    return sock


async def serve(app: Any, port: int) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.workers = WORKERS
    config.worker_class = WORKER_CLASS
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    sock = listening_socket(port, config.backlog)
    bound = sock.getsockname()[1]
    # hypercorn takes the listening socket over by its file descriptor.
    config.bind = [f"fd://{sock.detach()}"]
    loop = asyncio.get_running_loop()
    info = {
        "server": f"hypercorn {metadata.version('hypercorn')}",
        "framework": f"Quart {metadata.version('quart')}",
        "workers": config.workers,
        "worker_class": config.worker_class,
        "event_loop": f"{type(loop).__module__}.{type(loop).__name__}",
        "uvloop_installed": uvloop_installed(),
        "keep_alive_timeout_s": config.keep_alive_timeout,
        "access_log": config.accesslog is not None,
        "endpoints": list(ENDPOINTS),
    }
    print(f"INFO {json.dumps(info)}", flush=True)
    print(f"PORT {bound}", flush=True)
    await hypercorn_serve(app, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(build(), args.port))


if __name__ == "__main__":
    main()

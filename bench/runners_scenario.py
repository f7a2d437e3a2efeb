"""Scenario 6, "HTTP runners": the same views served four ways.

Four servers, each in its own process on a loopback port, started together
and kept up for the whole scenario. Three serve the Flask app of
:mod:`bench.http_app` with waitress (8 threads each):

* ``sync``         plain ``def`` views (``/runners/<endpoint>/sync``): the baseline;
* ``per-request``  ``async def`` views (``/runners/<endpoint>/async``) with
                   ``CASSANDRA_ASYNC_LOOPS = "per-request"``: Flask's own bridge,
                   a new thread and a new event loop for every request;
* ``per-thread``   the same async views with ``"per-thread"``: one long-lived
                   event loop per server thread;

and one serves the Quart app of :mod:`bench.quart_app` with hypercorn (one
worker, asyncio's loop):

* ``quart``        the same async views of the one-read and dashboard
                   endpoints, on Quart: every request on hypercorn's one loop.

Endpoints (:data:`bench.http_app.RUNNER_ENDPOINTS`): one read, one create, a
dashboard of 5 queries (sequential in the sync view, ``asyncio.gather`` in
the async one), 10 reads (sequential / gather); the Quart server has the
one read and the dashboard (:data:`bench.quart_app.ENDPOINTS`).

For each client count (a pool of client threads, each with its own
keep-alive ``requests.Session``, as in scenario 4), alternating rounds: each
round sends the same number of requests to every (runner, endpoint), the
runners of an endpoint one after another, the order rotating from round to
round. Per round and cell: the requests' latencies (client-side, send to
last byte) and the throughput (answered requests / the batch's wall time).
Ratios are taken per round against the sync runner (and against the runners
in a runner's ``compare_to``: per-thread against per-request, Quart against
both Flask async runners) and their median is reported.
"""

from __future__ import annotations

import importlib.util
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import common, quart_app
from .http_app import RUNNER_ENDPOINTS
from .http_scenario import Clients, Server

ENDPOINTS = list(RUNNER_ENDPOINTS)


@dataclass(frozen=True)
class Runner:
    """One way of serving the endpoints: its server, and which view of each endpoint it serves."""

    key: str
    label: str
    #: ``sync`` or ``async``: it serves ``/runners/<endpoint>/<kind>``
    kind: str
    #: ``waitress`` (:mod:`bench.http_app`, ``threads`` threads) or ``hypercorn`` (:mod:`bench.quart_app`)
    server: str = "waitress"
    #: more options of its server's module
    args: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = tuple(ENDPOINTS)
    #: the runners whose req/s and p50 this one is compared with, per round, besides the sync runner
    compare_to: tuple[str, ...] = ()
    #: what its server imports beyond the bench's own requirements
    needs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return "bench.quart_app" if self.server == "hypercorn" else "bench.http_app"

    def missing(self) -> list[str]:
        return [name for name in self.needs if importlib.util.find_spec(name) is None]


#: The runners, the baseline first.
RUNNERS = [
    Runner("sync", "Flask sync views", "sync"),
    Runner(
        "per-request",
        "Flask async views, CASSANDRA_ASYNC_LOOPS per-request (Flask's asgiref bridge)",
        "async",
        args=("--async-loops", "per-request"),
    ),
    Runner(
        "per-thread",
        "Flask async views, CASSANDRA_ASYNC_LOOPS per-thread (one loop per server thread)",
        "async",
        args=("--async-loops", "per-thread"),
        compare_to=("per-request",),
    ),
    Runner(
        "quart",
        f"Quart async views on hypercorn ({quart_app.WORKERS} worker, {quart_app.WORKER_CLASS} loop)",
        "async",
        server="hypercorn",
        endpoints=quart_app.ENDPOINTS,
        compare_to=("per-request", "per-thread"),
        needs=("quart", "hypercorn"),
    ),
]
BASELINE = "sync"


@dataclass
class Cell:
    """One (runner, endpoint, client count): per round, the latencies (s) and the throughput (req/s)."""

    runner: str
    endpoint: str
    clients: int
    latencies: list[list[float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


@dataclass
class RunnersResult:
    clients: list[int]
    per_round: dict[int, int]
    rounds: int
    threads: int
    cells: list[Cell] = field(default_factory=list)
    #: per runner: its server's INFO line and, after the rounds, its /runners/loops answer
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the runners measured (keys of :data:`RUNNERS`), and why any other one was left out
    runners: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> list[Runner]:
        return [r for r in RUNNERS if r.key in self.runners]

    def cell(self, runner: str, endpoint: str, clients: int) -> Cell:
        for c in self.cells:
            if (c.runner, c.endpoint, c.clients) == (runner, endpoint, clients):
                return c
        raise KeyError((runner, endpoint, clients))

    @property
    def per_thread_active(self) -> bool:
        """Whether the per-thread server really ran its async views on long-lived loops."""
        return bool(self.servers.get("per-thread", {}).get("async_to_sync_replaced"))


def requests_per_round(base: int, clients: int, per_client: int = 10) -> int:
    """At least ``per_client`` requests per client thread, so that every client is busy for most of the batch."""
    return max(base, clients * per_client)


def measure(
    servers: dict[str, Server], clients: int, rounds: int, per_round: int, log: Any, result: RunnersResult
) -> None:
    runners = {r.key: r for r in result.active}
    combos = [(endpoint, r.key) for endpoint in ENDPOINTS for r in result.active if endpoint in r.endpoints]

    def url(endpoint: str, runner: str) -> str:
        return servers[runner].url(f"/runners/{endpoint}/{runners[runner].kind}")

    for endpoint, runner in combos:
        result.cells.append(Cell(runner, endpoint, clients))
    pool = Clients(clients)
    try:
        for endpoint, runner in combos:  # warm-up: keep-alive sessions, prepared statements, per-thread loops
            pool.run(url(endpoint, runner), max(clients * 3, 24))
        for r in range(rounds):
            for endpoint, runner in common.rotated(combos, r):
                cell = result.cell(runner, endpoint, clients)
                started = time.perf_counter()
                outcomes = pool.run(url(endpoint, runner), per_round)
                wall = time.perf_counter() - started
                ok = [took for took, error in outcomes if error is None]
                cell.latencies.append(ok)
                cell.rates.append(len(ok) / wall if wall > 0 else float("nan"))
                for _, error in outcomes:
                    if error is not None:
                        cell.errors += 1
                        cell.first_error = cell.first_error or error
            log(
                f"  runners ({clients} client{'s' if clients > 1 else ''}) round {r + 1}/{rounds}: "
                + "; ".join(
                    f"{endpoint} "
                    + "/".join(f"{result.cell(k, e, clients).rates[-1]:.0f}" for e, k in combos if e == endpoint)
                    for endpoint in ENDPOINTS
                )
                + f" req/s ({'/'.join(runners)}, those serving the endpoint)"
            )
    finally:
        pool.close()


def run(
    rounds: int,
    per_round: int,
    client_levels: list[int],
    workdir: Path,
    log: Any,
    threads: int = 8,
    per_client: int = 10,
) -> RunnersResult:
    per_round_by_clients = {c: requests_per_round(per_round, c, per_client) for c in client_levels}
    result = RunnersResult(client_levels, per_round_by_clients, rounds, threads)
    for runner in RUNNERS:
        missing = runner.missing()
        if missing:
            result.unavailable[runner.key] = (
                f"{', '.join(missing)} not installed (the bench extra installs it: pip install -e '.[bench]')"
            )
            log(f"  runner {runner.key} left out: {result.unavailable[runner.key]}")
        else:
            result.runners.append(runner.key)
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for runner in result.active:
            servers[runner.key] = stack.enter_context(
                Server(
                    workdir / f"http_server_runner_{runner.key}.log",
                    threads=threads if runner.server == "waitress" else 0,
                    args=list(runner.args),
                    module=runner.module,
                )
            )
            result.servers[runner.key] = dict(servers[runner.key].info)
        log(
            f"  servers (waitress: {threads} threads each): "
            + ", ".join(f"{k} ({s.module}) on :{s.port}" for k, s in servers.items())
            + f"; per-thread server replaced app.async_to_sync: {result.per_thread_active}"
        )
        if "quart" in servers:
            log(f"  quart server: {json.dumps(result.servers['quart'])}")
        if not result.per_thread_active:
            log(
                "  NOTE: the extension ignored CASSANDRA_ASYNC_LOOPS (no flask_cqlalchemy/runner.py?): "
                "the per-thread server runs Flask's default bridge, like per-request"
            )
        for clients in client_levels:
            measure(servers, clients, rounds, result.per_round[clients], log, result)
        for key, server in servers.items():
            try:
                result.servers[key].update(requests.get(server.url("/runners/loops"), timeout=10).json())
            except (requests.RequestException, ValueError) as exc:
                result.servers[key]["loops_error"] = f"{type(exc).__name__}: {exc}"
        for runner in result.active:
            found = result.servers[runner.key]
            if runner.kind == "async" and "event_loops" in found:
                log(
                    f"  {runner.key} server: its async views ran in {found['event_loops']:,} distinct event "
                    f"loop{'s' if found['event_loops'] != 1 else ''} over {found['async_requests']:,} requests"
                )
    for row in summarize(result):
        if row["runner"] == "quart":
            log(f"  {quart_line(row)}")
    return result


# -- figures -------------------------------------------------------------------


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return common.median([n / d for n, d in zip(numerator, denominator, strict=False) if d])


def _key(runner: str) -> str:
    return runner.replace("-", "_")


def summarize(result: RunnersResult) -> list[dict[str, Any]]:
    """Per (runner, endpoint, clients): medians, pooled percentiles (ms) and per-round ratios.

    ``rps_vs_sync``: median of per-round req/s ratios to the sync runner;
    ``p50_vs_sync``: median of per-round (sync p50 / this p50), i.e. times
    faster; ``p99_vs_sync``: pooled sync p99 / this p99 (and
    ``p99_vs_sync_per_round``, the median of the per-round ones); for each
    runner of its ``compare_to`` (per-thread: per-request; quart: per-request
    and per-thread), ``rps_vs_<runner>`` and ``p50_vs_<runner>`` (``-`` as
    ``_``), the same req/s and p50 ratios against that runner.
    """
    rows = []
    for clients in result.clients:
        for endpoint in ENDPOINTS:
            base = result.cell(BASELINE, endpoint, clients)
            base_p50s = [common.median(r) for r in base.latencies]
            base_p99 = common.percentile([t for r in base.latencies for t in r], 99)
            base_p99s = [common.percentile(r, 99) for r in base.latencies]
            for runner in result.active:
                if endpoint not in runner.endpoints:
                    continue
                cell = result.cell(runner.key, endpoint, clients)
                pooled = [t for r in cell.latencies for t in r]
                p50s = [common.median(r) for r in cell.latencies]
                p99 = common.percentile(pooled, 99)
                row: dict[str, Any] = {
                    "runner": runner.key,
                    "label": runner.label,
                    "endpoint": endpoint,
                    "view": f"/runners/{endpoint}/{runner.kind}",
                    "clients": clients,
                    "requests": len(pooled),
                    "errors": cell.errors,
                    "first_error": cell.first_error,
                    "rps": common.median(cell.rates),
                    "rps_min": min(cell.rates, default=float("nan")),
                    "rps_max": max(cell.rates, default=float("nan")),
                    "p50_ms": common.percentile(pooled, 50) * 1000,
                    "p99_ms": p99 * 1000,
                    "rps_vs_sync": _ratio(cell.rates, base.rates),
                    "p50_vs_sync": _ratio(base_p50s, p50s),
                    "p99_vs_sync": base_p99 / p99 if p99 else float("nan"),
                    "p99_vs_sync_per_round": _ratio(base_p99s, [common.percentile(r, 99) for r in cell.latencies]),
                    "per_round_rps": [round(x, 1) for x in cell.rates],
                    "per_round_p50_ms": [round(x * 1000, 3) for x in p50s],
                    "per_round_p99_ms": [round(common.percentile(r, 99) * 1000, 3) for r in cell.latencies],
                }
                for other in runner.compare_to:
                    if other in result.runners:
                        against = result.cell(other, endpoint, clients)
                        row[f"rps_vs_{_key(other)}"] = _ratio(cell.rates, against.rates)
                        row[f"p50_vs_{_key(other)}"] = _ratio([common.median(r) for r in against.latencies], p50s)
                rows.append(row)
    return rows


def comparisons(row: dict[str, Any]) -> list[tuple[str, float, float]]:
    """A summary row's ratios against runners other than sync: (runner, req/s ratio, p50 ratio)."""
    return [
        (runner.key, row[f"rps_vs_{_key(runner.key)}"], row[f"p50_vs_{_key(runner.key)}"])
        for runner in RUNNERS
        if runner.key != BASELINE and f"rps_vs_{_key(runner.key)}" in row
    ]


def quart_line(row: dict[str, Any]) -> str:
    """One Quart cell and its ratios, for the log."""
    return (
        f"quart {row['endpoint']}, {row['clients']} client{'s' if row['clients'] > 1 else ''}: "
        f"{row['rps']:,.0f} req/s, p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; "
        f"vs Flask sync {row['rps_vs_sync']:.2f}× req/s, {row['p50_vs_sync']:.2f}× p50; "
        + "; ".join(f"vs Flask {k} {rps:.2f}× req/s, {p50:.2f}× p50" for k, rps, p50 in comparisons(row))
    )

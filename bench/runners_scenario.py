"""Scenario 6, "HTTP runners": the same views served three ways.

Three servers (:mod:`bench.http_app`, waitress with 8 threads each, each in
its own process on a loopback port), started together and kept up for the
whole scenario:

* ``sync``         plain ``def`` views (``/runners/<endpoint>/sync``): the baseline;
* ``per-request``  ``async def`` views (``/runners/<endpoint>/async``) with
                   ``CASSANDRA_ASYNC_LOOPS = "per-request"``: Flask's own bridge,
                   a new thread and a new event loop for every request;
* ``per-thread``   the same async views with ``"per-thread"``: one long-lived
                   event loop per server thread.

Endpoints (:data:`bench.http_app.RUNNER_ENDPOINTS`): one read, one create, a
dashboard of 5 queries (sequential in the sync view, ``asyncio.gather`` in
the async one), 10 reads (sequential / gather).

For each client count (a pool of client threads, each with its own
keep-alive ``requests.Session``, as in scenario 4), alternating rounds: each
round sends the same number of requests to every (runner, endpoint), the
three runners of an endpoint one after another, the order rotating from
round to round. Per round and cell: the requests' latencies (client-side,
send to last byte) and the throughput (answered requests / the batch's
wall time). Ratios are taken per round against the sync runner (and
per-thread against per-request) and their median is reported.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import common
from .http_app import RUNNER_ENDPOINTS
from .http_scenario import Clients, Server

#: (key, label, ``--async-loops`` of its server or None, which view kind it serves); the first is the baseline
RUNNERS = [
    ("sync", "sync views", None, "sync"),
    ("per-request", "async views, CASSANDRA_ASYNC_LOOPS per-request (Flask's asgiref bridge)", "per-request", "async"),
    ("per-thread", "async views, CASSANDRA_ASYNC_LOOPS per-thread (one loop per server thread)", "per-thread", "async"),
]
BASELINE = "sync"
ENDPOINTS = list(RUNNER_ENDPOINTS)


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
    combos = [(endpoint, runner) for endpoint in ENDPOINTS for runner, *_ in RUNNERS]
    kinds = {runner: kind for runner, _, _, kind in RUNNERS}
    for endpoint, runner in combos:
        result.cells.append(Cell(runner, endpoint, clients))
    pool = Clients(clients)
    try:
        for endpoint, runner in combos:  # warm-up: keep-alive sessions, prepared statements, per-thread loops
            pool.run(servers[runner].url(f"/runners/{endpoint}/{kinds[runner]}"), max(clients * 3, 24))
        for r in range(rounds):
            for endpoint, runner in common.rotated(combos, r):
                cell = result.cell(runner, endpoint, clients)
                url = servers[runner].url(f"/runners/{endpoint}/{kinds[runner]}")
                started = time.perf_counter()
                outcomes = pool.run(url, per_round)
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
                    + "/".join(f"{result.cell(runner, endpoint, clients).rates[-1]:.0f}" for runner, *_ in RUNNERS)
                    for endpoint in ENDPOINTS
                )
                + " req/s (sync/per-request/per-thread)"
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
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for runner, _, loops, _ in RUNNERS:
            args = ["--async-loops", loops] if loops else []
            servers[runner] = stack.enter_context(
                Server(workdir / f"http_server_runner_{runner}.log", threads=threads, args=args)
            )
            result.servers[runner] = dict(servers[runner].info)
        log(
            f"  servers (waitress, {threads} threads each): "
            + ", ".join(f"{k} on :{s.port}" for k, s in servers.items())
            + f"; per-thread server replaced app.async_to_sync: {result.per_thread_active}"
        )
        if not result.per_thread_active:
            log(
                "  NOTE: the extension ignored CASSANDRA_ASYNC_LOOPS (no flask_cqlalchemy/runner.py?): "
                "the per-thread server runs Flask's default bridge, like per-request"
            )
        for clients in client_levels:
            measure(servers, clients, rounds, result.per_round[clients], log, result)
        for runner, server in servers.items():
            try:
                result.servers[runner].update(requests.get(server.url("/runners/loops"), timeout=10).json())
            except (requests.RequestException, ValueError) as exc:
                result.servers[runner]["loops_error"] = f"{type(exc).__name__}: {exc}"
        for runner in ("per-request", "per-thread"):
            found = result.servers[runner]
            if "event_loops" in found:
                log(
                    f"  {runner} server: its async views ran in {found['event_loops']:,} distinct event loops "
                    f"over {found['async_requests']:,} requests"
                )
    return result


# -- figures -------------------------------------------------------------------


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return common.median([n / d for n, d in zip(numerator, denominator, strict=False) if d])


def summarize(result: RunnersResult) -> list[dict[str, Any]]:
    """Per (runner, endpoint, clients): medians, pooled percentiles (ms) and per-round ratios.

    ``rps_vs_sync``: median of per-round req/s ratios to the sync runner;
    ``p50_vs_sync``: median of per-round (sync p50 / this p50), i.e. times
    faster; ``p99_vs_sync``: pooled sync p99 / this p99 (and
    ``p99_vs_sync_per_round``, the median of the per-round ones); ``vs_per_request``
    (per-thread only): the same req/s and p50 ratios against per-request.
    """
    rows = []
    for clients in result.clients:
        for endpoint in ENDPOINTS:
            base = result.cell(BASELINE, endpoint, clients)
            per_request = result.cell("per-request", endpoint, clients)
            base_p50s = [common.median(r) for r in base.latencies]
            base_p99 = common.percentile([t for r in base.latencies for t in r], 99)
            base_p99s = [common.percentile(r, 99) for r in base.latencies]
            for runner, label, _, kind in RUNNERS:
                cell = result.cell(runner, endpoint, clients)
                pooled = [t for r in cell.latencies for t in r]
                p50s = [common.median(r) for r in cell.latencies]
                p99 = common.percentile(pooled, 99)
                row: dict[str, Any] = {
                    "runner": runner,
                    "label": label,
                    "endpoint": endpoint,
                    "view": f"/runners/{endpoint}/{kind}",
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
                if runner == "per-thread":
                    row["rps_vs_per_request"] = _ratio(cell.rates, per_request.rates)
                    row["p50_vs_per_request"] = _ratio([common.median(r) for r in per_request.latencies], p50s)
                rows.append(row)
    return rows

"""Scenario 4: a view needing 10 independent reads, over a real WSGI server.

The server (:mod:`bench.http_app`, waitress with 8 threads) runs in its own
process on a loopback port; this process drives it with a thread pool of
clients, each with its own ``requests.Session`` (keep-alive). Every round
sends the same number of requests to every view, the order of the views
rotating from round to round; each request's latency is measured by the
client (send to last byte).

Scenario 4b is the same against a second server process whose Cassandra
connections (all three clusters of :mod:`bench.common`) go through
:mod:`bench.latency_proxy`, which adds a fixed round trip to every query:
what a database across a network costs, and what ``asyncio.gather``
overlaps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import common
from .latency_proxy import LatencyProxy, round_trip_ms

#: (view path, label); the first one is the baseline
VIEWS = [
    ("/sync", "sync view, 10 reads one after another (BenchUser.get)"),
    ("/facade", "async view, asyncio.gather of 10 BenchUser.aget (facade)"),
    ("/raw", "async view, gather of 10 raw prepared execute_async"),
    ("/threadpool", "async view, gather of 10 sync_to_async(Model.get)"),
]
DIAGNOSTIC_VIEWS = [
    ("/noop_sync", "sync view, no query (fixed cost of a request)"),
    ("/noop_async", "async view, no query (fixed cost of Flask's async bridge)"),
]
PROBE_VIEWS = [
    ("/aiocqlengine_bound_once", "aiocqlengine, session bound once at start-up (its README's way)"),
    ("/aiocqlengine_rebound", "aiocqlengine, session re-bound to each request's loop"),
]
REQUEST_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0


@dataclass
class ViewSamples:
    path: str
    label: str
    #: per round: the latencies (seconds) of that round's requests
    rounds: list[list[float]] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


@dataclass
class HttpResult:
    clients: int
    per_round: int
    views: dict[str, ViewSamples] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the round trip the proxy adds to every query (0: the server talks to the node directly)
    latency_ms: float = 0.0
    #: median ms of a trivial query, ``direct`` and ``proxied`` (only with a proxy)
    rtt_check: dict[str, float] = field(default_factory=dict)


class Server:
    """``python -m bench.http_app`` (or ``module``) in a subprocess, on a free loopback port.

    ``env`` overrides the subprocess's environment (``CASSANDRA_HOSTS``,
    ``CASSANDRA_PORT``: where its connections go, see :mod:`bench.common`);
    ``args`` are more options of the module (``--async-loops``); ``threads``
    is waitress's, passed as ``--threads`` unless 0 (``bench.quart_app``
    has no threads). ``info`` is what the server printed on its ``INFO`` line.
    """

    def __init__(
        self,
        log_path: Path,
        threads: int = 8,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        module: str = "bench.http_app",
    ) -> None:
        self.log_path = log_path
        self.threads = threads
        self.env = env or {}
        self.args = args or []
        self.module = module
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.info: dict[str, Any] = {}

    def __enter__(self) -> Server:
        root = Path(__file__).resolve().parent.parent
        self._log = open(self.log_path, "w")
        threads = ["--threads", str(self.threads)] if self.threads else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", "0", *threads, *self.args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **self.env},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("INFO "):
                self.info = json.loads(line[5:])
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                break
            if not line and self.process.poll() is not None:
                break
        if not self.port:
            self.__exit__()
            raise RuntimeError(f"the benchmark's HTTP server did not start; see {self.log_path}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Clients:
    """A pool of client threads, each with its own keep-alive ``requests.Session``."""

    def __init__(self, count: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.count = count
        self.timeout = timeout
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="bench-client")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _one(self, url: str) -> tuple[float, str | None]:
        started = time.perf_counter()
        try:
            response = self._session().get(url, timeout=self.timeout)
            body = response.content
            took = time.perf_counter() - started
        except requests.RequestException as exc:
            return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return took, f"HTTP {response.status_code}: {body[:300]!r}"
        return took, None

    def run(self, url: str, count: int) -> list[tuple[float, str | None]]:
        return list(self._pool.map(self._one, [url] * count))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def measure(server: Server, clients: int, rounds: int, per_round: int, log: Any, latency_ms: float = 0.0) -> HttpResult:
    result = HttpResult(clients, per_round, latency_ms=latency_ms)
    views = VIEWS + DIAGNOSTIC_VIEWS
    for path, label in views:
        result.views[path] = ViewSamples(path, label)
    pool = Clients(clients)
    try:
        for path, _ in views:  # warm-up: connections, prepared statements, keep-alive sessions
            pool.run(server.url(path), max(clients * 5, 20))
        for r in range(rounds):
            for path, _ in common.rotated(views, r):
                samples = result.views[path]
                outcomes = pool.run(server.url(path), per_round)
                samples.rounds.append([took for took, error in outcomes if error is None])
                for _, error in outcomes:
                    if error is not None:
                        samples.errors += 1
                        samples.first_error = samples.first_error or error
            variant = f", +{latency_ms:g} ms RTT" if latency_ms else ""
            log(
                f"  http ({clients} clients{variant}) round {r + 1}/{rounds}: "
                + ", ".join(f"{p} p50 {common.median(result.views[p].rounds[-1]) * 1000:.1f} ms" for p, _ in views)
            )
    finally:
        pool.close()
    return result


def probe_aiocqlengine(server: Server, clients: int, requests_count: int) -> dict[str, dict[str, Any]]:
    """Can aiocqlengine serve Flask's per-request loops? Count what its views answer."""
    found: dict[str, dict[str, Any]] = {}
    pool = Clients(clients, timeout=PROBE_TIMEOUT)
    try:
        for path, label in PROBE_VIEWS:
            outcomes = pool.run(server.url(path), requests_count)
            errors = [e for _, e in outcomes if e is not None]
            found[path] = {
                "label": label,
                "requests": requests_count,
                "ok": requests_count - len(errors),
                "errors": len(errors),
                "timeouts": sum("Timeout" in e for e in errors),
                "first_error": errors[0] if errors else "",
            }
    finally:
        pool.close()
    return found


def start_proxy(
    stack: ExitStack, latency_ms: float, workdir: Path, log: Any
) -> tuple[dict[str, str], dict[str, float]]:
    """Start a :class:`LatencyProxy` to the node (closed with ``stack``); check the
    round trip it adds. Returns the server's environment and the check's figures."""
    host, port = common.HOSTS[0], common.PORT
    proxy = stack.enter_context(LatencyProxy(host, port, latency_ms, workdir / "latency_proxy.log"))
    direct = round_trip_ms(host, port, protocol_version=common.PROTOCOL_VERSION)
    proxied = round_trip_ms("127.0.0.1", proxy.port, protocol_version=common.PROTOCOL_VERSION)
    log(
        f"  latency proxy on 127.0.0.1:{proxy.port} -> {host}:{port}, +{latency_ms:g} ms per round trip; "
        f"SELECT from system.local median {direct:.2f} ms direct, {proxied:.2f} ms through it"
    )
    env = {"CASSANDRA_HOSTS": "127.0.0.1", "CASSANDRA_PORT": str(proxy.port)}
    return env, {"direct_ms": round(direct, 3), "proxied_ms": round(proxied, 3)}


def run(
    rounds: int,
    per_round: int,
    client_levels: list[int],
    probe_requests: int,
    workdir: Path,
    log: Any,
    latency_ms: float = 0.0,
) -> list[HttpResult]:
    """Scenario 4 (``latency_ms=0``: the server talks to the node directly) or 4b
    (its connections go through a proxy adding ``latency_ms`` per round trip)."""
    results = []
    with ExitStack() as stack:
        env, rtt_check = start_proxy(stack, latency_ms, workdir, log) if latency_ms else ({}, {})
        suffix = "_latency" if latency_ms else ""
        server = stack.enter_context(Server(workdir / f"http_server{suffix}.log", env=env))
        log(f"  HTTP server (waitress, {server.threads} threads) on 127.0.0.1:{server.port}")
        for clients in client_levels:
            results.append(measure(server, clients, rounds, per_round, log, latency_ms))
            results[-1].rtt_check = rtt_check
        if probe_requests and results:
            # Last: a request whose answer never reaches its (closed) loop keeps
            # a server thread waiting for good.
            results[-1].probes = probe_aiocqlengine(server, min(client_levels[-1], 4), probe_requests)
            for path, found in results[-1].probes.items():
                log(
                    f"  probe {path}: {found['ok']}/{found['requests']} ok, {found['errors']} errors "
                    f"({found['timeouts']} timeouts) {found['first_error'][:160]}"
                )
    return results

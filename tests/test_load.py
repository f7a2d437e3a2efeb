"""20,000 requests at concurrency 64 against the async example app.

The notes app (examples/async_app: every view ``async def``, so Flask runs
each request in its own event loop on its own thread) is served by waitress
with 8 threads in a separate process, against the suite's node. After a
warm-up, the server process reports its threads, file descriptors, memory
(RSS) and live event loops; 20,000 requests follow (writes, reads, pages and
dashboards that gather several queries); then it reports again. No request
may fail, and nothing may have leaked.
"""

from __future__ import annotations

import time

import pytest
import requests

from .conftest import HOSTS
from .support.load import hammer
from .support.server import waitress_app

pytestmark = pytest.mark.slow

KEYSPACE = "flask_cqlalchemy_load"
TOTAL = 20_000
CONCURRENCY = 64
WARMUP = 2_000
USERS = 50
# Leak bounds. Threads and fds come back exactly to the baseline once
# requests stop (the tolerance covers a keep-alive socket not yet reaped);
# memory may grow a little (allocator arenas, caches), not per request.
THREAD_TOLERANCE = 2
FD_TOLERANCE = 4
RSS_GROWTH_LIMIT_MIB = 16  # 0.8 KiB per request


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with waitress_app(
        "tests.support.apps:notes_app",
        tmp_path_factory.mktemp("load") / "server.log",
        threads=8,
        hosts=HOSTS,
        keyspace=KEYSPACE,
    ) as served:
        yield served


def stats_when_idle(server) -> dict:
    """The server's figures once in-flight work has settled."""
    time.sleep(1.0)
    return server.get("/_test/stats").json()


def test_twenty_thousand_requests_at_concurrency_64_no_error_no_leak(server, record_figure):
    notes = {}
    for u in range(USERS):
        response = server.post(f"/users/load-{u}/notes", json={"title": "first", "tags": ["a", "b"]})
        assert response.status_code == 201, response.text
        notes[u] = response.json()["note_id"]

    def one_request(session: requests.Session, i: int) -> requests.Response:
        user = i % USERS
        base = f"{server.url}/users/load-{user}"
        kind = i % 10
        if kind in (0, 1):
            return session.post(f"{base}/notes", json={"title": f"note {i}", "tags": [f"t{i % 7}"]}, timeout=60)
        if kind == 2:
            return session.get(f"{base}/notes", params={"per_page": 5}, timeout=60)
        if kind == 3:
            return session.get(f"{base}/dashboard", timeout=60)
        return session.get(f"{base}/notes/{notes[user]}", timeout=60)

    warmup = hammer(one_request, WARMUP, CONCURRENCY)
    assert warmup.error_count == 0, warmup.errors
    before = stats_when_idle(server)

    result = hammer(one_request, TOTAL, CONCURRENCY)
    after = stats_when_idle(server)

    figures = (
        f"load: {result.summary()} (waitress 8 threads, separate process); server before -> after: "
        f"threads {before['threads']} -> {after['threads']}, fds {before['fds']} -> {after['fds']}, "
        f"RSS {before['rss_kib'] / 1024:.1f} -> {after['rss_kib'] / 1024:.1f} MiB, "
        f"event loops alive {before['loops_alive']} -> {after['loops_alive']} "
        f"(open {before['loops_open']} -> {after['loops_open']})"
    )
    record_figure(figures)
    assert result.requests == TOTAL
    assert result.error_count == 0, f"{result.error_count} failed requests, e.g. {result.errors}"
    assert after["threads"] <= before["threads"] + THREAD_TOLERANCE, (before["thread_names"], after["thread_names"])
    assert after["fds"] <= before["fds"] + FD_TOLERANCE, figures
    assert after["loops_open"] == 0 and after["loops_alive"] <= before["loops_alive"] + 2, figures
    assert (after["rss_kib"] - before["rss_kib"]) / 1024 < RSS_GROWTH_LIMIT_MIB, figures
    assert "Exception on " not in server.log(), server.log()[-3000:]

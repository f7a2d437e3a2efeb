"""The notes service of ``examples/async_app``, driven over real HTTP.

The app runs in waitress (8 threads) against the test node; each check is
what a client would see (status, JSON) and, through a separate driver
session, what Cassandra really holds afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from cassandra.cluster import Cluster
from waitress import wasyncore
from waitress.server import create_server

from examples.async_app import connect, create_app, init_schema
from examples.async_app.app import config_from_env
from examples.async_app.extensions import adb
from flask_cqlalchemy import runner
from flask_cqlalchemy.errors import ConfigError

from .conftest import HOSTS, KEYSPACE

ROOT = Path(__file__).resolve().parent.parent
SERVING_LOOPS: list[asyncio.AbstractEventLoop] = []
TIMEOUT = 30


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve ``app`` with waitress on a free port; yield its base URL."""
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Let the requests in progress finish, then close every socket of the
        # server (listener, trigger, open channels) from the server's own
        # thread, between two selects, so that its loop returns (closing them
        # from here raced the select: EBADF in the server thread).
        server.task_dispatcher.shutdown()
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            # The trigger's pipe is already closed. Seen once in CI, only in
            # test_cluster_lost_while_serving_is_503_json_then_recovers (a
            # driver reconnecting through a cut relay); cause not found. The
            # test had already passed; close what is left from here.
            wasyncore.close_all(server._map)
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def app():
    app = create_app({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "SECRET_KEY": "async-app-tests"})

    @app.get("/_loop")
    async def which_loop():  # which event loop serves this request (tests only)
        SERVING_LOOPS.append(asyncio.get_running_loop())
        return "ok"

    init_schema(app)
    yield app
    adb.sync.shutdown()


@pytest.fixture(scope="module")
def base(app) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def cql():
    """A driver session of its own, to check what really is in the tables."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect(KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(autouse=True)
def empty_tables(app):
    with app.app_context():
        adb.sync.truncate()


# -- helpers -------------------------------------------------------------------


def post(base: str, user: str, payload: Any = None, **kwargs: Any) -> requests.Response:
    if payload is not None:
        kwargs["json"] = payload
    return requests.post(f"{base}/users/{user}/notes", timeout=TIMEOUT, **kwargs)


def create(base: str, user: str, title: str, **fields: Any) -> dict[str, Any]:
    response = post(base, user, {"title": title, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def get(base: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, timeout=TIMEOUT)


def stored(cql, user: str) -> list[Any]:
    return list(cql.execute("SELECT * FROM notes WHERE user_id = %s", [user]))


def table_sizes(cql) -> tuple[int, int]:
    notes = cql.execute("SELECT COUNT(*) FROM notes").one()[0]
    stats = cql.execute("SELECT COUNT(*) FROM user_stats").one()[0]
    return notes, stats


def notes_written(cql, user: str) -> int:
    row = cql.execute("SELECT notes_written FROM user_stats WHERE user_id = %s", [user]).one()
    return row.notes_written if row else 0


def assert_error(response: requests.Response, status: int, field: Any = "<absent>") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    if field != "<absent>":
        assert body["field"] == field, body
    return body


def walk(base: str, user: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following next_cursor."""
    pages = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = get(base, f"/users/{user}/notes", **query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        assert page["has_next"] == (page["next_cursor"] is not None)
        if not page["has_next"]:
            return pages
        cursor = page["next_cursor"]
        assert len(pages) < 1000


def flip(cursor: str, index: int) -> str:
    return cursor[:index] + ("B" if cursor[index] == "A" else "A") + cursor[index + 1 :]


# -- create ----------------------------------------------------------------------


def test_create_answers_201_with_the_note_and_its_location(base, cql):
    before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
    response = post(base, "alice", {"title": "Groceries", "body": "milk\neggs", "tags": ["home", "errands", "home"]})
    assert response.status_code == 201, response.text
    note = response.json()
    assert set(note) == {"user_id", "note_id", "title", "body", "tags", "created"}
    assert (note["user_id"], note["title"], note["body"], note["tags"]) == (
        "alice",
        "Groceries",
        "milk\neggs",
        ["errands", "home"],
    )
    assert uuid.UUID(note["note_id"]).version == 1
    created = datetime.fromisoformat(note["created"].removesuffix("Z"))
    assert before <= created <= datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=1)

    assert response.headers["Location"] == f"/users/alice/notes/{note['note_id']}"
    again = requests.get(base + response.headers["Location"], timeout=TIMEOUT)
    assert again.status_code == 200 and again.json() == note

    [row] = stored(cql, "alice")
    assert (str(row.note_id), row.title, row.body, row.tags, row.created) == (
        note["note_id"],
        "Groceries",
        "milk\neggs",
        {"home", "errands"},
        created,
    )
    assert notes_written(cql, "alice") == 1


def test_optional_fields_and_limits_that_are_just_allowed(base, cql):
    minimal = create(base, "u_1-X", "only a title")
    assert (minimal["body"], minimal["tags"]) == (None, [])
    longest = create(base, "a" * 64, "t" * 200, body="é🙂" * 5000, tags=[f"tag{i}" for i in range(19)] + ["x" * 50] * 2)
    assert len(longest["tags"]) == 20  # the maximum; the repeated tag counts once
    [row] = stored(cql, "a" * 64)
    assert (row.title, row.body) == ("t" * 200, "é🙂" * 5000)
    assert stored(cql, "u_1-X")[0].title == "only a title"


# -- rejected input: 400 naming the field, and nothing written ---------------------


REJECTED_NOTES = [
    pytest.param({}, "title", id="missing-title"),
    pytest.param({"title": None}, "title", id="null-title"),
    pytest.param({"title": ""}, "title", id="empty-title"),
    pytest.param({"title": "   \t"}, "title", id="blank-title"),
    pytest.param({"title": "t" * 201}, "title", id="title-201-chars"),
    pytest.param({"title": 42}, "title", id="title-number"),
    pytest.param({"title": ["a"]}, "title", id="title-list"),
    pytest.param({"title": "\ud800"}, "title", id="title-lone-surrogate"),
    pytest.param({"title": "t", "body": "b" * 10_001}, "body", id="body-10001-chars"),
    pytest.param({"title": "t", "body": {"text": "b"}}, "body", id="body-object"),
    pytest.param({"title": "t", "tags": "work"}, "tags", id="tags-string"),
    pytest.param({"title": "t", "tags": {"work": True}}, "tags", id="tags-object"),
    pytest.param({"title": "t", "tags": ["work", 7]}, "tags", id="tags-with-number"),
    pytest.param({"title": "t", "tags": [None]}, "tags", id="tags-with-null"),
    pytest.param({"title": "t", "tags": ["work", ""]}, "tags", id="tags-with-empty"),
    pytest.param({"title": "t", "tags": ["x" * 51]}, "tags", id="tag-51-chars"),
    pytest.param({"title": "t", "tags": [f"t{i}" for i in range(21)]}, "tags", id="21-tags"),
    pytest.param({"title": "t", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"title": "t", "note_id": str(uuid.uuid1())}, "note_id", id="client-chosen-id"),
    pytest.param({"title": "t", "created": "2020-01-01T00:00:00Z"}, "created", id="client-chosen-date"),
]


@pytest.mark.parametrize(("payload", "field"), REJECTED_NOTES)
def test_invalid_note_is_400_naming_the_field_and_writes_nothing(base, cql, payload, field):
    body = assert_error(post(base, "alice", payload), 400, field)
    assert body["error"] == "invalid value"
    assert field in body["message"]
    assert table_sizes(cql) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        pytest.param({"data": "title=hello"}, "form body", id="form"),
        pytest.param(
            {"data": b'{"title": "hello"}', "headers": {"Content-Type": "text/plain"}},
            "not declared JSON",
            id="text-plain",
        ),
        pytest.param(
            {"data": b'{"title": "hel', "headers": {"Content-Type": "application/json"}}, "cut JSON", id="broken-json"
        ),
        pytest.param(
            {"data": b"\xff\xfe{}", "headers": {"Content-Type": "application/json"}}, "not UTF-8", id="bad-bytes"
        ),
        pytest.param({"json": ["title", "hello"]}, "array", id="array"),
        pytest.param({"data": b"null", "headers": {"Content-Type": "application/json"}}, "null", id="null"),
        pytest.param({}, "no body", id="empty"),
    ],
)
def test_body_that_is_not_a_json_object_is_400_and_writes_nothing(base, cql, kwargs, why):
    body = assert_error(post(base, "alice", **kwargs), 400, None)
    assert body["error"] == "invalid body"
    assert table_sizes(cql) == (0, 0)


@pytest.mark.parametrize(
    "user",
    [
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("bob.smith", id="dot"),
        pytest.param("b%C3%B6b", id="non-ascii"),
        pytest.param("bob%20smith", id="space"),
        pytest.param("bob%0A", id="trailing-newline"),
        pytest.param("bob'%20OR%20'1'='1", id="quote"),
    ],
)
def test_invalid_user_id_is_400_everywhere_and_writes_nothing(base, cql, user):
    note_id = uuid.uuid1()
    assert_error(post(base, user, {"title": "t"}), 400, "user_id")
    for path in (f"/users/{user}/notes", f"/users/{user}/notes/{note_id}", f"/users/{user}/dashboard"):
        assert_error(get(base, path), 400, "user_id")
    assert_error(requests.delete(f"{base}/users/{user}/notes/{note_id}", timeout=TIMEOUT), 400, "user_id")
    assert table_sizes(cql) == (0, 0)


def test_oversized_request_is_413_json_and_writes_nothing(base, cql):
    assert_error(post(base, "alice", {"title": "t", "body": "b" * 300_000}), 413)
    assert table_sizes(cql) == (0, 0)


# -- read ------------------------------------------------------------------------


def test_read_200_404_400(base):
    note = create(base, "alice", "mine", tags=["x"])
    assert get(base, f"/users/alice/notes/{note['note_id']}").json() == note
    # Same id under another user: that user has no such note.
    assert_error(get(base, f"/users/bob/notes/{note['note_id']}"), 404)
    missing = assert_error(get(base, f"/users/alice/notes/{uuid.uuid1()}"), 404)
    assert missing["error"] == "not found"
    assert_error(get(base, "/users/alice/notes/not-a-uuid"), 400, "note_id")
    assert_error(get(base, f"/users/alice/notes/{note['note_id'][:-1]}"), 400, "note_id")
    # A well-formed UUID that is not time-based cannot be a note id.
    assert_error(get(base, f"/users/alice/notes/{uuid.uuid4()}"), 400, "note_id")


# -- list and pagination ------------------------------------------------------------


def test_pages_of_two_walk_five_notes_newest_first_each_once(base):
    created = [create(base, "alice", f"note {i}") for i in range(5)]
    create(base, "bob", "not alice's")
    pages = walk(base, "alice", per_page=2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["has_next"] for p in pages] == [True, True, False]
    seen = [item for p in pages for item in p["items"]]
    assert seen == created[::-1]
    assert len({n["note_id"] for n in seen}) == 5

    everything = get(base, "/users/alice/notes").json()
    assert everything["items"] == created[::-1] and everything["next_cursor"] is None


def test_last_full_page_says_there_is_no_next(base):
    created = [create(base, "alice", f"note {i}") for i in range(4)]
    pages = walk(base, "alice", per_page=2)
    assert [len(p["items"]) for p in pages] == [2, 2]
    assert [n for p in pages for n in p["items"]] == created[::-1]


def test_listing_by_tag_pages_only_the_tagged_notes(base):
    created = [create(base, "alice", f"note {i}", tags=["even"] if i % 2 == 0 else ["odd"]) for i in range(7)]
    pages = walk(base, "alice", per_page=3, tag="even")
    assert [n for p in pages for n in p["items"]] == [n for n in created[::-1] if n["tags"] == ["even"]]
    assert get(base, "/users/alice/notes", tag="none").json()["items"] == []
    assert_error(get(base, "/users/alice/notes", tag=""), 400, "tag")


def test_unusable_cursors_are_400(base):
    for i in range(5):
        create(base, "alice", f"a{i}", tags=["t"])
        create(base, "bob", f"b{i}")
    cursor = get(base, "/users/alice/notes", per_page=2).json()["next_cursor"]
    bobs = get(base, "/users/bob/notes", per_page=2).json()["next_cursor"]
    tagged = get(base, "/users/alice/notes", per_page=2, tag="t").json()["next_cursor"]
    assert cursor and bobs and tagged

    bad = {
        "tampered-middle": flip(cursor, len(cursor) // 2),
        "tampered-first": flip(cursor, 0),
        "tampered-mac": flip(cursor, 5),
        "truncated-tail": cursor[:-3],
        "truncated-half": cursor[: len(cursor) // 2],
        "truncated-to-4": cursor[:4],
        "other-users-listing": bobs,
        "other-query-of-same-user": tagged,
        "not-base64": "***",
        "empty": "",
    }
    for name, value in bad.items():
        body = assert_error(get(base, "/users/alice/notes", per_page=2, cursor=value), 400, "cursor")
        assert "cursor" in body["message"], name
    # The genuine cursor still works, and for alice only.
    page = get(base, "/users/alice/notes", per_page=2, cursor=cursor).json()
    assert [n["title"] for n in page["items"]] == ["a2", "a1"]


@pytest.mark.slow
def test_listing_and_dashboard_cover_more_than_ten_thousand_notes(base, cql):
    """cqlengine adds LIMIT 10000 to queries by default; the service must not stop there."""
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.util import uuid_from_time

    total = 10_005
    start = datetime(2024, 1, 1)
    insert = cql.prepare(
        "INSERT INTO notes (user_id, note_id, title, tags, created) VALUES ('bulk', ?, ?, {'bulk'}, ?)"
    )
    rows = []
    for i in range(total):
        moment = start + timedelta(seconds=i)
        rows.append((uuid_from_time(moment), f"n{i}", moment))
    for ok, result in execute_concurrent_with_args(cql, insert, rows, concurrency=100, raise_on_first_error=False):
        assert ok, result

    pages = walk(base, "bulk", per_page=100)
    titles = [n["title"] for p in pages for n in p["items"]]
    assert len(pages) == 101 and titles == [f"n{i}" for i in reversed(range(total))]

    board = get(base, "/users/bulk/dashboard", tag="bulk").json()
    assert (board["notes"], board["top_tags"], board["tag"]) == (
        total,
        [{"tag": "bulk", "notes": total}],
        {"tag": "bulk", "notes": total},
    )
    assert [n["title"] for n in board["latest"]] == [f"n{i}" for i in range(total - 1, total - 6, -1)]


@pytest.mark.parametrize("per_page", ["0", "-1", "100000", "101", "abc", "1.5", "2e1", ""])
def test_invalid_per_page_is_400(base, per_page):
    create(base, "alice", "one")
    body = assert_error(get(base, "/users/alice/notes", per_page=per_page), 400, "per_page")
    assert "per_page" in body["message"]


def test_per_page_limits_that_are_allowed(base):
    create(base, "alice", "one")
    for per_page in ("1", "100"):
        page = get(base, "/users/alice/notes", per_page=per_page).json()
        assert page["per_page"] == int(per_page) and len(page["items"]) == 1


# -- delete ----------------------------------------------------------------------


def test_delete_204_then_404(base, cql):
    keep = create(base, "alice", "keep")
    gone = create(base, "alice", "gone")
    url = f"{base}/users/alice/notes/{gone['note_id']}"
    response = requests.delete(url, timeout=TIMEOUT)
    assert response.status_code == 204 and response.content == b""
    assert_error(requests.get(url, timeout=TIMEOUT), 404)
    assert_error(requests.delete(url, timeout=TIMEOUT), 404)
    assert [str(r.note_id) for r in stored(cql, "alice")] == [keep["note_id"]]
    assert_error(requests.delete(f"{base}/users/alice/notes/{uuid.uuid1()}", timeout=TIMEOUT), 404)
    assert_error(requests.delete(f"{base}/users/alice/notes/nope", timeout=TIMEOUT), 400, "note_id")
    assert len(stored(cql, "alice")) == 1


# -- dashboard -----------------------------------------------------------------------


def test_dashboard_figures_agree_with_the_notes(base, cql):
    tag_sets = [["work"], ["work", "urgent"], ["home"], [], ["work", "home"], ["urgent"], ["work"]]
    created = [create(base, "alice", f"n{i}", tags=tags) for i, tags in enumerate(tag_sets)]
    requests.delete(f"{base}/users/alice/notes/{created[6]['note_id']}", timeout=TIMEOUT).raise_for_status()
    create(base, "bob", "b", tags=["work"])
    remaining = created[:6]

    board = get(base, "/users/alice/dashboard", tag="work").json()
    assert board["user_id"] == "alice"
    assert board["notes"] == 6 == len(stored(cql, "alice"))
    assert board["notes_written"] == 7 == notes_written(cql, "alice")
    assert board["latest"] == remaining[::-1][:5]
    assert board["latest"] == get(base, "/users/alice/notes", per_page=5).json()["items"]
    expected = Counter(tag for note in remaining for tag in note["tags"])
    assert {t["tag"]: t["notes"] for t in board["top_tags"]} == expected
    assert [t["notes"] for t in board["top_tags"]] == sorted(expected.values(), reverse=True)
    assert board["tag"] == {"tag": "work", "notes": 3}

    assert "tag" not in get(base, "/users/alice/dashboard").json()
    nobody = get(base, "/users/nobody/dashboard", tag="work").json()
    assert nobody == {
        "user_id": "nobody",
        "notes": 0,
        "notes_written": 0,
        "latest": [],
        "top_tags": [],
        "tag": {"tag": "work", "notes": 0},
    }
    assert_error(get(base, "/users/alice/dashboard", tag="x" * 51), 400, "tag")


# -- health, error shapes ----------------------------------------------------------------


def test_health_pings_the_node(base, cql):
    response = get(base, "/health")
    assert response.status_code == 200
    version = cql.execute("SELECT release_version FROM system.local").one()[0]
    assert response.json() == {"status": "ok", "cassandra": version}


def test_http_errors_are_json(base):
    assert_error(get(base, "/nowhere"), 404)
    not_allowed = requests.put(f"{base}/health", timeout=TIMEOUT)
    assert_error(not_allowed, 405)
    assert "GET" in not_allowed.headers["Allow"]


# -- values that look like CQL ------------------------------------------------------------


def test_cql_looking_values_are_stored_verbatim_and_change_nothing_else(base, cql):
    bystander = create(base, "bob", "bob's note", tags=["keep"])
    title = "'); DROP TABLE notes; --"
    body = "x' WHERE user_id='bob'; TRUNCATE user_stats; /* %s %(0)s {} ? :name $$"
    tags = ["a'}, {'b", "'", "%s", "%(0)s", "?", "$$ DROP KEYSPACE x $$", "\\'", "--"]
    note = create(base, "alice", title, body=body, tags=tags)
    assert (note["title"], note["body"], note["tags"]) == (title, body, sorted(tags))
    assert get(base, f"/users/alice/notes/{note['note_id']}").json() == note

    [row] = stored(cql, "alice")
    assert (row.title, row.body, row.tags) == (title, body, set(tags))
    for tag in tags:
        assert [n["note_id"] for n in get(base, "/users/alice/notes", tag=tag).json()["items"]] == [note["note_id"]]
    # Everything else is as it was.
    assert get(base, f"/users/bob/notes/{bystander['note_id']}").json() == bystander
    assert table_sizes(cql) == (2, 2)
    assert (notes_written(cql, "alice"), notes_written(cql, "bob")) == (1, 1)
    assert get(base, "/health").status_code == 200


# -- concurrency ------------------------------------------------------------------------------


def test_two_hundred_requests_from_sixteen_threads(base, cql):
    users = [f"user{i}" for i in range(5)]
    for user in users:
        create(base, user, "seed", tags=["seed"])

    def request(i: int) -> tuple[str, int, Any]:
        user = users[i % len(users)]
        kind = ("create", "create", "list", "dashboard", "read-seed", "health")[i % 6]
        if kind == "create":
            response = post(base, user, {"title": f"concurrent {i}", "tags": [f"t{i % 3}"]})
        elif kind == "list":
            response = get(base, f"/users/{user}/notes", per_page=3)
        elif kind == "dashboard":
            response = get(base, f"/users/{user}/dashboard", tag="seed")
        elif kind == "read-seed":
            response = get(base, f"/users/{user}/notes", tag="seed")
        else:
            response = get(base, "/health")
        return kind, response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(request, range(200)))

    expected_status = {"create": 201, "list": 200, "dashboard": 200, "read-seed": 200, "health": 200}
    assert [(kind, status) for kind, status, _ in results] == [(kind, expected_status[kind]) for kind, _, _ in results]
    for kind, _, body in results:
        if kind == "dashboard":
            assert body["tag"] == {"tag": "seed", "notes": 1}
        if kind == "read-seed":
            assert [n["title"] for n in body["items"]] == ["seed"]

    created = [body for kind, _, body in results if kind == "create"]
    for user in users:
        mine = sorted(n["note_id"] for n in created if n["user_id"] == user)
        in_db = sorted(str(r.note_id) for r in stored(cql, user) if r.title != "seed")
        assert in_db == mine
        assert notes_written(cql, user) == len(mine) + 1
        listed = [n for p in walk(base, user, per_page=7) for n in p["items"]]
        assert len(listed) == len(mine) + 1
        assert [n["note_id"] for n in listed] == sorted(
            (n["note_id"] for n in listed), key=lambda s: uuid.UUID(s).time, reverse=True
        )


# -- the cluster is down ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bind_below_ephemeral_ports(sock: socket.socket) -> None:
    """Bind ``sock`` to a free loopback port below the kernel's range for
    outgoing connections: while the relay is cut, a port from that range can
    be handed to any connection opened on the machine (the driver's own
    reconnection attempts included), and the relay could not listen again."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            lowest_ephemeral = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    candidates = list(range(max(1024, lowest_ephemeral - 12000), lowest_ephemeral))
    random.shuffle(candidates)
    for port in candidates:
        try:
            sock.bind(("127.0.0.1", port))
            return
        except OSError:
            continue
    raise AssertionError(f"no free port below {lowest_ephemeral}")


class Relay:
    """A TCP relay to the node that can be cut and restored, as a network
    partition would: the app talks to the node only through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        """Listen, on the same port every time (the driver reconnects to it)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.port:
            listener.bind(("127.0.0.1", self.port))
        else:
            _bind_below_ephemeral_ports(listener)
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._listener is not None
        self._listener.close()
        self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while listener is self._listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _wait_for(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _close_app_connection(app) -> None:
    app.extensions["cqlalchemy"].ext.shutdown(app)


def test_cluster_lost_while_serving_is_503_json_then_recovers(base, cql):
    from cassandra.policies import ConstantReconnectionPolicy

    relay = Relay((HOSTS[0], 9042))
    relay.start()
    behind = create_app(
        {
            "CASSANDRA_HOSTS": ["127.0.0.1"],
            "CASSANDRA_PORT": relay.port,
            "CASSANDRA_KEYSPACE": KEYSPACE,
            "CASSANDRA_SETUP_KWARGS": {"reconnection_policy": ConstantReconnectionPolicy(0.2, None)},
            "SECRET_KEY": "async-app-tests",
        }
    )
    try:
        with serve(behind) as url:
            note = create(url, "alice", "before the outage")
            relay.cut()
            for _ in range(2):
                for response in (
                    get(url, "/health"),
                    post(url, "alice", {"title": "during the outage"}),
                    get(url, "/users/alice/notes"),
                    get(url, f"/users/alice/notes/{note['note_id']}"),
                    requests.delete(f"{url}/users/alice/notes/{note['note_id']}", timeout=TIMEOUT),
                    get(url, "/users/alice/dashboard", tag="x"),
                ):
                    body = assert_error(response, 503)
                    assert body["error"] == "database unavailable"
            # What needs no database is still answered.
            assert_error(post(url, "alice", {}), 400, "title")
            assert_error(get(url, "/users/alice/notes", per_page=0), 400, "per_page")
            assert [r.title for r in stored(cql, "alice")] == ["before the outage"]

            relay.start()  # same port: the driver reconnects by itself
            _wait_for(lambda: get(url, "/health").status_code == 200)
            create(url, "alice", "after the outage")
            titles = [n["title"] for n in get(url, "/users/alice/notes").json()["items"]]
            assert titles == ["after the outage", "before the outage"]
    finally:
        _close_app_connection(behind)
        if relay._listener is not None:
            relay.cut()
    # The app talking to the node directly never noticed.
    assert get(base, "/health").status_code == 200


def test_lazy_app_with_no_node_answers_503_on_every_try():
    down = create_app(
        {
            "CASSANDRA_HOSTS": ["127.0.0.1"],
            "CASSANDRA_PORT": _closed_port(),
            "CASSANDRA_KEYSPACE": KEYSPACE,
            "CASSANDRA_LAZY_CONNECT": True,
            "CASSANDRA_RETRY_CONNECT": True,
            "SECRET_KEY": "down",
        }
    )
    try:
        with serve(down) as url:
            for _ in range(2):  # a failed connect is retried on the next request
                for response in (
                    get(url, "/health"),
                    post(url, "alice", {"title": "t"}),
                    get(url, "/users/alice/notes"),
                    get(url, f"/users/alice/notes/{uuid.uuid1()}"),
                ):
                    assert assert_error(response, 503)["error"] == "database unavailable"
            assert_error(post(url, "alice", {}), 400, "title")
    finally:
        _close_app_connection(down)


def _first_burst(app, paths: list[str]) -> list[int]:
    with serve(app) as url:
        barrier = threading.Barrier(len(paths))

        def fetch(path: str) -> int:
            barrier.wait()
            return requests.get(url + path, timeout=TIMEOUT).status_code

        with ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(fetch, paths))


def _lazy_app():
    return create_app(
        {"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "CASSANDRA_LAZY_CONNECT": True, "SECRET_KEY": "lazy"}
    )


BURST = ["/health", "/users/alice/notes", "/users/alice/dashboard"] * 4


def test_lazy_app_connected_before_serving_answers_a_first_burst():
    lazy = _lazy_app()
    try:
        assert connect(lazy)  # what the gunicorn post_worker_init hook does
        assert _first_burst(lazy, BURST) == [200] * len(BURST)
    finally:
        _close_app_connection(lazy)


def test_lazy_app_answers_a_first_burst_of_concurrent_requests():
    lazy = _lazy_app()
    try:
        assert _first_burst(lazy, BURST) == [200] * len(BURST)
    finally:
        _close_app_connection(lazy)


# -- configuration, command line, WSGI server ---------------------------------------------------------


def test_config_from_environment():
    config = config_from_env({})
    assert (config["CASSANDRA_HOSTS"], config["CASSANDRA_KEYSPACE"]) == ("127.0.0.1", "notes_demo")
    assert (config["CASSANDRA_LAZY_CONNECT"], config["CASSANDRA_RETRY_CONNECT"]) == (False, False)
    config = config_from_env(
        {
            "CASSANDRA_HOSTS": "10.0.0.1, 10.0.0.2",
            "NOTES_KEYSPACE": "notes_prod",
            "CASSANDRA_LAZY_CONNECT": "True",
            "CASSANDRA_PORT": "9142",
            "NOTES_REPLICATION_FACTOR": "3",
            "SECRET_KEY": "s",
        }
    )
    assert config["CASSANDRA_HOSTS"] == "10.0.0.1, 10.0.0.2" and config["CASSANDRA_KEYSPACE"] == "notes_prod"
    assert (config["CASSANDRA_LAZY_CONNECT"], config["CASSANDRA_PORT"], config["NOTES_REPLICATION_FACTOR"]) == (
        True,
        9142,
        3,
    )
    assert "CASSANDRA_ASYNC_LOOPS" not in config_from_env({})
    assert config_from_env({"CASSANDRA_ASYNC_LOOPS": "per-request"})["CASSANDRA_ASYNC_LOOPS"] == "per-request"
    with pytest.raises(ValueError, match="CASSANDRA_LAZY_CONNECT"):
        config_from_env({"CASSANDRA_LAZY_CONNECT": "maybe"})
    with pytest.raises(ValueError, match="CASSANDRA_PORT"):
        config_from_env({"CASSANDRA_PORT": "ninety"})


def test_the_service_runs_its_views_on_one_loop_per_thread(app, base):
    assert runner.uses_thread_loops(app)
    SERVING_LOOPS.clear()
    assert [requests.get(f"{base}/_loop", timeout=10).text for _ in range(30)] == ["ok"] * 30
    # each of waitress's 8 threads keeps its loop open for its next request
    loops = {id(loop): loop for loop in SERVING_LOOPS}.values()
    assert 1 <= len(loops) <= 8 and not any(loop.is_closed() for loop in loops), SERVING_LOOPS


def test_a_bad_async_loops_setting_stops_the_app_naming_the_key():
    with pytest.raises(ConfigError, match="CASSANDRA_ASYNC_LOOPS"):
        create_app({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_ASYNC_LOOPS": "per-process", "SECRET_KEY": "s"})


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASSANDRA_", "NOTES_", "FLASK_"))}
    return {**env, "CASSANDRA_HOSTS": ",".join(HOSTS), **extra}


def test_init_db_command_creates_keyspace_and_tables(cql):
    keyspace = "flask_cqlalchemy_notes_cli"
    cql.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "examples.async_app.wsgi", "init-db"],
            cwd=ROOT,
            env=_env(NOTES_KEYSPACE=keyspace, SECRET_KEY="cli"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"keyspace {keyspace} is ready" in result.stdout
        cql.cluster.refresh_schema_metadata()
        meta = cql.cluster.metadata.keyspaces[keyspace]
        assert meta.replication_strategy.replication_factor == 1
        assert set(meta.tables) == {"notes", "user_stats"}
        notes = meta.tables["notes"]
        assert [c.name for c in notes.partition_key] == ["user_id"]
        assert [(c.name, notes.clustering_key[0].cql_type) for c in notes.clustering_key] == [("note_id", "timeuuid")]
        assert "CLUSTERING ORDER BY (note_id DESC)" in notes.export_as_string()
    finally:
        cql.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_waitress_serve_command_runs_the_wsgi_app(tmp_path):
    port = _closed_port()
    log_path = tmp_path / "waitress.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "waitress",
                f"--listen=127.0.0.1:{port}",
                "--threads=4",
                "examples.async_app.wsgi:app",
            ],
            cwd=ROOT,
            env=_env(NOTES_KEYSPACE=KEYSPACE, SECRET_KEY="serve"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=30)

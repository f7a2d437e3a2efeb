"""The notes service, on Flask and on Quart, driven over HTTP four ways.

Every behaviour runs over the Flask app (``examples/async_app``) served by a
real waitress process, and over the Quart app (``examples/quart_app``)
through Quart's test client, a real hypercorn process and a real uvicorn
process, each started with its README's command: the same statuses and JSON
bodies from both frameworks. After writes, a separate driver session checks
what Cassandra really holds. Helpers and data come from
``tests/test_async_app.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest
import requests
from cassandra.cluster import Cluster

from examples.async_app.app import config_from_env
from examples.quart_app import create_app
from flask_cqlalchemy.errors import ConfigError

from .conftest import HOSTS
from .test_async_app import (
    BURST,
    REJECTED_NOTES,
    TIMEOUT,
    Relay,
    _closed_port,
    _env,
    _wait_for,
    assert_error,
    assert_notes_schema,
    flip,
    notes_written,
    stored,
    table_sizes,
)

ROOT = Path(__file__).resolve().parent.parent
KEYSPACE = "quart_app_tests"
HYPERCORN = Path(sys.executable).with_name("hypercorn")
UVICORN = Path(sys.executable).with_name("uvicorn")
WAITRESS = Path(sys.executable).with_name("waitress-serve")
WSGI_APP = "examples.async_app.wsgi:app"
QUART = Path(sys.executable).with_name("quart")
ASGI_APP = "examples.quart_app.asgi:app"


# -- two ways to reach the service ----------------------------------------------------------------


@dataclass
class Answer:
    """What a client got back, whichever way the request went."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client(Protocol):
    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **body: Any) -> Answer:
        """``body``: ``json=``, ``data=`` and ``headers=``, as requests takes them."""
        ...


class InProcessClient:
    """Quart's test client, driven from any thread: the app runs on one
    event loop of its own, as under an ASGI server, started and stopped
    through its lifespan (``before_serving``/``after_serving``)."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="quart-test-app", daemon=True)
        self._thread.start()
        self._test_app = app.test_app()
        self._run(self._test_app.startup())
        self._client = self._test_app.test_client()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **body: Any) -> Answer:
        async def send() -> Answer:
            response = await self._client.open(path, method=method, query_string=params, **body)
            return Answer(response.status_code, response.headers, await response.get_data())

        return self._run(send())

    def close(self) -> None:
        try:
            self._run(self._test_app.shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(TIMEOUT)


class HTTPClient:
    """requests against a server's base URL."""

    def __init__(self, base: str) -> None:
        self.base = base

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **body: Any) -> Answer:
        response = requests.request(method, self.base + path, params=params, timeout=TIMEOUT, **body)
        return Answer(response.status_code, response.headers, response.content)


Serve = Callable[..., contextlib.AbstractContextManager[Client]]


@contextlib.contextmanager
def served_in_process(env: Mapping[str, str]) -> Iterator[Client]:
    """The app ``create_app`` builds for these environment variables, behind Quart's test client."""
    app = create_app(config_from_env(env))
    try:
        client = InProcessClient(app)
        try:
            yield client
        finally:
            client.close()
    finally:
        app.extensions["cqlalchemy"].ext.shutdown(app)


def server_command(server: str, port: int) -> list[str]:
    """The README's command for ``server`` on ``port``: hypercorn or uvicorn
    serving the Quart app, or waitress serving the Flask app."""
    if server == "flask-waitress":
        return [str(WAITRESS), "--host", "127.0.0.1", f"--port={port}", "--threads", "8", WSGI_APP]
    if server == "uvicorn":
        return [str(UVICORN), "--host", "127.0.0.1", "--port", str(port), ASGI_APP]
    return [str(HYPERCORN), "--bind", f"127.0.0.1:{port}", ASGI_APP]


@contextlib.contextmanager
def served_by(server: str, env: Mapping[str, str], log_path: Path) -> Iterator[Client]:
    """``hypercorn examples.quart_app.asgi:app`` (the README's command), or
    uvicorn's, with these environment variables, from the repository root, on
    a free port."""
    port = _closed_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            server_command(server, port),
            cwd=ROOT,
            env=_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = HTTPClient(f"http://127.0.0.1:{port}")
    try:
        # Any answer means the app is loaded and served. "/" is no route:
        # asking it sends nothing to Cassandra (a lazy app stays unconnected).
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                client.request("GET", "/")
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"{server} did not stop on SIGTERM:\n{log_path.read_text()}") from None


@pytest.fixture(scope="module")
def schema() -> Iterator[None]:
    """The keyspace and tables, made by the README's ``init-db`` command."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect()
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    cluster.shutdown()
    result = subprocess.run(
        [str(QUART), "--app", "examples.quart_app.asgi", "init-db"],
        cwd=ROOT,
        env=_env(NOTES_KEYSPACE=KEYSPACE, SECRET_KEY="cli"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"keyspace {KEYSPACE} is ready" in result.stdout
    yield


@pytest.fixture(scope="module", params=["test-client", "hypercorn", "uvicorn", "flask-waitress"])
def serve(request: pytest.FixtureRequest, schema: None, tmp_path_factory: pytest.TempPathFactory) -> Serve:
    """``serve(**environment)``: a context manager that serves the app
    configured by these variables and yields a :class:`Client` for it."""
    if request.param == "test-client":
        return lambda **env: served_in_process(env)
    logs = tmp_path_factory.mktemp(request.param)
    return lambda **env: served_by(request.param, env, logs / f"{uuid.uuid4().hex}.log")


@pytest.fixture(scope="module")
def client(serve: Serve) -> Iterator[Client]:
    with serve(CASSANDRA_HOSTS=",".join(HOSTS), NOTES_KEYSPACE=KEYSPACE, SECRET_KEY="quart-app-tests") as client:
        yield client


@pytest.fixture(scope="module")
def cql(schema: None):
    """A driver session of its own, to check what really is in the tables."""
    cluster = Cluster(HOSTS, protocol_version=5)
    session = cluster.connect(KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(autouse=True)
def empty_tables(cql) -> None:
    cql.execute("TRUNCATE notes")
    cql.execute("TRUNCATE user_stats")


# -- helpers: tests/test_async_app.py's, over either client ----------------------------------------


def post(client: Client, user: str, payload: Any = None, **kwargs: Any) -> Answer:
    if payload is not None:
        kwargs["json"] = payload
    return client.request("POST", f"/users/{user}/notes", **kwargs)


def create(client: Client, user: str, title: str, **fields: Any) -> dict[str, Any]:
    response = post(client, user, {"title": title, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def get(client: Client, path: str, **params: Any) -> Answer:
    return client.request("GET", path, params=params)


def delete(client: Client, path: str) -> Answer:
    return client.request("DELETE", path)


def walk(client: Client, user: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following next_cursor."""
    pages = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = get(client, f"/users/{user}/notes", **query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        assert page["has_next"] == (page["next_cursor"] is not None)
        if not page["has_next"]:
            return pages
        cursor = page["next_cursor"]
        assert len(pages) < 1000


# -- schema -----------------------------------------------------------------------------------------


def test_init_db_command_created_the_keyspace_and_tables(cql):
    assert_notes_schema(cql, KEYSPACE)


# -- create -----------------------------------------------------------------------------------------


def test_create_answers_201_with_the_note_and_its_location(client, cql):
    before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
    response = post(client, "alice", {"title": "Groceries", "body": "milk\neggs", "tags": ["home", "errands", "home"]})
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
    again = get(client, response.headers["Location"])
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


def test_optional_fields_and_limits_that_are_just_allowed(client, cql):
    minimal = create(client, "u_1-X", "only a title")
    assert (minimal["body"], minimal["tags"]) == (None, [])
    tags = [f"tag{i}" for i in range(19)] + ["x" * 50] * 2
    longest = create(client, "a" * 64, "t" * 200, body="é🙂" * 5000, tags=tags)
    assert len(longest["tags"]) == 20  # the maximum; the repeated tag counts once
    [row] = stored(cql, "a" * 64)
    assert (row.title, row.body) == ("t" * 200, "é🙂" * 5000)
    assert stored(cql, "u_1-X")[0].title == "only a title"


# -- rejected input: 400 naming the field, and nothing written ---------------------------------------


@pytest.mark.parametrize(("payload", "field"), REJECTED_NOTES)
def test_invalid_note_is_400_naming_the_field_and_writes_nothing(client, cql, payload, field):
    body = assert_error(post(client, "alice", payload), 400, field)
    assert body["error"] == "invalid value"
    assert field in body["message"]
    assert table_sizes(cql) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"data": "title=hello"}, "Content-Type: application/json", id="form"),
        pytest.param(
            {"data": b'{"title": "hello"}', "headers": {"Content-Type": "text/plain"}},
            "Content-Type: application/json",
            id="text-plain",
        ),
        pytest.param(
            {"data": b'{"title": "hel', "headers": {"Content-Type": "application/json"}},
            "not valid JSON",
            id="broken-json",
        ),
        pytest.param(
            {"data": b"\xff\xfe{}", "headers": {"Content-Type": "application/json"}}, "not valid JSON", id="bad-bytes"
        ),
        pytest.param({"json": ["title", "hello"]}, "got a list", id="array"),
        pytest.param({"data": b"null", "headers": {"Content-Type": "application/json"}}, "got null", id="null"),
        pytest.param({}, "Content-Type: application/json", id="empty"),
    ],
)
def test_body_that_is_not_a_json_object_is_400_and_writes_nothing(client, cql, kwargs, message):
    body = assert_error(post(client, "alice", **kwargs), 400, None)
    assert body["error"] == "invalid body"
    assert message in body["message"]
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
def test_invalid_user_id_is_400_everywhere_and_writes_nothing(client, cql, user):
    note_id = uuid.uuid1()
    assert_error(post(client, user, {"title": "t"}), 400, "user_id")
    for path in (f"/users/{user}/notes", f"/users/{user}/notes/{note_id}", f"/users/{user}/dashboard"):
        assert_error(get(client, path), 400, "user_id")
    assert_error(delete(client, f"/users/{user}/notes/{note_id}"), 400, "user_id")
    assert table_sizes(cql) == (0, 0)


def test_oversized_request_is_413_json_and_writes_nothing(client, cql):
    assert_error(post(client, "alice", {"title": "t", "body": "b" * 300_000}), 413)
    assert table_sizes(cql) == (0, 0)


# -- read ---------------------------------------------------------------------------------------------


def test_read_200_404_400(client):
    note = create(client, "alice", "mine", tags=["x"])
    assert get(client, f"/users/alice/notes/{note['note_id']}").json() == note
    # Same id under another user: that user has no such note.
    other = assert_error(get(client, f"/users/bob/notes/{note['note_id']}"), 404)
    assert other == {"error": "not found", "message": f"note {note['note_id']} of user bob not found"}
    missing = assert_error(get(client, f"/users/alice/notes/{uuid.uuid1()}"), 404)
    assert missing["error"] == "not found"
    assert_error(get(client, "/users/alice/notes/not-a-uuid"), 400, "note_id")
    assert_error(get(client, f"/users/alice/notes/{note['note_id'][:-1]}"), 400, "note_id")
    # A well-formed UUID that is not time-based cannot be a note id.
    assert_error(get(client, f"/users/alice/notes/{uuid.uuid4()}"), 400, "note_id")


# -- list and pagination ---------------------------------------------------------------------------


def test_pages_of_two_walk_five_notes_newest_first_each_once(client):
    created = [create(client, "alice", f"note {i}") for i in range(5)]
    create(client, "bob", "not alice's")
    pages = walk(client, "alice", per_page=2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["has_next"] for p in pages] == [True, True, False]
    seen = [item for p in pages for item in p["items"]]
    assert seen == created[::-1]
    assert len({n["note_id"] for n in seen}) == 5

    everything = get(client, "/users/alice/notes").json()
    assert everything["items"] == created[::-1] and everything["next_cursor"] is None
    assert everything["per_page"] == 20


def test_last_full_page_says_there_is_no_next(client):
    created = [create(client, "alice", f"note {i}") for i in range(4)]
    pages = walk(client, "alice", per_page=2)
    assert [len(p["items"]) for p in pages] == [2, 2]
    assert [n for p in pages for n in p["items"]] == created[::-1]


def test_listing_by_tag_pages_only_the_tagged_notes(client):
    created = [create(client, "alice", f"note {i}", tags=["even"] if i % 2 == 0 else ["odd"]) for i in range(7)]
    pages = walk(client, "alice", per_page=3, tag="even")
    assert [n for p in pages for n in p["items"]] == [n for n in created[::-1] if n["tags"] == ["even"]]
    assert get(client, "/users/alice/notes", tag="none").json()["items"] == []
    assert_error(get(client, "/users/alice/notes", tag=""), 400, "tag")


def test_tag_listing_uses_the_tags_sai_index(cql):
    indexes = {
        row.index_name: dict(row.options)
        for row in cql.execute(
            "SELECT index_name, options FROM system_schema.indexes WHERE keyspace_name = %s AND table_name = 'notes'",
            [KEYSPACE],
        )
    }
    assert indexes["notes_tags_sai_idx"] == {"class_name": "StorageAttachedIndex", "target": "values(tags)"}
    assert indexes["notes_embedding_sai_idx"]["similarity_function"] == "cosine"
    # what the service sends for ?tag=: no ALLOW FILTERING needed
    assert list(cql.execute("SELECT note_id FROM notes WHERE user_id = 'alice' AND tags CONTAINS 'x'")) == []


# -- similar notes ----------------------------------------------------------------------------------


def similar(client: Client, user: str, note: dict[str, Any], **params: Any) -> Answer:
    return get(client, f"/users/{user}/notes/{note['note_id']}/similar", **params)


def test_similar_notes_are_the_ones_sharing_words_most_similar_first(client, cql):
    vector = create(client, "alice", "Vector search on Cassandra", body="ANN queries with an SAI index")
    sai = create(client, "alice", "SAI indexes on Cassandra", body="vector search with ANN queries")
    cake = create(client, "alice", "Chocolate cake", body="flour, sugar, cocoa and eggs", tags=["baking"])
    icing = create(client, "alice", "Chocolate icing for a cake", tags=["baking"])
    create(client, "bob", "Vector search on Cassandra", body="ANN queries with an SAI index")

    found = similar(client, "alice", vector, k=2)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["note_id"] == vector["note_id"]
    assert len(body["similar"]) == 2
    assert body["similar"][0] == {**sai, "score": body["similar"][0]["score"]}
    scores = [n["score"] for n in body["similar"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)

    everything = similar(client, "alice", cake).json()["similar"]  # k defaults to 5
    assert [n["note_id"] for n in everything][0] == icing["note_id"]
    # the user's other notes only, never the note itself nor another user's
    assert sorted(n["note_id"] for n in everything) == sorted(n["note_id"] for n in (vector, sai, icing))
    # stored with the note: one vector of the embedding's dimension, of length 1
    (row,) = cql.execute(
        "SELECT embedding FROM notes WHERE user_id = 'alice' AND note_id = %s", [uuid.UUID(cake["note_id"])]
    )
    assert len(row.embedding) == 256 and abs(sum(x * x for x in row.embedding) - 1) < 1e-5


def test_similar_notes_of_a_note_stored_without_embedding(client, cql):
    """Notes written before embeddings existed: their own is computed on the fly,
    and they are not found by others (the index has nothing for them)."""
    search = create(client, "alice", "Vector search on Cassandra")
    old_id = uuid.uuid1()
    cql.execute(
        "INSERT INTO notes (user_id, note_id, title, created) VALUES ('alice', %s, 'Cassandra vector search', %s)",
        [old_id, datetime(2026, 1, 1)],
    )
    old = {"note_id": str(old_id)}
    assert [n["note_id"] for n in similar(client, "alice", old).json()["similar"]] == [search["note_id"]]
    assert similar(client, "alice", search).json()["similar"] == []


def test_similar_notes_refuse_a_bad_k_and_an_unknown_note(client):
    note = create(client, "alice", "alone")
    assert similar(client, "alice", note).json() == {"note_id": note["note_id"], "similar": []}
    for k in ("0", "51", "five", "-1", "2.5"):
        assert_error(similar(client, "alice", note, k=k), 400, "k")
    assert similar(client, "alice", note, k=50).status_code == 200
    assert_error(similar(client, "bob", note), 404)
    assert_error(get(client, "/users/alice/notes/not-a-uuid/similar"), 400, "note_id")


def test_unusable_cursors_are_400(client):
    for i in range(5):
        create(client, "alice", f"a{i}", tags=["t"])
        create(client, "bob", f"b{i}")
    cursor = get(client, "/users/alice/notes", per_page=2).json()["next_cursor"]
    bobs = get(client, "/users/bob/notes", per_page=2).json()["next_cursor"]
    tagged = get(client, "/users/alice/notes", per_page=2, tag="t").json()["next_cursor"]
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
        body = assert_error(get(client, "/users/alice/notes", per_page=2, cursor=value), 400, "cursor")
        assert body["error"] == "invalid value" and "cursor" in body["message"], name
    # The genuine cursor still works, and for alice only.
    page = get(client, "/users/alice/notes", per_page=2, cursor=cursor).json()
    assert [n["title"] for n in page["items"]] == ["a2", "a1"]


@pytest.mark.slow
def test_listing_and_dashboard_cover_more_than_ten_thousand_notes(client, cql):
    """cqlengine adds LIMIT 10000 to queries by default; the service must not stop there."""
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.util import uuid_from_time

    total = 10_005
    start = datetime(2024, 1, 1)
    insert = cql.prepare(
        "INSERT INTO notes (user_id, note_id, title, tags, created) VALUES ('bulk', ?, ?, {'bulk'}, ?)"
    )
    rows = [(uuid_from_time(start + timedelta(seconds=i)), f"n{i}", start + timedelta(seconds=i)) for i in range(total)]
    for ok, result in execute_concurrent_with_args(cql, insert, rows, concurrency=100, raise_on_first_error=False):
        assert ok, result

    pages = walk(client, "bulk", per_page=100)
    titles = [n["title"] for p in pages for n in p["items"]]
    assert len(pages) == 101 and titles == [f"n{i}" for i in reversed(range(total))]

    board = get(client, "/users/bulk/dashboard", tag="bulk").json()
    assert (board["notes"], board["top_tags"], board["tag"]) == (
        total,
        [{"tag": "bulk", "notes": total}],
        {"tag": "bulk", "notes": total},
    )
    assert [n["title"] for n in board["latest"]] == [f"n{i}" for i in range(total - 1, total - 6, -1)]


@pytest.mark.parametrize("per_page", ["0", "-1", "100000", "101", "abc", "1.5", "2e1", ""])
def test_invalid_per_page_is_400(client, per_page):
    create(client, "alice", "one")
    body = assert_error(get(client, "/users/alice/notes", per_page=per_page), 400, "per_page")
    assert body["error"] == "invalid value" and "per_page" in body["message"]


def test_per_page_limits_that_are_allowed(client):
    create(client, "alice", "one")
    for per_page in ("1", "100"):
        page = get(client, "/users/alice/notes", per_page=per_page).json()
        assert page["per_page"] == int(per_page) and len(page["items"]) == 1


# -- delete -----------------------------------------------------------------------------------------


def test_delete_204_then_404(client, cql):
    keep = create(client, "alice", "keep")
    gone = create(client, "alice", "gone")
    path = f"/users/alice/notes/{gone['note_id']}"
    response = delete(client, path)
    assert response.status_code == 204 and response.content == b""
    assert_error(get(client, path), 404)
    assert_error(delete(client, path), 404)
    assert [str(r.note_id) for r in stored(cql, "alice")] == [keep["note_id"]]
    assert_error(delete(client, f"/users/alice/notes/{uuid.uuid1()}"), 404)
    assert_error(delete(client, "/users/alice/notes/nope"), 400, "note_id")
    assert len(stored(cql, "alice")) == 1


# -- dashboard ----------------------------------------------------------------------------------------


def test_dashboard_figures_agree_with_the_notes(client, cql):
    tag_sets = [["work"], ["work", "urgent"], ["home"], [], ["work", "home"], ["urgent"], ["work"]]
    created = [create(client, "alice", f"n{i}", tags=tags) for i, tags in enumerate(tag_sets)]
    assert delete(client, f"/users/alice/notes/{created[6]['note_id']}").status_code == 204
    create(client, "bob", "b", tags=["work"])
    remaining = created[:6]

    board = get(client, "/users/alice/dashboard", tag="work").json()
    assert board["user_id"] == "alice"
    assert board["notes"] == 6 == len(stored(cql, "alice"))
    assert board["notes_written"] == 7 == notes_written(cql, "alice")
    assert board["latest"] == remaining[::-1][:5]
    assert board["latest"] == get(client, "/users/alice/notes", per_page=5).json()["items"]
    expected = Counter(tag for note in remaining for tag in note["tags"])
    assert {t["tag"]: t["notes"] for t in board["top_tags"]} == expected
    assert [t["notes"] for t in board["top_tags"]] == sorted(expected.values(), reverse=True)
    assert board["tag"] == {"tag": "work", "notes": 3}

    assert "tag" not in get(client, "/users/alice/dashboard").json()
    nobody = get(client, "/users/nobody/dashboard", tag="work").json()
    assert nobody == {
        "user_id": "nobody",
        "notes": 0,
        "notes_written": 0,
        "latest": [],
        "top_tags": [],
        "tag": {"tag": "work", "notes": 0},
    }
    assert_error(get(client, "/users/alice/dashboard", tag="x" * 51), 400, "tag")


# -- health, error shapes -------------------------------------------------------------------------


def test_health_pings_the_node(client, cql):
    response = get(client, "/health")
    assert response.status_code == 200
    version = cql.execute("SELECT release_version FROM system.local").one()[0]
    assert response.json() == {"status": "ok", "cassandra": version}


def test_http_errors_are_json(client):
    assert assert_error(get(client, "/nowhere"), 404)["error"] == "not found"
    not_allowed = client.request("PUT", "/health")
    assert assert_error(not_allowed, 405)["error"] == "method not allowed"
    assert "GET" in not_allowed.headers["Allow"]


# -- values that look like CQL -------------------------------------------------------------------------


def test_cql_looking_values_are_stored_verbatim_and_change_nothing_else(client, cql):
    bystander = create(client, "bob", "bob's note", tags=["keep"])
    title = "'); DROP TABLE notes; --"
    body = "x' WHERE user_id='bob'; TRUNCATE user_stats; /* %s %(0)s {} ? :name $$"
    tags = ["a'}, {'b", "'", "%s", "%(0)s", "?", "$$ DROP KEYSPACE x $$", "\\'", "--"]
    note = create(client, "alice", title, body=body, tags=tags)
    assert (note["title"], note["body"], note["tags"]) == (title, body, sorted(tags))
    assert get(client, f"/users/alice/notes/{note['note_id']}").json() == note

    [row] = stored(cql, "alice")
    assert (row.title, row.body, row.tags) == (title, body, set(tags))
    for tag in tags:
        assert [n["note_id"] for n in get(client, "/users/alice/notes", tag=tag).json()["items"]] == [note["note_id"]]
    assert get(client, f"/users/bob/notes/{bystander['note_id']}").json() == bystander
    assert table_sizes(cql) == (2, 2)
    assert (notes_written(cql, "alice"), notes_written(cql, "bob")) == (1, 1)


# -- concurrency: one event loop serves them all ---------------------------------------------------


def test_two_hundred_requests_from_sixteen_threads(client, cql):
    users = [f"user{i}" for i in range(5)]
    for user in users:
        create(client, user, "seed", tags=["seed"])

    def request(i: int) -> tuple[str, int, Any]:
        user = users[i % len(users)]
        kind = ("create", "create", "list", "dashboard", "read-seed", "health")[i % 6]
        if kind == "create":
            response = post(client, user, {"title": f"concurrent {i}", "tags": [f"t{i % 3}"]})
        elif kind == "list":
            response = get(client, f"/users/{user}/notes", per_page=3)
        elif kind == "dashboard":
            response = get(client, f"/users/{user}/dashboard", tag="seed")
        elif kind == "read-seed":
            response = get(client, f"/users/{user}/notes", tag="seed")
        else:
            response = get(client, "/health")
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
        listed = [n for p in walk(client, user, per_page=7) for n in p["items"]]
        assert len(listed) == len(mine) + 1


# -- the cluster is down ------------------------------------------------------------------------------


def test_cluster_lost_while_serving_is_503_json_then_recovers(serve, client, cql):
    relay = Relay((HOSTS[0], 9042))
    relay.start()
    try:
        with serve(
            CASSANDRA_HOSTS="127.0.0.1", CASSANDRA_PORT=str(relay.port), NOTES_KEYSPACE=KEYSPACE, SECRET_KEY="outage"
        ) as behind:
            note = create(behind, "alice", "before the outage")
            relay.cut()
            for _ in range(2):
                for response in (
                    get(behind, "/health"),
                    post(behind, "alice", {"title": "during the outage"}),
                    get(behind, "/users/alice/notes"),
                    get(behind, f"/users/alice/notes/{note['note_id']}"),
                    delete(behind, f"/users/alice/notes/{note['note_id']}"),
                    get(behind, "/users/alice/dashboard", tag="x"),
                ):
                    body = assert_error(response, 503)
                    assert body["error"] == "database unavailable"
            # What needs no database is still answered.
            assert_error(post(behind, "alice", {}), 400, "title")
            assert_error(get(behind, "/users/alice/notes", per_page=0), 400, "per_page")
            assert [r.title for r in stored(cql, "alice")] == ["before the outage"]

            relay.start()  # same port: the driver reconnects by itself (its default policy: 1 s, 2 s, 4 s...)
            _wait_for(lambda: get(behind, "/health").status_code == 200, seconds=60)
            create(behind, "alice", "after the outage")
            titles = [n["title"] for n in get(behind, "/users/alice/notes").json()["items"]]
            assert titles == ["after the outage", "before the outage"]
    finally:
        if relay._listener is not None:
            relay.cut()
    # The app talking to the node directly never noticed.
    assert get(client, "/health").status_code == 200


def test_lazy_app_with_no_node_answers_503_on_every_try(serve):
    down = {
        "CASSANDRA_HOSTS": "127.0.0.1",
        "CASSANDRA_PORT": str(_closed_port()),
        "NOTES_KEYSPACE": KEYSPACE,
        "CASSANDRA_LAZY_CONNECT": "true",
        "CASSANDRA_RETRY_CONNECT": "true",
        "SECRET_KEY": "down",
    }
    with serve(**down) as client:
        for _ in range(2):  # a failed connect is retried on the next request
            for response in (
                get(client, "/health"),
                post(client, "alice", {"title": "t"}),
                get(client, "/users/alice/notes"),
                get(client, f"/users/alice/notes/{uuid.uuid1()}"),
            ):
                assert assert_error(response, 503)["error"] == "database unavailable"
        assert_error(post(client, "alice", {}), 400, "title")


def test_lazy_app_answers_a_first_burst_of_concurrent_requests(serve):
    lazy = {
        "CASSANDRA_HOSTS": ",".join(HOSTS),
        "NOTES_KEYSPACE": KEYSPACE,
        "CASSANDRA_LAZY_CONNECT": "true",
        "SECRET_KEY": "lazy",
    }
    with serve(**lazy) as client:
        barrier = threading.Barrier(len(BURST))

        def fetch(path: str) -> int:
            barrier.wait()
            return get(client, path).status_code

        with ThreadPoolExecutor(len(BURST)) as pool:
            assert list(pool.map(fetch, BURST)) == [200] * len(BURST)


# -- configuration ------------------------------------------------------------------------------------


def test_per_thread_loops_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="CASSANDRA_ASYNC_LOOPS"):
        create_app({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_ASYNC_LOOPS": "per-thread", "SECRET_KEY": "s"})

"""CASSANDRA_TRACING: an OpenTelemetry CLIENT span per request to the node.

Spans go to the SDK's in-memory exporter of a tracer provider set once for
the process (OpenTelemetry allows one global provider); each test starts
with the exporter empty. Every statement runs against the suite's node,
except the paused-node durations, which use the throw-away ``faults`` node.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cassandra.cluster
import pytest
from cassandra import AlreadyExists, InvalidRequest, OperationTimedOut
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.cqlengine.query import BatchQuery
from cassandra.policies import RoundRobinPolicy
from cassandra.protocol import AlreadyExistsException, InvalidRequestException, ServerError, UnavailableErrorMessage
from cassandra.query import BatchStatement, PreparedStatement, SimpleStatement
from flask import jsonify
from opentelemetry import trace
from opentelemetry.instrumentation.cassandra import CassandraInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flask_cqlalchemy import CQLAlchemy, compiled, execution, tracing

from .conftest import HOSTS, KEYSPACE, make_app
from .support.frameworks import make_framework_app
from .support.launcher import local_cluster

ROOT = Path(__file__).resolve().parent.parent
SCOPE = "flask_cqlalchemy"
PAGE = "flask_cqlalchemy.page.number"
RESENT = "flask_cqlalchemy.prepared_statement.resent_unprepared"

app = make_app(__name__, CASSANDRA_TRACING=True)
db = CQLAlchemy(app)
# The same extension on an app whose async views run on the extension's
# per-thread loops, and on a Quart app.
loops_app = make_app(f"{__name__}.loops", CASSANDRA_TRACING=True, CASSANDRA_ASYNC_LOOPS="per-thread")
db.init_app(loops_app)
quart_app = make_framework_app("quart", f"{__name__}.quart", CASSANDRA_TRACING=True)
db.init_app(quart_app)
# Tracing off: the same models through an extension that does not trace.
quiet_app = make_app(f"{__name__}.quiet")
quiet_db = CQLAlchemy(quiet_app)


class TracedNote(db.Model):
    owner = db.columns.Text(partition_key=True)
    n = db.columns.Integer(primary_key=True)
    body = db.columns.Text()


class QuietNote(quiet_db.Model):
    __table_name__ = "traced_note"
    owner = quiet_db.columns.Text(partition_key=True)
    n = quiet_db.columns.Integer(primary_key=True)
    body = quiet_db.columns.Text()


SECRET = "do-not-trace-me"


@app.get("/notes/<owner>/sync")
def sync_view(owner: str) -> Any:
    note = TracedNote.get(owner=owner, n=1)
    rows = list(TracedNote.objects(owner=owner).fetch_size(3))
    return jsonify(body=note.body, count=len(rows))


async def async_view(owner: str) -> Any:
    note = await TracedNote.aget(owner=owner, n=1)
    rows = await TracedNote.objects(owner=owner).fetch_size(3).aall()
    return jsonify(body=note.body, count=len(rows))


app.add_url_rule("/notes/<owner>/async", view_func=async_view)
loops_app.add_url_rule("/notes/<owner>/async", view_func=async_view)
# Request spans (SERVER) from opentelemetry-instrumentation-flask, through
# the global tracer provider once the fixture below has set it.
for flask_app in (app, loops_app):
    FlaskInstrumentor().instrument_app(flask_app)


@quart_app.get("/notes/<owner>/async")
async def quart_view(owner: str) -> Any:
    # No ASGI instrumentation here: the view's own span stands for the request's.
    with trace.get_tracer("tests").start_as_current_span("quart view"):
        note = await TracedNote.aget(owner=owner, n=1)
        rows = await TracedNote.objects(owner=owner).fetch_size(3).aall()
    return {"body": note.body, "count": len(rows)}


# -- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The process's SDK tracer provider (set here unless a provider is set already)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    created = TracerProvider()
    trace.set_tracer_provider(created)
    assert trace.get_tracer_provider() is created, "another tracer provider was set first"
    return created


@pytest.fixture(scope="module")
def exporter(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays, exporting nothing from now on


@pytest.fixture(scope="module")
def traced_db(exporter: InMemorySpanExporter) -> Iterator[CQLAlchemy]:
    with app.app_context():
        db.sync_db()
    yield db
    db.shutdown()
    quiet_db.shutdown()


class Spans:
    """The spans of this extension the exporter has, ended since the last :meth:`clear`."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def __call__(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.instrumentation_scope.name == SCOPE]

    def everyone(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture()
def spans(traced_db: CQLAlchemy, exporter: InMemorySpanExporter) -> Spans:
    """Seven notes of owner ``ann`` (n = 0..6), then the spans ended since."""
    db.truncate(TracedNote)
    with app.app_context():
        for n in range(7):
            TracedNote.create(owner="ann", n=n, body=f"{SECRET}-{n}")
    exporter.clear()
    return Spans(exporter)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def pages(found: list[ReadableSpan]) -> list[Any]:
    return [attributes(s).get(PAGE) for s in found]


def assert_no_values(found: list[ReadableSpan], *values: str) -> None:
    """No value a statement carried is on the spans: not in an attribute,
    the status description, or an event (its name or any attribute)."""
    for span in found:
        text = " ".join(
            [
                json.dumps(attributes(span)),
                span.status.description or "",
                *(e.name + json.dumps(dict(e.attributes or {})) for e in span.events),
            ]
        )
        for value in (SECRET, *values):
            assert value not in text, text
        assert "ann" not in json.dumps(attributes(span).get("db.query.text")), text


# -- one span per request ------------------------------------------------------


def test_point_read_is_one_client_span_with_the_semantic_attributes(spans):
    with app.app_context():
        assert TracedNote.get(owner="ann", n=2).body == f"{SECRET}-2"
    (span,) = spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "SELECT traced_note"
    assert span.status.status_code is StatusCode.UNSET
    found = attributes(span)
    assert found["db.system.name"] == "cassandra"
    assert found["db.namespace"] == KEYSPACE
    assert found["db.operation.name"] == "SELECT"
    assert found["db.collection.name"] == "traced_note"
    assert found["db.query.text"].startswith("SELECT ") and "%(0)s" in found["db.query.text"]
    assert found["server.address"] == found["network.peer.address"] == HOSTS[0]
    assert found["server.port"] == found["network.peer.port"] == 9042
    assert found["cassandra.consistency.level"] == "local_one"
    assert found["cassandra.coordinator.dc"] and found["cassandra.coordinator.id"]
    assert found[PAGE] == 1 and found["cassandra.page.size"] == 5000
    assert span.end_time > span.start_time
    assert_no_values([span])


def test_writes_and_async_reads_are_one_span_each(spans):
    with app.app_context():
        TracedNote.create(owner="bob", n=1, body=SECRET)
        TracedNote.objects(owner="bob", n=1).update(body=SECRET + "!")

        async def read_and_delete() -> Any:
            note = await TracedNote.aget(owner="bob", n=1)
            await note.adelete()
            return note

        assert asyncio.run(read_and_delete()).body == SECRET + "!"
    found = spans()
    assert [s.name for s in found] == [
        "INSERT traced_note",
        "UPDATE traced_note",
        "SELECT traced_note",
        "DELETE traced_note",
    ]
    assert PAGE not in attributes(found[0])
    assert_no_values(found)


def test_each_page_of_a_sync_iteration_is_one_span(spans, record_figure):
    tracer = trace.get_tracer("tests")
    with app.app_context(), tracer.start_as_current_span("caller") as caller:
        rows = list(TracedNote.objects(owner="ann").fetch_size(3))
    assert len(rows) == 7
    found = spans()
    assert pages(found) == [1, 2, 3]  # 3 + 3 + 1 rows
    record_figure(
        f"tracing: sync iteration of 7 rows, fetch_size 3: 3 pages -> {len(found)} spans, pages {pages(found)}"
    )
    assert all(attributes(s)["cassandra.page.size"] == 3 for s in found)
    assert all(s.parent.span_id == caller.get_span_context().span_id for s in found)
    # One request at a time: each page is asked for once the one before answered.
    for before, after in zip(found, found[1:], strict=False):
        assert before.end_time <= after.end_time and before.start_time <= after.start_time


def test_each_page_of_async_for_and_aall_is_one_span(spans, record_figure):
    async def read() -> tuple[int, int, int]:
        streamed = [note async for note in TracedNote.objects(owner="ann").fetch_size(3)]
        listed = await TracedNote.objects(owner="ann").fetch_size(3).aall()
        raw = await db.aio.execute(
            f"SELECT * FROM {KEYSPACE}.traced_note WHERE owner = %s", ["ann"], consistency="ONE", timeout=5
        )
        return len(streamed), len(listed), len(raw)

    with app.app_context():
        assert asyncio.run(read()) == (7, 7, 7)
    found = spans()
    assert pages(found[:6]) == [1, 2, 3, 1, 2, 3]
    record_figure(
        f"tracing: async for and aall of 7 rows, fetch_size 3: 3 pages each -> spans, pages {pages(found[:6])}"
    )
    assert len(found) == 7 and found[6].name == "SELECT traced_note"  # the raw one: default page size, one page
    assert attributes(found[6])["cassandra.consistency.level"] == "one"


def test_paginate_is_a_page_and_its_one_row_look_ahead(spans):
    with app.app_context():
        first = TracedNote.objects(owner="ann").paginate(per_page=4)

        async def second() -> Any:
            return await TracedNote.objects(owner="ann").apaginate(per_page=4, cursor=first.next_cursor)

        assert len(asyncio.run(second()).items) == 3
    found = spans()
    assert [(attributes(s)[PAGE], attributes(s)["cassandra.page.size"]) for s in found] == [
        (1, 4),
        (2, 1),
        (1, 4),  # a page asked for with a cursor is the first of that call
    ]


def test_compiled_plan_and_prepared_statement_are_one_span_each(spans):
    with app.app_context():
        TracedNote.get(owner="ann", n=1)  # teaches the plan of this shape
        TracedNote.objects(owner="ann", n__gt=4).count()  # an operator: no plan, the prepared fast path
        route = execution.route_of(db.session)
        assert route.prepared.settle(10)
        counted = spans()[-1]
        (count_text,) = [
            t for t in list(route.prepared._entries) if tracing.sanitized(t) == counted.attributes["db.query.text"]
        ]
        assert route.prepared.lookup(count_text) is not None
        planned = compiled.read_statement(TracedNote, TracedNote._class_get_connection(), {"owner": "ann", "n": 1})
        assert planned is not None and planned[0].wire is not None
        spans.clear()
        assert TracedNote.get(owner="ann", n=1).n == 1  # the plan, bound into its prepared statement
        assert asyncio.run(TracedNote.aget(owner="ann", n=1)).n == 1
        assert TracedNote.objects(owner="ann", n__gt=4).count() == 2  # bound into its prepared statement
    found = spans()
    assert [s.name for s in found] == ["SELECT traced_note"] * 3
    assert attributes(found[0])["db.query.text"] == tracing.sanitized(planned[0].describe())
    assert attributes(found[2])["db.query.text"] == counted.attributes["db.query.text"]
    assert all(attributes(s)["server.address"] == HOSTS[0] and s.end_time > s.start_time for s in found)
    assert_no_values(found)


def test_batches_are_one_span(spans):
    with app.app_context():
        with BatchQuery() as batch:
            TracedNote.batch(batch).create(owner="cy", n=1, body=SECRET)
            TracedNote.batch(batch).create(owner="cy", n=2, body=SECRET)

        async def async_batch() -> None:
            async with db.aio.batch() as batch:
                TracedNote.batch(batch).create(owner="cy", n=3, body=SECRET)
                TracedNote.objects(owner="cy", n=1).batch(batch).delete()

        asyncio.run(async_batch())
        assert TracedNote.objects(owner="cy").count() == 2
    sync_batch, async_batch_span, _count = spans()
    assert sync_batch.name == "BATCH INSERT traced_note"
    assert attributes(sync_batch)["db.operation.batch.size"] == 2
    assert attributes(async_batch_span)["db.operation.name"] == "BATCH"
    assert attributes(async_batch_span)["db.collection.name"] == "traced_note"
    assert_no_values([sync_batch, async_batch_span])


class Scratch(db.Model):
    id = db.columns.Integer(primary_key=True)


def test_ddl_and_errors_are_spans_too(spans):
    with app.app_context():
        Scratch.create(id=1)
        db.drop_table(Scratch)
        spans.clear()
        with pytest.raises(InvalidRequest):
            Scratch.get(id=1)
        with pytest.raises(InvalidRequest):
            asyncio.run(Scratch.objects.aall())
        failed = spans()
        db.sync_table(Scratch)
    assert len(failed) == 2
    for span in failed:
        assert span.status.status_code is StatusCode.ERROR
        assert attributes(span)["error.type"] == "cassandra.InvalidRequest"
        assert attributes(span)["server.address"] == HOSTS[0]
        (event,) = span.events
        assert event.name == "exception" and event.attributes["exception.type"] == "cassandra.InvalidRequest"


def test_sync_db_ddl_is_traced(traced_db, exporter):
    with app.app_context():
        exporter.clear()
        db.drop_table(Scratch)
        db.sync_table(Scratch)
    names = [s.name for s in Spans(exporter)()]
    assert names == ["DROP TABLE scratch", "CREATE TABLE scratch"]
    create = Spans(exporter)()[1]
    # The driver answers DDL once the schema agreed: the span lasts that long.
    assert attributes(create)["db.operation.name"] == "CREATE TABLE" and create.status.status_code is StatusCode.UNSET


def test_prepared_statement_the_node_forgot_is_one_span_with_an_event(spans):
    """A write bound into its prepared statement, the table re-created by
    another client before it is sent: the node no longer knows the
    statement, so the seam sends cqlengine's statement unprepared. Both
    sends are one span, with an event for the second."""
    raw = Cluster(HOSTS, protocol_version=5)
    session = raw.connect()
    try:
        with app.app_context():
            for face in ("sync", "async"):
                table = f"forgotten_{face}"
                Forgotten = type(
                    f"Forgotten{face}",
                    (db.Model,),
                    {"__table_name__": table, "__module__": __name__, "pk": db.columns.Integer(primary_key=True)},
                )
                db.sync_table(Forgotten)
                for pk in range(3):
                    Forgotten.create(pk=pk)
                    assert execution.route_of(db.session).prepared.settle(10)
                statement = compiled.insert_statement(Forgotten, Forgotten._class_get_connection(), Forgotten(pk=20))
                assert statement is not None and statement.wire is not None
                session.execute(f"DROP TABLE {KEYSPACE}.{table}")
                session.execute(f"CREATE TABLE {KEYSPACE}.{table} (pk int PRIMARY KEY)")
                spans.clear()
                if face == "sync":
                    execution.send_sync(statement)
                else:

                    async def send(statement: execution.Statement = statement) -> None:
                        await execution.send(statement)

                    asyncio.run(send())
                (span,) = spans()
                assert [e.name for e in span.events] == [RESENT], face
                assert span.status.status_code is StatusCode.UNSET, face
                assert session.execute(f"SELECT pk FROM {KEYSPACE}.{table}").one().pk == 20
                session.execute(f"DROP TABLE {KEYSPACE}.{table}")
    finally:
        raw.shutdown()


def test_forgotten_prepared_statement_is_no_error_when_another_errback_is_slow(spans):
    """The driver wakes ``result()`` before it runs the errbacks: another
    wrapper of ``execute_async`` with a slow errback (an APM agent) lets the
    seam resend before the span's errback has seen the first answer. That
    late "unprepared" answer is still not the span's end (the resent
    statement's answer is)."""
    raw = Cluster(HOSTS, protocol_version=5)
    session = raw.connect()
    table = "forgotten_slow"
    with app.app_context():
        traced_session = db.session
    armed = []
    send = traced_session.execute_async

    def slow(seconds: float) -> Any:
        def callback(answer: Any) -> None:
            if armed:
                time.sleep(seconds)

        return callback

    def execute_async(*args: Any, **kwargs: Any) -> ResponseFuture:
        future = send(*args, **kwargs)
        # Registered before the span's callbacks: the unprepared answer's late
        # errback runs while the resent statement's answer waits behind a
        # slower callback.
        future.add_callbacks(slow(0.2), slow(0.05))
        return future

    try:
        with app.app_context():
            Forgotten = type(
                "ForgottenSlow",
                (db.Model,),
                {"__table_name__": table, "__module__": __name__, "pk": db.columns.Integer(primary_key=True)},
            )
            db.sync_table(Forgotten)
            for pk in range(3):
                Forgotten.create(pk=pk)
                assert execution.route_of(traced_session).prepared.settle(10)
            statement = compiled.insert_statement(Forgotten, Forgotten._class_get_connection(), Forgotten(pk=20))
            assert statement is not None and statement.wire is not None
            session.execute(f"DROP TABLE {KEYSPACE}.{table}")
            session.execute(f"CREATE TABLE {KEYSPACE}.{table} (pk int PRIMARY KEY)")
            traced_session.execute_async = execute_async  # type: ignore[method-assign]
            spans.clear()
            armed.append(True)
            execution.send_sync(statement)
            armed.clear()
            time.sleep(0.5)  # the late callbacks have run
            (span,) = spans()
            assert span.status.status_code is StatusCode.UNSET, (span.status, dict(span.attributes or {}))
            assert [e.name for e in span.events] == [RESENT]
            assert session.execute(f"SELECT pk FROM {KEYSPACE}.{table}").one().pk == 20
    finally:
        vars(traced_session).pop("execute_async", None)
        session.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.{table}")
        raw.shutdown()


def test_every_sync_span_has_ended_when_the_call_returns(spans, record_figure):
    """The driver wakes ``result()`` before it runs the callbacks: a span
    ended only there could still be open when the caller resumes. With the
    interpreter switching threads every microsecond, each sync call's spans
    (a read, the pages of an iteration, a write) have ended when it returns."""
    late = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with app.app_context():
            for n in range(200):
                spans.clear()
                TracedNote.get(owner="ann", n=n % 7)
                late += len(spans()) != 1
                spans.clear()
                assert len(list(TracedNote.objects(owner="ann").fetch_size(3))) == 7
                late += pages(spans()) != [1, 2, 3]
                spans.clear()
                TracedNote.objects(owner="ann", n=n % 7).update(body=f"{SECRET}-{n % 7}")
                late += len(spans()) != 1
    finally:
        sys.setswitchinterval(interval)
    record_figure(f"tracing: switch interval 1 us, 600 sync calls: {late} returned before their spans ended")
    assert late == 0


# -- nesting -------------------------------------------------------------------


def request_and_statements(spans: Spans) -> tuple[ReadableSpan, list[ReadableSpan]]:
    everyone = spans.everyone()
    (request,) = [s for s in everyone if s.kind is SpanKind.SERVER]
    return request, [s for s in everyone if s.instrumentation_scope.name == SCOPE]


@pytest.mark.parametrize(
    "flask_app, path",
    [(app, "/notes/ann/sync"), (app, "/notes/ann/async"), (loops_app, "/notes/ann/async")],
    ids=["sync-view", "async-view-asgiref", "async-view-per-thread-loop"],
)
def test_statements_nest_under_the_flask_request_span(spans, flask_app, path):
    response = flask_app.test_client().get(path)
    assert response.json == {"body": f"{SECRET}-1", "count": 7}
    request, statements = request_and_statements(spans)
    assert request.name == "GET /notes/<owner>/" + path.rsplit("/", 1)[1]
    assert [s.name for s in statements] == ["SELECT traced_note"] * 4  # the get, then 3 pages
    assert pages(statements) == [1, 1, 2, 3]
    for statement in statements:
        assert statement.parent.span_id == request.context.span_id
        assert statement.context.trace_id == request.context.trace_id
        assert request.start_time <= statement.start_time <= statement.end_time <= request.end_time


def test_statements_nest_under_the_current_span_in_quart(spans):
    async def fetch() -> Any:
        response = await quart_app.test_client().get("/notes/ann/async")
        return await response.get_json()

    assert asyncio.run(fetch()) == {"body": f"{SECRET}-1", "count": 7}
    (view,) = [s for s in spans.everyone() if s.name == "quart view"]
    statements = spans()
    assert pages(statements) == [1, 1, 2, 3]
    assert all(s.parent.span_id == view.context.span_id for s in statements)


# -- tracing off -------------------------------------------------------------


def test_tracing_off_makes_no_span(spans):
    with quiet_app.app_context():
        assert QuietNote.get(owner="ann", n=1).n == 1
        assert len(list(QuietNote.objects(owner="ann").fetch_size(3))) == 7
        assert len(asyncio.run(QuietNote.objects(owner="ann").fetch_size(3).aall())) == 7
    assert spans.everyone() == []
    assert execution.route_of(quiet_db.session).trace is False


def test_tracing_off_never_imports_opentelemetry(traced_db):
    """In a fresh process with OpenTelemetry installed: statements of every
    kind sent with tracing off leave no OpenTelemetry module imported."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from flask import Flask
        from flask_cqlalchemy import CQLAlchemy

        app = Flask("quiet")
        app.config.update(CASSANDRA_HOSTS={HOSTS!r}, CASSANDRA_KEYSPACE={KEYSPACE!r})
        db = CQLAlchemy(app)

        class TracedNote(db.Model):
            owner = db.columns.Text(partition_key=True)
            n = db.columns.Integer(primary_key=True)
            body = db.columns.Text()

        with app.app_context():
            for n in range(5):
                TracedNote.create(owner="off", n=n, body="x")
                TracedNote.get(owner="off", n=n)
            rows = list(TracedNote.objects(owner="off").fetch_size(2))
            streamed = asyncio.run(TracedNote.objects(owner="off").fetch_size(2).aall())
            TracedNote.objects(owner="off").delete()
        db.shutdown()
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") or m == "flask_cqlalchemy.tracing")
        print(len(rows), len(streamed), loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "5", "[]"], result.stdout + result.stderr


# -- with opentelemetry-instrumentation-cassandra ------------------------------


@pytest.fixture()
def cassandra_instrumented(provider: TracerProvider) -> Iterator[None]:
    instrumentor = CassandraInstrumentor()
    instrumentor.instrument(tracer_provider=provider, include_db_statement=True)
    yield
    instrumentor.uninstrument()


def test_with_instrumentation_cassandra_each_statement_has_one_span(spans, cassandra_instrumented):
    """Its wrapper is stepped over for the statements traced here (one
    CLIENT span each, ours); it still traces every other ``execute_async``."""
    for path in ("/notes/ann/sync", "/notes/ann/async"):
        spans.clear()
        assert app.test_client().get(path).status_code == 200
        request, statements = request_and_statements(spans)
        clients = [s for s in spans.everyone() if s.kind is SpanKind.CLIENT]
        assert clients == statements and len(statements) == 4, [s.name for s in clients]
        assert all(s.parent.span_id == request.context.span_id for s in statements)
    spans.clear()
    with app.app_context():
        db.session.execute_async(f"SELECT owner FROM {KEYSPACE}.traced_note LIMIT 1").result()
    (theirs,) = spans.everyone()
    assert theirs.name == "Cassandra" and theirs.instrumentation_scope.name == "opentelemetry.instrumentation.cassandra"
    assert theirs.end_time is not None


def test_instrumentation_cassandra_alone_has_a_span_per_execute_async_call(spans, cassandra_instrumented):
    """What opentelemetry-instrumentation-cassandra gives by itself (tracing
    off here): a span per ``execute_async`` call, ended when the call
    returns; a sync iteration's later pages have none."""
    with quiet_app.app_context():
        assert len(list(QuietNote.objects(owner="ann").fetch_size(3))) == 7
        sync_spans = spans.everyone()
        spans.clear()
        assert len(asyncio.run(QuietNote.objects(owner="ann").fetch_size(3).aall())) == 7
        async_spans = spans.everyone()
    assert [s.name for s in sync_spans] == ["Cassandra"]  # 3 pages, 1 span
    assert [s.name for s in async_spans] == ["Cassandra"] * 3  # a request per page
    assert not any(s.instrumentation_scope.name == SCOPE for s in sync_spans + async_spans)


# -- durations: the round trip, up to the timeout ------------------------------

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def paused_node_app(exporter: InMemorySpanExporter) -> Iterator[tuple[Any, CQLAlchemy, Any]]:
    """An app on the throw-away ``faults`` node, with a 2 s request timeout."""
    with local_cluster("faults") as node:
        setup = {
            "execution_profiles": {
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=RoundRobinPolicy(), request_timeout=TIMEOUT
                )
            }
        }
        faults_app = make_app(
            f"{__name__}.faults",
            CASSANDRA_HOSTS=node.hosts,
            CASSANDRA_PORT=node.port,
            CASSANDRA_KEYSPACE="tracing_faults",
            CASSANDRA_TRACING=True,
            CASSANDRA_SETUP_KWARGS=setup,
        )
        faults_db = CQLAlchemy(faults_app)

        class FaultNote(faults_db.Model):
            id = faults_db.columns.Integer(primary_key=True)

        faults_db.create_keyspace_simple("tracing_faults", 1)
        with faults_app.app_context():
            faults_db.sync_db()
            FaultNote.create(id=1)
        try:
            yield faults_app, faults_db, FaultNote, node
        finally:
            node.resume()
            faults_db.shutdown()


def test_a_statement_to_a_paused_node_lasts_until_its_timeout(paused_node_app, exporter, record_figure):
    faults_app, faults_db, FaultNote, node = paused_node_app
    with faults_app.app_context():
        assert FaultNote.get(id=1).id == 1  # the node answers
        exporter.clear()
        node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(OperationTimedOut):
                FaultNote.get(id=1)
            sync_took = time.monotonic() - started
            with pytest.raises(OperationTimedOut):
                asyncio.run(FaultNote.aget(id=1))
        finally:
            node.resume()
        assert FaultNote.get(id=1).id == 1  # answers again
    sync_span, async_span, answered = Spans(exporter)()
    for span in (sync_span, async_span):
        took = (span.end_time - span.start_time) / 1e9
        assert TIMEOUT <= took < TIMEOUT + 1.0, took
        assert span.status.status_code is StatusCode.ERROR
        assert attributes(span)["error.type"] == "cassandra.OperationTimedOut"
        assert attributes(span)["server.address"] == node.address()
    assert (sync_span.end_time - sync_span.start_time) / 1e9 <= sync_took
    took = [(s.end_time - s.start_time) / 1e9 for s in (sync_span, async_span, answered)]
    record_figure(
        f"tracing: paused node, {TIMEOUT} s timeout: sync span {took[0]:.3f} s, async span {took[1]:.3f} s "
        f"(get() raised after {sync_took:.3f} s); answered after resume: {took[2] * 1000:.1f} ms"
    )
    assert answered.status.status_code is StatusCode.UNSET
    assert (answered.end_time - answered.start_time) / 1e9 < TIMEOUT


def test_instrumentation_cassandra_span_ends_before_the_answer(paused_node_app, exporter, cassandra_instrumented):
    """Its span ends when execute_async returns: against a paused node it
    lasts a moment, while the caller waits until the timeout."""
    faults_app, faults_db, FaultNote, node = paused_node_app
    with faults_app.app_context():
        session = faults_db.session
        exporter.clear()
        node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(OperationTimedOut):
                session.execute_async("SELECT id FROM tracing_faults.fault_note WHERE id = 1").result()
            waited = time.monotonic() - started
        finally:
            node.resume()
    (theirs,) = exporter.get_finished_spans()
    assert theirs.name == "Cassandra" and theirs.status.status_code is StatusCode.UNSET
    assert (theirs.end_time - theirs.start_time) / 1e9 < 0.5 < TIMEOUT <= waited


# -- what the tracing relies on in the driver ------------------------------------


def test_driver_internals_the_tracing_relies_on():
    """Checked here, so that a driver upgrade that changes them fails by name."""
    # tracing.execute maps Session.execute's positional arguments by name.
    names = list(inspect.signature(Session.execute).parameters)[3:]
    assert tuple(names) == tracing._EXECUTE_ARGUMENTS
    # The driver is compiled: its source file says what its functions do.
    source = (Path(cassandra.cluster.__file__).parent / "cluster.py").read_text()
    # Session.execute is execute_async(...).result(): what the traced sync path does.
    assert re.search(r"def execute\(self, query.*?\n\s+return self\.execute_async\([^)]*\)\.result\(\)", source, re.S)
    # Later pages of a ResultSet: the future's start_fetching_next_page and result, looked up on the instance.
    assert re.search(
        r"def fetch_next_page\(self\):.*?self\.response_future\.start_fetching_next_page\(\)"
        r"\s+result = self\.response_future\.result\(\)",
        source,
        re.S,
    )
    # The driver wakes result() before it runs the callbacks: a blocking call ends its span itself.
    assert re.search(r"def _set_final_result\(.*?self\._event\.set\(\).*?callback_partial\(\)", source, re.S)
    # What a span reads off the answered future: the coordinator, else the host asked; the message.
    for name in ("coordinator_host", "_current_host", "message"):
        assert hasattr(ResponseFuture, name), name
    # A batch's statements: (prepared, text or query id, values), a text with its values inlined.
    batch = BatchStatement()
    batch.add(SimpleStatement("INSERT INTO t (a) VALUES (%s)"), [1])
    batch.add(SimpleStatement("DELETE FROM t WHERE a = 2"))
    assert len(batch) == 2
    assert batch._statements_and_parameters[0] == (False, "INSERT INTO t (a) VALUES (1)", ())
    assert tracing.shape_of(batch).operation == "BATCH"
    prepared = PreparedStatement([], b"id", None, "INSERT INTO t (a) VALUES (?)", "ks", 5, None, None)
    batch.add(prepared, [])
    assert batch._statements_and_parameters[2][:2] == (True, b"id")  # the id, no text
    assert "db.query.text" not in dict(tracing.shape_of(batch).attributes)
    # A node's error: the exception the driver makes of it carries ErrorMessage.summary_msg()
    # ("Error from server: code=XXXX ..."), the code the span reads; an ErrorMessage without an
    # exception of its own is raised as it is, with its code; AlreadyExists says no code.
    invalid = InvalidRequestException(code=0x2200, message="Invalid STRING constant (hunter2)", info=None)
    assert invalid.to_exception().args[0] == invalid.summary_msg()
    assert invalid.summary_msg().startswith("Error from server: code=2200 ")
    unavailable = UnavailableErrorMessage(code=0x1000, message="m", info={"consistency": 1, "required_replicas": 1})
    server = ServerError(code=0x0000, message="m", info=None)
    exists = AlreadyExistsException(code=0x2400, message="m", info={"keyspace": "ks", "table": "t"})
    assert server.to_exception() is server
    assert isinstance(exists.to_exception(), AlreadyExists) and "code" not in str(exists.to_exception())
    for error, code in ((invalid, 0x2200), (unavailable, 0x1000), (server, 0x0000), (exists, 0x2400)):
        assert tracing._status_code(error.to_exception()) == code, error


def test_statement_texts_give_operation_table_and_no_literal():
    cases = {
        'SELECT * FROM ks.note WHERE "id" = %(0)s LIMIT 10000': ("SELECT note", "ks"),
        'INSERT INTO ks.note ("id") VALUES (%(0)s) USING TTL 60': ("INSERT note", "ks"),
        'UPDATE "Ks"."Note" SET a = ? WHERE id = ?': ("UPDATE Note", "Ks"),
        "DELETE a FROM note WHERE id = :id": ("DELETE note", None),
        "BEGIN  BATCH\n  INSERT INTO ks.n (a) VALUES (%(0)s)\n  INSERT INTO ks.n (a) VALUES (%(1)s)\nAPPLY BATCH;": (
            "BATCH INSERT n",
            "ks",
        ),
        "CREATE TABLE IF NOT EXISTS ks.note (id int PRIMARY KEY)": ("CREATE TABLE note", "ks"),
        "CREATE CUSTOM INDEX IF NOT EXISTS i ON ks.note (v) USING 'sai'": ("CREATE INDEX note", "ks"),
        "CREATE KEYSPACE other WITH replication = {'class': 'SimpleStrategy'}": (None, "other"),
    }
    for text, (name, keyspace) in cases.items():
        shape = tracing.shape_of(text)
        assert (shape.name, shape.keyspace) == (name, keyspace), text
    inline = tracing.shape_of("SELECT * FROM t WHERE email = 'ann@example.com' AND n = 42 AND b = 0xcafe")
    assert dict(inline.attributes)["db.query.text"] == "SELECT * FROM t WHERE email = ? AND n = ? AND b = ?"
    # A batch's text: its size from two statements on; a batch of one is that operation.
    one = tracing.shape_of("BEGIN BATCH INSERT INTO ks.n (a) VALUES (%(0)s) APPLY BATCH")
    assert (one.operation, one.name) == ("INSERT", "INSERT n")
    assert "db.operation.batch.size" not in dict(one.attributes)
    # A statement at the start of a line is counted once, and one in a comment not at all.
    for text in (
        "BEGIN BATCH\nINSERT INTO ks.n (a) VALUES (1)\nAPPLY BATCH",
        "BEGIN BATCH -- INSERT INTO ks.n (a) VALUES (2)\nINSERT INTO ks.n (a) VALUES (1)\nAPPLY BATCH",
    ):
        assert tracing.shape_of(text).operation == "INSERT", text
    two = tracing.shape_of("BEGIN BATCH\nINSERT INTO ks.n (a) VALUES (1);\nDELETE FROM ks.n WHERE a = 2;\nAPPLY BATCH")
    assert dict(two.attributes)["db.operation.batch.size"] == 2
    unread = tracing.shape_of("BEGIN BATCH something else APPLY BATCH")
    assert unread.operation == "BATCH" and "db.operation.batch.size" not in dict(unread.attributes)


def test_literals_never_reach_the_query_text():
    """Every literal becomes ``?``, whatever bind markers the text has; the
    markers are kept, and a marker inside a literal is part of the literal."""
    cases = {
        "INSERT INTO ks.t (a, b) VALUES (1, 'hunter2?')": "INSERT INTO ks.t (a, b) VALUES (?, ?)",
        "UPDATE ks.users SET token = 'sk_live_abc' WHERE id = %s": "UPDATE ks.users SET token = ? WHERE id = %s",
        "UPDATE ks.t SET a = 'it''s :secret' WHERE id = :id": "UPDATE ks.t SET a = ? WHERE id = :id",
        "INSERT INTO ks.t (a) VALUES ($$hunter2$$)": "INSERT INTO ks.t (a) VALUES (?)",
        'SELECT * FROM ks.note WHERE "id" = %(0)s LIMIT 10000': 'SELECT * FROM ks.note WHERE "id" = %(0)s LIMIT ?',
        "SELECT * FROM t2 WHERE k = ? AND b = 0xCAFE AND f = -1.5e3 AND ok = true": (
            "SELECT * FROM t2 WHERE k = ? AND b = ? AND f = ? AND ok = ?"
        ),
        "SELECT * FROM t WHERE u = 5f2b6f5e-1c4b-4c5e-9d8e-0123456789ab AND m = {'k': 42}": (
            "SELECT * FROM t WHERE u = ? AND m = {?: ?}"
        ),
        'SELECT "it\'s" FROM t WHERE d = 1h30m': 'SELECT "it\'s" FROM t WHERE d = ?',
        # Comments (--, //, /* */) are dropped, with what they hold: a literal
        # in one never shows, and a quote in one does not open a string.
        "SELECT * FROM t -- 'hunter2'\nWHERE a = 1": "SELECT * FROM t\nWHERE a = ?",
        "SELECT * FROM t WHERE a = ? // don't log 42\nAND b = 'x'": "SELECT * FROM t WHERE a = ?\nAND b = ?",
        "UPDATE t SET a = ? /* was 'sk_live_abc' */ WHERE id = ?": "UPDATE t SET a = ? WHERE id = ?",
        "/* it's */ INSERT INTO ks.t (a) VALUES ('hunter2') -- done": "INSERT INTO ks.t (a) VALUES (?)",
        "-- a note\nSELECT a/**/FROM t WHERE b = /* 1 */ 2 /* 'hunter2": "SELECT a FROM t WHERE b = ?",
        "SELECT * FROM t WHERE a = 5--it's 7\n": "SELECT * FROM t WHERE a = ?",
        # Comment markers inside a string or a quoted name are not comments.
        "INSERT INTO t (\"a--b\", c, d) VALUES ('-- hunter2', '/* x */', $$// y$$)": (
            'INSERT INTO t ("a--b", c, d) VALUES (?, ?, ?)'
        ),
        # A string never closed (the node refuses the statement) is a string to the end.
        "INSERT INTO ks.t (a, b) VALUES (1, 'hunter2, 3)": "INSERT INTO ks.t (a, b) VALUES (?, ?",
        "INSERT INTO ks.t (a) VALUES ($$hunter2)": "INSERT INTO ks.t (a) VALUES (?",
    }
    for text, expected in cases.items():
        assert dict(tracing.shape_of(text).attributes)["db.query.text"] == expected, text
    # What a comment says is not read for the operation and table either.
    commented = tracing.shape_of("/* it's */ SELECT a -- FROM hunter2\nFROM ks.note WHERE b = 'x'")
    assert (commented.name, commented.keyspace) == ("SELECT note", "ks")


def test_a_failure_keeps_the_server_message_off_the_span(spans):
    """The server quotes the value it refused: the span has the error's
    type and protocol code, never its message."""
    with app.app_context(), pytest.raises(InvalidRequest, match="hunter2"):
        db.execute(f"SELECT * FROM {KEYSPACE}.traced_note WHERE owner = 'ann' AND n = 'hunter2'")

    async def fail() -> None:
        await db.aio.execute(f"SELECT * FROM {KEYSPACE}.traced_note WHERE owner = 'ann' AND n = 'hunter3'")

    with app.app_context(), pytest.raises(InvalidRequest, match="hunter3"):
        asyncio.run(fail())
    found = spans()
    assert len(found) == 2
    for span in found:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "InvalidRequest (error code 0x2200)"
        assert attributes(span)["error.type"] == "cassandra.InvalidRequest"
        assert attributes(span)["db.response.status_code"] == "8704"  # 0x2200, Invalid
        (event,) = span.events
        assert event.name == "exception" and event.attributes["exception.type"] == "cassandra.InvalidRequest"
    assert_no_values(found, "hunter2", "hunter3")


def test_batch_statements_sent_directly_are_batch_spans(spans):
    table = f"{KEYSPACE}.traced_note"
    insert = f"INSERT INTO {table} (owner, n, body) VALUES (%s, %s, %s)"
    two = BatchStatement()
    two.add(SimpleStatement(insert), ("dee", 1, SECRET))
    two.add(SimpleStatement(f"DELETE FROM {table} WHERE owner = %s AND n = %s"), ("dee", 2))
    one = BatchStatement()
    one.add(SimpleStatement(insert), ("dee", 3, SECRET))
    with app.app_context():
        db.session.execute(two)
        db.session.execute(one)
        with BatchQuery() as batch:
            TracedNote.batch(batch).create(owner="dee", n=4, body=SECRET)
    found = spans()
    assert len(found) == 3
    two_span, one_span, query_span = (attributes(s) for s in found)
    assert two_span["db.operation.name"] == "BATCH" and two_span["db.operation.batch.size"] == 2
    # The driver inlines a SimpleStatement's values into a batch: they are literals now.
    assert two_span["db.query.text"] == (
        f"INSERT INTO {table} (owner, n, body) VALUES (?, ?, ?); DELETE FROM {table} WHERE owner = ? AND n = ?"
    )
    assert two_span["db.collection.name"] == "traced_note" and two_span["db.namespace"] == KEYSPACE
    for single in (one_span, query_span):  # a batch of one is that one operation
        assert single["db.operation.name"] == "INSERT" and "db.operation.batch.size" not in single
    assert one_span["db.query.text"] == f"INSERT INTO {table} (owner, n, body) VALUES (?, ?, ?)"
    assert found[1].name == found[2].name == "INSERT traced_note"
    assert_no_values(found)

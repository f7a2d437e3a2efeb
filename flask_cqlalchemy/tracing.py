"""OpenTelemetry spans for the statements the extension sends.

With ``CASSANDRA_TRACING`` on, every request the extension makes to the
cluster becomes one CLIENT span of the global tracer provider: each
statement, each page of a paged read (a page is a request of its own), each
batch and each DDL statement. The span starts when the request is sent, in
the context current there (so it nests under the Flask or Quart request
span), and ends in the driver's callback when the answer, an error or the
client-side timeout arrives: its duration is the round trip, and what the
caller waited for.

Off (the default), the seam checks ``Route.trace`` once per statement and
this module is not even imported.

The span carries the database semantic conventions: ``db.system.name``,
``db.namespace`` (the keyspace), ``db.operation.name``, ``db.collection.name``
and ``db.query.summary`` when the text names one table, ``db.query.text``
(the statement's text, never its bound values), the coordinator that
answered (``server.address``/``server.port``, ``network.peer.*``,
``cassandra.coordinator.dc``/``.id``), ``cassandra.consistency.level``,
and for reads ``cassandra.page.size`` and ``cassandra.page.number`` (1, 2...
within one call). A failure is recorded on the span (exception event,
``error.type``, status ERROR).

opentelemetry-instrumentation-cassandra wraps ``Session.execute_async`` with
a span that ends when the request is *submitted*. For the statements traced
here its wrapper is stepped over, so that each statement has one CLIENT
span, not two; every other call of ``execute_async`` keeps its span.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import ResponseFuture, Session
from cassandra.query import BatchStatement, BoundStatement
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .prepared import StalePreparedStatement

#: ``Session.execute``'s positional arguments after the parameters, in order.
_EXECUTE_ARGUMENTS = ("timeout", "trace", "custom_payload", "execution_profile", "paging_state", "host", "execute_as")
_INSTRUMENTATION_CASSANDRA = "opentelemetry.instrumentation.cassandra"
#: The event of a statement the node no longer knew prepared, sent again unprepared.
RESENT_UNPREPARED = "cassandra.prepared_statement.resent_unprepared"


def _version() -> str:
    from . import __version__

    return __version__


# A proxy until the application sets its tracer provider, then that provider's.
_tracer = trace.get_tracer("flask_cqlalchemy", _version())


def execute(
    route: Any, query: Any, params: Any, wire_query: Any, wire_params: Any, page: int, *args: Any, **kwargs: Any
) -> Any:
    """The traced twin of the seam's blocking send: ``Session.execute``'s
    ``execute_async(...).result()``, with the span watching the request.

    Raises what ``Session.execute`` raises. A prepared statement the node
    no longer knows is sent again unprepared under the same span.
    """
    options = dict(zip(_EXECUTE_ARGUMENTS[: len(args)], args, strict=True))
    options.update(kwargs)
    statement_trace = StatementTrace(route.session, query, page)
    try:
        return statement_trace.send(wire_query, wire_params, options).result()
    except StalePreparedStatement:
        route.invalidate()
        return statement_trace.resend(query, params, options).result()


class StatementTrace:
    """The spans of one statement: one per request it makes.

    Its first request is sent by :meth:`send`; later pages fetched through
    the driver's ``ResultSet`` (cqlengine's sync iteration) each start a span
    when ``start_fetching_next_page`` is called. The driver keeps a future's
    callbacks across its pages and calls them in order, one answer at a
    time, so each callback ends the oldest span still open.
    """

    __slots__ = ("_session", "_shape", "_namespace", "_page", "_open", "_resendable")

    def __init__(self, session: Session, query: Any, page: int = 1) -> None:
        self._session = session
        self._shape = shape_of(query)
        keyspace = self._shape.keyspace or getattr(query, "keyspace", None) or session.keyspace
        self._namespace: str | None = keyspace
        self._page = page
        self._open: deque[Span] = deque()
        #: Whether a StalePreparedStatement answer will be followed by :meth:`resend`.
        self._resendable = True
        self._start()

    def send(self, query: Any, params: Any, options: dict[str, Any]) -> ResponseFuture:
        """``execute_async`` the request, its span watching the answer."""
        try:
            future = _execute_async(self._session)(query, params, **options)
        except BaseException as exc:
            self._end(None, exc)
            raise
        self._watch(future)
        return future

    def resend(self, query: Any, params: Any, options: dict[str, Any]) -> ResponseFuture:
        """:meth:`send` of cqlengine's own statement, unprepared, after the
        node answered that it no longer knows the prepared one: the same
        span, with an event."""
        self._resendable = False
        if self._open:
            self._open[0].add_event(RESENT_UNPREPARED)
        return self.send(query, params, options)

    def _start(self) -> None:
        shape = self._shape
        attributes = dict(shape.attributes)
        if self._namespace:
            attributes["db.namespace"] = self._namespace
        if shape.reads:
            attributes["cassandra.page.number"] = self._page
        name = shape.name or (f"{shape.operation} {self._namespace}" if self._namespace else shape.operation)
        self._open.append(_tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes))

    def _watch(self, future: ResponseFuture) -> None:
        # Weakly: the future holds these callbacks (and keeps them across
        # pages); a strong reference back would make every traced request
        # a reference cycle.
        ref = weakref.ref(future)
        future.add_callbacks(self._answered, self._failed, callback_args=(ref,), errback_args=(ref,))
        # An instance attribute, seen by ResultSet.fetch_next_page only.
        future.start_fetching_next_page = functools.partial(self._next_page, ref)  # type: ignore[method-assign]

    def _next_page(self, ref: weakref.ref[ResponseFuture]) -> None:
        future = ref()
        if future is None:  # pragma: no cover - this is an attribute of that future
            return
        if not future.has_more_pages:
            ResponseFuture.start_fetching_next_page(future)  # raises QueryExhausted
            return
        self._resendable = False  # the seam sends a page of a ResultSet only once
        self._page += 1
        self._start()
        try:
            ResponseFuture.start_fetching_next_page(future)
        except BaseException as exc:
            self._end(future, exc)
            raise

    # The driver calls these on its I/O thread (or at once, in the sending
    # thread) and ignores what they raise; nothing here may raise.

    def _answered(self, rows: Any, ref: weakref.ref[ResponseFuture]) -> None:
        try:
            self._end(ref(), None)
        except Exception:  # pragma: no cover - a broken span processor
            pass

    def _failed(self, error: BaseException, ref: weakref.ref[ResponseFuture]) -> None:
        if self._resendable and isinstance(error, StalePreparedStatement):
            return  # the seam sends it again unprepared: see resend()
        try:
            self._end(ref(), error)
        except Exception:  # pragma: no cover - a broken span processor
            pass

    def _end(self, future: ResponseFuture | None, error: BaseException | None) -> None:
        try:
            span = self._open.popleft()
        except IndexError:
            return
        if future is not None and span.is_recording():
            span.set_attributes(_answer_attributes(future, self._shape.reads))
        if error is not None:
            span.record_exception(error)
            span.set_attribute("error.type", _error_type(error))
            span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
        span.end()


def _execute_async(session: Session) -> Any:
    """``session.execute_async``, past opentelemetry-instrumentation-cassandra's
    wrapper if that is the outermost one (any other wrapper is kept)."""
    if "execute_async" not in vars(session):
        for klass in type(session).__mro__:
            found = klass.__dict__.get("execute_async")
            if found is not None:
                wrapper = getattr(found, "_self_wrapper", None)
                if getattr(wrapper, "__module__", None) == _INSTRUMENTATION_CASSANDRA:
                    return functools.partial(found.__wrapped__, session)
                break
    return session.execute_async


def _answer_attributes(future: ResponseFuture, reads: bool) -> dict[str, Any]:
    """What the request's future knows once answered: the coordinator (the
    host the request went to, when no answer came), consistency, page size."""
    attributes: dict[str, Any] = {}
    host = future.coordinator_host or future._current_host
    if host is not None:
        endpoint = host.endpoint
        address, port = getattr(endpoint, "address", None), getattr(endpoint, "port", None)
        if address is not None:
            attributes["server.address"] = attributes["network.peer.address"] = str(address)
        if port is not None:
            attributes["server.port"] = attributes["network.peer.port"] = int(port)
        if host.datacenter:
            attributes["cassandra.coordinator.dc"] = host.datacenter
        if host.host_id is not None:
            attributes["cassandra.coordinator.id"] = str(host.host_id)
    message = future.message
    consistency = getattr(message, "consistency_level", None)
    if consistency is not None:
        attributes["cassandra.consistency.level"] = ConsistencyLevel.value_to_name.get(consistency, "").lower()
    fetch_size = getattr(message, "fetch_size", None)
    if reads and fetch_size:
        attributes["cassandra.page.size"] = fetch_size
    return attributes


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


# -- what a statement's text says -------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """What the span of a statement says about it before it is sent."""

    #: The span's name, when the text names its table; else None.
    name: str | None
    operation: str
    #: The keyspace the text qualifies its table with, if any.
    keyspace: str | None
    #: Whether it is a SELECT (its requests are pages).
    reads: bool
    attributes: tuple[tuple[str, Any], ...]


def shape_of(query: Any) -> Shape:
    """The :class:`Shape` of a statement as the seam receives it: a text, a
    ``SimpleStatement``, a ``BoundStatement`` or a ``BatchStatement``."""
    if isinstance(query, BatchStatement):
        size = len(query)
        return Shape(None, "BATCH", None, False, (*_SYSTEM, ("db.operation.batch.size", size)))
    if isinstance(query, BoundStatement):
        return _shape_of_text(query.prepared_statement.query_string)
    return _shape_of_text(getattr(query, "query_string", None) or str(query))


_SYSTEM = (("db.system.name", "cassandra"),)
_NAME = r'(?:"(?:[^"]|"")+"|\w+)'
_TABLE = rf"(?P<first>{_NAME})(?:\s*\.\s*(?P<second>{_NAME}))?"
_IF_EXISTS = r"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
# Patterns used with match(), which anchors them where the search starts.
_DML = re.compile(
    rf"""\s*(?P<op>SELECT|INSERT|UPDATE|DELETE|TRUNCATE)\b
    (?:(?<=SELECT|DELETE).*?\bFROM|(?<=INSERT)\s+INTO|(?<=TRUNCATE)(?:\s+TABLE)?|(?<=UPDATE))
    \s+{_TABLE}""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_SCHEMA = re.compile(
    r"\s*(?P<verb>CREATE|ALTER|DROP)\s+(?:OR\s+REPLACE\s+)?(?:CUSTOM\s+)?"
    r"(?P<kind>TABLE|COLUMNFAMILY|INDEX|TYPE|KEYSPACE|MATERIALIZED\s+VIEW|FUNCTION|AGGREGATE|TRIGGER|ROLE|USER)\s+",
    re.IGNORECASE,
)
_NAMED = re.compile(rf"{_IF_EXISTS}{_TABLE}", re.IGNORECASE)
_INDEX_ON = re.compile(rf"\bON\s+{_TABLE}", re.IGNORECASE)
_BATCH = re.compile(r"\s*BEGIN\s+(?:(?:UNLOGGED|COUNTER)\s+)?BATCH\b(?:\s+USING\s+TIMESTAMP\s+\S+)?", re.IGNORECASE)
_STATEMENT_START = re.compile(r"(?:^|;)\s*(?=(?:INSERT|UPDATE|DELETE)\b)", re.IGNORECASE | re.MULTILINE)
_FIRST_WORD = re.compile(r"\s*(\w+)")
#: Bind markers: the driver's ``%s`` and ``%(name)s``, and CQL's ``?`` and ``:name``.
_MARKER = re.compile(r"%s|%\(\w+\)s|\?|(?<![\w:]):\w+")
#: What stays as written (quoted names, bind markers, dollar-quoted bodies)
#: and the literals replaced by ``?`` in a text that has no bind markers.
_LITERAL = re.compile(
    r"""(?P<keep>"(?:[^"]|"")*"|%\(\w+\)s|\$\$.*?\$\$)"""
    r"""|'(?:[^']|'')*'"""
    r"""|\b0[xX][0-9a-fA-F]*\b"""
    r"""|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"""
    r"""|(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b""",
    re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def _shape_of_text(text: str) -> Shape:
    attributes: dict[str, Any] = dict(_SYSTEM)
    attributes["db.query.text"] = text if _MARKER.search(text) else sanitized(text)
    keyspace: str | None = None
    table: str | None = None
    if (batch := _BATCH.match(text)) is not None:
        operation, keyspace, table = _batch_of(text[batch.end() :], attributes)
    elif (dml := _DML.match(text)) is not None:
        operation = dml["op"]
        keyspace, table = _qualified(dml)
    elif (schema := _SCHEMA.match(text)) is not None:
        kind = " ".join(schema["kind"].split())
        operation = f"{schema['verb']} {kind}"
        named = _NAMED.match(text, schema.end())
        if kind.upper() == "KEYSPACE" and named is not None:
            keyspace = _unquoted(named["first"])
        elif kind.upper() in ("TABLE", "COLUMNFAMILY") and named is not None:
            keyspace, table = _qualified(named)
        elif kind.upper() == "INDEX" and (on := _INDEX_ON.search(text, schema.end())) is not None:
            keyspace, table = _qualified(on)
        elif named is not None:  # a type, function...: its keyspace, if it names one
            keyspace = _qualified(named)[0]
    else:
        first = _FIRST_WORD.match(text)
        operation = first[1] if first else "CQL"
    attributes["db.operation.name"] = operation
    name = None
    if table is not None:
        attributes["db.collection.name"] = table
        name = attributes["db.query.summary"] = f"{operation} {table}"
    return Shape(name, operation, keyspace, operation.upper() == "SELECT", tuple(attributes.items()))


def _batch_of(body: str, attributes: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """The operation (``BATCH INSERT`` when all its statements insert,
    ``BATCH`` when they differ), keyspace and table of a batch's text, and its size."""
    body = body.rsplit("APPLY", 1)[0]
    operations: set[str] = set()
    tables: set[tuple[str | None, str]] = set()
    count = 0
    for start in _STATEMENT_START.finditer(body):
        found = _DML.match(body, start.end())
        if found is not None:
            count += 1
            operations.add(found["op"].upper())
            tables.add(_qualified(found))
    if count != 1:
        attributes["db.operation.batch.size"] = count
    operation = f"BATCH {next(iter(operations))}" if len(operations) == 1 else "BATCH"
    keyspace, table = next(iter(tables)) if len(tables) == 1 else (None, None)
    return operation, keyspace, table


def _qualified(match: re.Match[str]) -> tuple[str | None, str]:
    """``(keyspace or None, table)`` of a ``[keyspace.]table`` match, unquoted."""
    first, second = _unquoted(match["first"]), match["second"]
    return (first, _unquoted(second)) if second else (None, first)


def _unquoted(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def sanitized(text: str) -> str:
    """``text`` with its literals (strings, numbers, blobs, UUIDs) replaced by ``?``."""
    return _LITERAL.sub(lambda m: m["keep"] or "?", text)

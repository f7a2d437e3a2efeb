"""OpenTelemetry spans for the statements the extension sends.

With ``CASSANDRA_TRACING`` on, every request the extension makes to the
cluster becomes one CLIENT span of the global tracer provider: each
statement, each page of a paged read (a page is a request of its own), each
batch and each DDL statement. The span starts when the request is sent, in
the context current there (so it nests under the Flask or Quart request
span), and ends when the answer, an error or the client-side timeout
arrives: in the driver's callback, or in a blocking caller's ``result()``
if that resumes first. Its duration is the round trip, what the caller
waited for; a call returns with its spans ended.

Off (the default), the seam checks ``Route.trace`` once per statement and
this module is not even imported.

The span carries the database semantic conventions: ``db.system.name``,
``db.namespace`` (the keyspace), ``db.operation.name``, ``db.collection.name``
and ``db.query.summary`` when the text names one table, ``db.query.text``
(the statement's text, its literals replaced by ``?`` and its comments
dropped: never a value), ``db.operation.batch.size``, the coordinator that
answered (``server.address``/``server.port``, ``network.peer.*``,
``cassandra.coordinator.dc``/``.id``), ``cassandra.consistency.level``,
and for reads ``cassandra.page.size`` and ``flask_cqlalchemy.page.number``
(1, 2... within one call). A failure is recorded on the span (status ERROR,
``error.type``, ``db.response.status_code``, an exception event), without
the error's message, which may quote a value.

opentelemetry-instrumentation-cassandra wraps ``Session.execute_async`` with
a span that ends when the request is *submitted*. For the statements traced
here its wrapper is stepped over, so that each statement has one CLIENT
span, not two; every other call of ``execute_async`` keeps its span.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from cassandra import AlreadyExists, ConsistencyLevel
from cassandra.cluster import ResponseFuture, Session
from cassandra.protocol import AlreadyExistsException, ErrorMessage
from cassandra.query import BatchStatement, BoundStatement
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .prepared import StalePreparedStatement

#: ``Session.execute``'s positional arguments after the parameters, in order.
_EXECUTE_ARGUMENTS = ("timeout", "trace", "custom_payload", "execution_profile", "paging_state", "host", "execute_as")
_INSTRUMENTATION_CASSANDRA = "opentelemetry.instrumentation.cassandra"
#: The event of a statement the node no longer knew prepared, sent again
#: unprepared: like the page number, this extension's own name.
RESENT_UNPREPARED = "flask_cqlalchemy.prepared_statement.resent_unprepared"
#: The number of a read's request within one call (1, 2...): this
#: extension's own attribute, outside the ``cassandra.*`` namespace the
#: semantic conventions own (as is the event above).
PAGE_NUMBER = "flask_cqlalchemy.page.number"


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
    Its span has ended when it returns or raises.

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


class _Request:
    """One request to the node: its span, ended once (by the driver's
    callback or by the caller's ``result()``, whichever comes first)."""

    __slots__ = ("span", "ended", "lock")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.ended = False
        # Held while ending: the one that comes second returns only once
        # the span has ended.
        self.lock = threading.Lock()


class _Watched:
    """The requests made with one driver future, in the order sent: the
    first, then each page a ``ResultSet`` fetched with it."""

    __slots__ = ("ref", "requests", "answers", "resendable")

    def __init__(self, future: ResponseFuture, request: _Request, resendable: bool) -> None:
        # Weakly: the future holds its callbacks (and keeps them across
        # pages); a strong reference back would make every traced request
        # a reference cycle.
        self.ref = weakref.ref(future)
        self.requests = [request]
        #: How many answers (results or errors) its callbacks have seen.
        self.answers = 0
        #: Whether a StalePreparedStatement answer to its first request is
        #: followed by :meth:`StatementTrace.resend` (the seam always does).
        self.resendable = resendable

    def answered(self) -> _Request | None:
        """The request an answer the callbacks see is for: the driver calls
        a future's callbacks once per request, in order."""
        index, self.answers = self.answers, self.answers + 1
        return self.requests[index] if index < len(self.requests) else None

    def resent(self, request: _Request, error: BaseException) -> bool:
        """Whether ``error``, the answer to ``request``, is followed by a
        resend under the same span (so it does not end it)."""
        return self.resendable and request is self.requests[0] and isinstance(error, StalePreparedStatement)


class StatementTrace:
    """The spans of one statement: one per request it makes.

    Its first request is sent by :meth:`send`; later pages fetched through
    the driver's ``ResultSet`` (cqlengine's sync iteration) each start a span
    when ``start_fetching_next_page`` is called. A span ends in the driver's
    callback, or in ``result()`` if the caller gets there first (the driver
    wakes ``result()`` before it runs the callbacks): a blocking call
    returns with its spans ended, an awaited one gets its answer through a
    callback registered after the span's.
    """

    __slots__ = ("_session", "_shape", "_namespace", "_page", "_first")

    def __init__(self, session: Session, query: Any, page: int = 1) -> None:
        self._session = session
        self._shape = shape_of(query)
        keyspace = self._shape.keyspace or getattr(query, "keyspace", None) or session.keyspace
        self._namespace: str | None = keyspace
        self._page = page
        self._first = self._start()

    def send(self, query: Any, params: Any, options: dict[str, Any]) -> ResponseFuture:
        """``execute_async`` the request, its span watching the answer."""
        return self._send(query, params, options, resendable=True)

    def resend(self, query: Any, params: Any, options: dict[str, Any]) -> ResponseFuture:
        """:meth:`send` of cqlengine's own statement, unprepared, after the
        node answered that it no longer knows the prepared one: the same
        span, with an event."""
        self._first.span.add_event(RESENT_UNPREPARED)
        return self._send(query, params, options, resendable=False)

    def _send(self, query: Any, params: Any, options: dict[str, Any], resendable: bool) -> ResponseFuture:
        try:
            future = _execute_async(self._session)(query, params, **options)
        except BaseException as exc:
            self._end(self._first, None, exc)
            raise
        watched = _Watched(future, self._first, resendable)
        future.add_callbacks(self._answered, self._failed, callback_args=(watched,), errback_args=(watched,))
        # Instance attributes: ResultSet.fetch_next_page calls both, the
        # blocking send calls result().
        future.start_fetching_next_page = functools.partial(self._next_page, watched)  # type: ignore[method-assign]
        future.result = functools.partial(self._result, watched)  # type: ignore[method-assign]
        return future

    def _start(self) -> _Request:
        shape = self._shape
        attributes = dict(shape.attributes)
        if self._namespace:
            attributes["db.namespace"] = self._namespace
        if shape.reads:
            attributes[PAGE_NUMBER] = self._page
        name = shape.name or (f"{shape.operation} {self._namespace}" if self._namespace else shape.operation)
        return _Request(_tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes))

    def _next_page(self, watched: _Watched) -> None:
        future = watched.ref()
        if future is None:  # pragma: no cover - this is an attribute of that future
            return
        if not future.has_more_pages:
            ResponseFuture.start_fetching_next_page(future)  # raises QueryExhausted
            return
        self._page += 1
        request = self._start()
        watched.requests.append(request)
        try:
            ResponseFuture.start_fetching_next_page(future)
        except BaseException as exc:
            self._end(request, future, exc)
            raise

    def _result(self, watched: _Watched) -> Any:
        """``ResponseFuture.result()``, ending the span of the request it
        waited for (the latest one) if the callback has not yet."""
        future = watched.ref()
        request = watched.requests[-1]
        try:
            result = ResponseFuture.result(future)
        except BaseException as exc:
            if not watched.resent(request, exc):
                self._end(request, future, exc)
            raise
        self._end(request, future, None)
        return result

    # The driver calls these on its I/O thread (or at once, in the sending
    # thread) and ignores what they raise; nothing here may raise.

    def _answered(self, rows: Any, watched: _Watched) -> None:
        try:
            request = watched.answered()
            if request is not None:
                self._end(request, watched.ref(), None)
        except Exception:  # pragma: no cover - a broken span processor
            pass

    def _failed(self, error: BaseException, watched: _Watched) -> None:
        try:
            request = watched.answered()
            if request is not None and not watched.resent(request, error):
                self._end(request, watched.ref(), error)
        except Exception:  # pragma: no cover - a broken span processor
            pass

    def _end(self, request: _Request, future: ResponseFuture | None, error: BaseException | None) -> None:
        """End ``request``'s span, once; the coordinator and consistency are
        read off ``future`` now, while it still holds this request's answer."""
        with request.lock:
            if request.ended:
                return
            request.ended = True
            span = request.span
            if future is not None and span.is_recording():
                span.set_attributes(_answer_attributes(future, self._shape.reads))
            if error is not None:
                _record_failure(span, error)
            span.end()


def _record_failure(span: Span, error: BaseException) -> None:
    """Status ERROR, ``error.type``, the protocol error code and an
    ``exception`` event, none of them with the error's message: the node
    quotes the values it refused (``Invalid STRING constant (hunter2)``),
    and ``record_exception`` would copy that message and a traceback
    ending in it."""
    kind = _error_type(error)
    code = _status_code(error)
    span.add_event("exception", {"exception.type": kind})
    span.set_attribute("error.type", kind)
    description = type(error).__name__
    if code is not None:
        span.set_attribute("db.response.status_code", str(code))
        description += f" (error code {code:#06x})"
    span.set_status(Status(StatusCode.ERROR, description))


#: How the driver words a node's error (``ErrorMessage.summary_msg``), which
#: its exceptions (InvalidRequest, Unavailable, ReadTimeout...) carry.
_SERVER_ERROR = re.compile(r"Error from server: code=([0-9a-fA-F]{4})\b")


def _status_code(error: BaseException) -> int | None:
    """The Cassandra protocol error code of a node's error, else None."""
    if isinstance(error, ErrorMessage):  # raised as the driver received it
        return int(error.code)
    if isinstance(error, AlreadyExists):
        return int(AlreadyExistsException.error_code)
    first = error.args[0] if error.args else None
    found = _SERVER_ERROR.match(first) if isinstance(first, str) else None
    return int(found[1], 16) if found is not None else None


def _execute_async(session: Session) -> Any:
    """``session.execute_async``, past opentelemetry-instrumentation-cassandra's
    wrapper if that is the outermost one (any other wrapper is kept)."""
    if "execute_async" not in vars(session):
        for klass in type(session).__mro__:
            found = klass.__dict__.get("execute_async")
            if found is not None:
                wrapper = getattr(found, "_self_wrapper", None)
                module = getattr(wrapper, "__module__", None) or ""
                if module.startswith(_INSTRUMENTATION_CASSANDRA):
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
        return _shape_of_batch(query)
    if isinstance(query, BoundStatement):
        return _shape_of_text(query.prepared_statement.query_string)
    return _shape_of_text(getattr(query, "query_string", None) or str(query))


def _shape_of_batch(batch: BatchStatement) -> Shape:
    """A ``BatchStatement`` sent as it is: the :class:`Shape` of its one
    statement (a batch of one is that operation), or ``BATCH [operation]``
    with the size, the texts when known (a prepared statement's text is not
    in the batch) and the table when it is the same for all."""
    entries = batch._statements_and_parameters  # (is prepared, text or query id, values)
    shapes = [_shape_of_text(statement) for prepared, statement, _ in entries if not prepared]
    known = len(shapes) == len(entries)
    if len(entries) == 1 and known:
        return shapes[0]
    attributes: dict[str, Any] = dict(_SYSTEM)
    if known and shapes:
        attributes["db.query.text"] = "; ".join(dict(shape.attributes)["db.query.text"] for shape in shapes)
    operations = {shape.operation.upper() for shape in shapes}
    operation = f"BATCH {operations.pop()}" if known and len(operations) == 1 else "BATCH"
    attributes["db.operation.name"] = operation
    # Per the conventions, an empty batch is a batch of size 0; one of one is not a batch.
    if len(entries) != 1:
        attributes["db.operation.batch.size"] = len(entries)
    tables = {(shape.keyspace, dict(shape.attributes).get("db.collection.name")) for shape in shapes}
    keyspace, table = tables.pop() if known and len(tables) == 1 else (None, None)
    name = None
    if table is not None:
        attributes["db.collection.name"] = table
        name = attributes["db.query.summary"] = f"{operation} {table}"
    return Shape(name, operation, keyspace, False, tuple(attributes.items()))


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
# A statement starts the body, or follows a ";" or a line break; the spaces
# after that are taken too, so a line break they hold is not a second start.
_STATEMENT_START = re.compile(r"(?:\A|;|\n)\s*(?=(?:INSERT|UPDATE|DELETE)\b)", re.IGNORECASE)
_FIRST_WORD = re.compile(r"\s*(\w+)")
#: One left-to-right scan: what stays as written (quoted names, which may
#: hold a quote; cqlengine's ``%(0)s`` markers, which hold a digit), the
#: comments (``--`` and ``//`` to the end of the line, ``/* */``, unnested as
#: in CQL, or to the end of the text when unclosed), with the spaces before
#: them (and after a ``/* */``), and every literal, replaced by ``?``:
#: strings (``''`` escapes a quote, so a marker inside one is part of it),
#: ``$$`` strings, blobs, UUIDs, numbers and durations (``1h30m``), booleans
#: and the float words. The other bind markers (``%s``, ``?``, ``:name``)
#: match nothing here and stay. A comment is matched where it starts, before
#: any string (a quote in a comment opens nothing); comment markers inside a
#: string or a quoted name are part of it.
_LITERAL = re.compile(
    r"""(?P<keep>"(?:[^"]|"")*"|%\(\w+\)s)"""
    r"""|(?P<line>[ \t]*(?:--|//)[^\r\n]*(?P<eol>\r\n|\n|\r)?)"""
    r"""|(?P<block>[ \t]*/\*.*?(?:\*/[ \t]*|\Z))"""
    r"""|'(?:[^']|'')*(?:'|\Z)"""  # unterminated: the rest of the text is the string
    r"""|\$\$.*?(?:\$\$|\Z)"""
    r"""|\b0[xX][0-9a-fA-F]*\b"""
    r"""|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"""
    r"""|(?<![\w.])-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\w*"""
    r"""|\b(?i:true|false|nan|infinity)\b""",
    re.DOTALL,
)


def _uncommented(match: re.Match[str]) -> str | None:
    """What a comment of :data:`_LITERAL` leaves in the text (None if
    ``match`` is no comment): nothing at either end of the text or next to a
    line break; else what separated the words on either side (a line end
    for ``--``/``//``, a space for ``/* */``)."""
    if match["line"] is None and match["block"] is None:
        return None
    text, start, end = match.string, match.start(), match.end()
    if start == 0 or end == len(text) or text[start - 1].isspace():
        return ""
    if match["line"] is not None:
        return match["eol"] or ""
    return "" if text[end].isspace() else " "


@functools.lru_cache(maxsize=1024)
def _shape_of_text(text: str) -> Shape:
    # Read without its comments: what a comment says (FROM elsewhere, a
    # quote) is not the statement's.
    text = without_comments(text)
    attributes: dict[str, Any] = dict(_SYSTEM)
    attributes["db.query.text"] = sanitized(text)
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
    ``BATCH`` when they differ, the operation of a batch of one), keyspace
    and table of a batch's text, and its size (two or more)."""
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
    if count == 1:  # a batch of one is that one operation
        return next(iter(operations)), *next(iter(tables))
    if count:  # none found: statements this does not read, of unknown count
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
    """``text`` with every literal (strings, numbers, blobs, UUIDs,
    booleans) replaced by ``?`` and its comments dropped, its bind markers
    kept."""

    def replace(match: re.Match[str]) -> str:
        kept = match["keep"] or _uncommented(match)
        return "?" if kept is None else kept

    return _LITERAL.sub(replace, text)


def without_comments(text: str) -> str:
    """``text`` with its comments dropped, everything else as written."""

    def replace(match: re.Match[str]) -> str:
        kept = _uncommented(match)
        return match[0] if kept is None else kept

    return _LITERAL.sub(replace, text)

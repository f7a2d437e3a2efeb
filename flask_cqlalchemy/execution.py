"""The one seam between cqlengine and the network.

cqlengine builds every statement (routing key, consistency, fetch size,
LWT clauses, batches) and ends in ``Session.execute``. Each session this
extension creates gets that method routed through a :class:`Route`:

* normally the statement goes out with the driver's blocking call (prepared
  when the fast path can, recorded when recording is on, an OpenTelemetry
  span per request when tracing is on: :mod:`.tracing`);
* inside :func:`capture` the finished statement is kept instead of sent, so
  the async face can send it with ``execute_async`` and await it.

So the async path reuses all of cqlengine's statement building and only
swaps the blocking call for an awaited one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cassandra.cluster import _NOT_SET, ResultSet, Session
from cassandra.cqlengine import connection as cqlengine_connection

from . import recording, schema_watch
from .config import parse_consistency
from .prepared import PreparedCache, StalePreparedStatement, depends_on

if TYPE_CHECKING:
    from .tracing import StatementTrace

_captured: ContextVar[list[Statement] | None] = ContextVar("flask_cqlalchemy_captured", default=None)
_ROUTE_ATTRIBUTE = "_flask_cqlalchemy_route"


@dataclass(slots=True)
class Statement:
    """A statement cqlengine finished building, not yet sent."""

    session: Session
    query: Any
    params: Any
    timeout: Any
    #: The statement as it goes on the wire, when already bound (compiled
    #: plans); ``query`` and ``params`` then stay cqlengine's, for messages
    #: and recording.
    wire: Any = None

    def describe(self) -> str:
        return getattr(self.query, "query_string", str(self.query))

    def with_fetch_size(self, fetch_size: int) -> Statement:
        """The same statement, asking for pages of ``fetch_size`` rows."""
        query = copy.copy(self.query)
        query.fetch_size = fetch_size
        wire = self.wire
        if wire is not None:
            wire = copy.copy(wire)
            wire.fetch_size = fetch_size
        return Statement(self.session, query, self.params, self.timeout, wire)


class Route:
    """How statements of one session go out."""

    #: Every route of the process, for :func:`schema_changed`.
    live: weakref.WeakSet[Route] = weakref.WeakSet()

    def __init__(self, session: Session, prepare: bool, record: bool, trace: bool = False) -> None:
        self.session = session
        #: ``CASSANDRA_TRACING``: an OpenTelemetry span per statement sent.
        self.trace = trace
        self.prepared = PreparedCache(session) if prepare else None
        self.record = record
        #: Compiled plans of this session (see :mod:`.compiled`), by shape.
        self.plans: dict[Any, Any] = {}
        Route.live.add(self)

    def invalidate(self, keyspace: str | None = None, table: str | None = None) -> None:
        """Forget the prepared statements and plans of ``table`` in
        ``keyspace``, of all of ``keyspace`` (no table), or all (neither):
        that schema changed."""
        if self.prepared is not None:
            self.prepared.invalidate(keyspace, table)
        if keyspace is None:
            self.plans.clear()
            return
        for key, plan in list(self.plans.items()):
            # A plan's key names its keyspace (see compiled.plan_key); one not
            # bound to a prepared statement yet will look up a fresh one.
            prepared = getattr(plan, "prepared", None)
            if (table is None and key[2] == keyspace) or (
                prepared is not None and depends_on(prepared, keyspace, table)
            ):
                self.plans.pop(key, None)

    def blocking_execute(self, *args: Any, **kwargs: Any) -> Any:
        """The session class's own ``execute``, looked up at each call: a
        class-level patch made after connect (instrumentation, APM agents,
        ``mock.patch.object(Session, "execute")``) sees every statement."""
        return type(self.session).execute(self.session, *args, **kwargs)

    def outgoing(self, query: Any, params: Any, wire: Any = None) -> tuple[Any, Any]:
        """The statement as it goes on the wire: ``wire`` when already bound,
        else prepared when possible."""
        if wire is not None:
            return wire, None
        if self.prepared is None:
            return query, params
        return self.prepared.bind(query, params)


class _NotSent:
    """What cqlengine sees as the result of a captured statement.

    cqlengine only inspects write results for ``was_applied``; the real LWT
    check happens when the statement is actually sent.
    """

    was_applied = True
    current_rows: list[Any] = []

    def one(self) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(())


@contextlib.contextmanager
def capture() -> Iterator[list[Statement]]:
    """Keep, instead of sending, every statement executed in this block."""
    statements: list[Statement] = []
    token = _captured.set(statements)
    try:
        yield statements
    finally:
        _captured.reset(token)


def capturing() -> bool:
    """Whether statements executed now are captured (see :func:`capture`)."""
    return _captured.get() is not None


def route_session(session: Session, *, prepare: bool = True, record: bool = False, trace: bool = False) -> None:
    """Route ``session.execute`` through the capture seam (once per session)."""
    if hasattr(session, _ROUTE_ATTRIBUTE):
        return
    route = Route(session, prepare, record, trace)
    setattr(session, _ROUTE_ATTRIBUTE, route)
    if prepare:
        schema_watch.guard_repreparing()
        schema_watch.on_schema_change(session.cluster, route.invalidate)

    # The rest of the call (timeout and the driver's other options) is passed
    # on exactly as the caller gave it, positional or by keyword.
    def execute(query: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        _levels_by_name(query)
        statements = _captured.get()
        if statements is not None:
            timeout = kwargs.get("timeout", args[0] if args else _NOT_SET)
            statements.append(Statement(session, query, parameters, timeout))
            return _NotSent()
        return _send_blocking(route, query, parameters, *args, **kwargs)

    session.execute = execute  # type: ignore[method-assign]


def _levels_by_name(query: Any) -> None:
    """A consistency level given by name (``.consistency("LOCAL_QUORUM")``
    on a query, a model, an instance or a batch) becomes the driver's
    number; cqlengine passes whatever it was given on to the statement, and
    the driver would fail encoding the string."""
    level = getattr(query, "consistency_level", None)
    if isinstance(level, str):
        query.consistency_level = parse_consistency(level, "consistency")


def schema_changed() -> None:
    """This process changed the schema: no prepared statement or plan made
    before may be used again (see :mod:`.schema_watch`)."""
    for route in list(Route.live):
        route.invalidate()


def route_of(session: Session) -> Route:
    """The :class:`Route` of a session set up by :func:`route_session`."""
    return getattr(session, _ROUTE_ATTRIBUTE)  # type: ignore[no-any-return]


def _send_blocking(
    route: Route, query: Any, params: Any, *args: Any, wire: Any = None, page: int = 1, **kwargs: Any
) -> Any:
    wire_query, wire_params = route.outgoing(query, params, wire)
    if not route.record:
        return _execute_current(route, query, params, wire_query, wire_params, page, *args, **kwargs)
    sink, location, started = recording.sink(), recording.caller(), time.perf_counter()
    error = None
    try:
        return _execute_current(route, query, params, wire_query, wire_params, page, *args, **kwargs)
    except Exception as exc:
        error = repr(exc)
        raise
    finally:
        if sink is not None:
            sink.append(
                recording.RecordedQuery(_text(query), params, time.perf_counter() - started, location, "sync", error)
            )


def _execute_current(
    route: Route, query: Any, params: Any, wire_query: Any, wire_params: Any, page: int, *args: Any, **kwargs: Any
) -> Any:
    """Send the wire statement; if the node no longer knows its prepared
    statement (the schema changed), cqlengine's own statement, unprepared.
    ``page`` is the number of the page it asks for, for its span."""
    if route.trace:
        from . import tracing  # imported only once tracing is on: nothing of OpenTelemetry otherwise

        return tracing.execute(route, query, params, wire_query, wire_params, page, *args, **kwargs)
    try:
        return route.blocking_execute(wire_query, wire_params, *args, **kwargs)
    except StalePreparedStatement:
        route.invalidate()
        return route.blocking_execute(query, params, *args, **kwargs)


def _text(query: Any) -> str:
    return getattr(query, "query_string", str(query))


def _registered(name: str | None) -> cqlengine_connection.Connection:
    key = name or cqlengine_connection.DEFAULT_CONNECTION
    try:
        return cqlengine_connection._connections[key]
    except KeyError:
        raise cqlengine_connection.CQLEngineException(
            f"Connection name {name!r} doesn't exist in the registry."
        ) from None


def needs_connect(name: str | None) -> bool:
    """Whether the connection has no session yet (lazy, or reset after a fork)."""
    return _registered(name).session is None


async def ensure_connected(name: str | None) -> None:
    """Connect a lazily configured connection in a worker thread.

    ``Cluster.connect()`` blocks for the whole handshake; on the event loop
    it would stall every other request of this loop.
    """
    connection = _registered(name)
    if connection.session is None:
        await asyncio.to_thread(connection.handle_lazy_connect)


def send_sync(statement: Statement, paging_state: bytes | None = None, page: int = 1) -> ResultSet:
    """Send a captured statement with the driver's blocking call; ``page``
    numbers the requests of one read (its span says which page it is)."""
    return _send_blocking(
        route_of(statement.session),
        statement.query,
        statement.params,
        timeout=statement.timeout,
        wire=statement.wire,
        page=page,
        paging_state=paging_state,
    )


def send(statement: Statement, paging_state: bytes | None = None, page: int = 1) -> asyncio.Future[ResultSet]:
    """Send a captured statement; return a future of the running loop.
    ``page`` numbers the requests of one read (its span says which page it is).

    The loop is looked up now, at each call, never stored: Flask runs every
    ``async def`` view in a fresh loop that is closed after the request.
    """
    loop = asyncio.get_running_loop()
    route = route_of(statement.session)
    query, params = route.outgoing(statement.query, statement.params, statement.wire)
    answer = _Answer(loop, statement, route, paging_state)
    if route.record:
        answer.sink = recording.sink()
        if answer.sink is not None:
            answer.location = recording.caller()
            answer.started = time.perf_counter()
    if route.trace:
        from . import tracing

        # The span's callbacks go first: it ends before the answer reaches the loop.
        answer.trace = tracing.StatementTrace(statement.session, statement.query, page)
        options = {"timeout": statement.timeout, "paging_state": paging_state}
        response = answer.trace.send(query, params, options)
    else:
        response = statement.session.execute_async(query, params, timeout=statement.timeout, paging_state=paging_state)
    answer.response = response
    response.add_callbacks(answer.ok, answer.failed)
    return answer.future


class _Answer:
    """Hands the driver's answer to one request to the loop awaiting it."""

    __slots__ = (
        "loop",
        "future",
        "statement",
        "route",
        "paging_state",
        "response",
        "sink",
        "location",
        "started",
        "trace",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, statement: Statement, route: Route, paging_state: bytes | None
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[ResultSet] = loop.create_future()
        self.statement = statement
        self.route = route
        self.paging_state = paging_state
        self.response: Any = None
        self.sink: list[recording.RecordedQuery] | None = None
        self.location = ""
        self.started = 0.0
        self.trace: StatementTrace | None = None

    # The driver calls these on its I/O thread (or at once, in the sending
    # thread, if the answer is already in), and swallows what they raise: so
    # nothing here may raise. A loop closed since (a cancelled or finished
    # request) simply drops the answer.

    def ok(self, rows: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._settle, rows, None)
        except RuntimeError:
            pass

    def failed(self, error: BaseException) -> None:
        if isinstance(error, StalePreparedStatement):
            self._resend_unprepared()
            return
        try:
            self.loop.call_soon_threadsafe(self._settle, None, error)
        except RuntimeError:
            pass

    def _resend_unprepared(self) -> None:
        """The node no longer knows the prepared statement (the schema
        changed): send cqlengine's statement as it built it, unprepared."""
        try:
            self.route.invalidate()
            statement = self.statement
            if self.trace is not None:
                options = {"timeout": statement.timeout, "paging_state": self.paging_state}
                response = self.trace.resend(statement.query, statement.params, options)
            else:
                response = statement.session.execute_async(
                    statement.query, statement.params, timeout=statement.timeout, paging_state=self.paging_state
                )
            self.response = response
            response.add_callbacks(self.ok, self.failed)
        except Exception as exc:  # e.g. the session was shut down meanwhile
            self.failed(exc)

    def _settle(self, rows: Any, error: BaseException | None) -> None:
        """On the loop's thread."""
        statement = self.statement
        if self.sink is not None:
            self.sink.append(
                recording.RecordedQuery(
                    statement.describe(),
                    statement.params,
                    time.perf_counter() - self.started,
                    self.location,
                    "async",
                    None if error is None else repr(error),
                )
            )
        # The driver's future holds this answer's methods as its callbacks:
        # let go of it, so that no reference cycle keeps every finished
        # request alive until the next garbage collection.
        response, self.response = self.response, None
        # Checked here, on the loop's thread: the awaiting task may have been
        # cancelled between the driver's answer and this call.
        future = self.future
        if future.done():
            return
        if error is not None:
            future.set_exception(_with_query(error, statement))
        else:
            future.set_result(ResultSet(response, rows))


def _with_query(error: BaseException, statement: Statement) -> BaseException:
    """Name the query in a driver error, keeping the driver's exception type."""
    query = statement.describe()
    if error.args and isinstance(error.args[0], str) and query not in error.args[0]:
        error.args = (f"{error.args[0]} [query: {query}]", *error.args[1:])
    elif not error.args:
        error.args = (f"[query: {query}]",)
    return error

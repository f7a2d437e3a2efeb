"""The one seam between cqlengine and the network.

cqlengine builds every statement (routing key, consistency, fetch size,
LWT clauses, batches) and ends in ``Session.execute``. Each session this
extension creates gets that method routed through :func:`_routed_execute`:

* normally it is the driver's blocking call, unchanged;
* inside :func:`capture` the finished statement is recorded instead of sent,
  so the async face can send it with ``execute_async`` and await it.

So the async path reuses all of cqlengine's statement building and only
swaps the blocking call for an awaited one.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

from cassandra.cluster import ResultSet, Session, _NOT_SET
from cassandra.cqlengine import connection as cqlengine_connection

_captured: ContextVar[list["Statement"] | None] = ContextVar("flask_cqlalchemy_captured", default=None)


@dataclass
class Statement:
    """A statement cqlengine finished building, not yet sent."""

    session: Session
    query: Any
    params: Any
    timeout: Any

    def describe(self) -> str:
        return getattr(self.query, "query_string", str(self.query))

    def with_fetch_size(self, fetch_size: int) -> "Statement":
        """The same statement, asking for pages of ``fetch_size`` rows."""
        query = copy.copy(self.query)
        query.fetch_size = fetch_size
        return Statement(self.session, query, self.params, self.timeout)


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
    """Record, instead of sending, every statement executed in this block."""
    statements: list[Statement] = []
    token = _captured.set(statements)
    try:
        yield statements
    finally:
        _captured.reset(token)


def route_session(session: Session) -> None:
    """Route ``session.execute`` through the capture seam (idempotent)."""
    if getattr(session, "_flask_cqlalchemy_routed", False):
        return
    blocking_execute = session.execute

    def execute(query: Any, parameters: Any = None, timeout: Any = _NOT_SET, *args: Any, **kwargs: Any) -> Any:
        statements = _captured.get()
        if statements is None:
            return blocking_execute(query, parameters, timeout, *args, **kwargs)
        statements.append(Statement(session, query, parameters, timeout))
        return _NotSent()

    session.execute = execute  # type: ignore[method-assign]
    session._flask_cqlalchemy_routed = True  # type: ignore[attr-defined]


def connection_for(name: str | None) -> cqlengine_connection.Connection:
    """The cqlengine connection registered under ``name`` (None: the default)."""
    return cqlengine_connection.get_connection(name) if not _is_lazy(name) else _registered(name)


def _registered(name: str | None) -> cqlengine_connection.Connection:
    key = name or cqlengine_connection.DEFAULT_CONNECTION
    try:
        return cqlengine_connection._connections[key]
    except KeyError:
        raise cqlengine_connection.CQLEngineException(
            f"Connection name {name!r} doesn't exist in the registry."
        ) from None


def _is_lazy(name: str | None) -> bool:
    return bool(_registered(name).lazy_connect)


async def ensure_connected(name: str | None) -> None:
    """Connect a lazily configured connection in a worker thread.

    ``Cluster.connect()`` blocks for the whole handshake; on the event loop
    it would stall every other request of this loop.
    """
    if _is_lazy(name):
        await asyncio.to_thread(_registered(name).handle_lazy_connect)


def send_sync(statement: Statement, paging_state: bytes | None = None) -> ResultSet:
    """Send a captured statement with the driver's blocking call."""
    return statement.session.execute(
        statement.query, statement.params, statement.timeout, paging_state=paging_state
    )


def send(statement: Statement, paging_state: bytes | None = None) -> "asyncio.Future[ResultSet]":
    """Send a captured statement; return a future of the running loop.

    The loop is looked up now, at each call, never stored: Flask runs every
    ``async def`` view in a fresh loop that is closed after the request.
    """
    loop = asyncio.get_running_loop()
    response = statement.session.execute_async(
        statement.query, statement.params, timeout=statement.timeout, paging_state=paging_state
    )
    future: asyncio.Future[ResultSet] = loop.create_future()

    def settle(rows: Any, error: BaseException | None) -> None:
        # Runs on the driver's I/O thread (or here, if the answer is already
        # in). The driver swallows exceptions raised in callbacks, so nothing
        # in here may raise: a loop closed since (cancelled or finished
        # request) simply drops the answer.
        def apply() -> None:
            # Checked on the loop's thread: the awaiting task may have been
            # cancelled between the driver's answer and this call.
            if future.done():
                return
            if error is not None:
                future.set_exception(_with_query(error, statement))
            else:
                future.set_result(ResultSet(response, rows))

        try:
            loop.call_soon_threadsafe(apply)
        except RuntimeError:
            pass

    response.add_callbacks(lambda rows: settle(rows, None), lambda exc: settle(None, exc))
    return future


def _with_query(error: BaseException, statement: Statement) -> BaseException:
    """Name the query in a driver error, keeping the driver's exception type."""
    query = statement.describe()
    if error.args and isinstance(error.args[0], str) and query not in error.args[0]:
        error.args = (f"{error.args[0]} [query: {query}]", *error.args[1:])
    elif not error.args:
        error.args = (f"[query: {query}]",)
    return error

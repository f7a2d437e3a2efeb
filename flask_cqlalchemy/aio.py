"""The async face of :class:`~flask_cqlalchemy.CQLAlchemy`.

``AsyncCQLAlchemy`` wraps a standard extension. Queries are sent with the
driver's ``execute_async`` and awaited on whatever loop is running at that
moment (Flask gives each ``async def`` view its own, Quart runs them all
on the server's); cqlengine still
builds every statement (see :mod:`flask_cqlalchemy.execution`). Work the
driver can only do blocking (connecting, DDL with its schema-agreement
wait) runs in a worker thread so the loop stays free.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cassandra.cluster import _NOT_SET
from cassandra.cqlengine.query import BatchQuery, check_applied
from cassandra.query import SimpleStatement

from . import execution
from .config import parse_consistency
from .extension import CQLAlchemy

if TYPE_CHECKING:
    from flask.sansio.app import App

    from .migrations.migrator import Entry


class AsyncCQLAlchemy:
    """Awaitable schema helpers, raw CQL and batches over a :class:`CQLAlchemy`.

    ``AsyncCQLAlchemy(app)`` builds the standard extension inside;
    ``CQLAlchemy(app).aio`` gives the facade of an existing one. ``app`` is
    a Flask or a Quart app.
    """

    def __init__(self, app: App | None = None, *, sync: CQLAlchemy | None = None) -> None:
        self.sync = sync if sync is not None else CQLAlchemy()
        if self.sync._aio is None:  # db.aio and the shell find this facade
            self.sync._aio = self
        if app is not None:
            self.init_app(app)

    def init_app(self, app: App) -> None:
        """Initialise the wrapped extension for ``app`` (see :meth:`CQLAlchemy.init_app`)."""
        self.sync.init_app(app)

    @property
    def Model(self) -> Any:  # noqa: N802 - the name users know from the sync extension
        return self.sync.Model

    @property
    def UserType(self) -> Any:  # noqa: N802
        return self.sync.UserType

    @property
    def columns(self) -> Any:
        return self.sync.columns

    async def sync_db(self) -> None:
        """Await :meth:`CQLAlchemy.sync_db`, run in a worker thread."""
        await self._in_thread(self.sync.sync_db)

    async def migrate(
        self, to: str | None = None, *, bind: str | None = None, echo: Callable[[str], None] | None = None
    ) -> list[Entry]:
        """Await the pending migrations of the current app, as ``flask cql
        migrate upgrade`` runs them (its default connection's, then each
        bind's; ``bind`` for one only), in a worker thread: the loop keeps
        serving meanwhile. For apps that migrate at startup (Quart's
        ``before_serving``). ``echo`` receives each progress line.

        Returns the migrations run. Raises what ``upgrade`` raises
        (:mod:`flask_cqlalchemy.migrations.errors`): a failed, in-progress
        or changed migration, a failed statement, a lock held too long.
        """
        return await self._in_thread(functools.partial(self.sync.migrate, to, bind=bind, echo=echo))  # type: ignore[no-any-return]

    async def create_keyspace_simple(self, name: str, replication_factor: int, durable_writes: bool = True) -> None:
        """Await :meth:`CQLAlchemy.create_keyspace_simple`."""
        await self._in_thread(self.sync.create_keyspace_simple, name, replication_factor, durable_writes)

    async def drop_keyspace(self, name: str) -> None:
        """Await :meth:`CQLAlchemy.drop_keyspace`."""
        await self._in_thread(self.sync.drop_keyspace, name)

    async def execute(
        self, cql: str, params: Any = None, *, timeout: float | None = None, consistency: Any = None
    ) -> list[Any]:
        """Await one CQL statement; return all its rows (later pages fetched awaited)."""
        state = self.sync.state()
        await execution.ensure_connected(state.connection_name)
        statement = execution.Statement(
            state.connection.session,
            SimpleStatement(cql, consistency_level=parse_consistency(consistency, "consistency")),
            params,
            timeout if timeout is not None else _NOT_SET,
        )
        result = await execution.send(statement)
        rows = list(result.current_rows)
        page = 1
        while result.paging_state:
            page += 1
            result = await execution.send(statement, result.paging_state, page)
            rows.extend(result.current_rows)
        return rows

    def batch(self, **options: Any) -> AsyncBatch:
        """``async with adb.batch() as b:`` queue ``Model.batch(b).create(...)``
        etc.; the batch is sent, awaited, when the block exits without error.
        Options are cqlengine's ``BatchQuery`` arguments."""
        return AsyncBatch(**options)

    @staticmethod
    async def _in_thread(function: Any, *args: Any) -> Any:
        # to_thread copies the context, so the app context (a ContextVar of
        # Flask or Quart) follows the call into the worker thread.
        return await asyncio.to_thread(function, *args)

    def __repr__(self) -> str:
        return f"<AsyncCQLAlchemy of {self.sync!r}>"


class AsyncBatch(BatchQuery):  # type: ignore[misc]
    """A cqlengine ``BatchQuery`` that is sent, awaited, on ``async with`` exit."""

    _callbacks: list[Any]

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and not self._execute_on_exception:
            return
        await self.aexecute()

    async def aexecute(self) -> None:
        """Send the queued statements as one batch and await it."""
        if not self.queries:
            self.execute()
            return
        await execution.ensure_connected(self._connection)
        # cqlengine runs the batch's callbacks right after sending; they must
        # wait for the real answer.
        callbacks, self._callbacks = self._callbacks, []
        try:
            with execution.capture() as statements:
                self.execute()
        finally:
            self._callbacks = callbacks
        for statement in statements:
            check_applied(await execution.send(statement))
        self._execute_callbacks()


__all__ = ["AsyncCQLAlchemy", "AsyncBatch"]

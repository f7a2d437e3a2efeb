"""The four contenders, each able to do the same three things in one event loop:

* ``read(key)``    one point read by primary key, returning the row/object;
* ``insert(key, values)``  one insert;
* ``scan(fetch_size)``     an async iterator over every row of the 10,000-row table.

Each is written the way its users would write it.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import common
from .common import KEYSPACE, BenchInsert, BenchUser, Node, PlainInsert, PlainUser


class Contender:
    key = ""
    label = ""
    #: why this contender cannot run here (set by ``setup``), or None
    unavailable: str | None = None

    async def setup(self, node: Node) -> None:
        """Prepare anything needed, in the benchmark's long-lived loop."""

    async def read(self, key: uuid.UUID) -> Any:
        raise NotImplementedError

    async def insert(self, key: uuid.UUID, values: dict[str, Any]) -> Any:
        raise NotImplementedError

    def scan(self, fetch_size: int) -> AsyncIterator[Any]:
        raise NotImplementedError


class Facade(Contender):
    """This project: ``await Model.aget(...)``, ``await Model.acreate(...)``, ``async for``."""

    key = "facade"
    label = "flask-cqlalchemy facade"

    async def read(self, key: uuid.UUID) -> Any:
        return await BenchUser.aget(id=key)

    async def insert(self, key: uuid.UUID, values: dict[str, Any]) -> Any:
        return await BenchInsert.acreate(id=key, **values)

    async def scan(self, fetch_size: int) -> AsyncIterator[Any]:  # type: ignore[override]
        async for obj in BenchUser.objects.all().fetch_size(fetch_size):
            yield obj


class RawDriver(Contender):
    """The limit: prepared statements, ``execute_async``, a minimal bridge, rows as tuples."""

    key = "raw"
    label = "raw driver (prepared + execute_async)"

    async def setup(self, node: Node) -> None:
        self.session = node.raw
        self.select = node.raw.prepare(f"SELECT * FROM {KEYSPACE}.bench_user WHERE id = ?")
        self.insert_statement = node.raw.prepare(
            f"INSERT INTO {KEYSPACE}.bench_insert (id, name, email, city, age, score) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.scan_statement = node.raw.prepare(f"SELECT * FROM {KEYSPACE}.bench_user")

    async def read(self, key: uuid.UUID) -> Any:
        loop = asyncio.get_running_loop()
        rows = await common.bridge(loop, self.session.execute_async(self.select, (key,)))
        return rows[0]

    async def insert(self, key: uuid.UUID, values: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        v = values
        return await common.bridge(
            loop,
            self.session.execute_async(
                self.insert_statement, (key, v["name"], v["email"], v["city"], v["age"], v["score"])
            ),
        )

    async def scan(self, fetch_size: int) -> AsyncIterator[Any]:  # type: ignore[override]
        # Same shape as the facade's stream: one request per page, carrying the
        # previous page's paging state, the next page asked for while the
        # current one is consumed.
        loop = asyncio.get_running_loop()
        bound = self.scan_statement.bind(())
        bound.fetch_size = fetch_size

        def request(paging_state: bytes | None) -> asyncio.Future[Any]:
            response = self.session.execute_async(bound, paging_state=paging_state)
            future = loop.create_future()

            def ok(rows: Any) -> None:
                loop.call_soon_threadsafe(common._set_result, future, (rows, response._paging_state))

            def failed(exc: BaseException) -> None:
                loop.call_soon_threadsafe(common._set_exception, future, exc)

            response.add_callbacks(ok, failed)
            return future

        pending: asyncio.Future[Any] | None = request(None)
        while pending is not None:
            rows, paging_state = await pending
            pending = request(paging_state) if paging_state else None
            for row in rows:
                yield row


class AioCqlengine(Contender):
    """aiocqlengine: ``AioModel.async_get`` / ``async_create`` / ``async_iterate``, bound to one loop."""

    key = "aiocqlengine"
    label = "aiocqlengine"

    async def setup(self, node: Node) -> None:
        try:
            from aiocqlengine.models import AioModel
            from aiocqlengine.session import aiosession_for_cqlengine
        except Exception as exc:  # noqa: BLE001 - reported in the results, never hidden
            self.unavailable = f"cannot import aiocqlengine: {type(exc).__name__}: {exc}"
            return
        # As its README says: wrap the cqlengine session once, in the loop
        # that will await every query (it stores that loop on the session).
        aiosession_for_cqlengine(node.plain.session, loop=asyncio.get_running_loop())
        extra = {"__connection__": common.PLAIN_CONNECTION}
        self.User = common._model(AioModel, "AioUser", "bench_user", extra)
        self.Insert = common._model(
            AioModel, "AioInsert", "bench_insert", {**extra, "__options__": {"default_time_to_live": common.INSERT_TTL}}
        )

    async def read(self, key: uuid.UUID) -> Any:
        return await self.User.async_get(id=key)

    async def insert(self, key: uuid.UUID, values: dict[str, Any]) -> Any:
        return await self.Insert.async_create(id=key, **values)

    async def scan(self, fetch_size: int) -> AsyncIterator[Any]:  # type: ignore[override]
        # aiocqlengine's paging API: one list of model instances per page, on
        # cqlengine's default connection (the plain one here).
        async for page in self.User.async_iterate(fetch_size=fetch_size):
            for obj in page:
                yield obj


class SyncInThreadPool(Contender):
    """Sync cqlengine in a thread pool: ``asgiref.sync_to_async(Model.get)``.

    ``thread_sensitive=False`` so the calls run in the loop's default thread
    pool; asgiref's default (``thread_sensitive=True``) would run every call
    on one single thread, one after another.
    """

    key = "threadpool"
    label = "sync cqlengine in thread pool (sync_to_async)"

    async def setup(self, node: Node) -> None:
        from asgiref.sync import sync_to_async

        self._get = sync_to_async(PlainUser.get, thread_sensitive=False)
        self._create = sync_to_async(PlainInsert.create, thread_sensitive=False)
        self._to_async: Callable[..., Any] = functools.partial(sync_to_async, thread_sensitive=False)

    async def read(self, key: uuid.UUID) -> Any:
        return await self._get(id=key)

    async def insert(self, key: uuid.UUID, values: dict[str, Any]) -> Any:
        return await self._create(id=key, **values)

    async def scan(self, fetch_size: int) -> AsyncIterator[Any]:  # type: ignore[override]
        # The whole scan (cqlengine's blocking paging) runs in one worker
        # thread; the loop only awaits the finished list.
        def everything() -> list[Any]:
            return list(PlainUser.objects.all().fetch_size(fetch_size))

        for obj in await self._to_async(everything)():
            yield obj


ALL: list[type[Contender]] = [Facade, RawDriver, AioCqlengine, SyncInThreadPool]
BASELINE = RawDriver.key

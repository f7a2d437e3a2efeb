"""The queryset of ``db.Model``: cqlengine's, plus Flask helpers and async twins.

Every async method builds its statement with cqlengine's own code
(``_select_query``, ``update``, ``delete``) under :func:`execution.capture`
and awaits the finished statement; rows become model instances through
cqlengine's own result constructor.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from cassandra import ConsistencyLevel
from cassandra.cluster import ResultSet
from cassandra.cqlengine import ValidationError
from cassandra.cqlengine.query import ModelQuerySet, check_applied

from . import execution, sai
from .config import parse_consistency
from .errors import InvalidQuery, RowNotFound
from .pagination import CursorCodec, Page, check_per_page
from .vector import MAX_TOP_K, SIMILARITY_FUNCTIONS, AnnSelectStatement, Vector, as_float32

if TYPE_CHECKING:
    from .extension import CQLAlchemy

R = TypeVar("R")


async def send_captured(connection: str | None, build: Callable[[], R]) -> tuple[R, list[execution.Statement]]:
    """Run ``build`` (a cqlengine call) with its statements captured, then send
    them one after another, awaited, as cqlengine would have sent them;
    return what ``build`` returned and the statements sent.

    An LWT statement that was not applied raises ``LWTException`` and stops
    the sequence, exactly like the blocking path.
    """
    await execution.ensure_connected(connection)
    with execution.capture() as statements:
        value = build()
    for statement in statements:
        check_applied(await execution.send(statement))
    return value, statements


def send_captured_sync(build: Callable[[], R]) -> tuple[R, list[execution.Statement]]:
    """:func:`send_captured` with the driver's blocking call."""
    with execution.capture() as statements:
        value = build()
    for statement in statements:
        check_applied(execution.send_sync(statement))
    return value, statements


async def first_rows(statement: execution.Statement, wanted: int, paging_state: bytes | None = None) -> list[Any]:
    """Up to ``wanted`` rows of a select, page by page (one page, nearly always).
    A ``paging_state`` given is the first page's: the next page is the second."""
    found: list[Any] = []
    page = 1 if paging_state is None else 2
    while True:
        result = await execution.send(statement, paging_state, page)
        found.extend(result.current_rows[: wanted - len(found)])
        paging_state = result.paging_state
        page += 1
        if len(found) >= wanted or not paging_state:
            return found


def first_rows_sync(statement: execution.Statement, wanted: int, paging_state: bytes | None = None) -> list[Any]:
    """:func:`first_rows` with the driver's blocking call."""
    found: list[Any] = []
    page = 1 if paging_state is None else 2
    while True:
        result = execution.send_sync(statement, paging_state, page)
        found.extend(result.current_rows[: wanted - len(found)])
        paging_state = result.paging_state
        page += 1
        if len(found) >= wanted or not paging_state:
            return found


def one_of(model: Any, rows: list[Any], deferred: dict[str, Any], filters: dict[str, Any]) -> Any:
    """The one instance ``get`` returns from up to two rows; cqlengine's errors otherwise."""
    if len(rows) > 1:
        raise model.MultipleObjectsReturned("Multiple objects found")
    if not rows:
        raise model.DoesNotExist(not_found(model, filters))
    row = rows[0]
    if deferred:  # the filter values cqlengine leaves out of the select
        row.update(deferred)
    return model._construct_instance(row)


def not_found(model: Any, filters: dict[str, Any]) -> str:
    where = ", ".join(f"{k}={v!r}" for k, v in filters.items())
    return f"{model.__name__} not found" + (f" ({where})" if where else "")


#: Attributes cqlengine's ``__deepcopy__`` resets, or shares, in a clone.
_PER_EXECUTION = frozenset({"_con", "_cur", "_result_cache", "_result_idx", "_result_generator", "_construct_result"})
_SHARED = frozenset({"_batch", "_timeout", "model"})
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


class _AnnQuery(NamedTuple):
    """The ANN part of a queryset (see :meth:`QuerySet.ann`)."""

    #: The vector column's attribute name.
    column: str
    #: The query vector, as the node takes it.
    vector: list[Any]
    #: The similarity function selected (asked for, or to rank candidates), or None.
    score: str | None
    #: The name the score is selected under: none of the model's stored names.
    alias: str
    #: Whether each instance gets the score as its ``score`` attribute.
    score_asked: bool
    #: With ``candidates``: how many of the best-scored rows to keep, else None.
    keep: int | None


class QuerySet(ModelQuerySet):  # type: ignore[misc]
    """cqlengine's ``ModelQuerySet`` with ``*_or_404``, pagination and ``a*`` methods."""

    #: Whether ``limit()`` was called: cqlengine's own default is 10000.
    _limit_set = False
    #: The ANN part of an ANN query (:meth:`ann`), None otherwise.
    _ann: _AnnQuery | None = None

    def consistency(self, consistency: Any) -> QuerySet:
        """cqlengine's, also taking a level's name (``"LOCAL_QUORUM"``).

        Raises :class:`~flask_cqlalchemy.ConfigError` for an unknown name."""
        return super().consistency(parse_consistency(consistency, "consistency"))  # type: ignore[no-any-return]

    def limit(self, v: int | None) -> QuerySet:
        clone = super().limit(v)
        if clone is self:  # cqlengine returns the same queryset for an unchanged limit
            clone = copy.deepcopy(self)
        clone._limit_set = True
        return clone  # type: ignore[no-any-return]

    def __deepcopy__(self, memo: dict[int, Any]) -> QuerySet:
        # cqlengine clones the queryset on every filter() with copy.deepcopy
        # of each attribute, which is a third of a point read's CPU time. The
        # same clone, with immutable values and empty containers taken as is:
        # anything else (where clauses, deferred values) is still deep-copied,
        # because building a statement numbers the clauses in place.
        clone = object.__new__(type(self))
        state = clone.__dict__
        for key, value in self.__dict__.items():
            if key in _PER_EXECUTION:
                state[key] = None
            elif key in _SHARED or type(value) in _IMMUTABLE:
                state[key] = value
            elif type(value) in (list, set, dict) and not value:
                state[key] = type(value)()
            else:
                state[key] = copy.deepcopy(value, memo)
        return clone

    # -- vector search --------------------------------------------------------

    def ann(
        self,
        column: str,
        vector: Any,
        *,
        limit: int | None = None,
        score: bool | str = False,
        candidates: int | None = None,
    ) -> QuerySet:
        """The ``limit`` rows whose ``column`` (a ``Vector`` with an SAI index)
        is nearest to ``vector``, nearest first: ``ORDER BY column ANN OF
        vector LIMIT limit``, with this queryset's filters.

        ``score=True`` also selects the similarity of each row to ``vector``
        (the index's similarity function; or name one: ``"cosine"``,
        ``"dot_product"``, ``"euclidean"``) into the instance's ``score``
        attribute.

        ``candidates=n`` over-fetches, for recall: the node's index is
        approximate, so the query asks it for ``LIMIT n`` rows with their
        similarity and keeps the ``limit`` best-scored ones (ties in the
        node's order). ``n`` is from ``limit`` to 1000; the ranking is by the
        index's similarity function, so ``score`` cannot name another one.

        Raises :class:`~flask_cqlalchemy.errors.InvalidQuery` (a 400), before
        anything is sent, naming the column and the rule: no ``limit``, a
        limit above Cassandra's maximum (1000), ``candidates`` below the
        limit or above 1000 (or with ``score`` naming another function than
        the index's), a column that is not a vector
        with an SAI index, a vector of the wrong dimension or with elements
        the node cannot search (NaN, infinity, the zero vector for cosine).
        Paging, counting or ordering otherwise an ANN query raises it too.

        .. versionadded:: 0.1
        """
        model_column = self.model._columns.get(column)
        if not isinstance(model_column, Vector):
            raise InvalidQuery(column, f"ANN OF needs a Vector column of {self.model.__name__}")
        if not sai.is_sai(model_column) or not model_column.indexable:
            raise InvalidQuery(column, 'ANN OF needs an SAI index on a float vector (declare index="sai")')
        _check_ann_limit(column, limit)
        _check_candidates(column, candidates, limit)
        try:
            values = model_column.checked(vector, column)
        except ValidationError as exc:
            raise InvalidQuery(column, str(exc).partition(": ")[2] or str(exc)) from None
        stored = as_float32(values)  # the node searches with single-precision elements
        if not all(math.isfinite(x) for x in stored):
            raise InvalidQuery(column, "the query vector cannot hold NaN or infinity")
        function = sai.similarity_function(model_column)
        if function == "cosine" and not any(stored):
            raise InvalidQuery(column, "the zero vector has no cosine similarity to anything")
        score_function = function if candidates is not None else None
        if score:
            score_function = function if score is True else str(score)
            if score_function not in SIMILARITY_FUNCTIONS:
                raise InvalidQuery(column, f"score must be True or one of {', '.join(SIMILARITY_FUNCTIONS)}")
            if score_function == "cosine" and not any(stored):
                raise InvalidQuery(column, "the zero vector has no cosine similarity to anything")
            if "score" in self.model._columns:
                raise InvalidQuery(column, f"score=... would hide the column {self.model.__name__}.score")
        if score_function != function and candidates is not None:
            raise InvalidQuery(
                column, f"candidates are ranked by the index's {function} similarity: score=True, not {score!r}"
            )
        clone = self.limit(limit if candidates is None else candidates)
        clone._ann = _AnnQuery(
            column,
            model_column.to_database(values),
            score_function,
            _unused_name(self.model, "score"),
            bool(score),
            None if candidates is None else limit,
        )
        return clone

    def _select_query(self) -> Any:
        statement = super()._select_query()
        if self._ann is None:
            return statement
        name, vector, score, alias, score_asked, keep = self._ann
        column = self.model._columns[name]
        _check_ann_limit(name, statement.limit)
        if keep is not None:  # a limit() after ann(..., candidates=n) sets the candidates
            _check_candidates(name, statement.limit, keep)
        if statement.order_by:
            raise InvalidQuery(name, "an ANN query cannot also be ordered by another column")
        if statement.distinct_fields or statement.count:
            raise InvalidQuery(name, "an ANN query cannot be counted or DISTINCT")
        # By name too: Model.consistency("SERIAL") sets it without the method above.
        if parse_consistency(self._consistency, "consistency") in (
            ConsistencyLevel.SERIAL,
            ConsistencyLevel.LOCAL_SERIAL,
        ):
            raise InvalidQuery(name, "an ANN query cannot run at a serial consistency level")
        if score_asked and self._values_list:
            raise InvalidQuery(name, "score=... needs model instances, not values_list()")
        if score and not statement.fields:
            statement.fields = [c.db_field_name for c in self.model._columns.values()]
        return AnnSelectStatement(statement, column.db_field_name, vector, score, alias)

    def _get_result_constructor(self) -> Callable[[Any], Any]:
        construct: Callable[[Any], Any] = super()._get_result_constructor()
        if self._ann is None or not self._ann.score_asked:
            return construct
        alias = self._ann.alias

        def with_score(row: Any) -> Any:
            instance = construct(row)
            instance.score = row[alias]
            return instance

        return with_score

    def _nearest(self, rows: Any) -> Any:
        """The rows the query answers from the rows the node returned: with
        ``candidates``, the best-scored ``limit`` of them (a stable sort keeps
        ties in the node's order); otherwise ``rows`` as they are."""
        if self._ann is None or self._ann.keep is None:
            return rows
        alias = self._ann.alias
        return sorted(rows, key=lambda row: row[alias], reverse=True)[: self._ann.keep]

    def _execute(self, statement: Any) -> Any:
        result = super()._execute(statement)
        return self._nearest(result) if isinstance(statement, AnnSelectStatement) else result

    def count(self) -> int:
        if self._result_cache is None:  # len() of a fetched result counts its rows
            self._refuse_ann("an ANN query cannot be counted (it returns at most its LIMIT)")
        return super().count()  # type: ignore[no-any-return]

    def _refuse_ann(self, rule: str) -> None:
        if self._ann is not None:
            raise InvalidQuery(self._ann.column, rule)

    # -- sync twins ---------------------------------------------------------

    def get_or_404(self, *args: Any, description: str | None = None, **kwargs: Any) -> Any:
        """Like ``get``, but raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        try:
            return self.get(*args, **kwargs)
        except self.model.DoesNotExist:
            raise RowNotFound(description or self._not_found(kwargs)) from None

    def first_or_404(self, description: str | None = None) -> Any:
        """Like ``first``, but raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        obj = self.first()
        if obj is None:
            raise RowNotFound(description or self._not_found({}))
        return obj

    def paginate(self, per_page: Any = 20, cursor: str | None = None) -> Page[Any]:
        """Fetch one page of ``per_page`` rows, starting at ``cursor``.

        Raises :class:`~flask_cqlalchemy.errors.InvalidPageSize` or
        :class:`~flask_cqlalchemy.errors.InvalidCursor` (both HTTP 400).
        """
        self._refuse_ann("an ANN query cannot be paged: Cassandra returns its LIMIT rows at once")
        statement, per_page, paging_state = self._page_request(per_page, cursor)
        result = execution.send_sync(statement, paging_state)
        more = bool(result.paging_state) and _has_rows(
            execution.send_sync(statement.with_fetch_size(1), result.paging_state, page=2)
        )
        return self._make_page(result, statement, per_page, cursor, more)

    # -- async --------------------------------------------------------------

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """Await the single row matching the filters.

        Raises ``Model.DoesNotExist`` or ``Model.MultipleObjectsReturned``.
        """
        if args or kwargs:
            return await self.filter(*args, **kwargs).aget()
        found = await self._afirst_rows(2)
        if len(found) > 1:
            raise self.model.MultipleObjectsReturned("Multiple objects found")
        if not found:
            raise self.model.DoesNotExist(self._not_found({}))
        return found[0]

    async def aget_or_404(self, *args: Any, description: str | None = None, **kwargs: Any) -> Any:
        """Like :meth:`aget`, but raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        try:
            return await self.aget(*args, **kwargs)
        except self.model.DoesNotExist:
            raise RowNotFound(description or self._not_found(kwargs)) from None

    async def afirst(self) -> Any:
        """Await the first matching row, or None."""
        found = await self._afirst_rows(1)
        return found[0] if found else None

    async def afirst_or_404(self, description: str | None = None) -> Any:
        """Like :meth:`afirst`, but raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        obj = await self.afirst()
        if obj is None:
            raise RowNotFound(description or self._not_found({}))
        return obj

    async def aall(self) -> list[Any]:
        """Await every matching row, as a list of model instances."""
        return [obj async for obj in self]

    async def acount(self) -> int:
        """Await ``SELECT COUNT(*)`` of this query."""
        self._refuse_ann("an ANN query cannot be counted (it returns at most its LIMIT)")
        query = self._select_query()
        query.count = True
        result = await self._send_select(query)
        return int(result.one().popitem()[1])

    async def acreate(self, **values: Any) -> Any:
        """Validate and insert a row with this queryset's options (``ttl``,
        ``timestamp``, ``consistency``, ``if_not_exists``...); await and return it.

        Validation errors are raised before anything is sent.
        """
        instance, _ = await send_captured(self._connection_name(), lambda: self.create(**values))
        return instance

    async def aupdate(self, **values: Any) -> None:
        """Await an update of every matching row (cqlengine's ``update``)."""
        await send_captured(self._connection_name(), lambda: self.update(**values))

    async def adelete(self) -> None:
        """Await a delete of every matching row (cqlengine's ``delete``)."""
        await send_captured(self._connection_name(), self.delete)

    async def apaginate(self, per_page: Any = 20, cursor: str | None = None) -> Page[Any]:
        """Await one page; see :meth:`paginate`."""
        self._refuse_ann("an ANN query cannot be paged: Cassandra returns its LIMIT rows at once")
        await execution.ensure_connected(self._connection_name())
        statement, per_page, paging_state = self._page_request(per_page, cursor)
        result = await execution.send(statement, paging_state)
        more = bool(result.paging_state) and _has_rows(
            await execution.send(statement.with_fetch_size(1), result.paging_state, page=2)
        )
        return self._make_page(result, statement, per_page, cursor, more)

    def __aiter__(self) -> _RowStream:
        return _RowStream(self)

    # -- shared -------------------------------------------------------------

    def _connection_name(self) -> str | None:
        return self._connection or self.model._get_connection()

    def _extension(self) -> CQLAlchemy:
        return self.model.__cqlalchemy__

    def _not_found(self, filters: dict[str, Any]) -> str:
        return not_found(self.model, filters)

    async def _afirst_rows(self, wanted: int) -> list[Any]:
        """Up to ``wanted`` results (model instances, unless ``values_list``)."""
        name = self._connection_name()
        if execution.needs_connect(name):
            await execution.ensure_connected(name)
        construct = self._maybe_inject_deferred(self._get_result_constructor())
        over_fetch = self._ann is not None and self._ann.keep is not None
        rows = await first_rows(self._capture_select(), self._limit if over_fetch else wanted)
        return [construct(row) for row in self._nearest(rows)[:wanted]]

    def _capture_select(self, query: Any = None) -> execution.Statement:
        with execution.capture() as statements:
            self._execute(query if query is not None else self._select_query())
        return statements[0]

    async def _send_select(self, query: Any) -> ResultSet:
        await execution.ensure_connected(self._connection_name())
        return await execution.send(self._capture_select(query))

    def _page_request(self, per_page: Any, cursor: str | None) -> tuple[execution.Statement, int, bytes | None]:
        state = self._extension().state()
        per_page = check_per_page(per_page, state.settings.max_per_page)
        # cqlengine puts LIMIT 10000 on every select unless told otherwise; a
        # cursor walks the whole result, so only a limit the user set applies.
        queryset = self if self._limit_set else self.limit(None)
        statement = queryset.fetch_size(per_page)._capture_select()
        paging_state = None
        if cursor is not None:
            paging_state = state.cursor_codec.decode(_fingerprint(statement), cursor)
        return statement, per_page, paging_state

    def _make_page(
        self, result: ResultSet, statement: execution.Statement, per_page: int, cursor: str | None, more: bool
    ) -> Page[Any]:
        construct = self._maybe_inject_deferred(self._get_result_constructor())
        next_cursor = None
        if more:
            next_cursor = self._extension().state().cursor_codec.encode(_fingerprint(statement), result.paging_state)
        return Page([construct(row) for row in result.current_rows], next_cursor, per_page, cursor)


def _check_ann_limit(column: str, limit: Any) -> None:
    """Cassandra 5.0's rules for the LIMIT of an ANN query, as :class:`InvalidQuery`."""
    if not limit:  # cqlengine's limit(None) is 0
        raise InvalidQuery(column, "an ANN query needs a LIMIT (ann(..., limit=k))")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TOP_K:
        raise InvalidQuery(column, f"an ANN query's LIMIT must be a whole number from 1 to {MAX_TOP_K}, not {limit!r}")


def _check_candidates(column: str, candidates: Any, limit: Any) -> None:
    """The rule for ``ann(..., candidates=n)``, as :class:`InvalidQuery`."""
    if candidates is None:
        return
    if isinstance(candidates, bool) or not isinstance(candidates, int) or not limit <= candidates <= MAX_TOP_K:
        raise InvalidQuery(
            column,
            f"an ANN query's candidates must be a whole number from its limit ({limit}) to {MAX_TOP_K}, "
            f"not {candidates!r}",
        )


def _unused_name(model: Any, name: str) -> str:
    """``name``, or ``_name``, ``__name``...: one no column of ``model`` is stored under."""
    stored = {column.db_field_name for column in model._columns.values()}
    while name in stored:
        name = f"_{name}"
    return name


def _has_rows(probe: ResultSet) -> bool:
    """Whether a one-row look past a page found anything.

    Cassandra hands out a paging state whenever a page is full, even when
    nothing follows; this look-ahead makes ``next_cursor`` None on the real
    last page instead of leading to an empty one.
    """
    return bool(probe.current_rows) or bool(probe.paging_state)


def _fingerprint(statement: execution.Statement) -> bytes:
    return CursorCodec.fingerprint(statement.describe(), statement.params)


class _RowStream:
    """``async for`` over a queryset, one page request at a time.

    Each page is its own request carrying the previous page's paging state,
    so no driver callback fires twice and the loop never waits on the
    driver's blocking ``fetch_next_page``. The next page is requested while
    the current one is consumed; at most one page is ahead.
    """

    def __init__(self, queryset: QuerySet) -> None:
        self._queryset = queryset
        #: The rows of the current page not handed out yet, last row first.
        self._rows: list[Any] = []
        self._statement: execution.Statement | None = None
        self._construct: Callable[[Any], Any] | None = None
        self._next: asyncio.Future[ResultSet] | None = None
        self._done = False
        #: The number of the page requested last.
        self._page = 1
        self._since_yield = time.perf_counter()

    def __aiter__(self) -> _RowStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._rows:
                # Popped, so that a row handed out is not kept alive by the
                # page (fewer objects survive a garbage collection mid-page).
                row = self._rows.pop()
                assert self._construct is not None
                if time.perf_counter() - self._since_yield > _YIELD_EVERY:
                    # Rows of a page already here come without an await, so a
                    # consumer could turn a whole page into instances (and do
                    # its own work on each) without giving the loop a turn.
                    await asyncio.sleep(0)
                    self._since_yield = time.perf_counter()
                return self._construct(row)
            if self._done:
                raise StopAsyncIteration
            await self._advance()
            self._since_yield = time.perf_counter()

    async def _advance(self) -> None:
        if self._statement is None:
            queryset = self._queryset
            await execution.ensure_connected(queryset._connection_name())
            self._statement = queryset._capture_select()
            self._construct = queryset._maybe_inject_deferred(queryset._get_result_constructor())
            self._next = execution.send(self._statement)
        assert self._next is not None
        pending, self._next = self._next, None
        result = await pending
        if result.paging_state:
            self._page += 1
            self._next = execution.send(self._statement, result.paging_state, self._page)
        else:
            self._done = True
        # An ANN query is answered in one page (the node raises its page
        # size to the LIMIT), so its candidates are all here to choose from.
        rows = list(self._queryset._nearest(result.current_rows))
        rows.reverse()
        self._rows = rows

    async def aclose(self) -> None:
        """Drop the page requested ahead, if any (early ``break``)."""
        self._done = True
        if self._next is not None:
            _forget(self._next)
            self._next = None

    def __del__(self) -> None:
        if self._next is not None:
            try:
                _forget(self._next)
            except RuntimeError:  # its loop is already closed
                pass


def _forget(future: asyncio.Future[ResultSet]) -> None:
    # A page nobody will read: cancel it if still pending, and mark a
    # failure as retrieved so asyncio does not log "exception was never retrieved".
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()


#: Longest stretch (seconds) an ``async for`` keeps the loop before yielding it.
_YIELD_EVERY = 0.0005

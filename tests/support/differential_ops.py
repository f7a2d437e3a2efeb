"""Operations of the differential test (``tests/test_differential.py``).

An operation is a *shape* (what it does: which call, which columns, which
options; the statement text cqlengine builds depends on it alone) and its
*arguments* (side-neutral values). Every shape of a generated sequence runs
at least twice with values drawn anew: the first run sends its statement
text for the first time (unprepared; the extension prepares it in the
background), the later runs go prepared, through compiled plans where
they apply.

Each operation is written once, as a coroutine over a *face*: the
extension's sync API (``create``, ``get``, ``save``...) or its async API
(``acreate``, ``aget``, ``asave``...). Plain cqlengine always takes the
sync face. What an operation gives back (its rows, its instance, or the
exception it raised) is turned into plain Python values by :func:`observed`
and compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import math
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from cassandra.cqlengine.models import BaseModel
from cassandra.cqlengine.query import BatchQuery, BatchType, LWTException
from cassandra.cqlengine.usertype import BaseUserType
from cassandra.util import SortedSet
from hypothesis import strategies as st

from .differential_schema import (
    BY_LIBRARY,
    BY_OTHER_PROCESS,
    AddColumn,
    AddUdtField,
    Column,
    CqlType,
    Recreate,
    SchemaChange,
    TableSpec,
    retyped,
    table_specs,
    value_strategy,
    value_types,
    values_of,
)

#: TTLs given to writes: stored TTLs are compared as "short" or "long"
#: (remaining seconds differ between the two sides by the time between their writes).
SHORT_TTL, LONG_TTL = 3000, 300000

# -- shapes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """``Model.create(**values)``, ``Model.objects.ttl(t).if_not_exists().create``,
    or ``Model(**values).save()``: every key column plus ``columns``."""

    columns: tuple[str, ...]
    ttl: int | None = None
    if_not_exists: bool = False
    new_instance: bool = False

    def describe(self) -> str:
        call = "Model(**values).save()" if self.new_instance else "create"
        return call + _options(ttl=self.ttl, if_not_exists=self.if_not_exists)


@dataclass(frozen=True)
class Get:
    """``Model.get(**keys)`` / ``aget``: the whole primary key, or only the partition key."""

    keys: tuple[str, ...]

    def describe(self) -> str:
        return "get"


@dataclass(frozen=True)
class Query:
    """``Model.objects.filter(**filters)``, fetched as a list, a count or the
    first row. ``filters``: (column, operator): eq, in, gt, gte, lt, lte, contains."""

    filters: tuple[tuple[str, str], ...]
    fetch: str = "all"
    allow_filtering: bool = False
    limit: int | None = None

    def describe(self) -> str:
        return f"filter, {self.fetch}" + _options(allow_filtering=self.allow_filtering, limit=self.limit)


@dataclass(frozen=True)
class Update:
    """``Model.objects(**keys).update(**values)``; ``assignments``: (column,
    operation): set, add, remove, append, prepend, update, increment, decrement."""

    keys: tuple[str, ...]
    assignments: tuple[tuple[str, str], ...]
    ttl: int | None = None
    condition: str | None = None
    if_exists: bool = False

    def describe(self) -> str:
        return "queryset update" + _options(ttl=self.ttl, iff=self.condition, if_exists=self.if_exists)


@dataclass(frozen=True)
class Change:
    """Get a row's instance, then change ``columns``: set the attributes and
    ``save()`` (``how="save"``), or ``instance.update(**values)``."""

    how: str
    columns: tuple[str, ...]
    ttl: int | None = None
    condition: str | None = None

    def describe(self) -> str:
        return f"get, then instance {self.how}" + _options(ttl=self.ttl, iff=self.condition)


@dataclass(frozen=True)
class Delete:
    """``Model.objects(**keys).delete()``, or get the instance and ``delete()`` it."""

    keys: tuple[str, ...]
    instance: bool = False
    if_exists: bool = False

    def describe(self) -> str:
        return ("get, then instance delete" if self.instance else "queryset delete") + _options(
            if_exists=self.if_exists
        )


@dataclass(frozen=True)
class Batch:
    """A ``BatchQuery`` (sync) or ``adb.batch()`` (async) of creates, updates, deletes."""

    parts: tuple[Create | Update | Delete, ...]
    counter: bool = False

    def describe(self) -> str:
        return "batch of " + ", ".join(part.describe() for part in self.parts)


Shape = Create | Get | Query | Update | Change | Delete | Batch


def _options(**options: Any) -> str:
    given = [name if value is True else f"{name}={value}" for name, value in options.items() if value]
    return f" ({', '.join(given)})" if given else ""


@dataclass
class Op:
    """One run of an operation: its shape, arguments, the face it takes on
    the extension's side, and why it is in the sequence."""

    shape: Shape
    args: dict[str, Any]
    face: str = "sync"
    note: str = ""

    def describe(self) -> str:
        note = f", {self.note}" if self.note else ""
        return f"{self.shape.describe()} {self.args} [{self.face}{note}]"


# -- faces ------------------------------------------------------------------------


class SyncFace:
    """cqlengine's blocking API (the extension's sync face, and plain cqlengine)."""

    name = "sync"

    async def create(self, target: Any, **values: Any) -> Any:
        return target.create(**values)

    async def get(self, target: Any, **keys: Any) -> Any:
        return target.get(**keys)

    async def all(self, queryset: Any) -> Any:
        return list(queryset)

    async def count(self, queryset: Any) -> Any:
        return queryset.count()

    async def first(self, queryset: Any) -> Any:
        return queryset.first()

    async def update(self, target: Any, **values: Any) -> Any:
        return target.update(**values)

    async def save(self, instance: Any) -> Any:
        return instance.save()

    async def delete(self, target: Any) -> Any:
        return target.delete()

    @contextlib.asynccontextmanager
    async def batch(self, counter: bool, connection: str) -> AsyncIterator[Any]:
        with BatchQuery(batch_type=BatchType.Counter if counter else None, connection=connection) as batch:
            yield batch

    def drive(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run an operation without an event loop, as a sync app does: the
        sync face never suspends, so one step finishes it."""
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        coroutine.close()
        raise RuntimeError("a sync operation awaited something")


class AsyncFace:
    """The extension's async API, each operation in its own event loop (as
    Flask runs each ``async def`` view)."""

    name = "async"

    def __init__(self, adb: Any) -> None:
        self.adb = adb

    async def create(self, target: Any, **values: Any) -> Any:
        return await target.acreate(**values)

    async def get(self, target: Any, **keys: Any) -> Any:
        return await target.aget(**keys)

    async def all(self, queryset: Any) -> Any:
        return await queryset.aall()

    async def count(self, queryset: Any) -> Any:
        return await queryset.acount()

    async def first(self, queryset: Any) -> Any:
        return await queryset.afirst()

    async def update(self, target: Any, **values: Any) -> Any:
        return await target.aupdate(**values)

    async def save(self, instance: Any) -> Any:
        return await instance.asave()

    async def delete(self, target: Any) -> Any:
        return await target.adelete()

    def batch(self, counter: bool, connection: str) -> Any:
        return self.adb.batch(batch_type=BatchType.Counter if counter else None, connection=connection)

    def drive(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(coroutine)


# -- performing an operation -----------------------------------------------------------


async def perform(op: Op, model: Any, convert: Callable[[Any], Any], face: Any) -> Any:
    """Run ``op`` on ``model`` through ``face``; ``convert`` makes this side's
    values (its user-defined type instances) of the neutral arguments."""
    shape, args = op.shape, convert(op.args)
    if isinstance(shape, Create):
        return await _create(shape, args, model, face)
    if isinstance(shape, Get):
        return await face.get(model, **args["keys"])
    if isinstance(shape, Query):
        queryset = model.objects.filter(**args["filters"])
        if shape.allow_filtering:
            queryset = queryset.allow_filtering()
        if shape.limit:
            queryset = queryset.limit(shape.limit)
        return await getattr(face, shape.fetch)(queryset)
    if isinstance(shape, Update):
        return await face.update(_update_queryset(shape, args, model), **args["values"])
    if isinstance(shape, Change):
        instance = await face.get(model, **args["keys"])
        if shape.ttl:
            instance.ttl(shape.ttl)
        if shape.condition:
            instance.iff(**{shape.condition: args["condition"]})
        if shape.how == "update":
            return await face.update(instance, **args["values"])
        for name, value in args["values"].items():
            setattr(instance, name, value)
        return await face.save(instance)
    if isinstance(shape, Delete):
        target = await face.get(model, **args["keys"]) if shape.instance else model.objects(**args["keys"])
        if shape.if_exists:
            target = target.if_exists()
        return await face.delete(target)
    # The batch names its connection: a batch of queryset statements alone
    # would otherwise be sent on cqlengine's default connection, which is not
    # plain cqlengine's here (the extension makes its own the default).
    async with face.batch(shape.counter, model._get_connection()) as batch:
        for part, part_args in zip(shape.parts, args["parts"], strict=True):
            if isinstance(part, Create):
                model.batch(batch).create(**part_args["values"])
            elif isinstance(part, Update):
                _update_queryset(part, part_args, model).batch(batch).update(**part_args["values"])
            else:
                model.objects(**part_args["keys"]).batch(batch).delete()
    return None


async def _create(shape: Create, args: dict[str, Any], model: Any, face: Any) -> Any:
    values = args["values"]
    if shape.new_instance:
        instance = model(**values)
        if shape.ttl:
            instance.ttl(shape.ttl)
        if shape.if_not_exists:
            instance.if_not_exists()
        return await face.save(instance)
    target = model
    if shape.ttl or shape.if_not_exists:
        target = model.objects
        if shape.ttl:
            target = target.ttl(shape.ttl)
        if shape.if_not_exists:
            target = target.if_not_exists()
    return await face.create(target, **values)


def _update_queryset(shape: Update, args: dict[str, Any], model: Any) -> Any:
    queryset = model.objects(**args["keys"])
    if shape.ttl:
        queryset = queryset.ttl(shape.ttl)
    if shape.condition:
        queryset = queryset.iff(**{shape.condition: args["condition"]})
    if shape.if_exists:
        queryset = queryset.if_exists()
    return queryset


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    """What an operation gave: ``("ok", observed result)``, or the exception
    it raised, by type (messages differ: the extension names the query); for
    a failed condition, with the existing row cqlengine reports."""
    try:
        result = run()
    except LWTException as exc:
        return ("raised", "LWTException", observed(exc.existing))
    except Exception as exc:
        return ("raised", type(exc).__name__)
    return ("ok", observed(result))


def observed(value: Any) -> Any:
    """``value`` as plain, comparable Python values: instances and user-defined
    type values as dicts, sets sorted, maps as their items in the order they
    came in (stored order, for rows read), floats and decimals by their
    exact text (``-0.0``, ``1.50``), NaNs by their bits."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, float):
        if math.isnan(value):  # every NaN prints alike: its bits tell them apart
            return ("float", "nan", struct.pack(">d", value).hex())
        return ("float", repr(value))
    if isinstance(value, decimal.Decimal):
        return ("decimal", str(value))
    if isinstance(value, BaseModel):
        return {name: observed(getattr(value, name)) for name in value._columns}
    if isinstance(value, BaseUserType):
        return {"<type>": value.type_name(), **{name: observed(getattr(value, name)) for name in value._fields}}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a user-defined type, read by a plain session
        return {"<type>": type(value).__name__, **{k: observed(v) for k, v in value._asdict().items()}}
    if isinstance(value, set | frozenset | SortedSet):
        return ("set", sorted((observed(v) for v in value), key=repr))
    if isinstance(value, Mapping):
        return ("map", [(observed(k), observed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return [observed(v) for v in value]
    if isinstance(value, tuple):
        return tuple(observed(v) for v in value)
    return value  # dates, times, timestamps, durations, uuids: compared as they are


# -- generated shapes and arguments ---------------------------------------------------

faces = st.sampled_from(["sync", "async"])
_ttls = st.sampled_from([None, None, SHORT_TTL, LONG_TTL])


def _rarely(strategy: st.SearchStrategy[Any], otherwise: Any) -> st.SearchStrategy[Any]:
    """``strategy``'s value about a quarter of the time, else ``otherwise``."""
    return st.integers(0, 3).flatmap(lambda n: strategy if n == 0 else st.just(otherwise))


def _operations(column: Column) -> list[str]:
    """The update operations cqlengine offers on a column of this type."""
    kind = column.type.kind
    return {
        "set": ["set", "add", "remove"],
        "list": ["set", "append", "prepend"],
        "map": ["set", "update", "remove"],
        # cqlengine writes "n = n + ?" or "n = n - ?": two statements.
        "counter": ["increment", "decrement"],
    }.get(kind, ["set"])


def _subset(draw: Any, cols: tuple[Column, ...], min_size: int = 0, max_size: int = 3) -> tuple[str, ...]:
    """Some of ``cols``, in the table's order."""
    if not cols:
        return ()
    names = draw(st.lists(st.sampled_from([c.name for c in cols]), min_size=min_size, max_size=max_size, unique=True))
    return tuple(c.name for c in cols if c.name in names)


def op_shapes(spec: TableSpec, kind: str) -> st.SearchStrategy[Shape]:
    """An operation of ``kind`` (create, get, query, update, change, delete, batch) on ``spec``'s table."""
    return _SHAPES[kind](spec)


@st.composite
def kinds_of_operation(draw: Any, spec: TableSpec) -> list[str]:
    """The order in which a sequence's shapes take the kinds of operation:
    a create first (there are rows to read), then every other kind in some
    order, so that even a short sequence has many kinds."""
    others = ["get", "query", "update", "change", "batch", "query", "update"]
    if not spec.is_counter_table:
        others.append("delete")  # a counter once deleted cannot be written again
    return ["create", *draw(st.permutations(others))]


@st.composite
def create_shapes(draw: Any, spec: TableSpec, plain: bool = False) -> Create:
    counter = spec.is_counter_table
    # Every column most of the time: each of its types gets written.
    everything = tuple(c.name for c in spec.non_key)
    cols = draw(_rarely(st.builds(lambda: None), everything)) or _subset(draw, spec.non_key, max_size=4)
    if plain or counter:
        return Create(cols, new_instance=not plain and draw(st.booleans()))
    return Create(cols, draw(_ttls), draw(_rarely(st.just(True), False)), draw(st.booleans()))


@st.composite
def get_shapes(draw: Any, spec: TableSpec) -> Get:
    partition_only = spec.clustering and draw(_rarely(st.just(True), False))
    return Get(tuple(c.name for c in (spec.partition if partition_only else spec.primary_key)))


@st.composite
def query_shapes(draw: Any, spec: TableSpec) -> Query:
    partition = tuple((c.name, "eq") for c in spec.partition)
    kinds = ["partition", "in"]
    if spec.clustering:
        kinds += ["range", "range"]
    if any(c.type.is_collection for c in spec.non_key):
        kinds.append("contains")
    if any(not c.type.is_collection and c.type.kind != "counter" for c in spec.non_key):
        kinds += ["equals", "equals"]
    kind = draw(st.sampled_from(kinds))
    allow_filtering = False
    if kind == "partition":
        filters = partition
    elif kind == "in":
        filters = (*partition[:-1], (partition[-1][0], "in"))
    elif kind == "range":
        operator = draw(st.sampled_from(["gt", "gte", "lt", "lte"]))
        whole_table = draw(_rarely(st.just(True), False))
        filters = (() if whole_table else partition) + ((spec.clustering[0].name, operator),)
        allow_filtering = whole_table
    else:
        wanted = (lambda t: t.is_collection) if kind == "contains" else (lambda t: not t.is_collection)
        cols = [c for c in spec.non_key if wanted(c.type) and c.type.kind != "counter"]
        column = draw(st.sampled_from(cols))
        filters = ((column.name, "contains" if kind == "contains" else "eq"),)
        allow_filtering = True
    fetch = draw(st.sampled_from(["all", "all", "count", "first"]))
    return Query(filters, fetch, allow_filtering, draw(_rarely(st.just(2), None)))


@st.composite
def update_shapes(draw: Any, spec: TableSpec, plain: bool = False) -> Update:
    statics = spec.of_role("static")
    if statics and draw(_rarely(st.just(True), False)):
        keys, cols = spec.partition, statics  # a static-only update names the partition alone
    else:
        keys, cols = spec.primary_key, spec.non_key
    names = _subset(draw, cols, min_size=1)
    assignments = tuple((name, draw(st.sampled_from(_operations(spec.column(name))))) for name in names)
    key_names = tuple(c.name for c in keys)
    if plain or spec.is_counter_table:
        return Update(key_names, assignments)
    conditional = [c.name for c in spec.non_key if not c.type.is_collection]
    condition = draw(_rarely(st.sampled_from(conditional), None)) if conditional else None
    return Update(key_names, assignments, draw(_ttls), condition, draw(_rarely(st.just(True), False)))


@st.composite
def change_shapes(draw: Any, spec: TableSpec) -> Change:
    how = draw(st.sampled_from(["save", "update"]))
    names = _subset(draw, spec.non_key, min_size=1)
    if spec.is_counter_table:
        return Change(how, names)
    conditional = [c.name for c in spec.non_key if not c.type.is_collection]
    condition = draw(_rarely(st.sampled_from(conditional), None)) if conditional else None
    return Change(how, names, draw(_ttls), condition)


@st.composite
def delete_shapes(draw: Any, spec: TableSpec, plain: bool = False) -> Delete:
    partition_only = spec.clustering and draw(_rarely(st.just(True), False))
    keys = tuple(c.name for c in (spec.partition if partition_only else spec.primary_key))
    if plain:
        return Delete(keys)
    return Delete(keys, not partition_only and draw(st.booleans()), draw(_rarely(st.just(True), False)))


@st.composite
def batch_shapes(draw: Any, spec: TableSpec) -> Batch:
    if spec.is_counter_table:
        parts = draw(st.lists(update_shapes(spec, plain=True), min_size=2, max_size=3))
        return Batch(tuple(parts), counter=True)
    part = st.one_of(create_shapes(spec, plain=True), update_shapes(spec, plain=True), delete_shapes(spec, plain=True))
    return Batch(tuple(draw(st.lists(part, min_size=2, max_size=3))))


_SHAPES: dict[str, Callable[[TableSpec], st.SearchStrategy[Any]]] = {
    "create": create_shapes,
    "get": get_shapes,
    "query": query_shapes,
    "update": update_shapes,
    "change": change_shapes,
    "delete": delete_shapes,
    "batch": batch_shapes,
}


@dataclass
class Written:
    """Values written so far in a sequence, per column: filters and
    conditions draw from them, so that they match rows."""

    values: dict[str, list[Any]] = field(default_factory=dict)

    def note(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            column = name.split("__")[0]
            if value is not None and "__" not in name:
                self.values.setdefault(column, []).append(value)

    def elements(self, column: str) -> list[Any]:
        found: list[Any] = []
        for value in self.values.get(column, []):
            found.extend(value.values() if isinstance(value, dict) else value)
        return found


def _written_or_new(written: list[Any], new: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    if not written:
        return new
    return st.sampled_from(written) | new


def _keys(spec: TableSpec, names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: value_strategy(spec, name) for name in names})


def _or_none(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``'s value, or None one time in six (a column set to null)."""
    return st.integers(0, 5).flatmap(lambda n: st.none() if n == 0 else strategy)


def _assigned(spec: TableSpec, name: str, operation: str) -> tuple[str, st.SearchStrategy[Any]]:
    """The keyword and value of one update assignment."""
    column = spec.column(name)
    udts = {u.name: u for u in spec.udts}
    if operation == "set":
        return name, _or_none(value_strategy(spec, name))
    if operation == "increment":
        return name, st.integers(0, 100)
    if operation == "decrement":
        return name, st.integers(-100, -1)
    if column.type.kind == "map" and operation == "remove":
        return f"{name}__remove", st.sets(values_of(column.type.of[0], udts), max_size=2)
    return f"{name}__{operation}", values_of(column.type, udts)


def args_for(shape: Shape, spec: TableSpec, written: Written) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of one run of ``shape`` on ``spec``'s table."""
    udts = {u.name: u for u in spec.udts}
    keys = _keys(spec, tuple(c.name for c in spec.primary_key))
    if isinstance(shape, Create):
        values = {c.name: value_strategy(spec, c.name) for c in spec.primary_key}
        values.update({name: _or_none(value_strategy(spec, name)) for name in shape.columns})
        return st.fixed_dictionaries({"values": st.fixed_dictionaries(values)})
    if isinstance(shape, Get):
        return st.fixed_dictionaries({"keys": _keys(spec, shape.keys)})
    if isinstance(shape, Query):
        filters: dict[str, st.SearchStrategy[Any]] = {}
        for name, operator in shape.filters:
            column = spec.column(name)
            keyword = name if operator == "eq" else f"{name}__{operator}"
            if operator == "in":
                filters[keyword] = st.lists(value_strategy(spec, name), min_size=1, max_size=3, unique=True)
            elif operator == "contains":
                element = column.type.of[-1]  # a list's or set's element, a map's value
                filters[keyword] = _written_or_new(written.elements(name), values_of(element, udts))
            elif column.is_key:
                filters[keyword] = value_strategy(spec, name)
            else:
                filters[keyword] = _written_or_new(written.values.get(name, []), value_strategy(spec, name))
        return st.fixed_dictionaries({"filters": st.fixed_dictionaries(filters)})
    if isinstance(shape, Update):
        assigned = dict(_assigned(spec, name, operation) for name, operation in shape.assignments)
        parts = {"keys": _keys(spec, shape.keys), "values": st.fixed_dictionaries(assigned)}
        if shape.condition:
            parts["condition"] = _condition(spec, shape.condition, written)
        return st.fixed_dictionaries(parts)
    if isinstance(shape, Change):
        changed = {name: _assigned(spec, name, "set")[1] for name in shape.columns}
        if spec.is_counter_table:
            changed = {name: st.integers(-100, 100) for name in shape.columns}
        parts = {"keys": keys, "values": st.fixed_dictionaries(changed)}
        if shape.condition:
            parts["condition"] = _condition(spec, shape.condition, written)
        return st.fixed_dictionaries(parts)
    if isinstance(shape, Delete):
        return st.fixed_dictionaries({"keys": _keys(spec, shape.keys)})
    return st.fixed_dictionaries({"parts": st.tuples(*(args_for(part, spec, written) for part in shape.parts))})


def _condition(spec: TableSpec, name: str, written: Written) -> st.SearchStrategy[Any]:
    return st.none() | _written_or_new(written.values.get(name, []), value_strategy(spec, name))


# -- generated scenarios ---------------------------------------------------------------


@dataclass
class Scenario:
    """A table and what happens to it: operations and schema changes, in order."""

    spec: TableSpec
    steps: list[Op | SchemaChange]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # How Hypothesis prints a failing example: as the steps, not the dataclasses.
        printer.text(self.describe())

    def describe(self) -> str:
        lines = [self.spec.describe()]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"  {number}. {step.describe()}")
        return "\n".join(lines)


@st.composite
def schema_changes(draw: Any, spec: TableSpec, number: int, recreate: bool) -> SchemaChange:
    """A schema change of ``spec``'s table, run by the library or by another process."""
    by = draw(st.sampled_from([BY_LIBRARY, BY_OTHER_PROCESS]))
    kinds = ["column", "column"]
    if spec.udts:
        kinds += ["field", "field"]
    if recreate:
        kinds.append("recreate")  # the costliest: two DROP TABLEs of a second each
    kind = draw(st.sampled_from(kinds))
    if kind == "column":
        if spec.is_counter_table:
            type_ = CqlType("counter")
        else:
            type_ = draw(value_types(tuple(u.name for u in spec.udts)))
        role = "static" if spec.clustering and not spec.is_counter_table and draw(st.booleans()) else "regular"
        return AddColumn(Column(f"x{number}", type_, role), by)
    if kind == "field":
        index = draw(st.integers(0, len(spec.udts) - 1))
        earlier = tuple(u.name for u in spec.udts[:index])
        return AddUdtField(spec.udts[index].name, f"g{number}", draw(value_types(earlier, depth=1)), by)
    return Recreate(retyped(draw, spec), by)


#: How many of the shapes run before a schema change run again after it
#: (twice: the extension may prepare its statements anew).
REPLAYED = 3


@st.composite
def scenarios(draw: Any, name: str, max_shapes: int = 9, max_changes: int = 2) -> Scenario:
    """A table named ``name`` (a counter table one time in five), then
    operation shapes, each run twice in a row with new values (the second
    run goes prepared), and up to ``max_changes`` schema changes (at most one
    re-creation), after each of which the last shapes run again, twice:
    their statements were prepared against the table as it was."""
    spec = draw(table_specs(name, counter=draw(st.integers(0, 4)) == 0))
    start = spec
    steps: list[Op | SchemaChange] = []
    shapes: list[Shape] = []
    written = Written()
    changes = 0
    recreated = False

    def run(shape: Shape, note: str) -> None:
        args = draw(args_for(shape, spec, written))
        for key in ("values",):
            if key in args:
                written.note(args[key])
        steps.append(Op(shape, args, draw(faces), note))

    kinds = draw(kinds_of_operation(spec))
    for _ in range(draw(st.integers(4, max_shapes))):
        if len(shapes) >= 2 and changes < max_changes and draw(st.integers(0, 2)) == 0:
            change = draw(schema_changes(spec, changes, recreate=not recreated))
            steps.append(change)
            spec = change.apply(spec)
            changes += 1
            if isinstance(change, Recreate):
                recreated = True
                written = Written()  # the old values have the old types
            for shape in shapes[-REPLAYED:]:
                run(shape, "first run after the schema change")
                run(shape, "second run after the schema change")
            continue
        shape = draw(op_shapes(spec, kinds[len(shapes) % len(kinds)]))
        shapes.append(shape)
        run(shape, "first run of its shape")
        run(shape, "second run: prepared")
    return Scenario(start, steps)

"""Schemas of the differential test (``tests/test_differential.py``).

One *spec* (a table: its columns and their CQL types, the user-defined types
they use) gives two model classes with identical columns: one on the
extension's ``db.Model``, one on plain cqlengine's ``Model``. Values are
generated once, side-neutral (a user-defined type's value is a
:class:`UdtValue`), and each side makes its own instances of them.

Schema changes (:class:`AddColumn`, :class:`AddUdtField`, :class:`Recreate`)
turn a spec into the next one; the runner applies them to both keyspaces,
through each side's library or from another process's session.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
import struct
from dataclasses import dataclass, replace
from typing import Any

from cassandra.cqlengine import columns
from cassandra.util import Duration
from hypothesis import strategies as st

from flask_cqlalchemy.vector import Vector

#: cqlengine's column class of every scalar CQL type.
SCALAR_COLUMNS: dict[str, Any] = {
    "ascii": columns.Ascii,
    "text": columns.Text,
    "int": columns.Integer,
    "bigint": columns.BigInt,
    "smallint": columns.SmallInt,
    "tinyint": columns.TinyInt,
    "varint": columns.VarInt,
    "float": columns.Float,
    "double": columns.Double,
    "decimal": columns.Decimal,
    "boolean": columns.Boolean,
    "uuid": columns.UUID,
    "timeuuid": columns.TimeUUID,
    "date": columns.Date,
    "time": columns.Time,
    "timestamp": columns.DateTime,
    "duration": columns.Duration,
    "blob": columns.Blob,
    "inet": columns.Inet,
    "counter": columns.Counter,
}
#: Scalars a regular column, a list element or a map value may have.
VALUE_SCALARS = tuple(kind for kind in SCALAR_COLUMNS if kind != "counter")
#: Scalars Cassandra can order: the only ones allowed as keys, set elements
#: and map keys (a duration has no order).
ORDERED_SCALARS = tuple(kind for kind in VALUE_SCALARS if kind != "duration")
#: The element types of a vector (``vector<float, 3>``): the numeric scalars.
VECTOR_ELEMENTS = ("float", "double", "int", "bigint", "smallint", "tinyint", "varint", "decimal")


# -- CQL types ---------------------------------------------------------------


@dataclass(frozen=True)
class CqlType:
    """A column's CQL type: a scalar, a collection or tuple of types, or a
    user-defined type (by name; its fields are in the spec)."""

    kind: str
    of: tuple[CqlType, ...] = ()
    name: str = ""
    #: A vector's dimension.
    size: int = 0

    def __str__(self) -> str:
        if self.kind == "udt":
            return self.name
        if self.kind == "vector":
            return f"vector<{self.of[0]}, {self.size}>"
        if self.of:
            return f"{self.kind}<{', '.join(map(str, self.of))}>"
        return self.kind

    @property
    def is_collection(self) -> bool:
        """A list, set or map: a column of that type is not frozen."""
        return self.kind in ("list", "set", "map")

    @property
    def is_scalar(self) -> bool:
        return self.kind in SCALAR_COLUMNS


def parse_type(text: str) -> CqlType:
    """``"tuple<int, set<int>>"`` as a :class:`CqlType`; any other name is a
    user-defined type. ``frozen<...>`` is accepted and implied (cqlengine
    freezes whatever is nested)."""
    tokens = re.findall(r"[\w]+|[<>,]", text)
    position = 0

    def parse() -> CqlType:
        nonlocal position
        name = tokens[position]
        position += 1
        args: list[CqlType] = []
        if position < len(tokens) and tokens[position] == "<":
            position += 1
            while True:
                args.append(parse())
                position += 1
                if tokens[position - 1] == ">":
                    break
        if name == "frozen":
            return args[0]
        if name == "vector":  # its dimension was read as a type name
            return CqlType("vector", (args[0],), size=int(args[1].name))
        if name in SCALAR_COLUMNS or name in ("list", "set", "map", "tuple"):
            return CqlType(name, tuple(args))
        return CqlType("udt", name=name)

    return parse()


@dataclass(frozen=True)
class UdtSpec:
    """A user-defined type: its name and fields, in declaration order."""

    name: str
    fields: tuple[tuple[str, CqlType], ...]

    def with_field(self, name: str, type_: CqlType) -> UdtSpec:
        return replace(self, fields=(*self.fields, (name, type_)))


@dataclass(frozen=True)
class Column:
    """A column of a table spec. ``role``: partition, clustering, static or regular."""

    name: str
    type: CqlType
    role: str = "regular"
    order: str = "ASC"

    @property
    def is_key(self) -> bool:
        return self.role in ("partition", "clustering")


@dataclass(frozen=True)
class TableSpec:
    """A table: its columns, the user-defined types they use (a type before
    any type holding it) and, per key column, the few values operations
    draw keys from (so that they meet on the same rows)."""

    name: str
    columns: tuple[Column, ...]
    udts: tuple[UdtSpec, ...] = ()
    key_values: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def of_role(self, *roles: str) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role in roles)

    @property
    def partition(self) -> tuple[Column, ...]:
        return self.of_role("partition")

    @property
    def clustering(self) -> tuple[Column, ...]:
        return self.of_role("clustering")

    @property
    def primary_key(self) -> tuple[Column, ...]:
        return self.of_role("partition", "clustering")

    @property
    def non_key(self) -> tuple[Column, ...]:
        return self.of_role("static", "regular")

    @property
    def is_counter_table(self) -> bool:
        return any(c.type.kind == "counter" for c in self.columns)

    def udt(self, name: str) -> UdtSpec:
        return next(u for u in self.udts if u.name == name)

    def keys_of(self, name: str) -> tuple[Any, ...]:
        return dict(self.key_values)[name]

    def describe(self) -> str:
        cols = ", ".join(
            f"{c.name} {c.type}"
            + ("" if c.role == "regular" else f" {c.role}")
            + (" DESC" if c.role == "clustering" and c.order == "DESC" else "")
            for c in self.columns
        )
        types = "".join(f"; type {u.name} ({', '.join(f'{f} {t}' for f, t in u.fields)})" for u in self.udts)
        return f"table {self.name} ({cols}){types}"


def table(name: str, *udts: UdtSpec, **cols: str) -> TableSpec:
    """A hand-written spec: ``table("thing", k="int partition", v="int")``;
    a role word after the type: partition, clustering, static (default regular)."""
    built = []
    for col_name, text in cols.items():
        words = text.rsplit(" ", 1)
        role = words[1] if len(words) == 2 and words[1] in ("partition", "clustering", "static") else "regular"
        built.append(Column(col_name, parse_type(words[0] if role != "regular" else text), role))
    return TableSpec(name, tuple(built), udts)


def udt(name: str, **fields: str) -> UdtSpec:
    """A hand-written user-defined type: ``udt("bag", s="set<int>")``."""
    return UdtSpec(name, tuple((field, parse_type(text)) for field, text in fields.items()))


# -- the two model classes of one spec ------------------------------------------


def build_column(type_: CqlType, user_types: dict[str, Any], **options: Any) -> Any:
    """cqlengine's column of ``type_`` (nested columns as cqlengine nests them)."""
    if type_.is_scalar:
        return SCALAR_COLUMNS[type_.kind](**options)
    if type_.kind == "udt":
        return columns.UserDefinedType(user_types[type_.name], **options)
    if type_.kind == "vector":  # the extension's column, which plain cqlengine uses as any column
        return Vector(SCALAR_COLUMNS[type_.of[0].kind], type_.size, **options)
    inner = [build_column(t, user_types) for t in type_.of]
    maker = {"list": columns.List, "set": columns.Set, "map": columns.Map, "tuple": columns.Tuple}[type_.kind]
    return maker(*inner, **options)


def build_user_types(udts: tuple[UdtSpec, ...], base: Any) -> dict[str, Any]:
    """One class per user-defined type, on ``base`` (``db.UserType`` or cqlengine's ``UserType``)."""
    classes: dict[str, Any] = {}
    for spec in udts:
        attrs: dict[str, Any] = {"__type_name__": spec.name, "__module__": __name__}
        attrs.update({field: build_column(t, classes) for field, t in spec.fields})
        classes[spec.name] = type(base)(_camel(spec.name), (base,), attrs)
    return classes


def _role_options(col: Column) -> dict[str, Any]:
    if col.role == "partition":
        return {"partition_key": True}
    if col.role == "clustering":
        return {"primary_key": True, "clustering_order": col.order}
    return {"static": True} if col.role == "static" else {}


def build_model(spec: TableSpec, base: Any, user_types: dict[str, Any], **attributes: Any) -> Any:
    """The model class of ``spec`` on ``base`` (``db.Model`` or cqlengine's ``Model``)."""
    # __module__ is set explicitly: cqlengine's metaclass would otherwise
    # give the class its own module name, which the extension takes for one
    # of cqlengine's throw-away clones.
    attrs: dict[str, Any] = {"__table_name__": spec.name, "__module__": __name__, **attributes}
    for col in spec.columns:
        attrs[col.name] = build_column(col.type, user_types, **_role_options(col))
    return type(base)(_camel(spec.name), (base,), attrs)


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


# -- CQL run by another process (a second, plain session) ------------------------


def create_table_cql(model: Any, keyspace: str) -> str:
    defs = ", ".join(col.get_column_def() for col in model._columns.values())
    partition = ", ".join(col.cql for col in model._partition_keys.values())
    clustering = "".join(f", {col.cql}" for col in model._clustering_keys.values())
    orders = ", ".join(f"{col.cql} {col.clustering_order or 'ASC'}" for col in model._clustering_keys.values())
    options = f" WITH CLUSTERING ORDER BY ({orders})" if orders else ""
    return f"CREATE TABLE {keyspace}.{model.__table_name__} ({defs}, PRIMARY KEY (({partition}){clustering})){options}"


def add_column_cql(model: Any, name: str, keyspace: str) -> str:
    return f"ALTER TABLE {keyspace}.{model.__table_name__} ADD {model._columns[name].get_column_def()}"


def add_field_cql(user_type: Any, field: str, keyspace: str) -> str:
    return f"ALTER TYPE {keyspace}.{user_type.type_name()} ADD {user_type._fields[field].get_column_def()}"


# -- schema changes ------------------------------------------------------------------

#: Who runs a schema change's DDL: this side's own library (``db.sync_table``,
#: ``db.sync_type``, ``db.drop_table``; cqlengine's ``management`` for plain
#: cqlengine), or another process, through a plain driver session of its own.
BY_LIBRARY, BY_OTHER_PROCESS = "library", "other process"


@dataclass(frozen=True)
class AddColumn:
    """The model gains a column (``sync_table``, or ``ALTER TABLE ... ADD``)."""

    column: Column
    by: str = BY_LIBRARY

    def apply(self, spec: TableSpec) -> TableSpec:
        return replace(spec, columns=(*spec.columns, self.column))

    def describe(self) -> str:
        return f"add column {self.column.name} {self.column.type} ({self.column.role}) by {self.by}"


@dataclass(frozen=True)
class AddUdtField:
    """A user-defined type gains a field (``sync_type``, or ``ALTER TYPE ... ADD``)."""

    udt: str
    field: str
    type: CqlType
    by: str = BY_LIBRARY

    def apply(self, spec: TableSpec) -> TableSpec:
        udts = tuple(u.with_field(self.field, self.type) if u.name == self.udt else u for u in spec.udts)
        return replace(spec, udts=udts)

    def describe(self) -> str:
        return f"add field {self.field} {self.type} to type {self.udt} by {self.by}"


@dataclass(frozen=True)
class Recreate:
    """The table is dropped and created again under the same name, with the
    same column names and other types (``new``)."""

    new: TableSpec
    by: str = BY_LIBRARY

    def apply(self, spec: TableSpec) -> TableSpec:
        return self.new

    def describe(self) -> str:
        return f"drop and re-create as {self.new.describe()} by {self.by}"


SchemaChange = AddColumn | AddUdtField | Recreate


# -- values ----------------------------------------------------------------------


@dataclass(frozen=True)
class UdtValue:
    """A value of a user-defined type, the same for both sides: each side
    makes an instance of its own class from it."""

    name: str
    fields: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.fields)})"


def _half_way_up(value: float) -> float:
    """The double half-way between single-precision ``value`` and the next float up."""
    (bits,) = struct.unpack(">i", struct.pack(">f", value))
    step = 1 if value >= 0 and bits >= 0 else -1
    if value == 0:
        return 2.0**-150  # half the smallest positive float
    try:
        (following,) = struct.unpack(">f", struct.pack(">i", bits + step))
    except struct.error:
        return value
    return (value + following) / 2


def orderable(value: Any) -> bool:
    """Whether ``value`` can be a set element or a map key on both sides: no NaN
    (Python keeps several NaNs in a set, the node has one)."""
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, tuple):
        return all(orderable(v) for v in value)
    return True


#: A text with a quote (cqlengine's literals must escape it) and characters
#: of 2, 3 and 4 UTF-8 bytes.
_TEXT = "ab'é漢😀 "
_SMALL_INTS = st.integers(-20, 20)

SCALAR_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ascii": st.text(alphabet="ab' ~", max_size=4),
    "text": st.text(alphabet=_TEXT, max_size=4),
    # Small integers half of the time: sets of them are where Python's
    # iteration order most often differs from the sorted order.
    "int": _SMALL_INTS | st.integers(-(2**31), 2**31 - 1),
    "bigint": _SMALL_INTS | st.integers(-(2**63), 2**63 - 1),
    "smallint": _SMALL_INTS | st.integers(-(2**15), 2**15 - 1),
    "tinyint": st.integers(-128, 127),
    "varint": _SMALL_INTS | st.integers(-(2**80), 2**80),
    # Any double, and doubles lying exactly half-way between two
    # single-precision floats: the driver rounds those to even, the node
    # rounds cqlengine's decimal literal of them (their shortest repr).
    "float": st.floats() | st.floats(width=32, allow_nan=False, allow_infinity=False).map(_half_way_up),
    "double": st.floats(),
    "decimal": st.builds(
        lambda digits, exponent: decimal.Decimal(digits).scaleb(exponent),
        st.integers(-(10**12), 10**12),
        st.integers(-6, 3),
    ),
    "boolean": st.booleans(),
    "uuid": st.uuids(version=4),
    "timeuuid": st.uuids(version=1),
    "date": st.dates(datetime.date(1900, 1, 1), datetime.date(2200, 1, 1)),
    "time": st.times(),
    "timestamp": st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2200, 1, 1)),
    "duration": st.builds(Duration, st.integers(0, 30), st.integers(0, 30), st.integers(0, 10**12)),
    "blob": st.binary(max_size=4),
    # IPv4-mapped IPv6 addresses too: the node reads such a literal as the
    # 4-byte IPv4 address, the driver packs the 16 bytes it was given.
    "inet": st.ip_addresses(v=4).map(str)
    | st.ip_addresses(v=6).map(str)
    | st.ip_addresses(v=4).map(lambda address: f"::ffff:{address}"),
    "counter": st.integers(-100, 100),
}


def values_of(type_: CqlType, udts: dict[str, UdtSpec]) -> st.SearchStrategy[Any]:
    """Side-neutral values of ``type_`` (never None at the top)."""
    if type_.is_scalar:
        return SCALAR_VALUES[type_.kind]
    if type_.kind == "udt":
        spec = udts[type_.name]
        fields = {field: values_of(t, udts) for field, t in spec.fields}
        return st.fixed_dictionaries({}, optional=fields).map(
            lambda given, name=spec.name: UdtValue(name, tuple(given.items()))
        )
    inner = [values_of(t, udts) for t in type_.of]
    if type_.kind == "vector":
        return st.lists(inner[0], min_size=type_.size, max_size=type_.size)
    if type_.kind == "list":
        return st.lists(inner[0], max_size=3)
    # Sets and maps of two or more half of the time: the smallest ones whose
    # order can differ (Python's iteration order against the node's sorted one).
    if type_.kind == "set":
        element = inner[0].filter(orderable)
        return st.sets(element, max_size=3) | st.sets(element, min_size=2, max_size=4)
    if type_.kind == "map":
        key = inner[0].filter(orderable)
        return st.dictionaries(key, inner[1], max_size=3) | st.dictionaries(key, inner[1], min_size=2, max_size=4)
    return st.tuples(*(st.none() | element for element in inner))


def value_strategy(spec: TableSpec, name: str) -> st.SearchStrategy[Any]:
    """Values of column ``name`` of ``spec``: one of its few values for a key."""
    col = spec.column(name)
    if col.is_key:
        return st.sampled_from(spec.keys_of(name))
    return values_of(col.type, {u.name: u for u in spec.udts})


# -- generated specs ----------------------------------------------------------------

_ordered_scalars = st.sampled_from(ORDERED_SCALARS).map(CqlType)


def element_types() -> st.SearchStrategy[CqlType]:
    """Types of set elements and map keys: ordered, and hashable in Python
    (scalars, tuples of scalars)."""
    return _ordered_scalars | st.lists(_ordered_scalars, min_size=1, max_size=2).map(
        lambda types: CqlType("tuple", tuple(types))
    )


def value_types(udt_names: tuple[str, ...], depth: int = 2) -> st.SearchStrategy[CqlType]:
    """Types of regular columns and user-defined type fields: every scalar,
    collections, tuples and user-defined types, nested up to ``depth``."""
    scalars = st.sampled_from(VALUE_SCALARS).map(CqlType)
    udts = st.sampled_from(udt_names).map(lambda n: CqlType("udt", name=n)) if udt_names else st.nothing()
    if depth == 0:
        return scalars | udts
    inner = value_types(udt_names, depth - 1)
    return st.one_of(
        # Scalars three times as often as any other kind: columns whose
        # values the extension can bind (no set or map nested in them).
        scalars,
        scalars,
        scalars,
        udts,
        element_types().map(lambda t: CqlType("set", (t,))),
        inner.map(lambda t: CqlType("list", (t,))),
        st.tuples(element_types(), inner).map(lambda kv: CqlType("map", kv)),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: CqlType("tuple", tuple(ts))),
        # A frozen value holding a set, as a tuple: issue 10's problem 2.
        element_types().map(lambda t: CqlType("tuple", (CqlType("int"), CqlType("set", (t,))))),
        # Vectors, as regular columns (float ones twice as often: single
        # precision is where the prepared and literal paths could differ).
        *([vector_types(), vector_types(only_float=True)] if depth == 2 else []),
    )


def vector_types(only_float: bool = False) -> st.SearchStrategy[CqlType]:
    """``vector<element, n>`` of a numeric element, n from 1 to 4."""
    elements = st.just("float") if only_float else st.sampled_from(VECTOR_ELEMENTS)
    return st.builds(lambda kind, size: CqlType("vector", (CqlType(kind),), size=size), elements, st.integers(1, 4))


def key_values(type_: CqlType, partition: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    """The two or three values a key column takes in one sequence. A
    partition key is never empty (the node refuses it)."""
    values = SCALAR_VALUES[type_.kind]
    if partition:
        values = values.filter(lambda v: v not in ("", b""))
    return st.lists(values, min_size=2, max_size=3, unique=True).map(tuple)


@st.composite
def table_specs(draw: Any, name: str, counter: bool = False) -> TableSpec:
    """A table named ``name``: one or two partition key columns, up to two
    clustering columns (ascending or descending), a static column, regular
    columns of every type (counters only, for a counter table), and up to
    two user-defined types (the second may hold the first)."""
    udts: list[UdtSpec] = []
    if not counter:
        for i in range(draw(st.integers(0, 2))):
            earlier = tuple(u.name for u in udts)
            fields = draw(st.lists(value_types(earlier, depth=1), min_size=1, max_size=3))
            udts.append(UdtSpec(f"{name}_u{i}", tuple((f"f{j}", t) for j, t in enumerate(fields))))
    udt_names = tuple(u.name for u in udts)
    partition = draw(st.lists(_ordered_scalars, min_size=1, max_size=2))
    clustering = draw(st.lists(st.tuples(_ordered_scalars, st.sampled_from(["ASC", "DESC"])), max_size=2))
    cols = [Column(f"k{i}", t, "partition") for i, t in enumerate(partition)]
    cols += [Column(f"c{i}", t, "clustering", order) for i, (t, order) in enumerate(clustering)]
    if counter:
        cols += [Column(f"n{i}", CqlType("counter")) for i in range(draw(st.integers(1, 2)))]
    else:
        if any(c.role == "clustering" for c in cols) and draw(st.booleans()):
            cols.append(Column("s0", draw(value_types(udt_names, depth=1)), "static"))
        for i, t in enumerate(draw(st.lists(value_types(udt_names), min_size=1, max_size=4))):
            cols.append(Column(f"v{i}", t))
    spec = TableSpec(name, tuple(cols), tuple(udts))
    return with_key_values(draw, spec)


def with_key_values(draw: Any, spec: TableSpec) -> TableSpec:
    pools = tuple((c.name, draw(key_values(c.type, c.role == "partition"))) for c in spec.primary_key)
    return replace(spec, key_values=pools)


def retyped(draw: Any, spec: TableSpec) -> TableSpec:
    """``spec`` with the same column names and structure, and every scalar
    in a column's type replaced by another scalar (``v int`` becomes, say,
    ``v boolean``): the table a :class:`Recreate` creates."""

    def other(type_: CqlType, ordered: bool) -> CqlType:
        if type_.kind == "counter" or type_.kind == "udt":
            return type_
        if type_.kind == "vector":
            kind = draw(st.sampled_from([k for k in VECTOR_ELEMENTS if k != type_.of[0].kind]))
            return replace(type_, of=(CqlType(kind),))
        if type_.is_scalar:
            choices = [k for k in (ORDERED_SCALARS if ordered else VALUE_SCALARS) if k != type_.kind]
            return CqlType(draw(st.sampled_from(choices)))
        if type_.kind == "set":
            return CqlType("set", (other(type_.of[0], True),))
        if type_.kind == "map":
            return CqlType("map", (other(type_.of[0], True), other(type_.of[1], ordered)))
        return replace(type_, of=tuple(other(t, ordered) for t in type_.of))

    cols = tuple(replace(c, type=other(c.type, c.is_key)) for c in spec.columns)
    return with_key_values(draw, replace(spec, columns=cols))

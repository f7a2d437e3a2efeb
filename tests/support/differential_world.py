"""The two worlds ``tests/test_differential.py`` compares, and how a scenario runs in both.

* **ours**: the extension (``db.Model``, statements sent prepared, compiled
  plans), in keyspace ``diff_ours``;
* **plain**: plain cqlengine, which never prepares, on a connection of its
  own (``register_connection(name, session=...)`` on its own ``Cluster``),
  in keyspace ``diff_plain``;
* **the other process**: a third, plain driver session that runs DDL behind
  both libraries' backs, and reads every stored row back for the
  comparison (as Python values, and as the node's JSON).

Every operation runs in ours, then the background prepares are waited for
(``PreparedCache.settle``), then the same operation runs in plain. Stored
rows are compared before every schema change and at the end.
"""

from __future__ import annotations

import contextlib
import json
import pprint
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

from cassandra.cluster import Session
from cassandra.cqlengine import management, models, usertype
from cassandra.query import BoundStatement

from flask_cqlalchemy import execution

from .differential_ops import LONG_TTL, SHORT_TTL, AsyncFace, Op, Scenario, SyncFace, observed, outcome, perform
from .differential_schema import (
    BY_LIBRARY,
    AddColumn,
    AddUdtField,
    Recreate,
    SchemaChange,
    TableSpec,
    UdtValue,
    add_column_cql,
    add_field_cql,
    build_model,
    build_user_types,
    create_table_cql,
)

OURS_KEYSPACE = "diff_ours"
PLAIN_KEYSPACE = "diff_plain"
PLAIN_CONNECTION = "diff_plain"

#: The allowance after DDL from the other process: seconds this process is
#: given before its next statement. The node pushes a schema-change event to
#: every driver's control connection at once, so by then the extension may
#: have learnt of the change from it, as a real app would have; nothing
#: slower (the driver refreshes its own metadata only after a 2 s window).
OTHER_PROCESS_ALLOWANCE = 0.5


class Side:
    """One world: a keyspace, the model classes of the current spec, and its
    library's schema calls."""

    label = ""

    def __init__(self, keyspace: str, model_base: Any, user_type_base: Any, **model_attributes: Any) -> None:
        self.keyspace = keyspace
        self.model_base = model_base
        self.user_type_base = user_type_base
        self.model_attributes = model_attributes
        self.model: Any = None
        self.user_types: dict[str, Any] = {}
        self._built_udts: tuple[Any, ...] | None = None
        # Plain cqlengine has one face: an operation the extension runs
        # through its async API runs through the sync API here.
        self.faces: dict[str, Any] = {"sync": SyncFace(), "async": SyncFace()}
        #: DDL from the other process since this side's library last looked
        #: at the driver's metadata: refresh it before the library's next DDL.
        self.metadata_stale = False

    @property
    def cluster(self) -> Any:
        raise NotImplementedError

    def build(self, spec: TableSpec) -> Any:
        """This side's classes for ``spec`` (user-defined types made again
        only when they changed); return the previous model class."""
        previous = self.model
        if spec.udts != self._built_udts:
            self.user_types = build_user_types(spec.udts, self.user_type_base)
            self._built_udts = spec.udts
        self.model = build_model(spec, self.model_base, self.user_types, **self.model_attributes)
        return previous

    def convert(self, value: Any) -> Any:
        """This side's value of a neutral value (its own user-defined type instances)."""
        if isinstance(value, UdtValue):
            return self.user_types[value.name](**{k: self.convert(v) for k, v in value.fields})
        if isinstance(value, dict):
            return {self.convert(k): self.convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.convert(v) for v in value]
        if isinstance(value, set):
            return {self.convert(v) for v in value}
        if isinstance(value, tuple):
            return tuple(self.convert(v) for v in value)
        return value

    def run(self, op: Op) -> tuple[Any, ...]:
        face = self.faces[op.face]
        return outcome(lambda: face.drive(perform(op, self.model, self.convert, face)))

    # -- schema, through the library ----------------------------------------------

    def sync_types(self) -> None:
        raise NotImplementedError

    def sync_table(self) -> None:
        raise NotImplementedError

    def drop_table(self, model: Any) -> None:
        raise NotImplementedError

    def before_library_ddl(self) -> None:
        # cqlengine decides what DDL to run from the driver's metadata.
        if self.metadata_stale:
            self.cluster.refresh_schema_metadata()
            self.metadata_stale = False

    def learn_user_types(self) -> None:
        """After the other process altered a type: map its new class, as
        cqlengine's ``sync_type`` does after its own DDL (and a process
        started after the change does when it connects)."""
        for name, user_type in self.user_types.items():
            self.cluster.refresh_user_type_metadata(self.keyspace, name)
            self.cluster.register_user_type(self.keyspace, name, user_type)


class Ours(Side):
    """The extension under test."""

    label = "extension"

    def __init__(self, db: Any, keyspace: str) -> None:
        super().__init__(keyspace, db.Model, db.UserType)
        self.db = db
        self.faces = {"sync": SyncFace(), "async": AsyncFace(db.aio)}

    @property
    def cluster(self) -> Any:
        return self.db.cluster

    def settle(self) -> None:
        """Wait for the statements being prepared in the background: from now
        on, every statement text seen so far goes prepared."""
        prepared = execution.route_of(self.db.session).prepared
        assert prepared is not None, "the extension under test must prepare statements"
        assert prepared.settle(timeout=10), "background prepares did not finish within 10 s"

    def sync_types(self) -> None:
        for user_type in self.user_types.values():
            self.db.sync_type(user_type)

    def sync_table(self) -> None:
        self.db.sync_table(self.model)

    def drop_table(self, model: Any) -> None:
        self.db.drop_table(model)


class Plain(Side):
    """Plain cqlengine: the reference."""

    label = "plain cqlengine"

    def __init__(self, session: Session, keyspace: str, connection: str) -> None:
        super().__init__(keyspace, models.Model, usertype.UserType, __keyspace__=keyspace, __connection__=connection)
        self.session = session
        self.connection = connection

    @property
    def cluster(self) -> Any:
        return self.session.cluster

    def sync_types(self) -> None:
        for user_type in self.user_types.values():
            management.sync_type(self.keyspace, user_type, connection=self.connection)

    def sync_table(self) -> None:
        management.sync_table(self.model)

    def drop_table(self, model: Any) -> None:
        management.drop_table(model)


class PreparedSpy:
    """Counts the statements a session sends, how many of them went prepared
    (a ``BoundStatement``), and how many name the *other* side's keyspace
    (sent through the wrong session). The sync path's blocking ``execute``
    and the async path both end in ``execute_async``."""

    def __init__(self, session: Session, other_keyspace: str) -> None:
        self.sent = 0
        self.prepared = 0
        self.strays: list[str] = []
        original = session.execute_async

        def execute_async(query: Any, *args: Any, **kwargs: Any) -> Any:
            self.sent += 1
            if isinstance(query, BoundStatement):
                self.prepared += 1
                text = query.prepared_statement.query_string
            else:
                text = getattr(query, "query_string", str(query))
            if f"{other_keyspace}." in text:
                self.strays.append(text)
            return original(query, *args, **kwargs)

        session.execute_async = execute_async  # type: ignore[method-assign]


Record = tuple[str, Any, Any]


class World:
    """Both sides, the other process's session, and what was run."""

    def __init__(self, ours: Ours, plain: Plain, other: Session) -> None:
        self.ours = ours
        self.plain = plain
        self.sides = (ours, plain)
        self.other = other
        self.spy = PreparedSpy(ours.db.session, plain.keyspace)
        self.plain_spy = PreparedSpy(plain.session, ours.keyspace)
        self.stats: Counter[str] = Counter()
        #: Where the time goes, for the figures printed at the end of a run.
        self.seconds: Counter[str] = Counter()

    # -- running ---------------------------------------------------------------------

    def build(self, spec: TableSpec) -> dict[str, Any]:
        """Both sides' classes for ``spec``; their previous model classes, by side."""
        previous = {side.label: side.build(spec) for side in self.sides}
        assert columns_of(self.ours.model) == columns_of(self.plain.model)
        return previous

    def start(self, spec: TableSpec) -> None:
        """Create the spec's types and table in both keyspaces, each side through its library."""
        self.build(spec)
        for side in self.sides:
            side.before_library_ddl()
            with _quiet():
                side.sync_types()
                side.sync_table()

    def run(self, op: Op) -> tuple[Any, Any]:
        prepared = self.spy.prepared
        ours = self.ours.run(op)
        self.ours.settle()
        plain = self.plain.run(op)
        self.stats["operations"] += 1
        if self.spy.prepared > prepared:
            self.stats["operations that sent a statement prepared"] += 1
        return ours, plain

    def change(self, step: SchemaChange, spec: TableSpec) -> None:
        """Apply a schema change, which gives ``spec``, to both keyspaces."""
        previous = self.build(spec)
        self.stats["schema changes"] += 1
        if step.by == BY_LIBRARY:
            for side in self.sides:
                side.before_library_ddl()
                with _quiet():
                    if isinstance(step, Recreate):
                        side.drop_table(previous[side.label])
                    if isinstance(step, AddUdtField):
                        side.sync_types()
                    side.sync_table()
            return
        for side in self.sides:
            for cql in _other_process_ddl(step, side, previous[side.label]):
                self.other.execute(cql)
        self.other.cluster.control_connection.wait_for_schema_agreement()
        time.sleep(OTHER_PROCESS_ALLOWANCE)
        for side in self.sides:
            side.metadata_stale = True
            if isinstance(step, AddUdtField):
                side.learn_user_types()

    def run_scenario(self, scenario: Scenario) -> list[Record]:
        """Run every step in both worlds; what each side saw, step by step."""
        self.stats["scenarios"] += 1
        spec = scenario.spec
        with self.timed("creating tables"):
            self.start(spec)
        records: list[Record] = []
        for number, step in enumerate(scenario.steps, 1):
            if isinstance(step, Op):
                with self.timed("operations"):
                    ours, plain = self.run(step)
                records.append((f"step {number}: {step.describe()}", ours, plain))
            else:
                with self.timed("reading stored rows"):
                    records.extend(self.stored(spec, f"before step {number} ({step.describe()})"))
                spec = step.apply(spec)
                with self.timed("schema changes"):
                    self.change(step, spec)
        with self.timed("reading stored rows"):
            records.extend(self.stored(spec, "at the end"))
        # Each side really is what it stands for.
        assert not self.plain_spy.prepared, "plain cqlengine sent a statement prepared: it is no reference"
        assert not self.spy.strays and not self.plain_spy.strays, (
            f"statements sent through the other side's session: {self.spy.strays + self.plain_spy.strays}"
        )
        return records

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[what] += time.perf_counter() - started

    # -- what is stored ----------------------------------------------------------------

    def stored(self, spec: TableSpec, when: str) -> list[Record]:
        """Every row of the table in both keyspaces, read by the other
        process: as Python values, and as the node renders them in JSON,
        which shows a frozen value's sets and maps in their stored order
        (the driver's ``SortedSet`` sorts what it reads), with each
        column's TTL ("short" or "long": the seconds left differ by the
        time between the two sides' writes)."""
        names = [f'"{c.name}"' for c in spec.columns]
        # ttl() of a list, set or map is one TTL per element, which the node
        # cannot render as JSON when an element has none: frozen values and
        # scalars only.
        ttls = [
            f'ttl("{c.name}") AS "ttl {c.name}"'
            for c in spec.non_key
            if c.type.kind != "counter" and not c.type.is_collection
        ]
        rows = {}
        json_rows = {}
        for side in self.sides:
            table = f"{side.keyspace}.{spec.name}"
            rows[side.label] = [
                {k: observed(v) for k, v in row.items()}
                for row in self.other.execute(f"SELECT {', '.join(names)} FROM {table}")
            ]
            # TTLs read as JSON: the driver cannot decode a null TTL in a list.
            json_rows[side.label] = [
                [(k, _ttl_bucket(v) if k.startswith("ttl ") else v) for k, v in _pairs(row["[json]"])]
                for row in self.other.execute(f"SELECT JSON {', '.join(names + ttls)} FROM {table}")
            ]
        return [
            (f"stored rows {when}", rows[self.ours.label], rows[self.plain.label]),
            (f"stored rows {when}, as JSON", json_rows[self.ours.label], json_rows[self.plain.label]),
        ]


def _pairs(text: str) -> Any:
    """JSON with objects as lists of pairs: the order of a map's keys counts."""
    return json.loads(text, object_pairs_hook=list)


def columns_of(model: Any) -> list[tuple[Any, ...]]:
    """A model's columns as the node sees them (the two sides' must be equal)."""
    return [
        (name, col.db_type, col.partition_key, col.primary_key, col.static, col.clustering_order)
        for name, col in model._columns.items()
    ]


def _other_process_ddl(step: SchemaChange, side: Side, previous: Any) -> list[str]:
    if isinstance(step, AddColumn):
        return [add_column_cql(side.model, step.column.name, side.keyspace)]
    if isinstance(step, AddUdtField):
        return [add_field_cql(side.user_types[step.udt], step.field, side.keyspace)]
    return [f"DROP TABLE {side.keyspace}.{previous.__table_name__}", create_table_cql(side.model, side.keyspace)]


def _ttl_bucket(ttl: Any) -> Any:
    if isinstance(ttl, list):
        return [_ttl_bucket(t) for t in ttl]
    if ttl is None:
        return None
    assert 0 < ttl <= LONG_TTL, ttl
    return "short" if ttl <= SHORT_TTL else "long"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """cqlengine's schema calls warn about tuple columns (its type text and
    the node's differ): expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- comparing -------------------------------------------------------------------------


def differences(records: list[Record]) -> list[Record]:
    return [record for record in records if record[1] != record[2]]


def assert_same(scenario: Scenario, records: list[Record], shown: int = 4) -> None:
    """Fail, naming every step whose result (or stored rows) differ between
    the extension and plain cqlengine."""
    found = differences(records)
    if not found:
        return
    lines = [
        f"The extension and plain cqlengine differ at {len(found)} point(s) of this scenario:",
        scenario.describe(),
        "",
    ]
    for label, ours, plain in found[:shown]:
        ours, plain = _only_differing_rows(ours, plain)
        lines += [
            f"* {label}",
            "  extension:       " + _indent(pprint.pformat(ours, width=110)),
            "  plain cqlengine: " + _indent(pprint.pformat(plain, width=110)),
        ]
    if len(found) > shown:
        lines.append(f"... and {len(found) - shown} more: " + "; ".join(label for label, _, _ in found[shown:]))
    raise AssertionError("\n".join(lines))


def _only_differing_rows(ours: Any, plain: Any) -> tuple[Any, Any]:
    """Of two lists of rows of equal length, only the rows that differ."""
    if isinstance(ours, list) and isinstance(plain, list) and len(ours) == len(plain) and len(ours) > 1:
        pairs = [(a, b) for a, b in zip(ours, plain, strict=True) if a != b]
        return [a for a, _ in pairs], [b for _, b in pairs]
    return ours, plain


def _indent(text: str) -> str:
    return text.replace("\n", "\n" + " " * 19)


def check(world: World, scenario: Scenario) -> None:
    """Run ``scenario`` in both worlds and compare everything they saw."""
    assert_same(scenario, world.run_scenario(scenario))

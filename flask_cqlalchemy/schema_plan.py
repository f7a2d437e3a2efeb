"""How the app's models compare with the live schema, and the CQL that
would make the schema match them.

Read from the driver's schema metadata (``system_schema``), never by sending
DDL: ``flask cql status`` and ``flask cql sync --dry-run`` report with it,
and ``flask cql migrate new --auto`` writes a migration from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cassandra.cqlengine import CQLEngineException, columns, management
from cassandra.metadata import TableMetadataV3

from . import sai
from .errors import SchemaError

if TYPE_CHECKING:
    from cassandra.cluster import Cluster
    from cassandra.metadata import TableMetadata

    from .extension import AppState


def _missing_keyspace(name: str, connection: str) -> Exception:
    return SchemaError(f"keyspace {name!r} does not exist; create it first")


# -- comparing models with the live schema ------------------------------------------


def canonical_type(cql_type: str) -> str:
    """Spell a CQL type as Cassandra reports it: tuples are always frozen, and
    cqlengine writes ``tuple<...>`` where the schema says ``frozen<tuple<...>>``."""

    def parse(text: str, at: int) -> tuple[str, int]:
        start = at
        while at < len(text) and text[at] not in "<>,":
            at += 1
        name = text[start:at]
        if at < len(text) and text[at] == "<":
            args = []
            at += 1
            while True:
                arg, at = parse(text, at)
                args.append(arg)
                if text[at] == ",":
                    at += 1
                    continue
                at += 1  # the closing ">"
                break
            if name.lower() == "tuple":
                return f"frozen<tuple<{', '.join(args)}>>", at
            if name.lower() == "frozen" and len(args) == 1 and args[0].startswith("frozen<"):
                return args[0], at
            return f"{name}<{', '.join(args)}>", at
        return name, at

    try:
        return parse(cql_type.replace(" ", ""), 0)[0]
    except IndexError:  # not a type expression understood here: compare as written
        return cql_type


@dataclass
class TableCheck:
    """How one model's table compares with the model."""

    model: Any
    keyspace: str
    table: str
    exists: bool = False
    missing: list[str] = field(default_factory=list)
    differing: list[tuple[str, str, str]] = field(default_factory=list)  # (column, table type, model type)
    primary_key_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exists and not self.missing and not self.differing and self.primary_key_error is None

    def summary(self) -> str:
        if not self.exists:
            return "table missing"
        if self.primary_key_error:
            return "PRIMARY KEY differs from the model"
        problems = []
        if self.missing:
            problems.append("missing columns: " + ", ".join(self.missing))
        for column, table_type, model_type in self.differing:
            problems.append(f"column {column} is {table_type} in the table, {model_type} in the model")
        return "; ".join(problems) if problems else "ok"


def table_metadata(cluster: Cluster, keyspace: str, table: str) -> TableMetadata | None:
    keyspace_meta = cluster.metadata.keyspaces.get(keyspace)
    return keyspace_meta.tables.get(table) if keyspace_meta is not None else None


def check_table(cluster: Cluster, model: Any) -> TableCheck:
    """Compare ``model`` with its table in ``cluster``'s schema metadata."""
    check = TableCheck(model, model._get_keyspace(), model._raw_column_family_name())
    table = table_metadata(cluster, check.keyspace, check.table)
    if table is None:
        return check
    check.exists = True
    try:
        management._validate_pk(model, table)
    except CQLEngineException as exc:
        check.primary_key_error = str(exc)
    for column in model._columns.values():
        meta = table.columns.get(column.db_field_name)
        if meta is None:
            check.missing.append(column.db_field_name)
        elif canonical_type(meta.cql_type) != canonical_type(column.db_type):
            check.differing.append((column.db_field_name, meta.cql_type, column.db_type))
    return check


# -- planning a sync without running it ---------------------------------------------


class SyncPlan:
    """The CQL that ``sync_db`` would run against the current schema, worked
    out from the driver's schema metadata without sending any DDL.

    Mirrors cqlengine's ``sync_type``/``sync_table``: types (nested ones
    first) are created or gain their missing fields; tables are created, or
    gain their missing columns, indexes and changed table options.

    ``cluster_of(connection_name)`` gives the connected cluster of one of the
    app's connections, its schema metadata fresh. ``connection``, when given,
    limits the plan to the models of that connection (one bind), and the
    app's user types to the app's default connection; models in ``skip`` are
    left out.

    Raises :class:`~flask_cqlalchemy.errors.SchemaError` for what ``sync_db``
    would refuse: a missing keyspace (as ``missing_keyspace(name,
    connection)`` makes it), a primary key that differs from the model, a
    primary-key column to add, an unknown table option.
    """

    def __init__(
        self,
        state: AppState,
        cluster_of: Callable[[str], Cluster],
        *,
        connection: str | None = None,
        missing_keyspace: Callable[[str, str], Exception] | None = None,
        skip: frozenset[Any] = frozenset(),
    ) -> None:
        self.state = state
        self.cluster_of = cluster_of
        self.connection = connection
        self.missing_keyspace = missing_keyspace or _missing_keyspace
        self.skip = skip
        self.statements: list[str] = []
        # Keyed by (connection, keyspace, name): what exists or is planned so far.
        self._types: dict[tuple[str, str, str], set[str]] = {}
        self._tables: dict[tuple[str, str, str], set[str]] = {}
        self._indexed: dict[tuple[str, str, str], set[str]] = {}
        self._index_names: dict[tuple[str, str, str], set[str]] = {}

    def build(self) -> list[str]:
        """The statements, in the order they must run."""
        state = self.state
        ext = state.ext
        models = [m for m in ext.models if self.connection in (None, m._get_connection()) and m not in self.skip]
        with_types = self.connection in (None, state.connection_name)
        wanted = {(m._get_connection(), m._get_keyspace()) for m in models}
        if with_types:
            wanted.add((state.connection_name, state.keyspace))
        for connection, keyspace in sorted(wanted):
            if keyspace not in self.cluster_of(connection).metadata.keyspaces:
                raise self.missing_keyspace(keyspace, connection)
        if with_types:
            for user_type in ext.user_types:
                self._plan_type(state.connection_name, state.keyspace, user_type)
        for model in models:
            self._plan_table(model)
        return self.statements

    def _plan_type(self, connection: str, keyspace: str, user_type: Any) -> None:
        for field_column in user_type._fields.values():
            for nested in udts_of(field_column):
                self._plan_type(connection, keyspace, nested)
        key = (connection, keyspace, user_type.type_name())
        if key not in self._types:
            keyspace_meta = self.cluster_of(connection).metadata.keyspaces[keyspace]
            existing = keyspace_meta.user_types.get(user_type.type_name())
            if existing is None:
                self.statements.append(management.get_create_type(user_type, keyspace))
                self._types[key] = {f.db_field_name for f in user_type._fields.values()}
                return
            self._types[key] = set(existing.field_names)
        known = self._types[key]
        for field_column in user_type._fields.values():
            if field_column.db_field_name not in known:
                definition = field_column.get_column_def().strip()
                self.statements.append(f"ALTER TYPE {keyspace}.{user_type.type_name()} ADD {definition}")
                known.add(field_column.db_field_name)

    def _plan_table(self, model: Any) -> None:
        connection, keyspace, name = model._get_connection(), model._get_keyspace(), model._raw_column_family_name()
        for column in model._columns.values():
            for nested in udts_of(column):
                self._plan_type(connection, keyspace, nested)
        key = (connection, keyspace, name)
        if key not in self._tables:
            table = table_metadata(self.cluster_of(connection), keyspace, name)
            if table is None:
                self.statements.append(management._get_create_table(model))
                self._tables[key] = {c.db_field_name for c in model._columns.values()}
                self._indexed[key] = set()
                self._index_names[key] = set()
                self._plan_indexes(model, key)
                return
            management._validate_pk(model, table)  # sync_table would refuse: say so now
            self._tables[key] = set(table.columns)
            self._index_names[key] = set(table.indexes)
            self._indexed[key] = {
                c.db_field_name
                for c in model._columns.values()
                if management._get_index_name_by_column(table, c.db_field_name)
            }
            self._plan_options(model, table)
        known = self._tables[key]
        for column_name, column in model._columns.items():
            if column.db_field_name in known:
                continue
            if column.primary_key:
                raise SchemaError(
                    f"cannot add primary key column {column_name!r} to the existing table "
                    f"{model.column_family_name()}; drop the table or change the model"
                )
            self.statements.append(f"ALTER TABLE {model.column_family_name()} ADD {column.get_column_def().strip()}")
            known.add(column.db_field_name)
        self._plan_indexes(model, key)

    def _plan_indexes(self, model: Any, key: tuple[str, str, str]) -> None:
        indexed = self._indexed[key]
        for column in model._columns.values():
            if column.index and not sai.is_sai(column) and column.db_field_name not in indexed:
                self.statements.append(f'CREATE INDEX ON {model.column_family_name()} ("{column.db_field_name}")')
                indexed.add(column.db_field_name)
        # Storage-attached indexes (index="sai"), as sync_db creates them.
        names = self._index_names[key]
        for _column, name, statement in sai.sai_index_statements(model):
            if name not in names:
                self.statements.append(statement)
                names.add(name)

    def _plan_options(self, model: Any, table: TableMetadata) -> None:
        # The comparison of cqlengine's _update_options, without its ALTER.
        existing = management._options_map_from_strings(set(table._make_option_strings(table.options)))
        wanted = management._options_map_from_strings(TableMetadataV3._make_option_strings(model.__options__ or {}))
        changed = {}
        for name, value in wanted.items():
            if name not in existing:
                raise SchemaError(f"{model.__name__}: unknown table option {name!r}")
            current = existing[name]
            if isinstance(current, str):
                if value != current:
                    changed[name] = value
            elif any(_option_value(k, current.get(k)) != _option_value(k, v) for k, v in value.items()):
                changed[name] = value
        if changed:
            # A string value is CQL text already ("'people'"): quoting it again,
            # as cqlengine's own _update_options does, stores the quotes too.
            options = " AND ".join(
                f"{name} = {value}" if isinstance(value, str) else _option_string(name, value)
                for name, value in changed.items()
            )
            self.statements.append(f"ALTER TABLE {model.column_family_name()} WITH {options}")


def _option_value(key: str, value: Any) -> Any:
    """A table sub-option as Cassandra stores it: the schema names compaction
    and compression classes in full (``org.apache.cassandra.db.compaction.
    LeveledCompactionStrategy``) where a model may give the short name."""
    if key in ("class", "sstable_compression") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return value


def _option_string(name: str, value: Any) -> str:
    return str(TableMetadataV3._make_option_strings({name: value})[0])


def udts_of(column: Any) -> list[Any]:
    found: list[Any] = []
    columns.resolve_udts(column, found)
    return found

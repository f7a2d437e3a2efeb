"""Storage-attached indexes (SAI, Cassandra 5.0) declared on model columns.

A column declared with ``index="sai"`` (and, optionally,
``index_options={...}``) gets a ``CREATE CUSTOM INDEX IF NOT EXISTS ...
USING 'StorageAttachedIndex'`` from ``sync_db``/``sync_table``, after its
table is synced. cqlengine's own ``index=True`` keeps its meaning (a legacy
secondary index).

Declaring ``index="sai"`` also tells cqlengine's queryset that the column
is indexed by an index it does not manage (its ``custom_index``), so
filters on it (equality, ranges on numeric columns, ``CONTAINS``) are
accepted without ``allow_filtering()``, as the node accepts them.

Contract for schema tools (the ``flask cql sync --dry-run`` planner and
migrations autogenerate), stable since 0.1:

``is_sai(column) -> bool``
    Whether a model column is declared with an SAI index (``index="sai"``).

``sai_index_statements(model) -> list[tuple[str, str, str]]``
    ``(column_db_name, index_name, create_cql)`` for every SAI-declared
    column of ``model``, in column declaration order. ``create_cql`` is the
    complete, idempotent statement (``CREATE CUSTOM INDEX IF NOT EXISTS
    <index_name> ON <keyspace>.<table> ("<column>") USING
    'StorageAttachedIndex' [WITH OPTIONS = {...}]``), the keyspace being the
    model's for the current app. ``index_name`` is
    ``<table>_<column>_sai_idx``, lower case. Raises
    ``cassandra.cqlengine.models.ModelDefinitionException`` naming the column
    for options the node would refuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from cassandra.cqlengine import columns, connection
from cassandra.cqlengine.models import ModelDefinitionException

from .errors import SchemaError

log = logging.getLogger("flask_cqlalchemy")

#: The value of ``index=`` that declares a storage-attached index.
SAI = "sai"

#: Options of a vector index, and the values Cassandra 5.0 accepts.
VECTOR_OPTIONS: dict[str, frozenset[str]] = {
    "similarity_function": frozenset({"cosine", "dot_product", "euclidean"}),
    "optimize_for": frozenset({"latency", "recall"}),
}
#: Options of a text (``text``/``ascii``) index: booleans.
TEXT_OPTIONS = frozenset({"case_sensitive", "normalize", "ascii"})
#: The similarity function of a vector index that does not name one.
DEFAULT_SIMILARITY = "cosine"


class SAIColumn:
    """Mixin of the columns of ``db.columns``: accepts ``index="sai"`` and
    ``index_options={...}`` on top of cqlengine's arguments.

    An SAI column is not a cqlengine ``index`` (which would make
    ``sync_table`` create a legacy index) but a ``custom_index`` (an index
    cqlengine does not manage, which any filter operator may use).
    """

    #: The index options as declared; None when the column has no SAI index.
    sai_options: dict[str, Any] | None = None

    def __init__(self, *args: Any, index_options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        sai = kwargs.get("index") == SAI
        if sai:
            kwargs["index"] = False
            kwargs["custom_index"] = True
        super().__init__(*args, **kwargs)
        if sai:
            self.sai_options = dict(index_options or {})
        elif index_options:
            raise ModelDefinitionException(f'index_options={dict(index_options)!r} needs index="sai"')


def adopt_declared(model: Any) -> None:
    """Check the SAI columns of a newly declared model, and treat a plain
    cqlengine column declared ``index="sai"`` as :class:`SAIColumn` does.

    Raises ``ModelDefinitionException`` naming the column for options the
    node would refuse, or for a polymorphic discriminator column with an SAI
    index.
    """
    for name, column in model._columns.items():
        if column.index == SAI:  # a cqlengine column, not one of db.columns
            column.index = False
            column.custom_index = True
            column.sai_options = {}
        if is_sai(column):
            if column.discriminator_column:
                # cqlengine filters a submodel's queries on the discriminator
                # only when that column is a key or has a cqlengine index.
                raise ModelDefinitionException(
                    f'{model.__name__}.{name}: a discriminator column cannot have index="sai" (the submodels '
                    "would lose their type filter); declare index=True"
                )
            index_options(model, name, column)


def is_sai(column: Any) -> bool:
    """Whether ``column`` is declared with a storage-attached index."""
    return getattr(column, "sai_options", None) is not None or getattr(column, "index", None) == SAI


def index_name(model: Any, column: Any) -> str:
    """The name of the SAI index of ``column``: ``<table>_<column>_sai_idx``."""
    table = model.column_family_name(include_keyspace=False).strip('"')
    return f"{table}_{column.db_field_name}_sai_idx".lower()


def index_options(model: Any, name: str, column: Any) -> dict[str, str]:
    """The ``WITH OPTIONS`` map of the SAI index of ``column`` (attribute
    ``name`` of ``model``), as the node wants it: strings, lower case.

    Raises ``ModelDefinitionException`` naming the column for an option
    Cassandra 5.0 does not know for this column type, or a value it refuses.
    """
    from .vector import Vector  # vector.py builds on this module

    declared = getattr(column, "sai_options", None) or {}
    where = f"{model.__name__}.{name}"
    if isinstance(column, Vector):
        if not column.indexable:
            raise ModelDefinitionException(
                f'{where}: index="sai" on a vector needs float elements (Cassandra 5.0 indexes only '
                f"vector<float, n>), not {column.value_column.db_type}"
            )
        allowed: Mapping[str, Any] = VECTOR_OPTIONS
    elif isinstance(column, (columns.Text, columns.Ascii)):
        allowed = dict.fromkeys(TEXT_OPTIONS)
    else:
        allowed = {}
    options: dict[str, str] = {}
    for key, value in declared.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ModelDefinitionException(
                f"{where}: unknown SAI index option {key!r} for a {column.db_type} column (known: {known})"
            )
        choices = allowed[key]
        if choices is None:  # a boolean option
            if not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
                raise ModelDefinitionException(
                    f"{where}: SAI index option {key!r} must be true or false, not {value!r}"
                )
            options[key] = str(value).lower()
        else:
            text = str(value).lower()
            if text not in choices:
                raise ModelDefinitionException(
                    f"{where}: SAI index option {key!r} must be one of {', '.join(sorted(choices))}, not {value!r}"
                )
            options[key] = text
    return options


def similarity_function(column: Any) -> str:
    """The similarity function of the vector index of ``column``."""
    return str((getattr(column, "sai_options", None) or {}).get("similarity_function", DEFAULT_SIMILARITY)).lower()


def create_statement(model: Any, name: str, column: Any) -> str:
    """The ``CREATE CUSTOM INDEX IF NOT EXISTS`` of ``column`` (attribute ``name``)."""
    options = index_options(model, name, column)
    cql = (
        f"CREATE CUSTOM INDEX IF NOT EXISTS {index_name(model, column)} ON {model.column_family_name()} "
        f"(\"{column.db_field_name}\") USING 'StorageAttachedIndex'"
    )
    if options:
        cql += " WITH OPTIONS = {" + ", ".join(f"'{k}': '{v}'" for k, v in sorted(options.items())) + "}"
    return cql


def sai_index_statements(model: Any) -> list[tuple[str, str, str]]:
    """``(column_db_name, index_name, create_cql)`` of every SAI-declared
    column of ``model``; see the module docstring for the contract."""
    return [
        (column.db_field_name, index_name(model, column), create_statement(model, name, column))
        for name, column in model._columns.items()
        if is_sai(column)
    ]


def sync_indexes(model: Any, wait: float = 60.0) -> None:
    """Create the SAI indexes of ``model`` that do not exist (its table must).

    An index of another kind already on the column (a legacy one from
    ``index=True``) is left alone, with a warning: Cassandra would keep both,
    and dropping one is a migration's decision. An SAI index whose options
    differ from the declared ones is kept as it is, also with a warning
    (changing them means dropping and re-creating the index).

    Raises :class:`~flask_cqlalchemy.errors.SchemaError`, before creating
    anything, when an index of the name of one of the model's is on another
    table of the keyspace (``notes.x_tag`` and ``notes_x.tag`` would both
    have ``notes_x_tag_sai_idx``).

    Returns once the indexes it created are queryable on the node that
    answered (the node builds an index in the background: queried before,
    it answers ``INDEX_NOT_AVAILABLE``), or after ``wait`` seconds, with a
    warning.
    """
    declared = [(name, column) for name, column in model._columns.items() if is_sai(column)]
    if not declared:
        return
    connection_name = model._get_connection()
    keyspace = model._get_keyspace()
    table = model.column_family_name(include_keyspace=False).strip('"')
    in_keyspace = list(
        connection.execute(
            "SELECT table_name, index_name, options FROM system_schema.indexes WHERE keyspace_name = %s",
            (keyspace,),
            connection=connection_name,
        )
    )
    existing = {row["index_name"]: dict(row["options"]) for row in in_keyspace if row["table_name"] == table}
    elsewhere = {row["index_name"]: row["table_name"] for row in in_keyspace if row["table_name"] != table}
    for _, column in declared:
        # Index names are per keyspace: CREATE ... IF NOT EXISTS would do
        # nothing, and the wait below would wait for an index never made.
        index = index_name(model, column)
        if index in elsewhere:
            raise SchemaError(
                f"SAI index {keyspace}.{index} of {table}.{column.db_field_name} is already the index of table "
                f"{elsewhere[index]} (SAI indexes are named <table>_<column>_sai_idx): rename the table or the column"
            )
    created = []
    for name, column in declared:
        index = index_name(model, column)
        options = index_options(model, name, column)
        if index in existing:
            found = {k: v.lower() for k, v in existing[index].items() if k not in ("target", "class_name")}
            if found != options:
                log.warning(
                    "SAI index %s.%s exists with options %s; the model declares %s", keyspace, index, found, options
                )
            continue
        targets = (column.db_field_name, f'"{column.db_field_name}"', f"values({column.db_field_name})")
        others = [n for n, found in existing.items() if found.get("target") in targets]
        if others:
            log.warning(
                "%s.%s.%s already has index %s: SAI index %s not created", keyspace, table, name, others[0], index
            )
            continue
        log.debug("creating SAI index %s.%s", keyspace, index)
        connection.execute(create_statement(model, name, column), connection=connection_name)
        created.append(index)
    if created:
        _wait_until_queryable(connection_name, keyspace, table, created, wait)


def _wait_until_queryable(connection_name: str, keyspace: str, table: str, indexes: list[str], wait: float) -> None:
    deadline = time.monotonic() + wait
    pending = set(indexes)
    while True:
        try:
            rows = connection.execute(
                "SELECT index_name, is_queryable FROM system_views.sai_column_indexes "
                "WHERE keyspace_name = %s AND table_name = %s",
                (keyspace, table),
                connection=connection_name,
            )
        except Exception as exc:  # a node without this virtual table: nothing to wait on
            log.debug("cannot see whether SAI indexes are built: %s", exc)
            return
        pending -= {row["index_name"] for row in rows if row["is_queryable"]}
        if not pending:
            return
        if time.monotonic() > deadline:
            log.warning("SAI indexes %s of %s.%s are still being built", sorted(pending), keyspace, table)
            return
        time.sleep(0.05)

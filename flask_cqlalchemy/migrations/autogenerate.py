"""``migrate new NAME --auto``: a migration from the difference between the
models and the live schema (``system_schema``, as the driver reads it).

What is safe to run is written as statements: new tables, columns, user
types, type fields, indexes and table options, the same CQL ``sync_db``
would run (:class:`~flask_cqlalchemy.schema_plan.SyncPlan`). What cannot be
done safely is written commented out under a ``-- REVIEW:`` line saying
why: dropping a column, a table, an index or a type loses data or breaks
readers still deployed; Cassandra cannot change a column's type or a
primary key; a user type's field can never be dropped. Nothing is guessed
about renames: a renamed column shows as one to add and one to drop.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cassandra.cqlengine import management
from cassandra.metadata import protect_name

from .. import sai
from ..schema_plan import SyncPlan, canonical_type, check_table, table_metadata, udts_of

if TYPE_CHECKING:
    from cassandra.cluster import Cluster

    from ..extension import AppState
    from .migrator import Target


@dataclass
class Review:
    """A change the models ask for that is not safe to run as is."""

    warning: str
    statements: list[str] = field(default_factory=list)


@dataclass
class Draft:
    """The generated migration: statements to run and changes to review."""

    statements: list[str]
    reviews: list[Review]

    @property
    def empty(self) -> bool:
        return not self.statements and not self.reviews

    def text(self, filename: str, command: str, label: str) -> str:
        now = datetime.datetime.now(datetime.timezone.utc)
        lines = [
            f"-- {filename}: written by `{command}` on {now:%Y-%m-%d %H:%M} UTC",
            f"-- from the difference between the models and the live schema of {label}.",
            "-- Read it before running `upgrade`: it runs statement by statement, and Cassandra",
            "-- cannot roll DDL back.",
            "",
        ]
        for statement in self.statements:
            lines += [f"{statement};", ""]
        for review in self.reviews:
            lines += [
                f"-- REVIEW: {part}" if i == 0 else f"--   {part}" for i, part in enumerate(_wrap(review.warning))
            ]
            lines += [f"-- {statement};" for statement in review.statements]
            lines.append("")
        return "\n".join(lines)


def autogenerate(
    state: AppState,
    target: Target,
    cluster_of: Callable[[str], Cluster],
    missing_keyspace: Callable[[str, str], Exception] | None = None,
    state_tables: frozenset[tuple[str, str]] = frozenset(),
) -> Draft:
    """Compare the target's models (and, for the app's default connection,
    its user types) with the live schema and draft the migration.

    ``state_tables`` are the (keyspace, table) of every target's state and
    lock tables: never proposed for dropping. Names in the target's keyspace
    are written without it (the migration runs there, in any environment);
    objects of other keyspaces keep theirs."""
    ext = state.ext
    connection = target.connection_name
    cluster = cluster_of(connection)
    models = [m for m in ext.models if m._get_connection() == connection]
    reviews: list[Review] = []

    refused = set()
    for model in models:
        check = check_table(cluster, model)
        if check.exists and check.primary_key_error:
            refused.add(model)
            reviews.append(
                Review(
                    f"the primary key of {check.keyspace}.{check.table} differs from model {model.__name__} "
                    f"({check.primary_key_error}). Cassandra cannot change a primary key: create a table with the "
                    f"new key under another name, copy the rows (a .py migration), move readers and writers, then "
                    f"drop the old table.",
                    [management._get_create_table(model)],
                )
            )
            continue
        if not check.exists:
            continue
        name = f"{check.keyspace}.{check.table}"
        table = table_metadata(cluster, check.keyspace, check.table)
        assert table is not None
        # Indexes first: Cassandra refuses to drop a column an index depends on.
        indexed = {protect_name(c.db_field_name) for c in model._columns.values() if c.index or sai.is_sai(c)}
        for index in table.indexes.values():
            target_column = dict(index.index_options).get("target", "")
            column_name = target_column[7:-1] if target_column.startswith("values(") else target_column
            if column_name not in indexed:
                reviews.append(
                    Review(
                        f"index {index.name} of {name} (on {target_column}) is not declared by model "
                        f"{model.__name__}. Queries filtering on that column stop working without it.",
                        [f"DROP INDEX {check.keyspace}.{protect_name(index.name)}"],
                    )
                )
        for column, table_type, model_type in check.differing:
            reviews.append(
                Review(
                    f"column {column} of {name} is {table_type} in the table and {model_type} in model "
                    f"{model.__name__}. Cassandra cannot change a column's type, and refuses to add a column "
                    f"again under a dropped column's name with another type: add a column of the new type "
                    f"under a new name, backfill it with a .py migration, and point the model at it "
                    f"(db_field), then drop the old one.",
                    [f"ALTER TABLE {name} ADD {protect_name(column + '_new')} {model_type}"],
                )
            )
        wanted = {c.db_field_name for c in model._columns.values()}
        for column in table.columns:
            if column not in wanted:
                reviews.append(
                    Review(
                        f"column {column} of {name} is not in model {model.__name__}. Dropping it deletes its "
                        f"data for good; drop it once no deployed code reads it.",
                        [f"ALTER TABLE {name} DROP {protect_name(column)}"],
                    )
                )

    statements = SyncPlan(
        state, cluster_of, connection=connection, missing_keyspace=missing_keyspace, skip=frozenset(refused)
    ).build()

    keyspaces = {m._get_keyspace() for m in models} | {target.keyspace}
    mapped = {(m._get_keyspace(), m._raw_column_family_name()) for m in models}
    ours = set(state_tables) | {
        (target.keyspace, target.settings.migrations_table),
        (target.keyspace, f"{target.settings.migrations_table}_lock"),
    }
    for keyspace in sorted(keyspaces):
        keyspace_meta = cluster.metadata.keyspaces.get(keyspace)
        if keyspace_meta is None:
            continue
        for table_name in sorted(keyspace_meta.tables):
            if (keyspace, table_name) in mapped or (keyspace, table_name) in ours:
                continue
            reviews.append(
                Review(
                    f"table {keyspace}.{table_name} belongs to no model. Dropping it deletes its data for good.",
                    [f"DROP TABLE {keyspace}.{protect_name(table_name)}"],
                )
            )

    if connection == state.connection_name:
        reviews += _type_reviews(state, cluster, models)
    unqualify = _unqualifier(target.keyspace)
    return Draft(
        [unqualify(s) for s in statements],
        [Review(r.warning, [unqualify(s) for s in r.statements]) for r in reviews],
    )


def _unqualifier(keyspace: str) -> Callable[[str], str]:
    """Drop ``keyspace.`` before names: a migration runs in its target keyspace,
    which differs between development, staging and production."""
    pattern = re.compile(rf'(?<![\w".]){re.escape(keyspace)}\.(?=[\w"])')

    def unqualify(statement: str) -> str:
        # Outside string literals only (a comment or default could mention it).
        parts = re.split(r"('(?:[^']|'')*')", statement)
        return "".join(part if i % 2 else pattern.sub("", part) for i, part in enumerate(parts))

    return unqualify


def _type_reviews(state: AppState, cluster: Cluster, models: list[Any]) -> list[Review]:
    keyspace_meta = cluster.metadata.keyspaces.get(state.keyspace)
    if keyspace_meta is None:
        return []
    declared: dict[str, Any] = {}
    for declared_type in state.ext.user_types:
        for nested in [declared_type, *(t for f in declared_type._fields.values() for t in udts_of(f))]:
            declared[nested.type_name()] = nested
    for model in models:
        for column in model._columns.values():
            for nested in udts_of(column):
                declared[nested.type_name()] = nested
    reviews = []
    for type_name, live in sorted(keyspace_meta.user_types.items()):
        user_type = declared.get(type_name)
        qualified = f"{state.keyspace}.{type_name}"
        if user_type is None:
            reviews.append(
                Review(
                    f"user type {qualified} belongs to no model or declared type. Drop it once no table uses it.",
                    [f"DROP TYPE {state.keyspace}.{protect_name(type_name)}"],
                )
            )
            continue
        fields = {f.db_field_name: f for f in user_type._fields.values()}
        for field_name, field_type in zip(live.field_names, live.field_types, strict=True):
            wanted = fields.get(field_name)
            if wanted is None:
                reviews.append(
                    Review(
                        f"field {field_name} of user type {qualified} is not in {user_type.__name__}. Cassandra "
                        f"cannot drop a field of a user type: it stays (values written to it are kept)."
                    )
                )
            elif canonical_type(field_type) != canonical_type(wanted.db_type):
                reviews.append(
                    Review(
                        f"field {field_name} of user type {qualified} is {field_type} in the schema and "
                        f"{wanted.db_type} in {user_type.__name__}. Cassandra cannot change a field's type: add a "
                        f"field of the new type instead."
                    )
                )
    return reviews


def _wrap(text: str, width: int = 88) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines

"""Versioned schema migrations: ``flask cql migrate`` and ``adb.migrate()``.

See docs/migrations.md for the workflow. The pieces: :mod:`.files` (the
migration files), :mod:`.state` (the state table and the lock, in the
cluster), :mod:`.migrator` (upgrade, status, stamp, baseline),
:mod:`.autogenerate` (a migration from the models' difference with the
live schema).
"""

from .errors import (
    EXIT_LOCKED,
    EXIT_NEEDS_ATTENTION,
    EXIT_PENDING,
    LockLost,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    MigrationFileError,
    MigrationRefused,
    SchemaAgreementTimeout,
)
from .migrator import Entry, MigrationSession, Migrator, Target, targets

__all__ = [
    "EXIT_LOCKED",
    "EXIT_NEEDS_ATTENTION",
    "EXIT_PENDING",
    "Entry",
    "LockLost",
    "LockTimeout",
    "MigrationError",
    "MigrationFailed",
    "MigrationFileError",
    "MigrationRefused",
    "MigrationSession",
    "Migrator",
    "SchemaAgreementTimeout",
    "Target",
    "targets",
]

"""What ``flask cql migrate`` and ``adb.migrate()`` raise.

Each error says what happened and what the user can do next; the CLI
prints the message and exits with the error's ``exit_code``.
"""

from __future__ import annotations

from ..errors import CQLAlchemyError

#: Exit codes of ``flask cql migrate``, for deploy scripts.
EXIT_ERROR = 1
EXIT_PENDING = 3
EXIT_NEEDS_ATTENTION = 4
EXIT_LOCKED = 5


class MigrationError(CQLAlchemyError):
    """Base class of the migration errors."""

    exit_code = EXIT_ERROR


class MigrationFileError(MigrationError):
    """A migration file is misnamed, unreadable or malformed.

    ``filename`` holds the file's name.
    """

    def __init__(self, filename: str, message: str) -> None:
        super().__init__(f"{filename} {message}")
        self.filename = filename


class MigrationRefused(MigrationError):
    """``upgrade`` will not run: a migration failed or was left in
    progress, a file changed after it ran, or the version asked for does
    not exist. Nothing was run."""

    exit_code = EXIT_NEEDS_ATTENTION


class MigrationFailed(MigrationError):
    """A statement of a migration failed. The migration is recorded
    ``FAILED`` with the number of statements that ran and the error."""

    def __init__(self, message: str, *, version: str, statement: int) -> None:
        super().__init__(message)
        self.version = version
        self.statement = statement


class SchemaAgreementTimeout(MigrationFailed):
    """The nodes did not agree on the schema within
    ``CASSANDRA_SCHEMA_AGREEMENT_WAIT`` seconds after a DDL statement."""


class LockTimeout(MigrationError):
    """Another runner holds the migration lock and did not release it within
    ``CASSANDRA_MIGRATIONS_LOCK_WAIT`` seconds."""

    exit_code = EXIT_LOCKED


class LockLost(MigrationError):
    """The lock expired or was taken over while this runner was migrating
    (it could not be renewed in time): the runner stopped before its next
    statement."""

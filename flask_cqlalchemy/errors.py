"""Exceptions raised by flask-cqlalchemy.

Every error a user can cause names what was wrong (the config key, the
cursor, the page size) so the message alone is enough to fix it.
"""

from __future__ import annotations

from werkzeug.exceptions import BadRequest


class CQLAlchemyError(Exception):
    """Base class of every error this extension raises itself."""


class ConfigError(CQLAlchemyError, ValueError):
    """A ``CASSANDRA_*`` config key is missing or malformed.

    ``key`` holds the offending config key.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class NotInitializedError(CQLAlchemyError, RuntimeError):
    """The extension was used before ``init_app`` ran for any app."""


class SchemaError(CQLAlchemyError):
    """A schema operation was refused (bad keyspace name, missing keyspace)."""


class InvalidCursor(BadRequest, CQLAlchemyError):
    """A pagination cursor is malformed, tampered with, or belongs to another query.

    It is a :class:`werkzeug.exceptions.BadRequest`, so a Flask view that lets
    it propagate answers 400 rather than 500.
    """


class InvalidPageSize(BadRequest, CQLAlchemyError):
    """``per_page`` is not a whole number between 1 and the configured maximum."""

"""Flask-CQLAlchemy: Cassandra models for Flask, with an async face for ``async def`` views."""

from .errors import (
    ConfigError,
    CQLAlchemyError,
    InvalidCursor,
    InvalidPageSize,
    InvalidQuery,
    NotInitializedError,
    RowNotFound,
    SchemaError,
)
from .extension import CQLAlchemy
from .pagination import Page
from .recording import RecordedQuery, get_recorded_queries

__version__ = "0.1.0"

__all__ = [
    "CQLAlchemy",
    "CQLAlchemyError",
    "ConfigError",
    "InvalidCursor",
    "InvalidPageSize",
    "InvalidQuery",
    "NotInitializedError",
    "Page",
    "RecordedQuery",
    "RowNotFound",
    "SchemaError",
    "get_recorded_queries",
]

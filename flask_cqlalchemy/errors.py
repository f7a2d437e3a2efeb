"""Exceptions raised by flask-cqlalchemy.

Every error a user can cause names what was wrong (the config key, the
cursor, the page size) so the message alone is enough to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, NotFound

from . import frameworks

if TYPE_CHECKING:
    from flask.sansio.app import App


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


class HTTPError(CQLAlchemyError):
    """An error of this extension that is also an HTTP answer (a werkzeug
    ``HTTPException``): a view that lets it propagate answers its status.

    When the app has the extension's error handlers on
    (``CASSANDRA_ERROR_HANDLERS``, the default) the body is JSON, of the same
    shape as the other errors the extension answers::

        {"error": "not found", "message": "..."}

    otherwise the framework's usual error page. Either way an error handler
    of the app for the status or for ``HTTPException`` takes precedence: it
    receives the exception and answers as it likes.
    """

    #: The ``error`` member of the JSON body.
    error_name = "invalid value"
    #: The request field at fault, added to the JSON body when set.
    field: str | None = None

    def json_body(self) -> dict[str, Any]:
        """The JSON answer's members."""
        body: dict[str, Any] = {"error": self.error_name, "message": self.description}  # type: ignore[attr-defined]
        if self.field is not None:
            body["field"] = self.field
        return body

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        if _json_errors_app() is None:
            return super().get_headers(environ, scope)  # type: ignore[misc,no-any-return]
        return [("Content-Type", "application/json")]

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        app = _json_errors_app()
        if app is None:
            return super().get_body(environ, scope)  # type: ignore[misc,no-any-return]
        # The app's provider, as the error handlers use: it also renders what
        # a user may pass as the description, such as a lazy translation.
        return app.json.dumps(self.json_body()) + "\n"


def _json_errors_app() -> App | None:
    """The current app if it has the extension's error handlers on, else None."""
    app = frameworks.current_app()
    state = app.extensions.get("cqlalchemy") if app is not None else None
    return app if getattr(state, "json_errors", False) else None


class InvalidCursor(HTTPError, BadRequest):
    """A pagination cursor is malformed, tampered with, or belongs to another query.

    It is a :class:`werkzeug.exceptions.BadRequest`, so a view that lets it
    propagate answers 400 rather than 500 (JSON naming ``"field": "cursor"``
    with the extension's error handlers on).
    """

    field = "cursor"


class InvalidPageSize(HTTPError, BadRequest):
    """``per_page`` is not a whole number between 1 and the configured maximum (400)."""

    field = "per_page"


class RowNotFound(HTTPError, NotFound):
    """No row matched a ``get_or_404``/``first_or_404`` (or async twin): a
    :class:`werkzeug.exceptions.NotFound`, so the view answers 404 (JSON with
    the extension's error handlers on, like a plain ``get`` that misses)."""

    error_name = "not found"


class InvalidQuery(HTTPError, BadRequest):
    """A query Cassandra would refuse, refused before anything is sent (400):
    an ANN query without a LIMIT or above the node's maximum, paged, on a
    column without a vector index, with a vector of the wrong dimension...

    ``column`` names the column and ``rule`` the rule broken; the JSON answer
    (with the extension's error handlers on) carries both.
    """

    error_name = "invalid query"

    def __init__(self, column: str, rule: str) -> None:
        super().__init__(f"{column}: {rule}")
        self.column = column
        self.rule = rule

    def json_body(self) -> dict[str, Any]:
        body = super().json_body()
        body["column"] = self.column
        return body

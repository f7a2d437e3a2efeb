"""Flask and Quart through one door: the current app, its ``g``, JSON answers.

The extension needs three things of the framework: which app the code runs
for (to pick that app's connection and keyspace), where that app context
keeps per-request values (query recording), and how to build a JSON response
from an error handler. Flask and Quart both keep the current app context in a
context variable of their own (``flask.globals._cv_app`` and
``quart.globals._cv_app``); the app context holds ``.app`` and ``.g`` in both.

Importing this package never imports Quart: Quart's variable is looked up
when the first Quart app is initialised (the app's own module imported Quart
by then), and only from then on is it read.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask.globals import _cv_app as _flask_app_context
from flask.globals import _cv_request as _flask_request_context

if TYPE_CHECKING:
    from flask.sansio.app import App

#: The context variables holding the current app context, Flask's first.
_app_contexts: tuple[contextvars.ContextVar[Any], ...] = (_flask_app_context,)
#: Per app-context variable, the variables of the same framework holding the
#: context of a request being served (Quart's websockets included).
_serving_contexts: dict[contextvars.ContextVar[Any], tuple[contextvars.ContextVar[Any], ...]] = {
    _flask_app_context: (_flask_request_context,)
}


def is_quart(app: App) -> bool:
    """Whether ``app`` is a Quart app (without importing Quart)."""
    quart = sys.modules.get("quart")
    return quart is not None and isinstance(app, quart.Quart)


def framework_name(app: App) -> str:
    """``"quart"`` or ``"flask"``: the command users type (``quart cql ...``)."""
    return "quart" if is_quart(app) else "flask"


def adopt(app: App) -> None:
    """Make the app contexts of ``app``'s framework visible to :func:`app_contexts`."""
    global _app_contexts
    if is_quart(app):
        from quart.globals import _cv_app as quart_app_context
        from quart.globals import _cv_request as quart_request_context
        from quart.globals import _cv_websocket as quart_websocket_context

        if quart_app_context not in _app_contexts:
            _serving_contexts[quart_app_context] = (quart_request_context, quart_websocket_context)
            _app_contexts = (*_app_contexts, quart_app_context)


def app_contexts() -> list[Any]:
    """The app contexts active here, the current one first: one per framework
    at most, usually zero or one.

    Both frameworks' can be active at once, e.g. a test that pushes a Flask
    app context around requests to a Quart app on the same extension: then
    the one whose framework is serving a request comes first.
    """
    found = [(variable, context) for variable in _app_contexts if (context := variable.get(None)) is not None]
    if len(found) > 1:
        found.sort(key=lambda pair: all(serving.get(None) is None for serving in _serving_contexts[pair[0]]))
    return [context for _, context in found]


def current_app() -> App | None:
    """The app of the current app context of either framework, or None outside one."""
    contexts = app_contexts()
    return contexts[0].app if contexts else None


def current_globals() -> Any | None:
    """The ``g`` of the current app context of either framework, or None outside one."""
    contexts = app_contexts()
    return contexts[0].g if contexts else None


@contextlib.contextmanager
def app_context(app: App) -> Iterator[None]:
    """``with app_context(app):`` code here uses ``app`` (its connection,
    keyspace, ``g``) in synchronous code, for either framework.

    A Flask app's context is pushed as ``app.app_context()`` does. Quart
    pushes its app contexts only from a coroutine; here its context is made
    current for the block as a plain value, without the app-context signals
    or teardown functions: enough for this extension's lookups, not a
    substitute for ``async with app.app_context()`` in a test that needs them.
    """
    if not is_quart(app):
        with app.app_context():  # type: ignore[attr-defined]
            yield
        return
    adopt(app)
    from quart.globals import _cv_app as quart_app_context

    token = quart_app_context.set(app.app_context())  # type: ignore[attr-defined]
    try:
        yield
    finally:
        quart_app_context.reset(token)


def json_response(app: App, status: int, body: dict[str, Any]) -> Any:
    """``body`` as a JSON response of ``app``'s own response class, with ``status``.

    Built from the app given rather than from the current one, so an error
    handler answers the same way under Flask and Quart, in a context or not.
    """
    response = app.json.response(body)
    response.status_code = status
    return response


__all__ = [
    "adopt",
    "app_context",
    "app_contexts",
    "current_app",
    "current_globals",
    "framework_name",
    "is_quart",
    "json_response",
]

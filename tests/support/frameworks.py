"""Flask and Quart side by side: an app of each, and running a coroutine
inside an async view of either, through the framework's own test client.

A test that takes a ``framework`` parameter runs the same scenario as a
Flask ``async def`` view (asgiref's loop in a thread of its own) and as a
Quart view (on the test client's loop), in that app's request and app
context: what a user's view sees.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any

from flask import Flask
from quart import Quart
from werkzeug.datastructures import Headers

from ..conftest import HOSTS, KEYSPACE

FRAMEWORKS = ("flask", "quart")
_ids = itertools.count(1)


def make_framework_app(framework: str, name: str, **config: object) -> Any:
    """A Flask or Quart app configured for the test node (as ``conftest.make_app``)."""
    app = (Quart if framework == "quart" else Flask)(name)
    app.config.update({"CASSANDRA_HOSTS": HOSTS, "CASSANDRA_KEYSPACE": KEYSPACE, "SECRET_KEY": "tests", **config})
    return app


def get(app: Any, path: str, **kwargs: Any) -> tuple[int, bytes, Headers]:
    """GET ``path`` through the app's test client: status, body, headers
    (werkzeug's ``Headers``: names in any case)."""
    if isinstance(app, Quart):

        async def fetch() -> tuple[int, bytes, Headers]:
            response = await app.test_client().get(path, **kwargs)
            return response.status_code, await response.get_data(), Headers(response.headers)

        return asyncio.run(fetch())
    response = app.test_client().get(path, **kwargs)
    return response.status_code, response.get_data(), Headers(response.headers)


class InView:
    """``InView(app)(coroutine)``: await ``coroutine`` in an async view of
    ``app`` and return its result; what it raises is raised here."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pending: dict[str, Coroutine[Any, Any, Any]] = {}
        self.outcomes: dict[str, tuple[bool, Any]] = {}
        self.path = f"/_in_view_{next(_ids)}/<key>"

        async def in_view(key: str) -> str:
            # the extension sees this app here (not the last one initialised)
            state = app.extensions["cqlalchemy"]
            assert state.ext.state() is state, (app.name, state.ext.state().app_name)
            try:
                self.outcomes[key] = (True, await self.pending.pop(key))
            except BaseException as exc:  # handed to the test's thread
                self.outcomes[key] = (False, exc)
            return "done"

        app.add_url_rule(self.path, endpoint=self.path, view_func=in_view)

    def __call__(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        key = str(next(_ids))
        self.pending[key] = coroutine
        status, body, _ = get(self.app, self.path.replace("<key>", key))
        assert (status, body) == (200, b"done"), (status, body)
        ok, value = self.outcomes.pop(key)
        if not ok:
            raise value
        return value

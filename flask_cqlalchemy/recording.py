"""Query recording, like Flask-SQLAlchemy's ``record_queries``.

With ``CASSANDRA_RECORD_QUERIES`` on, every statement an app's connection
sends during a request (or any app context) is kept in the app context's
``g`` (Flask's or Quart's) with its
CQL, parameters, duration, the line of user code that caused it, and whether
it went sync or async. Off (the default), nothing of this runs.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

from . import frameworks

_G_KEY = "_cqlalchemy_queries"


@functools.lru_cache(maxsize=1)
def _plumbing() -> tuple[str, ...]:
    """Folders and files whose frames are plumbing: the recorded location is
    the first frame outside them."""
    import asyncio
    import concurrent.futures
    import threading

    import cassandra
    import flask
    import werkzeug

    import flask_cqlalchemy

    places = [
        os.path.dirname(m.__file__ or "") + os.sep
        for m in (asyncio, concurrent.futures, cassandra, flask, werkzeug, flask_cqlalchemy)
    ]
    places.append(threading.__file__ or "threading.py")
    for optional in ("asgiref", "quart", "hypercorn"):
        module = sys.modules.get(optional)
        if module is not None and module.__file__:
            places.append(os.path.dirname(module.__file__) + os.sep)
    return tuple(places)


@dataclass(frozen=True)
class RecordedQuery:
    """One statement sent while recording was on."""

    cql: str
    params: Any
    duration: float
    location: str
    mode: str  # "sync" or "async"
    error: str | None = None


def get_recorded_queries() -> list[RecordedQuery]:
    """The statements recorded in the current app context (empty outside one)."""
    g = frameworks.current_globals()
    if g is None:
        return []
    return list(g.get(_G_KEY, ()))


def sink() -> list[RecordedQuery] | None:
    """Where to put the records of a statement sent now: this app context's list."""
    g = frameworks.current_globals()
    if g is None:
        return None
    records = g.get(_G_KEY)
    if records is None:
        records = []
        setattr(g, _G_KEY, records)
    return records


def caller() -> str:
    """``file:line in function`` of the first frame outside the plumbing."""
    plumbing = _plumbing()
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(plumbing) and not filename.startswith("<frozen"):
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "unknown"

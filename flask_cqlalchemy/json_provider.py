"""JSON for models, pages and Cassandra's value types (``CASSANDRA_JSON_PROVIDER``).

Work in progress (issue 14): :func:`install` is called by ``init_app``.
"""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """Give ``app`` a JSON provider that serialises models and pages."""

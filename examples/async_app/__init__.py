"""Notes per user: a small JSON service on flask-cqlalchemy's async facade.

``create_app()`` builds the app (see :mod:`.app`); ``wsgi.py`` exposes one
for WSGI servers. Nothing here connects to Cassandra at import time.
"""

from .app import connect, create_app, init_schema

__all__ = ["connect", "create_app", "init_schema"]

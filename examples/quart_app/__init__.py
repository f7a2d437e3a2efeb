"""The notes service of ``examples/async_app`` on Quart.

It shares that app's extension object, models, request validation and
queries; only the web layer is Quart's: ``create_app()`` builds the app
(see :mod:`.app`), ``asgi.py`` exposes one for ASGI servers. Nothing here
connects to Cassandra at import time.
"""

from .app import create_app, init_schema

__all__ = ["create_app", "init_schema"]

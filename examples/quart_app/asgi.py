"""The app for ASGI servers and the ``quart`` command.

    quart --app examples.quart_app.asgi init-db
    hypercorn --bind 127.0.0.1:8000 examples.quart_app.asgi:app

Importing this module builds the app, which connects to Cassandra unless
CASSANDRA_LAZY_CONNECT is true.
"""

from .app import create_app

app = create_app()

"""The app for WSGI servers and the ``flask`` command.

    flask --app examples.async_app.wsgi init-db
    flask --app examples.async_app.wsgi run
    waitress-serve --threads 8 examples.async_app.wsgi:app

Importing this module builds the app, which connects to Cassandra unless
CASSANDRA_LAZY_CONNECT is true.
"""

from .app import create_app

app = create_app()

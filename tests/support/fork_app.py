"""The notes app as a pre-forking server loads it: ``gunicorn --preload``
imports this module once in the master, which connects to Cassandra here,
at import, and then forks the workers.

FORK_APP_HOSTS (comma-separated) and FORK_APP_PORT name the node.
"""

from __future__ import annotations

import os

from .apps import notes_app

app = notes_app(
    hosts=os.environ["FORK_APP_HOSTS"].split(","),
    port=int(os.environ.get("FORK_APP_PORT", "9042")),
    keyspace="flask_cqlalchemy_fork",
    # A worker stuck on a connection it cannot use answers 503 after 3 s
    # instead of hanging the test.
    request_timeout=3.0,
)

"""gunicorn settings for the notes service.

    gunicorn -c examples/async_app/gunicorn_conf.py examples.async_app.wsgi:app

Without ``--preload`` each worker imports the app after the fork and opens
its own connection. With ``--preload`` the app is built once in the master;
flask-cqlalchemy forgets that connection in each forked worker, which would
connect again at its first query, with its first concurrent requests racing
that connection being set up (some would answer 500). ``post_worker_init``
connects the worker before it takes any request. Run with
``CASSANDRA_LAZY_CONNECT=true`` so the master does not connect for nothing.
"""

import os

bind = os.environ.get("NOTES_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("NOTES_WORKERS", "2"))
# Threads serve concurrent requests in one worker; each async view gets its
# own event loop on its request's thread.
worker_class = "gthread"
threads = int(os.environ.get("NOTES_THREADS", "8"))


def post_worker_init(worker):
    from examples.async_app.app import connect

    version = connect(worker.wsgi)
    worker.log.info("worker %s connected to Cassandra %s", worker.pid, version)

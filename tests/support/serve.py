"""Serve a Flask app with waitress in this process, for a test to talk to.

    python -m tests.support.serve MODULE:FACTORY [--kwargs JSON] [--threads N]

``FACTORY(**kwargs)`` builds the app. Once the server listens, one line
``LISTENING http://127.0.0.1:PORT`` goes to stdout; logs go to stderr.
Runs until killed (SIGTERM or SIGINT).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("factory")
    parser.add_argument("--kwargs", default="{}")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )

    module_name, _, function = args.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), function)
    app = factory(**json.loads(args.kwargs))

    from waitress.server import create_server

    # connection_limit above any client concurrency a test uses; waitress
    # would otherwise stop accepting at 100 connections.
    server = create_server(app, host="127.0.0.1", port=0, threads=args.threads, connection_limit=500)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"LISTENING http://127.0.0.1:{server.effective_port}", flush=True)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

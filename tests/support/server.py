"""A WSGI server in its own process, started and stopped by a test.

The app runs in a real server (waitress with threads, or gunicorn) and a
separate process, as in production: the test measures it from outside (HTTP,
/proc) and a hung app cannot hang the test process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from .launcher import REPO_ROOT


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment less the variables the example app reads, so only
    the config a test passes explicitly counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASSANDRA_", "NOTES_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServerProcess:
    """A server subprocess whose stdout announces its URL; stderr goes to a file."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        ready_pattern: str | None = "LISTENING ",
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        ready_path: str = "/",
    ) -> None:
        """Ready when stdout shows ``ready_pattern`` followed by the URL or,
        with no pattern, when ``url + ready_path`` answers 200."""
        self.args = list(args)
        self.log_path = log_path
        self.ready_pattern = ready_pattern
        self.ready_path = ready_path
        self.env = clean_env(env)
        self.url = url
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120) -> ServerProcess:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.ready_pattern else self._log,
            stderr=self._log,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while self.ready_pattern is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(f"{self.url}{self.ready_path}", timeout=10).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        while self.ready_pattern is not None and time.monotonic() < deadline:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(self.ready_pattern):
                    self.url = self.url or line[len(self.ready_pattern) :].strip()
                    return self
                if line == "" and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"server {' '.join(self.args)} did not start:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", timeout=kwargs.pop("timeout", 30), **kwargs)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def factory_call(factory: str, **kwargs: Any) -> str:
    """``factory`` ("module:function") called with ``kwargs``, as gunicorn's
    app argument ``"module:function(name=literal, ...)"``: gunicorn calls it
    once it has imported the module (in the master, with ``--preload``).
    The values must be Python literals (strings, numbers, lists, None...)."""
    module, _, function = factory.partition(":")
    arguments = ", ".join(f"{name}={value!r}" for name, value in kwargs.items())
    return f"{module}:{function}({arguments})"


def gunicorn_app(
    app: str, log_path: Path, workers: int, *options: str, env: Mapping[str, str] | None = None, ready_path: str = "/"
) -> ServerProcess:
    """``app`` ("module:variable", or a :func:`factory_call`) served by
    gunicorn with ``--preload``: the master imports the app once, then forks
    the workers."""
    port = free_port()
    help_text = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True).stdout
    if "--no-control-socket" in help_text:
        # Newer gunicorns open a control socket in ~/.gunicorn by default;
        # two servers at once would fight over it.
        options = ("--no-control-socket", *options)
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "60",
            "--graceful-timeout",
            "5",
            *options,
            app,
        ],
        log_path,
        ready_pattern=None,
        env=env,
        url=f"http://127.0.0.1:{port}",
        ready_path=ready_path,
    )


def waitress_app(factory: str, log_path: Path, threads: int = 8, **kwargs: Any) -> ServerProcess:
    """``factory(**kwargs)`` served by waitress (``threads`` threads) in a subprocess."""
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "tests.support.serve",
            factory,
            "--kwargs",
            json.dumps(kwargs),
            "--threads",
            str(threads),
        ],
        log_path,
    )

"""Extra Cassandra nodes from ``scripts/cassandra`` for one test module.

Every profile but the suite's own node (``plain``) is a separate local
cluster with its own ports (see the script's header), so these nodes can be
started, stopped, killed and paused without touching the node the rest of
the suite uses. A node that does not start is an error of the test, never a
skip: the launcher's output (with the node's log tail) is in the message.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = REPO_ROOT / "scripts" / "cassandra"
HOME_DIR = Path(os.environ.get("CASSANDRA_HOME_DIR", REPO_ROOT / ".cassandra"))

#: profile -> (first node's address, CQL port); mirrors scripts/cassandra.
PROFILES = {
    "cluster": ("127.0.0.1", 9043),
    "auth": ("127.0.0.1", 9142),
    "tls": ("127.0.0.1", 9144),
    "faults": ("127.0.0.4", 9044),
    # dc1: nodes 1 and 2, dc2: node 3 (GossipingPropertyFileSnitch).
    "dcs": ("127.0.0.1", 9045),
}


class LauncherError(AssertionError):
    """scripts/cassandra failed; the message carries its output."""


def launcher_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # CASSANDRA_HOSTS names the suite's node; these profiles are always local.
    env.pop("CASSANDRA_HOSTS", None)
    env.setdefault("CASSANDRA_PYTHON", str(REPO_ROOT / ".venv" / "bin" / "python"))
    env.update(extra or {})
    return env


def run(command: str, profile: str, *options: str, env: Mapping[str, str] | None = None, timeout: float = 400) -> str:
    """Run ``scripts/cassandra COMMAND --profile PROFILE OPTIONS``; return its output."""
    # The suite's own node is shared by every test: never start, stop or pause it from here.
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of the extra test clusters {sorted(PROFILES)}")
    args = [str(LAUNCHER), command, "--profile", profile, *options]
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=launcher_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise LauncherError(
            f"`{' '.join(args[1:])}` failed (exit {result.returncode}) after "
            f"{time.monotonic() - started:.1f} s:\n{result.stdout}"
        )
    return result.stdout


@dataclass
class LocalCluster:
    """A profile's nodes, started for a test module."""

    profile: str
    nodes: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    start_seconds: float = 0.0

    @property
    def port(self) -> int:
        return PROFILES[self.profile][1]

    def address(self, node: int = 1) -> str:
        first = PROFILES[self.profile][0]
        head, last = first.rsplit(".", 1)
        return f"{head}.{int(last) + node - 1}"

    @property
    def hosts(self) -> list[str]:
        return [self.address(i) for i in range(1, self.nodes + 1)]

    def node_index(self, address: str) -> int:
        return self.hosts.index(address) + 1

    def start(self, *options: str) -> float:
        """Start (or reuse) the profile's nodes; return the seconds it took."""
        started = time.monotonic()
        extra = ["--nodes", str(self.nodes)] if self.profile in ("cluster", "dcs") else []
        run("start", self.profile, *extra, *options, env=self.env)
        return time.monotonic() - started

    def stop(self, node: int | None = None, kill: bool = False) -> float:
        started = time.monotonic()
        options = ([f"--node={node}"] if node else []) + (["--kill"] if kill else [])
        run("stop", self.profile, *options, env=self.env)
        return time.monotonic() - started

    def pause(self, node: int | None = None) -> None:
        run("pause", self.profile, *([f"--node={node}"] if node else []), env=self.env)

    def resume(self, node: int | None = None) -> None:
        run("resume", self.profile, *([f"--node={node}"] if node else []), env=self.env)

    def log_tail(self, node: int = 1, lines: int = 40) -> str:
        log = HOME_DIR / self.profile / "nodes" / self.address(node) / "logs" / "system.log"
        with contextlib.suppress(OSError):
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return f"(no log at {log})"


@contextlib.contextmanager
def local_cluster(profile: str, nodes: int = 1, env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """Start the profile's nodes afresh (wiping what an earlier run left),
    yield them, and stop them whatever happens."""
    cluster = LocalCluster(profile, nodes, dict(env or {}))
    try:
        cluster.start_seconds = cluster.start("--fresh")
        yield cluster
    finally:
        cluster.stop()

"""``scripts/cassandra``: readiness is a CQL answer, and ``start`` never stops
a node it did not launch (issue 10, problem 6).

The launcher once decided readiness from cassandra-driver or, without it,
from "Startup complete" in the node's log. After the log rotated, ``status``
called the running node "not running" and ``start`` waited 120 s and then
stopped it, taking the database away from everyone using it.

What these tests check, as a user would see it:

* the probe (``scripts/cassandra.d/cql_probe.py``) gets the release_version
  from the suite's node with a Python that has no cassandra-driver, and
  fails with a clear reason, fast, where nothing or something else listens;
* ``status`` and ``start`` against the suite's node, run from a checkout
  without a driver and with the node's log rotated, say "running" and reuse
  the node; the node (and its process) still run afterwards;
* ``start`` on a node of ours that is running but does not answer waits a
  bounded time, fails, and leaves the node running.

The probe's login (SASL PLAIN) and TLS are tested against the auth and TLS
nodes in ``tests/test_security.py``, which starts them.

The suite's node is shared: nothing here stops, pauses or wipes it, or
touches its files. The launcher runs in a sandbox: a checkout of only
``scripts/`` (no ``.venv``, so no Python with the driver) and its own
``CASSANDRA_HOME_DIR`` (pid files, node folders and logs of its own, and a
lib folder marked complete but without jars, so nothing is ever downloaded
and no JVM could start there).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cassandra.cluster import Cluster

from .conftest import HOSTS
from .support.launcher import PROFILES

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
PROBE = SCRIPTS / "cassandra.d" / "cql_probe.py"
REAL_HOME = Path(os.environ.get("CASSANDRA_HOME_DIR", REPO_ROOT / ".cassandra"))
CASSANDRA_VERSION = "5.0.9"
#: profile -> (first node's address, CQL port), as in the script's header.
ADDRESSES = {"plain": ("127.0.0.1", 9042), **PROFILES}
# The --timeout given to a probe that must fail without waiting (refused,
# closed, not CQL): it fails with that reason, not with a timeout, and well
# before this (the bound only catches a probe that waits or hangs).
NO_WAIT_TIMEOUT = 60

needs_local_node = pytest.mark.skipif(
    bool(os.environ.get("CASSANDRA_HOSTS")),
    reason="CASSANDRA_HOSTS names an external cluster; these tests need the local node of `scripts/cassandra start`",
)


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str, float]:
    """Runs a command; returns its exit status, stdout, stderr and duration."""
    started = time.monotonic()
    result = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def closed_port() -> int:
    """A local port nothing listens on (the kernel just handed it out and took it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def real_node_pid() -> int | None:
    try:
        return int((REAL_HOME / "run" / "node1.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def release_version_via_driver(host: str = HOSTS[0], port: int = 9042) -> str:
    cluster = Cluster([host], port=port, protocol_version=5)
    try:
        return str(cluster.connect().execute("SELECT release_version FROM system.local").one()[0])
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python3 with the standard library only: cassandra-driver is not importable."""
    venv = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python3"
    code, _, stderr, _ = run([str(python), "-c", "import cassandra"])
    assert code != 0 and "ModuleNotFoundError" in stderr, "the bare venv must not see cassandra-driver"
    return python


# --- the probe ----------------------------------------------------------------------


def probe(python: Path, *args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    return run([str(python), str(PROBE), *args], timeout=timeout)


def test_probe_without_driver_reports_the_nodes_release_version(bare_python: Path, cassandra_node: str) -> None:
    code, stdout, stderr, _ = probe(bare_python, HOSTS[0], "9042")
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == cassandra_node
    assert stderr == ""


def test_probe_peers_check_fails_for_a_single_node(bare_python: Path) -> None:
    # The suite's node is alone: it knows none of the peers `--peers 1` asks for.
    code, stdout, stderr, _ = probe(bare_python, HOSTS[0], "9042", "--peers", "1")
    assert code == 1
    assert stdout == ""
    assert "knows 0 of its 1 peers yet" in stderr


def test_probe_of_a_closed_port_fails_fast_with_the_reason(bare_python: Path) -> None:
    port = closed_port()
    code, stdout, stderr, took = probe(bare_python, "127.0.0.1", str(port), "--timeout", str(NO_WAIT_TIMEOUT))
    assert code == 1
    assert stdout == ""
    assert f"127.0.0.1:{port}" in stderr and "refused" in stderr.lower()
    assert "within" not in stderr, stderr  # the refusal itself, not a timeout after retries
    assert took < NO_WAIT_TIMEOUT / 2


@dataclass
class ForeignServer:
    """A TCP server on a free local port that is no Cassandra node."""

    behaviour: str  # "http": answers like a web server; "hangup": closes; "silent": says nothing
    sock: socket.socket = field(default_factory=socket.socket)
    clients: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.clients.append(client)
            if self.behaviour == "http":
                client.recv(1024)
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                client.close()
            elif self.behaviour == "hangup":
                client.close()


@pytest.fixture()
def foreign_server(request: pytest.FixtureRequest) -> Iterator[ForeignServer]:
    server = ForeignServer(request.param)
    server.sock.bind(("127.0.0.1", 0))
    server.sock.listen(8)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    with contextlib.suppress(OSError):
        server.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
    server.sock.close()
    for client in server.clients:
        client.close()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("foreign_server", "options", "reason"),
    [
        ("http", ["--timeout", str(NO_WAIT_TIMEOUT)], "does not speak the CQL native protocol: it answered b'HTTP/1.1"),
        ("hangup", ["--timeout", str(NO_WAIT_TIMEOUT)], "closed the connection"),
        # Nothing to answer but the timeout: given 1 s, it gives up then.
        ("silent", ["--timeout", "1"], "did not answer OPTIONS within 1 s"),
    ],
    indirect=["foreign_server"],
)
def test_probe_of_something_else_than_cql_fails_fast_with_the_reason(
    bare_python: Path, foreign_server: ForeignServer, options: list[str], reason: str
) -> None:
    code, stdout, stderr, took = probe(bare_python, "127.0.0.1", str(foreign_server.port), *options)
    assert code == 1
    assert stdout == ""
    assert f"127.0.0.1:{foreign_server.port}" in stderr and reason in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, "the reason is one line (the launcher shows the last one)"
    assert took < NO_WAIT_TIMEOUT / 2


# --- the launcher ---------------------------------------------------------------------


@dataclass
class Sandbox:
    """scripts/cassandra run from a checkout without .venv, on a home of its own."""

    root: Path
    python: Path
    stand_ins: list[tuple[subprocess.Popen[bytes], threading.Thread]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def launcher(self) -> Path:
        return self.root / "checkout" / "scripts" / "cassandra"

    def env(self, python_on_path_only: bool = False, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASSANDRA_")}
        env.update(
            CASSANDRA_HOME_DIR=str(self.home),
            CASSANDRA_VERSION=CASSANDRA_VERSION,
            # Should the launcher ever try to launch a JVM here, it fails at
            # once: there are no jars, and no JVM takes a 1 KiB heap.
            CASSANDRA_HEAP="1k",
        )
        if python_on_path_only:
            # No CASSANDRA_PYTHON, no .venv: the python3 on PATH, which has no driver.
            env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        else:
            env["CASSANDRA_PYTHON"] = str(self.python)
        env.update(extra)
        return env

    def run(self, *args: str, python_on_path_only: bool = False, **env: str) -> tuple[int, str, float]:
        """Runs the launcher; returns its exit status, its output (stdout and stderr) and duration."""
        code, stdout, stderr, took = run([str(self.launcher), *args], env=self.env(python_on_path_only, **env))
        return code, stdout + stderr, took

    def start_stand_in(self, profile: str) -> int:
        """A running node of `profile` that this launcher started, as the
        launcher sees it: a pid file naming a live process with the node's
        JVM command line. Its CQL port is whatever answers at the profile's
        address (for `plain`, the suite's real node). The node's current log
        was just rotated: it says nothing about startup."""
        address, _ = ADDRESSES[profile]
        profile_dir = self.home if profile == "plain" else self.home / profile
        node_dir = profile_dir / "nodes" / address
        (node_dir / "logs").mkdir(parents=True)
        (node_dir / "logs" / "system.log").write_text("INFO  [main] log rotated; nothing about startup in here\n")
        stand_in = subprocess.Popen(
            [
                str(self.python),
                "-c",
                "import time; time.sleep(600)",
                "java",
                f"-Dcassandra.config=file://{node_dir}/cassandra.yaml",
                "org.apache.cassandra.service.CassandraDaemon",
            ]
        )
        # Reaped as soon as it ends, as a real node (not our child) would be:
        # a launcher that stops it sees it gone, and process_alive says so.
        reaper = threading.Thread(target=stand_in.wait, daemon=True)
        reaper.start()
        self.stand_ins.append((stand_in, reaper))
        (profile_dir / "run").mkdir(parents=True, exist_ok=True)
        (profile_dir / "run" / "node1.pid").write_text(f"{stand_in.pid}\n")
        return stand_in.pid


@pytest.fixture()
def sandbox(tmp_path: Path, bare_python: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path, bare_python)
    (box.launcher.parent).mkdir(parents=True)
    box.launcher.symlink_to(SCRIPTS / "cassandra")
    (box.launcher.parent / "cassandra.d").symlink_to(SCRIPTS / "cassandra.d")
    lib = box.home / "lib" / CASSANDRA_VERSION
    lib.mkdir(parents=True)
    (lib / ".complete").write_text("")  # "the jars are here": nothing to download
    yield box
    for stand_in, reaper in box.stand_ins:
        stand_in.kill()
        reaper.join()


@needs_local_node
@pytest.mark.parametrize("python_on_path_only", [False, True], ids=["CASSANDRA_PYTHON", "python3-on-PATH"])
def test_status_says_running_for_a_node_that_answers_whatever_its_log(
    sandbox: Sandbox, cassandra_node: str, python_on_path_only: bool
) -> None:
    node_pid = sandbox.start_stand_in("plain")
    code, output, _ = sandbox.run("status", python_on_path_only=python_on_path_only)
    assert code == 0, output
    assert f"node 127.0.0.1:9042: running, Cassandra {cassandra_node} (pid {node_pid})" in output


@needs_local_node
def test_start_reuses_a_running_node_whatever_its_log_and_never_stops_it(sandbox: Sandbox, cassandra_node: str) -> None:
    node_pid = sandbox.start_stand_in("plain")
    real_pid = real_node_pid()
    code, output, took = sandbox.run("start", CASSANDRA_START_TIMEOUT="30")
    assert code == 0, output
    assert f"already answers CQL (Cassandra {cassandra_node}); reusing it" in output
    assert took < 15, f"start waited {took:.1f} s for a node that answers"
    assert process_alive(node_pid), f"start stopped the node it reused:\n{output}"
    if real_pid is not None:
        assert process_alive(real_pid), "the suite's node is gone"
    assert release_version_via_driver() == cassandra_node
    code, output, _ = sandbox.run("status")
    assert code == 0 and "running, Cassandra" in output, output


@needs_local_node
def test_status_on_the_suites_own_home_without_the_driver(bare_python: Path, cassandra_node: str) -> None:
    """The real launcher and home, with `status` only (it changes nothing),
    and a CASSANDRA_PYTHON that cannot import cassandra-driver."""
    env = {**os.environ, "CASSANDRA_PYTHON": str(bare_python)}
    code, stdout, stderr, _ = run([str(SCRIPTS / "cassandra"), "status"], env=env)
    assert code == 0, stdout + stderr
    assert f"running, Cassandra {cassandra_node}" in stdout
    assert "warning" not in stdout + stderr


def test_start_waits_for_a_running_node_that_does_not_answer_and_leaves_it_running(sandbox: Sandbox) -> None:
    # A profile whose port nothing answers on right now: the node "runs" (its
    # process lives) but answers no CQL, like a node busy starting or stuck.
    free = [p for p in ("faults", "tls", "auth", "cluster") if not port_answers(*ADDRESSES[p])]
    if not free:
        pytest.skip("every extra profile's node is running; no port to stand in on")
    profile = free[0]
    node_pid = sandbox.start_stand_in(profile)
    code, output, took = sandbox.run("start", "--profile", profile, "--nodes", "1", CASSANDRA_START_TIMEOUT="3")
    assert code != 0, output
    assert process_alive(node_pid), f"start stopped a node it had not launched:\n{output}"
    assert "did not answer CQL within 3s" in output and "not stopped" in output, output
    assert took < 3 + 15, f"start waited {took:.1f} s instead of about 3 s"
    code, output, _ = sandbox.run("status", "--profile", profile)
    assert code == 3, output
    assert f"not answering CQL, though its process runs (pid {node_pid})" in output

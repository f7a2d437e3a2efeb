"""Workers that fork: each process gets its own working connection.

A pre-forking server imports the app (which connects) once in its master and
forks the workers from it; whatever driver connection the master made is
then copied into every worker. Each worker must end up with connections of
its own that work, and no socket may be held by two processes: a socket
shared by processes would mix their requests and answers on one stream.

Both run against the suite's node, each in its own interpreter: plain
``os.fork`` (children that also exit normally, after which the parent's
connection must still work), and gunicorn ``--preload`` with three workers,
one of which is killed and respawned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import HOSTS, KEYSPACE
from .support import procnet
from .support.launcher import REPO_ROOT
from .support.server import clean_env, gunicorn_app

pytestmark = pytest.mark.slow

PORT = 9042
WORKERS = 3


def shared_sockets(holders: dict[int, set[int]]) -> dict[int, list[int]]:
    """Socket inodes held by more than one of the given processes -> those pids."""
    owners: dict[int, list[int]] = {}
    for pid, inodes in holders.items():
        for inode in inodes:
            owners.setdefault(inode, []).append(pid)
    return {inode: pids for inode, pids in owners.items() if len(pids) > 1}


def test_os_fork_children_get_their_own_connection_and_the_parent_keeps_its_own(record_figure):
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.fork_check", ",".join(HOSTS), str(PORT), KEYSPACE, "3"],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"fork_check failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    parent, children, after = report["parent_before"], report["children"], report["parent_after"]
    assert "error" not in parent, parent
    assert len(children) == 3, (
        f"only {len(children)} of 3 children reported (exit codes {report['exit_codes']}); a child that hangs "
        f"is stopped after 30 s with its stack:\n{result.stderr[-6000:]}"
    )

    for child in children:
        assert "error" not in child, (
            f"child {child['pid']} could not use the extension: {child['error']}\n{child.get('traceback')}"
        )
        assert child["read_parent_row"] == parent["pid"]
        assert child["awaited_read_own_row"] == child["pid"]
        assert child["sockets"], f"child {child['pid']} holds no connection to Cassandra"
        inherited = set(child["sockets"]) & set(parent["sockets"])
        assert not inherited, (
            f"child {child['pid']} still holds the parent's socket(s) {sorted(inherited)} (file descriptors "
            "inherited through fork and never closed in the child)"
        )
        assert not set(child["driver_ports"]) & set(parent["driver_ports"]), (
            f"child {child['pid']}'s driver uses the parent's connection(s): ports {child['driver_ports']} "
            f"vs the parent's {parent['driver_ports']}"
        )
        assert set(child["driver_ports"]) <= set(child["sockets"].values())
    shared = shared_sockets({c["pid"]: set(map(int, c["sockets"])) for c in children})
    assert not shared, f"sockets held by several children: {shared}"
    assert all(code == 0 for code in report["exit_codes"].values()), report["exit_codes"]

    # The children exited normally (the driver's atexit shutdown ran in each):
    # the parent's connection still works.
    assert "error" not in after, f"the parent's connection broke after its children exited: {after['error']}"
    assert after["awaited_read_own_row"] == parent["pid"]
    record_figure(
        "fork (os.fork, 3 children): parent sockets (local ports) "
        f"{sorted(parent['sockets'].values())}, children "
        + ", ".join(f"{c['pid']}: {sorted(c['sockets'].values())}" for c in children)
        + f"; parent still works after the children exited (driver ports {after['driver_ports']})"
    )


def whoami_until_every_worker_answered(server, workers: set[int], limit: int = 400) -> dict[int, dict]:
    """GET /_test/whoami (an awaited and a blocking query) until each of
    ``workers`` has answered; every answer must be a 200."""
    answers: dict[int, dict] = {}

    def call(_: int) -> requests.Response:
        try:
            return server.get("/_test/whoami", timeout=30)
        except requests.RequestException as exc:
            raise AssertionError(f"a worker did not answer: {exc}\nserver log:\n{server.log()[-3000:]}") from None

    sent = 0
    with ThreadPoolExecutor(6) as pool:
        while not workers <= set(answers) and sent < limit:
            for response in pool.map(call, range(12)):
                sent += 1
                assert response.status_code == 200, (
                    f"a worker could not use Cassandra: {response.status_code} {response.text[:500]}\n"
                    f"server log:\n{server.log()[-3000:]}"
                )
                body = response.json()
                assert body["release_version"] and body["blocking_release_version"]
                answers[body["pid"]] = body
    missing = workers - set(answers)
    assert not missing, f"workers {sorted(missing)} never answered in {sent} requests (answers from {sorted(answers)})"
    return answers


def wait_for_workers(master: int, count: int, exclude: frozenset[int] = frozenset(), timeout: float = 60) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = set(procnet.children(master)) - exclude
        if len(workers) >= count:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"gunicorn master {master} has workers {procnet.children(master)}, expected {count}")


def check_no_shared_socket(
    master: int, workers: set[int], answers: dict[int, dict]
) -> dict[int, dict[int, procnet.TcpSocket]]:
    held = {pid: procnet.sockets_to_port(pid, PORT) for pid in {master, *workers}}
    for pid in workers:
        assert held[pid], f"worker {pid} holds no connection to Cassandra"
        ports = {s.local_port for s in held[pid].values()}
        assert set(answers[pid]["driver_ports"]) <= ports, (answers[pid]["driver_ports"], ports)
        inherited = set(held[pid]) & set(held[master])
        assert not inherited, (
            f"worker {pid} still holds the master's socket(s) {sorted(inherited)} (inherited through fork)"
        )
    shared = shared_sockets({pid: set(sockets) for pid, sockets in held.items()})
    assert not shared, f"sockets held by several processes (inode: pids): {shared}"
    return held


def test_gunicorn_preload_workers_each_use_their_own_connection(tmp_path, record_figure):
    env = {"FORK_APP_HOSTS": ",".join(HOSTS), "FORK_APP_PORT": str(PORT)}
    with gunicorn_app(
        "tests.support.fork_app:app", tmp_path / "gunicorn.log", WORKERS, env=env, ready_path="/_test/stats"
    ) as server:
        master = server.pid
        workers = wait_for_workers(master, WORKERS)
        answers = whoami_until_every_worker_answered(server, workers)
        held = check_no_shared_socket(master, workers, answers)

        # A worker dies; the master forks a new one from the preloaded app.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in procnet.children(master) and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = wait_for_workers(master, WORKERS, exclude=frozenset({victim}))
        (respawned,) = workers - set(answers)
        answers.update(whoami_until_every_worker_answered(server, {respawned}))
        held = check_no_shared_socket(master, workers, answers)
        assert "Exception on " not in server.log(), server.log()[-3000:]

    def ports(pid: int) -> list[int]:
        return sorted(s.local_port for s in held[pid].values())

    record_figure(
        f"fork (gunicorn --preload -w {WORKERS}): master {master} sockets {ports(master)}; workers "
        + ", ".join(f"{pid}: {ports(pid)}" for pid in sorted(workers))
        + f"; worker {victim} killed, respawned as {respawned}; no socket in two processes"
    )

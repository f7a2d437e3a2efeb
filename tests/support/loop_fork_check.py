"""``python -m tests.support.loop_fork_check HOSTS KEYSPACE``: fork with per-thread loops.

The parent serves a request (which makes the main thread's loop), forks,
and the child serves two: the child must make a loop of its own (never
running the parent's), keep it for its next request, and read from the
node; the parent then keeps its loop, which must still wake up for the
driver's answers (a child that closed its copy would unregister the
parent's wake-up socket from their shared epoll instance), and so must the
loop of another parent thread, idle during the fork (Python drops the other
threads' state in the child, which finalises what they held). Prints one JSON
line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading

from flask import Flask, jsonify

from flask_cqlalchemy.aio import AsyncCQLAlchemy

loops: list[asyncio.AbstractEventLoop] = []


def make(hosts: str, keyspace: str) -> tuple[Flask, AsyncCQLAlchemy]:
    app = Flask("loop_fork_check")
    app.config.update(CASSANDRA_HOSTS=hosts.split(","), CASSANDRA_KEYSPACE=keyspace, CASSANDRA_ASYNC_LOOPS="per-thread")
    adb = AsyncCQLAlchemy(app)

    @app.get("/read")
    async def read():
        loops.append(asyncio.get_running_loop())
        rows = await adb.execute("SELECT cluster_name FROM system.local")
        return jsonify(rows=[row["cluster_name"] for row in rows])

    return app, adb


def main() -> None:
    app, adb = make(sys.argv[1], sys.argv[2])
    client = app.test_client()
    # A second server thread with a loop of its own, idle while the fork happens.
    other_ready, other_go = threading.Event(), threading.Event()
    other_answers: list[int] = []

    def other_thread() -> None:
        other_client = app.test_client()
        other_answers.append(other_client.get("/read").status_code)
        other_ready.set()
        other_go.wait(60)
        other_answers.append(other_client.get("/read").status_code)

    other = threading.Thread(target=other_thread, name="other server thread")
    other.start()
    other_ready.wait(60)
    parent = client.get("/read")
    parents_loop = loops[-1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            first = client.get("/read")
            child_loop = loops[-1]
            second = client.get("/read")
            report = {
                "status": first.status_code,
                "rows": first.get_json()["rows"] if first.status_code == 200 else first.text,
                "reused_parents_loop": child_loop is parents_loop,
                "parents_loop_run_in_child": parents_loop in loops[loops.index(parents_loop) + 1 :],
                "same_loop_next_request": second.status_code == 200 and loops[-1] is child_loop,
            }
        except BaseException as error:  # reported to the parent, whatever it is
            report = {"error": repr(error)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    child = json.loads(b"".join(chunks) or b'{"error": "no report"}')
    after = client.get("/read")
    after_loop = loops[-1]
    other_go.set()
    other.join(20)  # a loop the child closed would never wake up for the driver's answer
    print(
        json.dumps(
            {
                "parent": {"status": parent.status_code, "rows": parent.get_json()["rows"]},
                "child": child,
                "parent_after": {
                    "status": after.status_code,
                    "rows": after.get_json()["rows"] if after.status_code == 200 else after.text,
                    "same_loop_as_before": after_loop is parents_loop,
                },
                "other_thread_after": {"answers": other_answers, "hung": other.is_alive()},
            }
        )
    )
    adb.sync.shutdown()
    if other.is_alive():
        os._exit(0)  # the report says it hung; do not wait for it at exit


if __name__ == "__main__":
    main()

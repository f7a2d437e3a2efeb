"""A TCP proxy that adds a fixed network round trip: scenario 4b's stand-in for netem.

    python -m bench.latency_proxy --listen 127.0.0.1:0 --target 127.0.0.1:9042 --delay-ms 1

Every chunk read from one side is written to the other side ``delay / 2``
ms after it arrived, in each direction, so a request and its answer gain
``delay`` ms together: what a database across a network adds to a query,
without ``tc qdisc ... netem`` (which needs a kernel module this machine
lacks). Each direction is a delay line: the reader stamps each chunk with
its deadline into a bounded queue, one writer task takes them out in order,
sleeps until the deadline, writes and awaits ``drain()`` (so byte order
never depends on timer ordering, and a slow side slows the reader down
instead of filling memory). An end of stream is passed on after the same
delay (half-close); when both directions are done, or either side fails,
both connections are closed.

The loop uses a ``select()``-based selector: ``epoll``/``poll`` take their
timeout in whole milliseconds (rounded up), which would turn a 0.5 ms
delay into 1 ms or more; ``select()`` takes microseconds.

Prints ``PORT <n>`` on stdout once it listens (``--listen HOST:0`` picks a
free port). :class:`LatencyProxy` runs it in a subprocess from Python;
:func:`round_trip_ms` times a query through any port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHUNK = 65_536
#: chunks waiting in one direction before its reader stops reading (backpressure)
QUEUE_CHUNKS = 64
#: one direction's delay line: (deadline on the loop's clock, chunk; None for end of stream)
DelayQueue = asyncio.Queue[tuple[float, bytes | None]]


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def _read_side(reader: asyncio.StreamReader, queue: DelayQueue, half: float) -> None:
    """Stamp every chunk with ``arrival + half`` and queue it; queue ``None`` at the end of stream."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time() + half, data or None))
            if not data:
                return
    except (ConnectionError, OSError):
        await queue.put((loop.time() + half, None))


async def _write_side(writer: asyncio.StreamWriter, queue: DelayQueue) -> None:
    """Write each queued chunk at its deadline, in queue order; half-close on EOF."""
    loop = asyncio.get_running_loop()
    while True:
        deadline, data = await queue.get()
        wait = deadline - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if data is None:
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(data)
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half: float) -> None:
    """One direction: a reader task feeding a writer task through a bounded queue."""
    queue: DelayQueue = asyncio.Queue(QUEUE_CHUNKS)
    read_task = asyncio.create_task(_read_side(reader, queue, half))
    try:
        await _write_side(writer, queue)
    finally:
        read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await read_task


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def handler(target: tuple[str, int], delay_s: float) -> Any:
    """The per-connection callback of :func:`asyncio.start_server`."""
    half = delay_s / 2

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            await _close(client_writer)
            return
        directions = [
            asyncio.create_task(_pipe(client_reader, upstream_writer, half)),
            asyncio.create_task(_pipe(upstream_reader, client_writer, half)),
        ]
        try:
            # Both directions end normally (EOF each way); an error in one ends the other.
            done, pending = await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
        finally:
            await _close(upstream_writer)
            await _close(client_writer)

    return handle


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_ms: float) -> None:
    server = await asyncio.start_server(handler(target, delay_ms / 1000), *listen, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers have microsecond, not millisecond, resolution."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


class LatencyProxy:
    """``python -m bench.latency_proxy`` in a subprocess, on a free loopback port.

    ``with LatencyProxy("127.0.0.1", 9042, 1.0) as proxy:`` connect to
    ``127.0.0.1:proxy.port``; the subprocess is stopped on exit.
    """

    def __init__(self, host: str, port: int, delay_ms: float, log_path: Path | None = None) -> None:
        self.target = (host, port)
        self.delay_ms = delay_ms
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> LatencyProxy:
        root = Path(__file__).resolve().parent.parent
        self._log = open(self.log_path, "w") if self.log_path else None
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.latency_proxy",
                "--listen",
                "127.0.0.1:0",
                "--target",
                f"{self.target[0]}:{self.target[1]}",
                "--delay-ms",
                str(self.delay_ms),
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=self._log or subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.startswith("PORT "):
            self.port = int(line.split()[1])
        if not self.port or not self._accepts(timeout=10):
            self.__exit__()
            raise RuntimeError(f"the latency proxy did not start (log: {self.log_path})")
        return self

    def _accepts(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()


def round_trip_ms(host: str, port: int, queries: int = 50, protocol_version: int = 5) -> float:
    """Median ms of ``queries`` sequential ``SELECT release_version FROM system.local``
    over a fresh driver connection to ``host:port`` (after a few warm-up queries)."""
    from cassandra.cluster import Cluster

    from .common import median

    cluster = Cluster([host], port=port, protocol_version=protocol_version)
    try:
        session = cluster.connect()
        statement = "SELECT release_version FROM system.local"
        for _ in range(5):
            session.execute(statement)
        took = []
        for _ in range(queries):
            started = time.perf_counter()
            session.execute(statement)
            took.append(time.perf_counter() - started)
        return median(took) * 1000
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency_proxy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", type=parse_address, default=("127.0.0.1", 0), help="HOST:PORT (port 0: any free)")
    parser.add_argument("--target", type=parse_address, default=("127.0.0.1", 9042), help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="round trip added, ms (half each way)")
    args = parser.parse_args(argv)
    loop = new_loop()
    try:
        loop.run_until_complete(serve(args.listen, args.target, args.delay_ms))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    main()

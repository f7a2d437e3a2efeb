"""How an app runs its coroutines: Flask's way, or one event loop per thread.

Flask turns every ``async def`` view, error handler and before/after-request
function into a sync call with :meth:`Flask.async_to_sync`, which by
default (asgiref) starts a thread and an event loop for each call and
closes both afterwards. ``CASSANDRA_ASYNC_LOOPS = "per-thread"`` replaces
that, on the app instance (Flask documents overriding ``async_to_sync``),
with :func:`install`: each server thread keeps one event loop and runs each
call on it, in the thread that called.

What a view can observe stays as under Flask's default:

- a call runs in a copy of the caller's context variables, and what the
  coroutine sets is seen by the rest of the request, teardown included (an
  async ``before_request`` setting a ``ContextVar`` for the view), as
  asgiref copies it back; unlike Flask's default, each request of the app
  runs in its own copy of the server thread's context variables, so the
  next request on that thread starts clean;
- tasks still pending when the coroutine returns are cancelled and awaited,
  and async generators it left open are closed, as ``asyncio.run`` does;
  each cancelled task is logged at WARNING with its coroutine's name;
- results and exceptions (``abort()``, ``CancelledError``, timeouts) come
  back unchanged;
- a sync call made from a coroutine on such a loop (a view calling another
  view, ``copy_current_request_context`` around an async helper), which
  asgiref refuses, runs on a thread of its own while the caller waits;
- a thread that runs a loop of its own (Jupyter) or that asgiref's
  ``WsgiToAsgi`` drives gets Flask's default.

Loops are closed when their thread ends and by :func:`close_idle_loops`
(``db.shutdown()``); after ``os.fork`` the child never uses the parent's.
Each loop has a thread of its own for asgiref's thread-sensitive
``sync_to_async``; ``asyncio.to_thread`` uses one executor shared by all.

One difference remains: a timer a view leaves behind (``loop.call_later``
without awaiting it) is not dropped with a closed loop; it fires during a
later request on that thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from flask.globals import _cv_request

from .errors import ConfigError

log = logging.getLogger("flask_cqlalchemy.runner")

PER_REQUEST = "per-request"
PER_THREAD = "per-thread"
MODES = (PER_REQUEST, PER_THREAD)
CONFIG_KEY = "CASSANDRA_ASYNC_LOOPS"
#: Name prefix of the threads of the loops' shared default executor.
EXECUTOR_THREAD_PREFIX = "flask_cqlalchemy-executor"
#: Its size: asyncio's default for one loop's executor.
EXECUTOR_WORKERS = min(32, (os.cpu_count() or 1) + 4)
#: Name prefix of each loop's thread for asgiref's thread-sensitive ``sync_to_async``.
SYNC_THREAD_PREFIX = "flask_cqlalchemy-sync"

_SyncToAsync: Any
_AsyncToSync: Any
try:  # asgiref marks the threads it runs sync code in for an outer loop (WsgiToAsgi)
    from asgiref.sync import AsyncToSync as _AsyncToSync
    from asgiref.sync import SyncToAsync as _SyncToAsync
except ImportError:  # pragma: no cover - Flask's async views need asgiref anyway
    _SyncToAsync = _AsyncToSync = None

#: True inside a request served by a per-thread app (see _RequestScope).
_IN_REQUEST_SCOPE: contextvars.ContextVar[bool] = contextvars.ContextVar("flask_cqlalchemy_request_scope")


def read_mode(config: Any, *, quart: bool = False) -> str:
    """The app's ``CASSANDRA_ASYNC_LOOPS``; ``ConfigError`` for anything else.

    A Quart app runs every coroutine on its server's event loop: there is no
    loop per request to replace, so ``"per-thread"`` is refused for it.
    """
    mode = config.get(CONFIG_KEY, PER_REQUEST)
    if mode not in MODES:
        raise ConfigError(CONFIG_KEY, f"expected {PER_REQUEST!r} (Flask's default) or {PER_THREAD!r}, got {mode!r}")
    if quart and mode == PER_THREAD:
        raise ConfigError(
            CONFIG_KEY,
            f"{PER_THREAD!r} is for Flask apps; a Quart app runs its views on the server's event loop (remove the key)",
        )
    return str(mode)


def install(app: Flask, mode: str) -> None:
    """Make ``app`` run its coroutines the ``mode`` way."""
    if mode == PER_THREAD:
        app.async_to_sync = functools.partial(_async_to_sync, weakref.ref(app))  # type: ignore[method-assign]
        if not isinstance(app.__dict__.get("wsgi_app"), _RequestScope):
            app.wsgi_app = _RequestScope(app.wsgi_app)  # type: ignore[method-assign]
    elif uses_thread_loops(app):  # set up again after a shutdown, now per-request
        del app.async_to_sync
        scope = app.__dict__.get("wsgi_app")
        if isinstance(scope, _RequestScope):
            app.wsgi_app = scope.wrapped  # type: ignore[method-assign]


def uses_thread_loops(app: Flask) -> bool:
    """Whether ``app`` runs its coroutines on the per-thread loops."""
    current = app.__dict__.get("async_to_sync")
    return isinstance(current, functools.partial) and current.func is _async_to_sync


class _RequestScope:
    """The app's WSGI callable, run in a copy of the server thread's context
    variables: what a request sets (its coroutines' values carried back,
    its teardown functions') is seen by the rest of that request, teardown
    included, and is gone for the next request on the thread."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return contextvars.copy_context().run(self._serve, environ, start_response)

    def _serve(self, environ: Any, start_response: Any) -> Any:
        _IN_REQUEST_SCOPE.set(True)
        return self.wrapped(environ, start_response)


def _async_to_sync(app_ref: weakref.ref[Flask], func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        running = asyncio._get_running_loop()
        if running is None and not _outer_asgiref_loop():
            call = _Call(func)
            try:
                return _run(call, args, kwargs, contextvars.copy_context())
            finally:
                _carry_back(call)
        holder: _ThreadLoop | None = getattr(_local, "holder", None)
        if running is not None and holder is not None and running is holder.loop:
            return _run_beside(func, args, kwargs)
        app = app_ref()
        assert app is not None, "the app of this view is gone"
        return type(app).async_to_sync(app, func)(*args, **kwargs)

    return functools.update_wrapper(run, func)


def _outer_asgiref_loop() -> bool:
    """Whether asgiref runs this thread's sync code for a loop elsewhere
    (``WsgiToAsgi``): its own ``async_to_sync`` then uses that loop."""
    if _SyncToAsync is None:
        return False
    outer = getattr(_SyncToAsync.threadlocal, "main_event_loop", None)
    return (
        outer is not None
        and getattr(_SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid()
        and outer.is_running()
    )


def _run_beside(func: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A sync call made from a coroutine on this thread's loop (a view calling
    another view, ``copy_current_request_context`` around an async helper):
    the loop is busy waiting for it, so the call runs on a thread of its own
    and this one waits, as a sync call does."""
    context = contextvars.copy_context()
    call = _Call(func)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = _run(call, args, kwargs, context)
        except BaseException as error:  # handed to the caller, whatever it is
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"flask_cqlalchemy nested {getattr(func, '__qualname__', func)}")
    thread.start()
    thread.join()
    _carry_back(call)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# -- the loops -----------------------------------------------------------------


class _ThreadLoop:
    """The loop of one thread; closed when the thread (and so this) goes."""

    __slots__ = ("loop", "generation", "busy", "retired", "finalizer", "__weakref__")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(_shared_executor())
        if _AsyncToSync is not None:
            # asgiref's thread-sensitive sync_to_async runs the function on the
            # thread of the sync code that awaits it, which here is this loop's
            # own: give each loop one thread of its own for that, as each
            # server thread has under Flask's default (else asgiref falls back
            # to a single thread for the whole process).
            _AsyncToSync.loop_thread_executors[self.loop] = ThreadPoolExecutor(1, SYNC_THREAD_PREFIX)
        self.generation = _generation
        self.busy = False
        self.retired = False
        self.finalizer = weakref.finalize(self, _close_in_owner, self.loop, os.getpid())


_local = threading.local()
_lock = threading.Lock()
_live: weakref.WeakSet[_ThreadLoop] = weakref.WeakSet()
#: Bumped in a forked child: loops of an older generation are the parent's.
_generation = 0
#: Retired loops still running a call: the executor they use stays up until they return.
_retired_busy: set[_ThreadLoop] = set()
_executors_to_close: list[_SharedExecutor] = []
#: In a forked child: the loops inherited from the parent (see _close_in_owner).
_parents_loops: list[asyncio.AbstractEventLoop] = []


def _take_loop() -> _ThreadLoop:
    """This thread's loop, made if it has none (or only a closed or inherited one)."""
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    with _lock:
        if holder is None or holder.retired or holder.generation != _generation or holder.loop.is_closed():
            holder = _ThreadLoop()
            _local.holder = holder
            _live.add(holder)
        holder.busy = True
    return holder


def _give_back(holder: _ThreadLoop) -> None:
    with _lock:
        holder.busy = False
        if holder.retired and holder.generation == _generation:
            _close(holder.loop)
            _retired_busy.discard(holder)
            if not _retired_busy:
                while _executors_to_close:
                    _executors_to_close.pop().close()


def close_idle_loops() -> int:
    """Close every thread's loop (``db.shutdown()``); one running a call now
    is closed when that call returns, and the executor it may still use is
    shut down after it. Returns how many loops there were."""
    global _executor
    with _lock:
        holders = list(_live)
        for holder in holders:
            holder.retired = True
            if holder.busy:
                _retired_busy.add(holder)
            else:
                _close(holder.loop)
        _live.clear()
        executor, _executor = _executor, None
        if executor is not None:
            if _retired_busy:
                _executors_to_close.append(executor)
            else:
                executor.close()
    return len(holders)


def live_loops() -> int:
    """How many thread loops are open in this process."""
    with _lock:
        return sum(not holder.loop.is_closed() for holder in _live)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return
    loop.close()
    if _AsyncToSync is not None:
        sync_executor = _AsyncToSync.loop_thread_executors.pop(loop, None)
        if sync_executor is not None:
            sync_executor.shutdown(wait=False)


def _close_in_owner(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """The finaliser of a thread's loop. Only the process that made a loop
    closes it: closing unregisters its wake-up socket from its epoll
    instance, which a forked child shares with the parent, whose loop would
    then sleep through every driver answer. A child keeps such loops, untouched."""
    if os.getpid() == pid:
        _close(loop)
    else:
        _parents_loops.append(loop)


class _SharedExecutor(ThreadPoolExecutor):
    """The default executor of every thread loop (``asyncio.to_thread``,
    ``run_in_executor(None, ...)``: lazy connect, ``await adb.sync_db()``):
    one pool for the process, as large as asyncio's default for one loop,
    rather than a pool per server thread. A loop closing shuts its default
    executor down; this one is shut down only by :meth:`close`."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass

    def close(self) -> None:
        super().shutdown(wait=False)


_executor: _SharedExecutor | None = None


def _shared_executor() -> _SharedExecutor:
    global _executor
    if _executor is None:  # called with _lock held
        _executor = _SharedExecutor(max_workers=EXECUTOR_WORKERS, thread_name_prefix=EXECUTOR_THREAD_PREFIX)
    return _executor


def _forget_after_fork() -> None:
    # The child has only the thread that forked: the parent's loops must not
    # be run here, nor closed (see _close_in_owner), nor their executors used
    # (their threads are the parent's: a pool here would wait for them forever).
    global _generation, _lock, _executor
    _generation += 1
    _lock = threading.Lock()
    _executor = None
    _retired_busy.clear()
    _executors_to_close.clear()
    for holder in list(_live):
        holder.retired = True
        holder.finalizer.detach()
        _parents_loops.append(holder.loop)
    _live.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


# -- one call --------------------------------------------------------------------

_MISSING = object()


class _Call:
    """One coroutine call: its main task, whether its end stops the loop,
    and the context variables as the coroutine left them."""

    __slots__ = ("func", "main", "stop_loop", "context")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.main: asyncio.Task[Any] | None = None
        self.stop_loop = True
        self.context: contextvars.Context | None = None


def _run(call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any], context: contextvars.Context) -> Any:
    """Run ``call.func(*args, **kwargs)`` on this thread's loop, in ``context``."""
    holder = _take_loop()
    loop = holder.loop
    try:
        coroutine = _watched(call.func(*args, **kwargs), loop, call)
        if sys.version_info >= (3, 11):
            task = loop.create_task(coroutine, context=context)
        else:  # pragma: no cover - Python 3.10: the task runs in a copy of ``context``
            task = context.run(loop.create_task, coroutine)
        call.main = task
        try:
            # run_until_complete would stop the loop from the task's done
            # callback, one more turn of the loop (and a select) later: the
            # task stops it itself when the coroutine returns.
            loop.run_forever()
        except BaseException:
            call.stop_loop = False
            try:
                _finish(loop, call)
            except Exception:  # never in place of what is propagating
                log.exception("cleaning up after %s failed", _name(call.func))
            raise
        call.stop_loop = False
        stopped_early = not task.done()  # something else stopped the loop: the view is cancelled
        _finish(loop, call)
        if stopped_early:
            raise RuntimeError("Event loop stopped before Future completed.")
        return task.result()
    finally:
        _give_back(holder)


def _carry_back(call: _Call) -> None:
    """Set in the caller's context what the coroutine left in its own, as
    asgiref does. Inside a request of a per-thread app the caller's context
    is the request's own copy (_RequestScope); outside any request (a
    script, the CLI) it is the thread's, as under Flask's default. While a
    response streams, after the app returned, nothing is carried back: it
    would stay in the server thread for its next request."""
    context = call.context
    if context is None:
        return
    if not _IN_REQUEST_SCOPE.get(False) and _cv_request.get(None) is not None:
        return
    for var, value in context.items():
        if var.get(_MISSING) is not value:
            var.set(value)


#: Async generators first iterated during the current call, per thread.
_agens = threading.local()


async def _watched(coroutine: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, call: _Call) -> Any:
    # The loop installs its async-generator hooks for this thread while it
    # runs; keep its finaliser and note each generator started, so the ones
    # left open are closed when the call returns (asyncio.run closes them
    # with the loop; this loop lives on).
    firstiter, finalizer = sys.get_asyncgen_hooks()
    started: weakref.WeakSet[Any] = weakref.WeakSet()
    _agens.started = started

    def first_iteration(agen: Any) -> None:
        started.add(agen)
        if firstiter is not None:
            firstiter(agen)

    sys.set_asyncgen_hooks(firstiter=first_iteration, finalizer=finalizer)
    try:
        return await coroutine
    finally:
        call.context = contextvars.copy_context()
        if call.stop_loop:
            loop.stop()  # takes effect once this turn of the loop is done


def _name(func: Any) -> str:
    return str(getattr(func, "__qualname__", repr(func)))


#: Cleaning up may start more tasks; it gives up on them after this many passes.
_FINISH_PASSES = 10


def _finish(loop: asyncio.AbstractEventLoop, call: _Call) -> None:
    """What ``asyncio.run`` does when its coroutine returns, loop kept open."""
    for _ in range(_FINISH_PASSES):
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not pending:
            break
        for task in pending:
            coroutine = _name(call.func) if task is call.main else _name(task.get_coro())
            log.warning(
                "cancelled task %s (coroutine %s) left pending by %s when it returned",
                task.get_name(),
                coroutine,
                _name(call.func),
            )
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for task in pending:
            if task is not call.main and not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "unhandled exception in a task cancelled when its view returned",
                        "exception": task.exception(),
                        "task": task,
                    }
                )
    started = getattr(_agens, "started", None)
    _agens.started = None
    if started:
        open_generators = [agen for agen in started if agen.ag_frame is not None]
        if open_generators:
            results = loop.run_until_complete(
                asyncio.gather(*(agen.aclose() for agen in open_generators), return_exceptions=True)
            )
            for agen, result in zip(open_generators, results, strict=True):
                if isinstance(result, Exception):
                    loop.call_exception_handler(
                        {
                            "message": "an error occurred while closing an async generator left open by a view",
                            "exception": result,
                            "asyncgen": agen,
                        }
                    )


__all__ = [
    "CONFIG_KEY",
    "EXECUTOR_THREAD_PREFIX",
    "EXECUTOR_WORKERS",
    "MODES",
    "PER_REQUEST",
    "PER_THREAD",
    "SYNC_THREAD_PREFIX",
    "close_idle_loops",
    "install",
    "live_loops",
    "read_mode",
    "uses_thread_loops",
]

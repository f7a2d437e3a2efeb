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
  coroutine sets is seen by the rest of the request (an async
  ``before_request`` setting a ``ContextVar`` for the view), as asgiref
  copies it back; unlike asgiref, it is undone when the request ends, so
  the next request on that server thread starts clean;
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
"""

from __future__ import annotations

import asyncio
import contextlib
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

from flask import Flask, request_tearing_down
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

#: Attribute of Flask's request context: the context variables its
#: coroutines set in the server thread, to be reset when it ends.
_CARRIED = "_cqlalchemy_carried_context"

_SyncToAsync: Any
try:  # asgiref marks the threads it runs sync code in for an outer loop (WsgiToAsgi)
    from asgiref.sync import SyncToAsync as _SyncToAsync
except ImportError:  # pragma: no cover - Flask's async views need asgiref anyway
    _SyncToAsync = None


def read_mode(config: Any) -> str:
    """The app's ``CASSANDRA_ASYNC_LOOPS``; ``ConfigError`` for anything else."""
    mode = config.get(CONFIG_KEY, PER_REQUEST)
    if mode not in MODES:
        raise ConfigError(CONFIG_KEY, f"expected {PER_REQUEST!r} (Flask's default) or {PER_THREAD!r}, got {mode!r}")
    return str(mode)


def install(app: Flask, mode: str) -> None:
    """Make ``app`` run its coroutines the ``mode`` way."""
    current = app.__dict__.get("async_to_sync")
    if mode == PER_THREAD:
        app.async_to_sync = functools.partial(_async_to_sync, weakref.ref(app))  # type: ignore[method-assign]
        request_tearing_down.connect(_forget_carried, app, weak=False)
    elif isinstance(current, functools.partial) and current.func is _async_to_sync:
        del app.async_to_sync  # set up again after a shutdown, now per-request
        request_tearing_down.disconnect(_forget_carried, app)


def uses_thread_loops(app: Flask) -> bool:
    """Whether ``app`` runs its coroutines on the per-thread loops."""
    current = app.__dict__.get("async_to_sync")
    return isinstance(current, functools.partial) and current.func is _async_to_sync


def _async_to_sync(app_ref: weakref.ref[Flask], func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        running = asyncio._get_running_loop()
        if running is None and not _outer_asgiref_loop():
            context = contextvars.copy_context()
            try:
                return _run(func, args, kwargs, context)
            finally:
                _carry_back(context, until_request_ends=True)
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
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = _run(func, args, kwargs, context)
        except BaseException as error:  # handed to the caller, whatever it is
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"flask_cqlalchemy nested {getattr(func, '__qualname__', func)}")
    thread.start()
    thread.join()
    _carry_back(context, until_request_ends=False)
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
        self.generation = _generation
        self.busy = False
        self.retired = False
        self.finalizer = weakref.finalize(self, _close_quietly, self.loop)


_local = threading.local()
_lock = threading.Lock()
_live: weakref.WeakSet[_ThreadLoop] = weakref.WeakSet()
#: Bumped in a forked child: loops of an older generation are the parent's.
_generation = 0


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
        if holder.retired:
            _close_quietly(holder.loop)


def close_idle_loops() -> int:
    """Close every thread's loop (``db.shutdown()``); one running a call now
    is closed when that call returns. Returns how many loops there were."""
    global _executor
    with _lock:
        holders = list(_live)
        for holder in holders:
            holder.retired = True
            if not holder.busy:
                _close_quietly(holder.loop)
        _live.clear()
        executor, _executor = _executor, None
    if executor is not None:
        executor.close()
    return len(holders)


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


def live_loops() -> int:
    """How many thread loops are open in this process."""
    with _lock:
        return sum(not holder.loop.is_closed() for holder in _live)


def _close_quietly(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed() and not loop.is_running():
        loop.close()


def _forget_after_fork() -> None:
    # The child has only the thread that forked. The parent's loops must not
    # be run there, and not closed either: a closed loop unregisters its
    # wake-up socket from its epoll instance, which the parent shares, and
    # the parent's loop would then sleep through every driver answer. They
    # are kept, untouched, for the life of the child.
    global _generation, _lock, _executor
    _generation += 1
    _lock = threading.Lock()
    _executor = None  # its threads are the parent's: a pool here would wait for them forever
    for holder in list(_live):
        holder.retired = True
        holder.finalizer.detach()
        _parents_loops.append(holder.loop)
    _live.clear()


#: In a forked child: the loops inherited from the parent (see _forget_after_fork).
_parents_loops: list[asyncio.AbstractEventLoop] = []
os.register_at_fork(after_in_child=_forget_after_fork)


# -- one call --------------------------------------------------------------------

_MISSING = object()


def _run(
    func: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: contextvars.Context,
) -> Any:
    """Run ``func(*args, **kwargs)`` on this thread's loop, in ``context``."""
    holder = _take_loop()
    loop = holder.loop
    try:
        coroutine = _watched(func(*args, **kwargs), loop)
        if sys.version_info >= (3, 11):
            task = loop.create_task(coroutine, context=context)
        else:  # pragma: no cover - Python 3.10: the task runs in a copy of ``context``
            task = context.run(loop.create_task, coroutine)
        try:
            # run_until_complete would stop the loop from the task's done
            # callback, one more turn of the loop (and a select) later.
            loop.run_forever()
            if not task.done():
                raise RuntimeError("Event loop stopped before Future completed.")
            return task.result()
        finally:
            _finish(loop, func)
    finally:
        _give_back(holder)


def _carry_back(context: contextvars.Context, until_request_ends: bool) -> None:
    """Set in the caller's context what the coroutine set in ``context``, as
    asgiref does. ``until_request_ends``: the caller is the server thread,
    and the values are reset when the request context is torn down, so the
    next request on this thread starts from what the thread had before."""
    changed = [(var, value) for var, value in context.items() if var.get(_MISSING) is not value]
    if not changed:
        return
    tokens = [var.set(value) for var, value in changed]
    request_context = _cv_request.get(None)
    if not until_request_ends or request_context is None:
        return  # inside an outer call, or outside any request (a script, the CLI): kept, as under Flask's default
    undo = getattr(request_context, _CARRIED, None)
    if undo is None:
        undo = []
        setattr(request_context, _CARRIED, undo)
    ident = threading.get_ident()
    undo.extend((ident, var, token) for (var, _), token in zip(changed, tokens, strict=True))


def _forget_carried(sender: Flask, **_: Any) -> None:
    """``request_tearing_down``: undo what this request's coroutines set."""
    request_context = _cv_request.get(None)
    undo = getattr(request_context, _CARRIED, None)
    if not undo:
        return
    setattr(request_context, _CARRIED, None)
    ident = threading.get_ident()
    for thread, var, token in reversed(undo):
        if thread == ident:
            with contextlib.suppress(ValueError, RuntimeError):
                var.reset(token)


#: Async generators first iterated during the current call, per thread.
_agens = threading.local()


async def _watched(coroutine: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
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
        loop.stop()  # takes effect once this turn of the loop is done


def _finish(loop: asyncio.AbstractEventLoop, func: Callable[..., Any]) -> None:
    """What ``asyncio.run`` does when its coroutine returns, loop kept open."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        coroutine = task.get_coro()
        log.warning(
            "cancelled task %s (coroutine %s) left pending by %s when it returned",
            task.get_name(),
            getattr(coroutine, "__qualname__", repr(coroutine)),
            getattr(func, "__qualname__", repr(func)),
        )
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for task in pending:
            if not task.cancelled() and task.exception() is not None:
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


__all__ = ["CONFIG_KEY", "MODES", "PER_REQUEST", "PER_THREAD", "close_idle_loops", "install", "live_loops", "read_mode"]

"""One torch thread with all the cores, for a process that renders from several threads (the server).

torch's CPU ops run on OpenMP, which gives every OS thread that runs a parallel op a team of threads of
its own. Once two threads have had teams, every parallel op in the process runs slower for good: on two
cores a 24-layer avatar frame at 256² takes 27 ms on a thread whose team is the only one, and 52-64 ms
once another thread has loaded an avatar or rendered (measured with ``Avatar.load`` alone in the main
thread). A server's main thread loads avatars and builds renderers, and each session has a worker thread,
so by default the renders of a streaming session run at half speed.

``use_one_torch_thread()``, called before any torch work, makes the calling thread and every thread
started later run torch ops on one core, and starts one thread, ``gramcast-torch``, whose ops use all
the cores; ``on_torch_thread(fn, ...)`` runs ``fn`` there (and just calls it where the process has not
opted in, so library users keep torch's own behaviour). ``AvatarFrameProcessor`` renders through it, so
the sessions' renders take turns on that thread, each with every core, while their tracking and
compositing run in their own threads. ``gramcast serve --one-torch-thread`` opts in. It is not the
default because it is a trade (``bench/stream.py --one-torch-thread``, 2 cores): one session of a
24-layer avatar went from 12.8 to 19 fps (its render in the server 60 -> 35 ms), but the 1-layer
``mesh`` avatar, whose renders are short, lost at 2 and 3 sessions (25 -> 23.5 and 18.9 -> 14.4 fps):
taking turns on one thread cost it more than the teams did.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

__all__ = ["use_one_torch_thread", "on_torch_thread", "torch_thread_active"]

THREAD_NAME = "gramcast-torch"
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()


def use_one_torch_thread(threads: int | None = None) -> None:
    """Opt the process in (see the module doc); idempotent. ``threads``: the torch thread's intra-op
    threads (default: torch's default, one per core). Call it first: a thread that has already run a
    parallel torch op keeps its team."""
    global _pool
    import torch

    with _lock:
        if _pool is not None:
            return
        n = threads or torch.get_num_threads()
        # torch.set_num_threads sets the calling thread's OpenMP thread count and the default of threads
        # that start torch work later: one here, n on the torch thread, then one again as the default
        torch.set_num_threads(1)
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        got = pool.submit(_take_threads, n).result()
        torch.set_num_threads(1)
        if got != n:
            raise RuntimeError(f"the torch thread got {got} intra-op threads, not {n}")
        _pool = pool


def _take_threads(n: int) -> int:
    import torch

    torch.set_num_threads(n)
    # a thread applies the default to itself at its first parallel op, unless it has already: read the
    # count now, so that the default going back to one (for the other threads) does not reach this one
    return torch.get_num_threads()


def torch_thread_active() -> bool:
    return _pool is not None


def on_torch_thread(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on the torch thread once the process has opted in, else right here."""
    pool = _pool
    if pool is None or threading.current_thread().name.startswith(THREAD_NAME):
        return fn(*args, **kwargs)
    return pool.submit(fn, *args, **kwargs).result()

"""Calls under a per-call time limit, in worker processes that are killed when they overrun.

SymPy can run for minutes (or forever) on a hostile answer such as ``10^{10^{10^{10}}}``, and a thread cannot be
stopped, so every call runs in a worker process of a [pebble](https://pebble.readthedocs.io) pool: a call that
overruns its limit has its worker killed (and replaced) and ends with `TimeoutError`. The calling process never
arms a signal or a timer, so a deadline cannot fire anywhere else (in a finalizer, in another library), and calls
work from any thread.

One pool per process is started on first use and kept: a training step pays a few inter-process messages per sample,
not a pool start-up. Workers are forked on Linux: they start in milliseconds with everything the caller has imported,
and, unlike "spawn" or "forkserver", forking does not re-run the user's script (a training script without an
``if __name__ == "__main__":`` guard would otherwise start training again in each worker). Elsewhere the platform's
default start method is used, and scripts need that guard.
"""

from __future__ import annotations

import atexit
import gc
import logging
import math
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pebble

from ..core.reward_guard import sample_kwargs

logger = logging.getLogger(__name__)

#: Worker processes of the pool; None: one per available CPU, at most 8.
WORKERS: int | None = None

_LOCK = threading.Lock()
_POOL: pebble.ProcessPool | None = None
_POOL_KEY: tuple[int, int] | None = None  # (pid of the process that started the pool, number of workers)


def default_workers() -> int:
    """One worker per CPU this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _start_method() -> Any:
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _pool(workers: int) -> pebble.ProcessPool:
    """The process's pool of `workers` workers, started if needed (again after a fork, or when it broke)."""
    global _POOL, _POOL_KEY
    key = (os.getpid(), workers)
    with _LOCK:
        if _POOL is not None and _POOL_KEY == key and _POOL.active:
            return _POOL
        if _POOL is not None and _POOL_KEY is not None and _POOL_KEY[0] == key[0]:
            _stop(_POOL)  # ours but broken or of another size; a pool inherited through a fork is left alone
        # gc.freeze in each worker: its collector leaves the objects inherited from this process alone, so their
        # memory pages stay shared with it instead of being copied by the collector's bookkeeping
        _POOL = pebble.ProcessPool(max_workers=workers, initializer=gc.freeze, context=_start_method())
        _POOL_KEY = key
        # A process started by `multiprocessing` never runs `atexit` handlers: on return it joins its live child
        # processes, which would wait forever for this pool's idle workers. Its exit runs multiprocessing's own
        # finalizers first, so the pool is stopped there too (as in any other process, before atexit's turn).
        multiprocessing.util.Finalize(None, shutdown, exitpriority=10)
        return _POOL


def shutdown() -> None:
    """Stop the pool's workers (a later call starts a new pool)."""
    global _POOL, _POOL_KEY
    with _LOCK:
        ours = _POOL_KEY is not None and _POOL_KEY[0] == os.getpid()
        pool, _POOL, _POOL_KEY = _POOL, None, None
    if pool is not None and ours:
        _stop(pool)


def _stop(pool: pebble.ProcessPool) -> None:
    pool.stop()
    pool.join()  # joins the pool's manager thread before stopping the workers, so none is started meanwhile


# Stop the pool before the interpreter exits. Left to itself, a pool can start a worker during exit (its manager
# thread replaces the workers pebble's own exit handler stops) that multiprocessing's exit handler then waits for
# forever. Registered after pebble's and multiprocessing's handlers, so it runs before them.
atexit.register(shutdown)


def run_each(
    func: Callable[..., Any], calls: Iterable[tuple], timeout: float, workers: int | None = None
) -> Iterator[Any]:
    """Run ``func(*args)`` for every `args` of `calls` in the pool; yield, in order, what each call ended with.

    That is its return value, or an exception (returned, not raised): `TimeoutError` when the call ran longer than
    `timeout` seconds (its worker was killed), `pebble.ProcessExpired` when its worker died, or the exception the
    call raised. Every call is submitted before the first result is awaited, so a large batch keeps all workers
    busy. `func` and the arguments must be picklable (a module-level function, plain data).
    """
    pool = _pool(workers or WORKERS or default_workers())
    futures = [pool.schedule(func, args=args, timeout=timeout) for args in calls]
    for future in futures:
        try:
            yield future.result()
        except Exception as error:  # noqa: BLE001 - reported to the caller, per call
            yield error


#: Keyword arguments of TRL's reward calls that stay in the training process: its logging hooks, its state and its
#: environments are not sent to worker processes.
_LOCAL_KWARGS = frozenset({"log_extra", "log_metric", "trainer_state", "environments"})


def _score_one(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return func(**kwargs)


def time_limited(func: Callable[..., Any], timeout: float, workers: int | None = None) -> Callable[..., list[float]]:
    """A reward function that scores each sample with `func` in the pool, killed after `timeout` seconds.

    A sample whose call overruns, raises or returns something other than one value gets NaN: a failure for the
    package's trainers (`soup_trl.core.reward_guard`: no advantage, counted in ``rewards/<name>/failed_frac``). `func`
    must be picklable (a module-level function) and gets the dataset columns, ``prompts``, ``completions`` and
    ``completion_ids`` of one sample; TRL's ``log_metric``, ``log_extra``, ``trainer_state`` and ``environments``
    are not passed. For an ``async`` or stateful function, or one that needs a GPU, bound its time inside it instead.
    """
    name = getattr(func, "__name__", type(func).__name__)

    def wrapper(*, completions, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in _LOCAL_KWARGS}
        kwargs["completions"] = completions
        calls = [(func, sample_kwargs(kwargs, i, len(completions))) for i in range(len(completions))]
        rewards = []
        for outcome in run_each(_score_one, calls, timeout, workers):
            valid = isinstance(outcome, list | tuple) and len(outcome) == 1 and not isinstance(outcome[0], str)
            rewards.append(outcome[0] if valid else math.nan)
            if isinstance(outcome, TimeoutError):
                logger.warning("reward function %r overran its %gs time limit on a sample; no reward.", name, timeout)
        return rewards

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__wrapped__ = func  # its signature names the dataset columns it needs
    return wrapper

"""Process-level settings every CPU training or evaluation run makes: torch threads; and how a process of a
multi-process launch ends (`leave_launch`)."""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
from typing import Any

import torch


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    `num_threads=None` uses `OMP_NUM_THREADS` when it is set to a positive integer, else the number of cores this
    process may run on.
    """
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env.isdigit() and int(env) > 0:
            num_threads = int(env)
        else:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:  # not available on every platform
                num_threads = os.cpu_count() or 1
    num_threads = max(1, int(num_threads))
    torch.set_num_threads(num_threads)
    return num_threads


def leave_launch(state: Any) -> None:
    """The last call of a process of a multi-process launch: every rank waits for the others and closes the process
    group; then the process runs what a normal exit of the interpreter runs first (threading's exit callbacks and the
    joining of non-daemon threads, then the `atexit` handlers: logging's flush, multiprocessing's and the reward
    pool's shutdown), flushes its output, and exits with status 0 without finalizing the interpreter (`os._exit`).

    `state` is the run's Accelerate state: a `PartialState`, or an `Accelerator`'s `state`. In a run of one process
    this returns at once and does nothing: single-process runs, and callers in the test process, end as they always
    did. Call it once everything the process had to do has succeeded: a process that fails before it raises as usual
    and exits non-zero.

    Why a launched process must not finalize its interpreter: a gloo worker thread releases a collective's work after
    it has woken the caller, and a barrier keeps the works still in flight when it was issued until its own work is
    released, on a worker thread, after the barrier has returned (the last gather of a training run, released after
    the final barrier, in the CI launches that aborted). Releasing a tensor whose Python object has no other reference
    takes the GIL. `destroy_process_group()` does not stop those threads: gloo's backend has no `shutdown()`, and the
    group object lives on, threads running, while anything references it (the DDP-wrapped model does). If such a
    release asks for the GIL as the main thread, holding it, goes into the interpreter's finalization, the interpreter
    ends that thread when it gets the GIL (`pthread_exit`), and the unwinding stops in the worker's noexcept
    destructor: "terminate called without an active exception", SIGABRT, a failed launch although every rank had
    finished. Exiting with `os._exit` after the exit handlers, while the interpreter is whole, gives the thread nothing
    to trip on (tests/integration/workers/exit_worker.py makes that state certain, and shows both ends).
    """
    if state.num_processes < 2:
        return
    state.wait_for_everyone()
    state.destroy_process_group()
    threading._shutdown()  # as the interpreter's exit does: first this, then the atexit handlers
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # replaced, closed, or gone
            pass
    ctypes.CDLL(None).fflush(None)  # what C and C++ code left in stdio's buffers
    os._exit(0)

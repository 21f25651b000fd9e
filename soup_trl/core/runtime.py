"""Process-level settings every CPU training or evaluation run makes: torch threads."""

from __future__ import annotations

import os

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

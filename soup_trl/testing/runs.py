"""The suite's small training runs: trainer-config defaults and prompt datasets for the tiny model.

Tests reach these through the `make_config` and `make_dataset` fixtures (tests/conftest.py); scripts launched in
subprocesses (tests/integration/workers/) and module-level helpers that take an output directory import them.
`small_config` is the suite's one config factory: the M2PO and LUFFY tests' own `make_config` add their batch
settings to it.
"""

import argparse
import math

import torch
from accelerate import PartialState
from datasets import Dataset

from ..core.runtime import leave_launch
from ..soup.config import SOUPConfig

# A few seconds of CPU per run: one thread, no logging integrations, no checkpoints unless a test asks for them.
SMALL_RUN = dict(
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=10,
    learning_rate=1e-2,
    max_steps=4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    seed=0,
    disable_tqdm=True,
)


def small_config(output_dir, config_cls=SOUPConfig, **overrides):
    """`config_cls(output_dir=..., **SMALL_RUN, **overrides)`; GRPOConfig and its subclasses take the same defaults."""
    return config_cls(output_dir=str(output_dir), **{**SMALL_RUN, **overrides})


def prompt_dataset(n=64):
    """`n` addition prompts "a+b=", row by row over a square grid of small operands: 64 gives 0+0= ... 7+7=."""
    side = math.isqrt(n - 1) + 1 if n > 0 else 0
    return Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(side) for b in range(side)][:n]})


def launched_worker():
    """A worker script started by `accelerate launch`: its `--model` and `--out` arguments, one torch thread, and the
    state of the gloo group the launched processes form (`cpu=True`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args, PartialState(cpu=True, backend="gloo")


def leave_group(state):
    """The end of a launched worker, as of the training script: `soup_trl.core.runtime.leave_launch` (every process
    waits for the others, closes the gloo group, runs its exit handlers and exits with 0 without finalizing the
    interpreter, where one of gloo's threads could abort it). Returns only in a run of one process."""
    leave_launch(state)

"""The training script (soup_trl/scripts/train.py) with kill points, launched by
tests/integration/test_kill_resume.py.

Arguments are the training script's. Two environment variables, read by rank 0 only:

- `SOUP_TEST_EVENTS=FILE`: append one line "KIND STEP" per event, STEP being the trainer's global step then.
- `SOUP_TEST_KILL_AT="KIND STEP N"`: at the N-th (0-based) event of KIND at global step STEP, append
  "killed KIND STEP N" to the events file, then SIGKILL every process of the launch (the other ranks, the launcher,
  then itself), as a preempted machine would: nothing is flushed or cleaned up.

Events (all inside the training run, none in the package):
- `generate`: GRPOTrainer's generation is entered (behavior sampling, continuations, on-policy sampling).
- `micro_step`: a forward/backward has run; the optimizer has not stepped yet.
- `save_model`: a checkpoint's model files are written, nothing else of it.
- `save_optimizer`: Transformers' optimizer and scheduler files are written; the trainer's own state is not.
- `save_state`: the checkpoint's trainer_state.json is written (what Transformers' own resume takes for a whole
  checkpoint); the completeness marker is not.
"""

from __future__ import annotations

import collections
import os
import signal

import psutil
from transformers import Trainer, TrainerState
from trl import GRPOTrainer

from soup_trl.scripts.train import main, parse_args

EVENTS = os.environ.get("SOUP_TEST_EVENTS")
KILL_AT = tuple(os.environ["SOUP_TEST_KILL_AT"].split()) if os.environ.get("SOUP_TEST_KILL_AT") else None
RANK = int(os.environ.get("RANK", "0"))
_seen = collections.Counter()


def kill_launch():
    """SIGKILL the other ranks and the launcher (in a multi-process launch), then this process."""
    victims = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the launcher is the parent of every rank
        launcher = psutil.Process().parent()
        victims = [p for p in launcher.children() if p.pid != os.getpid()] + [launcher]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def event(kind: str, step: int):
    if RANK != 0 or EVENTS is None:
        return
    n = _seen[kind, step]
    _seen[kind, step] += 1
    with open(EVENTS, "a") as f:
        f.write(f"{kind} {step}\n")
        if KILL_AT == (kind, str(step), str(n)):
            f.write(f"killed {kind} {step} {n}\n")
            f.flush()
            os.fsync(f.fileno())
            kill_launch()


def after(cls, name, kind, step_of, when=lambda *a, **k: True):
    """Wrap `cls.name` so that `event(kind, ...)` fires after it returns (before, for generate)."""
    original = getattr(cls, name)

    def wrapped(self, *args, **kwargs):
        if kind == "generate":
            event(kind, step_of(self))
        result = original(self, *args, **kwargs)
        if kind != "generate" and when(self, *args, **kwargs):
            event(kind, step_of(self))
        return result

    setattr(cls, name, wrapped)


def in_checkpoint(path: str) -> bool:
    return os.path.basename(os.path.dirname(os.path.abspath(path))).startswith("checkpoint-")


def trainer_step(trainer):
    return trainer.state.global_step


after(GRPOTrainer, "_generate_single_turn", "generate", trainer_step)
after(Trainer, "training_step", "micro_step", trainer_step)
after(Trainer, "save_model", "save_model", trainer_step, when=lambda self, *a, _internal_call=False, **k: _internal_call)
after(Trainer, "_save_optimizer_and_scheduler", "save_optimizer", trainer_step)
after(TrainerState, "save_to_json", "save_state", lambda state: state.global_step,
      when=lambda state, path: in_checkpoint(path))  # fmt: skip

if __name__ == "__main__":
    main(*parse_args())

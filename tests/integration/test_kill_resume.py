"""A training run SIGKILLed anywhere and resumed with `--resume_from_checkpoint true` ends where an uninterrupted one does.

Each test launches the training script on a tiny recipe (through tests/integration/workers/kill_resume_worker.py,
which adds kill points) once uninterrupted, recording the run's events, then again as a chain: launch, SIGKILL at the
first kill point, resume from the newest complete checkpoint, SIGKILL at the next one, ..., and a last resume that
finishes. The kill points are drawn from the uninterrupted run's events with a seeded RNG, one from each kind in turn:
a micro-step (inside a SOUP cycle, M2PO's queue or a LUFFY batch), a generation, a checkpoint write (after the model
files, after the optimizer, or after trainer_state.json: a directory Transformers alone would resume from). The chain
must end with bit-identical parameters and the same logged losses and rewards (the runs are deterministic on CPU:
same thread count, same seeds, RNG states restored from the checkpoint).

Every launch is a fresh Python process (5-40 s each on a shared machine), so those tests are marked slow. The quick
tests of `soup_trl.core.checkpoints` (hand-made directories, an in-process run that dies in the middle of a save) are
in tests/core/test_checkpoints.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = Path(__file__).parent / "workers" / "kill_resume_worker.py"
CPU_2PROC = ROOT / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
SEED = 13
SAVE_STEPS = 2
KINDS = {  # what a kill point interrupts: event kinds of workers/kill_resume_worker.py
    "step": ("micro_step",),
    "generation": ("generate",),
    "checkpoint write": ("save_model", "save_optimizer", "save_state"),
}
METHODS = {  # recipe and what makes the run small; every run: 8 steps, a checkpoint every 2
    "soup": ("tiny_arithmetic", ["--soup_behavior_steps", "3"]),  # cycles of steps 1-3, 4-6, 7-9 (8 ends mid-cycle)
    "m2po": ("tiny_arithmetic_m2po", ["--m2po_staleness", "2"]),  # queue of 2 batches in every checkpoint
    "luffy": ("tiny_arithmetic_luffy", []),  # 1 trace row in each group of 4
}


@dataclass(frozen=True)
class KillPoint:
    kind: str
    step: int  # trainer.state.global_step when it happens
    n: int  # occurrence of (kind, step) in the run, 0-based

    def env(self) -> str:
        return f"{self.kind} {self.step} {self.n}"

    def resumes_from(self) -> int:
        """Step of the newest complete checkpoint when the run dies here."""
        done = self.step if not self.kind.startswith("save_") else self.step - 1  # checkpoint-`step` is half-written
        return done - done % SAVE_STEPS


def read_events(path: Path) -> list[KillPoint]:
    seen, points = {}, []
    for line in path.read_text().splitlines():
        kind, step = line.split()
        key = (kind, int(step))
        points.append(KillPoint(kind, int(step), seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return points


def choose_kill_points(events: list[KillPoint], kinds: list[str], rng: random.Random) -> list[KillPoint]:
    """One kill point per entry of `kinds` (keys of KINDS), in run order: the run after the first checkpoint is cut
    into len(kinds) windows, and window i gets a random event of kind i."""
    eligible = [e for e in events if e.resumes_from() >= SAVE_STEPS]
    points = []
    for i, kind in enumerate(kinds):
        window = eligible[i * len(eligible) // len(kinds) : (i + 1) * len(eligible) // len(kinds)]
        points.append(rng.choice([e for e in window if e.kind in KINDS[kind]]))
    return points


def launch(model_dir, out, processes, method, *extra, env=None, timeout=900):
    recipe, method_args = METHODS[method]
    command = [sys.executable, str(WORKER)]
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), str(WORKER)]
    args = [
        "--config", recipe, *method_args, "--model_name_or_path", model_dir, "--output_dir", str(out),
        "--reward_funcs", "soup_trl.testing.rewards.shaped_reward", "--max_train_samples", "64",
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_steps", "8",
        "--save_strategy", "steps", "--save_steps", str(SAVE_STEPS), "--logging_steps", "1", "--num_threads", "1",
        "--disable_tqdm", "true", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)


def history(out: Path, key: str) -> list[tuple[int, float]]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [(h["step"], h[key]) for h in state["log_history"] if key in h]


def kill_and_resume(model_dir, tmp_path, processes, method, kinds):
    reference = tmp_path / "reference"
    events = tmp_path / "reference_events.txt"
    result = launch(model_dir, reference, processes, method, env={"SOUP_TEST_EVENTS": str(events)})
    assert result.returncode == 0, result.stderr[-4000:]
    points = choose_kill_points(read_events(events), kinds, random.Random(f"{SEED} {method} {processes}"))
    assert {p.kind for p in read_events(events)} >= {"generate", "micro_step", "save_model", "save_state"}

    chain, log = tmp_path / "chain", tmp_path / "chain_events.txt"
    resume, previous = [], None
    for point in points:
        result = launch(model_dir, chain, processes, method, *resume,
                        env={"SOUP_TEST_EVENTS": str(log), "SOUP_TEST_KILL_AT": point.env()})  # fmt: skip
        assert result.returncode == -9, (point, result.stderr[-4000:])  # died by SIGKILL, at the point
        assert log.read_text().splitlines()[-1] == f"killed {point.env()}"
        if resume:
            assert_resumed_from(result.stderr, chain, previous)
        resume, previous = ["--resume_from_checkpoint", "true"], point
    result = launch(model_dir, chain, processes, method, *resume)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_resumed_from(result.stderr, chain, previous)

    expected, final = load_file(reference / "model.safetensors"), load_file(chain / "model.safetensors")
    assert expected.keys() == final.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value), (name, points)
    initial = load_file(Path(model_dir) / "model.safetensors")
    assert any(not torch.equal(initial[name], value) for name, value in expected.items())  # the runs did train
    for key in ("loss", "reward"):
        assert history(chain, key) == history(reference, key), key
    assert len(history(reference, "loss")) == 8
    print(f"{method}, {processes} process(es): killed at", ", ".join(p.env() for p in points))  # for the docs


def assert_resumed_from(stderr: str, out: Path, killed: KillPoint):
    """The run resumed from the newest complete checkpoint, passing over the one the kill left half-written."""
    resumed = re.findall(r"Resuming from (\S+)", stderr)
    step = killed.resumes_from()
    assert resumed and all(Path(r) == out / f"checkpoint-{step}" for r in resumed), (killed, resumed, stderr[-3000:])
    if killed.kind.startswith("save_"):
        assert f"Not resuming from {out / f'checkpoint-{killed.step}'}: it has no checkpoint_complete.json" in stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "kinds"),
    [
        ("soup", ["generation", "checkpoint write", "step"]),
        ("m2po", ["checkpoint write", "generation"]),
        ("luffy", ["generation"]),
    ],
)
def test_one_process(tiny_model_dir, tmp_path, method, kinds):
    kill_and_resume(tiny_model_dir, tmp_path, 1, method, kinds)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "kinds"),
    [("soup", ["checkpoint write", "generation"]), ("m2po", ["checkpoint write"]), ("luffy", ["step"])],
)
def test_two_processes(tiny_model_dir, tmp_path, method, kinds):
    kill_and_resume(tiny_model_dir, tmp_path, 2, method, kinds)


# ---------------------------------------------------------------------------------- soup_trl.core.checkpoints, quick



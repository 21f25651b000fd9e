"""Fixtures shared by the whole suite, and how the suite is laid out and split.

Layout (docs/testing.md)
- `tests/<room>/test_<module>.py`: the unit tests of `soup_trl/<room>/<module>.py` (`test_<module>_<aspect>.py` when
  they are many), with the short tiny-model runs of that module's feature; `tests/test_layout.py`: the package's rooms.
- `tests/integration/`: runs across modules (contracts, multi-process launches, kill and resume, vLLM, the real
  model, the README's and the training command's runs); `tests/integration/workers/`: the scripts they launch.
- `tests/benchmarks/`: the scripts of `benchmarks/`, imported as they run (its conftest.py puts `benchmarks/` on
  sys.path).
- `soup_trl/testing/`: what tests, workers and benchmarks share (small runs, rewards, snapshots, contract checks, the
  hypothesis profiles), imported by module name. Every test folder is a package, so test files may share a name.

Fixtures
- `tiny_model_dir` (session): path of a tiny random Qwen2-style causal LM and its tokenizer, built locally (no
  download) and saved for `from_pretrained`. Pass the path wherever a model id goes.
- `make_config(config_cls=SOUPConfig, **overrides)` (session): a trainer config with the suite's small CPU defaults
  (`soup_trl.testing.runs.SMALL_RUN`: use_cpu, bf16 off, report_to none, no checkpoints, 8 rows of 4 generations per
  device, 10 completion tokens, lr 1e-2, 4 steps, logging every step, seed 0) and a fresh output directory, unless
  `output_dir` is given. Any GRPOConfig subclass works as `config_cls` (GRPOConfig itself, SOUPConfig, a baseline's
  config). Pass only what the test is about, for example `make_config(soup_behavior_steps=3, temperature=0.8)` or
  `make_config(M2POConfig, gradient_accumulation_steps=2)`.
- `make_dataset(n=64)` (session): a `datasets.Dataset` of `n` prompts "a+b=" over a square grid of small operands
  (64: "0+0=" ... "7+7="). Add columns with `Dataset.add_column`.
Session-scoped factories also serve module-scoped fixtures (a trained run shared by several tests). Scripts run in a
subprocess (tests/integration/workers/) and the M2PO and LUFFY tests' own `make_config` use the same factory,
`soup_trl.testing.runs.small_config` (with `prompt_dataset`). `soup_trl.testing.rewards` has a reward for the tiny
model (`shaped_reward`); `soup_trl.testing.snapshots` rebuilds a policy from a parameter snapshot for independent
log-prob recomputations.

Quick and slow tests
`python -m pytest` runs the quick suite: pyproject's `addopts` deselects tests marked `slow` (the README's default
run, multi-process and DeepSpeed launches: 15 s to 2 minutes each). `python -m pytest -m slow` runs those; CI
(.ci/run) runs both. Mark a new test `slow` when it takes more than about 15 s on an idle core; never assert on
wall-clock time (the machines are shared and differ in speed).
Tests that need an optional package (DeepSpeed, vLLM) skip with a reason where it is not installed.

Threads: torch uses one thread (`SOUP_TEST_THREADS` to change it): the tests are small, and one thread avoids
oversubscription when another process shares the cores.
"""

import os

import pytest
import torch

from soup_trl import SOUPConfig
from soup_trl.testing.runs import prompt_dataset, small_config

torch.set_num_threads(int(os.environ.get("SOUP_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def fresh_tiny_cache(tmp_path_factory):
    """An empty `SOUP_TRL_CACHE` for the first-contact tests: the first of them in a session warms the default tiny
    base model up from scratch, as on a new machine, and the others reuse it."""
    return tmp_path_factory.mktemp("soup_trl_cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from soup_trl.toy.tiny_model import build_tiny_model

    path = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(str(path))
    return str(path)


@pytest.fixture(scope="session")
def make_config(tmp_path_factory):
    def make(config_cls=SOUPConfig, **overrides):
        output_dir = overrides.pop("output_dir", None) or tmp_path_factory.mktemp("run")
        return small_config(output_dir, config_cls, **overrides)

    return make


@pytest.fixture(scope="session")
def make_dataset():
    return prompt_dataset

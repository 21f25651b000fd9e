"""SOUPTrainer in two processes on CPU (gloo): plain data-parallel and DeepSpeed ZeRO-3.

Each test launches tests/integration/workers/distributed_worker.py with `accelerate launch` (two processes) or
directly (one process) and checks what every process trained on. Every launch takes 15-70 s, so the module is marked
`slow` (`python -m pytest -m slow`); the ZeRO-3 tests skip where DeepSpeed is not installed. The baselines and the
reward guard in two processes: test_distributed_m2po.py, test_distributed_luffy.py, test_distributed_reward_guard.py.
"""

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "workers" / "distributed_worker.py"
ROOT = Path(__file__).resolve().parent.parent.parent
CPU_2PROC = ROOT / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
ZERO3 = ["--deepspeed", str(resources.files("soup_trl.testing") / "zero3_cpu.json")]
# deterministic completions, so that one process and two processes can be compared row by row
HASHED = ["--sampler", "hashed", "--steps", "4", "--behavior-steps", "2"]
G = 4

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')",
)


@dataclass
class Launch:
    records: list  # per rank: what each optimizer step trained on
    meta: list  # per rank: {"partitioned", "behavior_samplings"}
    params: dict  # final parameters, gathered on rank 0
    history: list  # the trainer's log history on rank 0


def launch(model_dir, out, processes, *extra, timeout=600):
    command = [sys.executable, str(WORKER)]
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), str(WORKER)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*command, "--model", model_dir, "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    assert len(ranks) == processes
    return Launch(
        records=[r["records"] for r in ranks],
        meta=[r["meta"] for r in ranks],
        params=torch.load(Path(out) / "params.pt"),
        history=json.loads((Path(out) / "log_history.json").read_text()),
    )


def initial_params(model_dir):
    from transformers import AutoModelForCausalLM

    return {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()}


def assert_groups_whole(records):
    """Every micro-batch is made of whole groups: G contiguous rows with one prompt, advantages centred."""
    for record in records:
        prompts = [tuple(p) for p in record["prompts"]]
        for g in range(0, len(prompts), G):
            assert len(set(prompts[g : g + G])) == 1
            assert abs(sum(record["advantages"][g : g + G])) < 1e-4


# One two-process run serves several checks: real sampling on both ranks, dynamic sampling with a reward that has
# zero-variance groups, a checkpoint on step 1 of a 3-step cycle (resumed below) and the continuation limit both
# processes compute after training.
DDP_RUN = ["--per-device-batch", "8", "--steps", "6", "--behavior-steps", "3", "--save-steps", "4", "--dynamic-sampling"]


@pytest.fixture(scope="module")
def ddp_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "full"
    return out, launch(tiny_model_dir, out, 2, *DDP_RUN, "--check-call-budgets")


def test_two_processes_real_sampling(ddp_run):
    _, run = ddp_run
    ranks = run.records
    for records in ranks:
        assert_groups_whole(records)
    # the ranks walk the same schedule and never train on the same prompts at the same step
    assert [r["cycle_position"] for r in ranks[0]] == [r["cycle_position"] for r in ranks[1]]
    for r0, r1 in zip(*ranks):
        assert not set(map(tuple, r0["prompts"])) & set(map(tuple, r1["prompts"]))
        if r0["cycle_position"] > 0:
            assert sum(r0["prefix_lengths"]) > 0 and sum(r1["prefix_lengths"]) > 0
    # continuation lengths differ across ranks (and nothing hung)
    assert any(r0["completion_lengths"] != r1["completion_lengths"] for r0, r1 in zip(*ranks))
    assert sum("loss" in h for h in run.history) == 6


def test_two_processes_dynamic_sampling(ddp_run):
    """Refill rounds in lockstep (no hang), whole groups, and no zero-variance group in any rank's loss."""
    _, run = ddp_run
    for records in run.records:
        assert len(records) == 6
        assert_groups_whole(records)
        for record in records:
            assert len(record["prompts"]) == 8  # the configured number of groups
            for g in range(0, 8, G):
                assert any(abs(a) > 1e-6 for a in record["advantages"][g : g + G])
    rounds = [h["dynamic_sampling/rounds"] for h in run.history if "dynamic_sampling/rounds" in h]
    assert len(rounds) == 6 and max(rounds) > 0


def test_processes_agree_on_the_continuation_limit(ddp_run):
    """vLLM server mode sends every process's prompts in one request with one `max_tokens`: every process computes
    the largest budget of any process's rows (process 0 has only a filler row of budget 1, process 1 rows of 40 and
    12); a tensor-parallel group gives each prompt of the group its own budget, in the order of its gathered prompts."""
    _, run = ddp_run
    for meta in run.meta:
        assert meta["call_budgets"] == {"server": [40, None], "tensor_parallel": [40, [1, 40, 12]]}


@needs_deepspeed
def test_zero3_process_without_prefixes_keeps_the_behavior_forwards_in_step(tiny_model_dir, tmp_path):
    """Process 1 cuts every row at 0, so its behavior forward has no token to score, while process 0's gathers the
    sharded weights: process 1 must run the same forwards (fillers), or the launch hangs."""
    run = launch(tiny_model_dir, tmp_path, 2, "--per-device-batch", "8", "--steps", "2", "--behavior-steps", "2",
                 "--truncation", "whole_on_rank1", *ZERO3, timeout=400)  # fmt: skip
    assert all(meta["partitioned"] for meta in run.meta)
    spliced = [[r for r in records if r["cycle_position"] > 0] for records in run.records]
    assert spliced[0] and spliced[1]
    assert all(sum(r["prefix_lengths"]) > 0 for r in spliced[0])
    assert all(sum(r["prefix_lengths"]) == 0 for r in spliced[1])
    assert sum("loss" in h for h in run.history) == 2


def same_steps(single, double):
    """The two ranks together trained on exactly the rows of the single process, step by step."""
    for one, r0, r1 in zip(single[0], *double, strict=True):
        rows = sorted(zip(map(tuple, one["prompts"]), one["prefix_lengths"], one["completion_lengths"]))
        split = sorted(
            zip(
                map(tuple, r0["prompts"] + r1["prompts"]),
                r0["prefix_lengths"] + r1["prefix_lengths"],
                r0["completion_lengths"] + r1["completion_lengths"],
            )
        )
        assert rows == split


def losses(history):
    return [x["loss"] for x in history if "loss" in x]


def assert_trained(model_dir, params):
    """The parameters moved well away from the initial ones, so that comparing two runs' results means something."""
    assert max((params[n] - p).abs().max().item() for n, p in initial_params(model_dir).items()) > 1e-2


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, tmp_path_factory):
    return launch(tiny_model_dir, tmp_path_factory.mktemp("single"), 1, "--per-device-batch", "16", *HASHED)


def assert_same_run(model_dir, single, double):
    """Two processes trained on the single process's rows, to the same losses and parameters."""
    assert len(single.records[0]) == len(losses(single.history)) == 4
    same_steps(single.records, double.records)
    assert losses(single.history) == pytest.approx(losses(double.history), abs=1e-5)
    assert_trained(model_dir, single.params)
    # different reduction orders leave float noise; the worker's adam_epsilon keeps Adam from amplifying it
    for name, value in single.params.items():
        torch.testing.assert_close(double.params[name], value, atol=2e-5, rtol=1e-4)


def test_two_processes_match_one_process(tiny_model_dir, tmp_path, single_process_run):
    double = launch(tiny_model_dir, tmp_path, 2, "--per-device-batch", "8", *HASHED)
    assert_same_run(tiny_model_dir, single_process_run, double)


@needs_deepspeed
def test_zero3_two_processes_match_one_process(tiny_model_dir, tmp_path, single_process_run):
    double = launch(tiny_model_dir, tmp_path, 2, "--per-device-batch", "8", *HASHED, *ZERO3)
    assert all(meta["partitioned"] for meta in double.meta)  # parameters really were sharded
    for records in double.records:
        assert_groups_whole(records)
    assert_same_run(tiny_model_dir, single_process_run, double)


def test_history_two_processes_match_one_process(tiny_model_dir, tmp_path):
    """Prefixes from past rollouts: every process stores every process's rows, so one and two processes serve the
    same groups from the store and train alike. 10 prompts, 8 a cycle: from the second cycle on, a cycle mixes prompts
    with history and prompts without, and the processes' shares of each differ (filler rows keep their generation
    calls and forwards in step)."""
    settings = ["--sampler", "hashed", "--steps", "6", "--behavior-steps", "2", "--behavior-source", "history",
                "--prompts", "10"]  # fmt: skip
    single = launch(tiny_model_dir, tmp_path / "single", 1, "--per-device-batch", "16", *settings)
    double = launch(tiny_model_dir, tmp_path / "double", 2, "--per-device-batch", "8", *settings)
    same_steps(single.records, double.records)
    served = [r["from_history"] for r in single.records[0]]
    assert served[:2] == [0.0, 0.0] and any(0 < f < 1 for f in served[2:] if f is not None)  # mixed cycles
    assert losses(single.history) == pytest.approx(losses(double.history), abs=1e-5)
    for name, value in single.params.items():
        torch.testing.assert_close(double.params[name], value, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("zero3", [False, pytest.param(True, marks=needs_deepspeed)], ids=["ddp", "zero3"])
def test_two_processes_resume_mid_cycle_is_exact(tiny_model_dir, tmp_path, zero3, request):
    """Real sampling on both ranks; a checkpoint on step 1 of a 3-step cycle holds both ranks' behavior samples (and,
    in the data-parallel run, dynamic sampling's refill position: the resumed run draws the same refill prompts)."""
    if zero3:
        common = ["--per-device-batch", "8", "--steps", "6", "--behavior-steps", "3", "--save-steps", "4", *ZERO3]
        full_dir = tmp_path / "full"
        full = launch(tiny_model_dir, full_dir, 2, *common)
    else:
        common = DDP_RUN
        full_dir, full = request.getfixturevalue("ddp_run")
    assert [meta["behavior_samplings"] for meta in full.meta] == [[0, 3], [0, 3]]
    checkpoint = full_dir / "checkpoint-4"
    assert sorted(p.name for p in checkpoint.glob("soup_cycle_rank*.pt")) == [
        "soup_cycle_rank0.pt",
        "soup_cycle_rank1.pt",
    ]

    resumed = launch(tiny_model_dir, tmp_path / "resumed", 2, *common, "--resume", str(checkpoint))
    assert [meta["behavior_samplings"] for meta in resumed.meta] == [[], []]  # steps 5-6 reuse the saved samples
    for rank_full, rank_resumed in zip(full.records, resumed.records, strict=True):
        # the resumed steps trained on the same rows as steps 5-6 of the uninterrupted run, on every rank
        assert rank_resumed == rank_full[4:]
        assert all(sum(r["prefix_lengths"]) > 0 for r in rank_resumed)
    assert_trained(tiny_model_dir, full.params)
    for name, value in full.params.items():
        assert torch.equal(resumed.params[name], value), name

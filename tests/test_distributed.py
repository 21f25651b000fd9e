"""SOUPTrainer in two processes on CPU (gloo): plain data-parallel and DeepSpeed ZeRO-3.

Each test launches tests/distributed_worker.py with `accelerate launch` (two processes) or directly (one process)
and checks what every process trained on.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parent.parent
CPU_2PROC = ROOT / "accelerate_configs" / "cpu_2proc.yaml"
G = 4


def launch(model_dir, out, processes, *extra, timeout=600):
    command = (
        [sys.executable, str(WORKER)]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(CPU_2PROC),
            str(WORKER),
        ]
    )
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
    launch.meta = [r["meta"] for r in ranks]
    ranks = [r["records"] for r in ranks]
    return ranks, torch.load(Path(out) / "params.pt"), json.loads((Path(out) / "log_history.json").read_text())


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


def test_two_processes_real_sampling(tiny_model_dir, tmp_path):
    ranks, _, history = launch(tiny_model_dir, tmp_path, 2, "--per-device-batch", "8", "--steps", "4")
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
    assert sum("loss" in h for h in history) == 4


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


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return launch(tiny_model_dir, out, 1, "--per-device-batch", "16", *HASHED)


HASHED = ["--sampler", "hashed", "--steps", "4", "--behavior-steps", "2"]


def assert_same_params(model_dir, single_params, other_params):
    # different reduction orders leave float noise; the worker's adam_epsilon keeps Adam from amplifying it
    moved = max((single_params[n] - p).abs().max().item() for n, p in initial_params(model_dir).items())
    assert moved > 1e-2
    for name, value in single_params.items():
        torch.testing.assert_close(other_params[name], value, atol=2e-5, rtol=1e-4)


def test_two_processes_match_one_process(tiny_model_dir, tmp_path, single_process_run):
    single, single_params, single_history = single_process_run
    double, double_params, double_history = launch(tiny_model_dir, tmp_path, 2, "--per-device-batch", "8", *HASHED)
    same_steps(single, double)
    assert losses(single_history) == pytest.approx(losses(double_history), abs=1e-5)
    assert_same_params(tiny_model_dir, single_params, double_params)


def test_zero3_two_processes_match_one_process(tiny_model_dir, tmp_path, single_process_run):
    single, single_params, single_history = single_process_run
    double, double_params, double_history = launch(
        tiny_model_dir,
        tmp_path,
        2,
        "--per-device-batch",
        "8",
        *HASHED,
        "--deepspeed",
        str(Path(__file__).with_name("zero3_cpu.json")),
    )
    assert all(meta["partitioned"] for meta in launch.meta)  # parameters really were sharded
    for records in double:
        assert_groups_whole(records)
    same_steps(single, double)
    assert losses(single_history) == pytest.approx(losses(double_history), abs=1e-5)
    assert_same_params(tiny_model_dir, single_params, double_params)


@pytest.mark.parametrize("zero3", [False, True], ids=["ddp", "zero3"])
def test_two_processes_resume_mid_cycle_is_exact(tiny_model_dir, tmp_path, zero3):
    """Real sampling on both ranks; a checkpoint on step 1 of a 3-step cycle holds both ranks' behavior samples."""
    common = ["--per-device-batch", "8", "--steps", "6", "--behavior-steps", "3", "--save-steps", "4"]
    if zero3:
        common += ["--deepspeed", str(Path(__file__).with_name("zero3_cpu.json"))]
    full, full_params, _ = launch(tiny_model_dir, tmp_path / "full", 2, *common)
    assert [meta["behavior_samplings"] for meta in launch.meta] == [[0, 3], [0, 3]]
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert sorted(p.name for p in checkpoint.glob("soup_cycle_rank*.pt")) == [
        "soup_cycle_rank0.pt",
        "soup_cycle_rank1.pt",
    ]

    resumed, resumed_params, history = launch(
        tiny_model_dir, tmp_path / "resumed", 2, *common, "--resume", str(checkpoint)
    )
    assert [meta["behavior_samplings"] for meta in launch.meta] == [[], []]  # steps 5-6 reuse the saved samples
    for rank_full, rank_resumed in zip(full, resumed, strict=True):
        # the resumed steps trained on the same rows as steps 5-6 of the uninterrupted run, on every rank
        assert rank_resumed == rank_full[4:]
        assert all(sum(r["prefix_lengths"]) > 0 for r in rank_resumed)
    moved = max((full_params[n] - p).abs().max().item() for n, p in initial_params(tiny_model_dir).items())
    assert moved > 1e-2
    for name, value in full_params.items():
        assert torch.equal(resumed_params[name], value), name

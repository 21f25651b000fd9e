"""The reward guard in two processes on CPU (gloo), launched with `accelerate launch` (tests/integration/workers/
bad_rewards_worker.py): each process cuts its hanging samples, and the failed rows, gathered, get advantage 0 on both.

The launch takes 15-70 s, so the test is marked `slow` (`python -m pytest -m slow`).
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soup_trl.testing.bad_rewards import HANGS, bad, expected_advantages


@pytest.mark.slow
def test_a_hanging_grader_is_cut_in_two_processes(tiny_model_dir, tmp_path):
    """Each process cuts hanging samples (the grader's own limit, `time_limited` for a user function); the failed rows,
    gathered, get advantage 0 on both processes."""
    worker = Path(__file__).parent / "workers" / "bad_rewards_worker.py"
    config = Path(__file__).resolve().parent.parent.parent / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(worker)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*command, "--model", tiny_model_dir, "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) > 0
    failed_rows = 0
    for first, second in zip(ranks[0]["batches"], ranks[1]["batches"]):
        rewards = torch.tensor(first["rewards"])
        assert torch.equal(rewards.nan_to_num(-1), torch.tensor(second["rewards"]).nan_to_num(-1))  # gathered
        rows = zip(first["solutions"] + second["solutions"], first["completions"] + second["completions"])
        failed = torch.tensor([s == HANGS or bad(c) for s, c in rows])
        assert torch.isnan(rewards[failed]).all() and not torch.isnan(rewards[~failed]).any()
        expected = expected_advantages(rewards, torch.tensor([1.0, 0.5, 1.0]), 4)  # groups of num_generations=4
        advantages = torch.tensor(first["advantages"] + second["advantages"])
        torch.testing.assert_close(advantages, expected)
        failed_rows += int(failed.sum())
    assert failed_rows > 0
    counted = [h["rewards/accuracy_reward/failed_frac"] for h in ranks[0]["history"] if "loss" in h]
    batches = zip(ranks[0]["batches"], ranks[1]["batches"])
    shares = [
        statistics.fmean(s == HANGS for s in first["solutions"] + second["solutions"]) for first, second in batches
    ]
    assert counted == pytest.approx(shares)

"""M2POTrainer in two processes on CPU (gloo), launched with `accelerate launch` (tests/integration/workers/
m2po_distributed_worker.py): no hang, the same schedule on both, each process with its own queue of whole groups.

The launch takes 15-70 s, so the test is marked `slow` (`python -m pytest -m slow`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..m2po.test_trainer import GA, G

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = Path(__file__).parent / "workers" / "m2po_distributed_worker.py"


@pytest.mark.slow
def test_two_processes(tiny_model_dir, tmp_path):
    """Two gloo processes: no hang, the same schedule on both, each with its own queue of whole groups."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"),
        str(WORKER),
        "--model", tiny_model_dir, "--out", str(tmp_path), "--steps", "5", "--staleness", "2", "--save-steps", "3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for rank in ranks:
        assert rank["samplings"] == [[0, 0], [0, 1], [0, 2], [1, 3], [2, 4]]
        assert [r["step"] for r in rank["records"]] == [s for s in range(5) for _ in range(GA)]
        assert [r["staleness"] for r in rank["records"]] == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
        for record in rank["records"]:
            for g in range(0, len(record["prompts"]), G):
                assert len({tuple(p) for p in record["prompts"][g : g + G]}) == 1
                assert abs(sum(record["advantages"][g : g + G])) < 1e-4
    for r0, r1 in zip(ranks[0]["records"], ranks[1]["records"]):  # each process trains on its own rows
        assert not {tuple(p) for p in r0["prompts"]} & {tuple(p) for p in r1["prompts"]}

    # each process saved its own queue (the batches of steps 3 and 4) with the checkpoint
    queues = [torch.load(tmp_path / "checkpoint-3" / f"m2po_queue_rank{r}.pt", weights_only=False) for r in range(2)]
    assert [[(q["sampled_at"], q["train_step"]) for q in queue] for queue in queues] == [[(1, 3), (2, 4)]] * 2
    assert not torch.equal(queues[0][0]["batch"]["prompt_ids"], queues[1][0]["batch"]["prompt_ids"])
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert sum("loss" in h for h in history) == 5

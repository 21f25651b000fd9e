"""Checkpoint selection (`soup_trl.evaluation.selection`): the ranking of scores, and `soup-trl select` sampling with
the completion length the run trained with unless --max-new-tokens says otherwise.

Selections of several checkpoints and a final model, end to end, are in tests/scripts/test_cli.py.
"""

import json

import pytest

from soup_trl.evaluation.benchmarks import ARITHMETIC_MAX_NEW_TOKENS
from soup_trl.testing.evaluation import save_training_args


def test_rank_prefers_the_earliest_of_equal_scores():
    from soup_trl.evaluation.selection import rank

    assert rank([0.3, 0.4, 0.35]) == 1
    assert rank([0.5, 0.1, 0.5]) == 0
    assert rank([0.0]) == 0


@pytest.fixture
def tiny_run(tiny_model_dir, tmp_path):
    """A run directory as the training script leaves it: a checkpoint, the tokenizer, training_args.bin."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(run / "checkpoint-1")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run)
    save_training_args(run, max_completion_length=3)
    return run


SELECT = ["--benchmarks", "arithmetic", "--limit", "2", "-n", "2", "--backend", "hf", "--no-progress", "--threads", "1"]


def test_select_samples_with_the_runs_completion_length(tiny_run, capsys):
    from soup_trl.scripts.cli import main

    assert ARITHMETIC_MAX_NEW_TOKENS != 3
    assert main(["select", str(tiny_run), *SELECT]) == 0
    err = capsys.readouterr().err
    assert f"max_new_tokens = 3: the run's max_completion_length ({tiny_run / 'training_args.bin'})" in err
    assert "max 3 new tokens" in err
    results = json.loads((tiny_run / "eval" / "checkpoint-1" / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == 3
    samples = [json.loads(line) for line in (tiny_run / "eval" / "checkpoint-1" / "arithmetic.jsonl").open()]
    assert len(samples) == 4 and all(s["num_tokens"] <= 3 for s in samples)


def test_select_max_new_tokens_flag_wins_over_the_run(tiny_run, capsys):
    from soup_trl.scripts.cli import main

    assert main(["select", str(tiny_run), *SELECT, "--max-new-tokens", "5"]) == 0
    err = capsys.readouterr().err
    assert "the run's max_completion_length" not in err and "max 5 new tokens" in err
    results = json.loads((tiny_run / "eval" / "checkpoint-1" / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == 5

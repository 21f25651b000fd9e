"""Plots of a training run (`soup_trl.evaluation.plots`): the position-bin profiles of each training phase, and SOUP's
cut tokens counted once per cycle.

The figures `soup-trl plot` writes are checked through the command, in tests/scripts/test_cli.py.
"""

import json

import pytest

from soup_trl.testing.evaluation import make_log_history


def test_position_bin_profiles_by_training_phase():
    from soup_trl.evaluation.plots import position_bin_profiles

    profiles = position_bin_profiles(make_log_history(30), "entropy", num_phases=3)
    assert [label for label, _ in profiles] == ["steps 1-10", "steps 11-20", "steps 21-30"]
    for (_, values), mean_step in zip(profiles, (5.5, 15.5, 25.5)):
        assert values == pytest.approx([b + mean_step / 100 for b in range(10)])
    assert len(position_bin_profiles(make_log_history(2), "entropy", num_phases=3)) == 2
    assert position_bin_profiles([{"step": 1, "reward": 0.5}], "entropy") == []


def test_cut_tokens_are_counted_once_per_cycle(tmp_path):
    """A resumed run writes the cycles after its checkpoint again: a step's last line counts; a bad line is named."""
    from soup_trl.core.errors import UserError
    from soup_trl.evaluation.plots import read_cut_tokens

    path = tmp_path / "soup_cut_tokens.jsonl"
    lines = [{"step": 1, "truncation": "entropy", "tokens": [" so", " but"]},
             {"step": 5, "truncation": "entropy", "tokens": [" so"]},
             {"step": 5, "truncation": "entropy", "tokens": [" wait"]}]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert read_cut_tokens(path) == {"entropy": {" so": 1, " but": 1, " wait": 1}}
    path.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=r"soup_cut_tokens.jsonl, line 2: not a cut-token record"):
        read_cut_tokens(path)

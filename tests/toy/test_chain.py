"""The chained-addition task (`soup_trl.toy.chain`): its datasets and splits, shortcut stages, the width of its
totals, its tiny model's settings and cache, and the training script's wiring. Its targets and rewards:
tests/rewards/test_chain.py."""

import json

import pytest

from soup_trl.rewards.chain import chain_target, parse_operands
from soup_trl.toy.chain import (
    ChainModelSettings,
    chain_split,
    chain_width,
    completion_tokens,
    make_chain_dataset,
)
from soup_trl.toy.tiny_model import MARKER_FILE, TinyModelSettings, build_tokenizer, ensure_tiny_base_model


def test_shortcut_fraction_drops_whole_stages_only():
    full = make_chain_dataset(200, seed=1, with_target=True)
    mixed = make_chain_dataset(200, seed=1, with_target=True, shortcut_fraction=0.5)
    assert full["prompt"] == mixed["prompt"]  # the style draw does not change the problems
    skipped = 0
    for a, b in zip(full["completion"], mixed["completion"]):
        stages_a, stages_b = a.split("|"), b.split("|")
        assert stages_a[1::2] == stages_b[1::2]  # same running totals
        assert all(x in ("", y) for x, y in zip(stages_b[::2], stages_a[::2]))
        skipped += stages_b[::2].count("")
    assert 150 < skipped < 250  # 400 stages, each skipped with probability 0.5


def test_shortcuts_from_a_stage_on_leave_earlier_stages_whole():
    late = make_chain_dataset(300, seed=2, with_target=True, shortcut_fraction=0.5, shortcut_from_stage=1)
    first_skipped = sum(c.startswith("|") for c in late["completion"])
    last_skipped = sum("||" in c for c in late["completion"])
    assert first_skipped == 0
    assert 110 < last_skipped < 190  # 300 last stages, each skipped with probability 0.5
    last = make_chain_dataset(300, seed=2, with_target=True, shortcut_fraction=0.5, shortcut_from_stage=-1)
    assert last["completion"] == late["completion"]  # -1: the last stage
    with pytest.raises(ValueError, match="shortcut_from_stage"):
        make_chain_dataset(4, with_target=True, shortcut_from_stage=2)  # 3 operands: stages 0 and 1


@pytest.mark.parametrize("num_operands, digits, width", [(3, 3, 4), (2, 3, 4), (4, 2, 3), (12, 1, 3)])
def test_chain_width_fits_the_largest_total(num_operands, digits, width):
    assert chain_width(num_operands, digits) == width


def test_dataset_rows_are_consistent_and_deterministic():
    data = make_chain_dataset(50, seed=3, with_target=True)
    assert data.column_names == ["prompt", "solution", "num_operands", "completion"]
    assert data.to_dict() == make_chain_dataset(50, seed=3, with_target=True).to_dict()
    for row in data:
        operands = parse_operands(row["prompt"])
        assert len(operands) == 3 and all(0 <= x < 1000 for x in operands)
        assert row["prompt"] == "+".join(f"{x:04d}" for x in operands) + "="
        assert row["solution"] == f"{sum(operands):04d}"
        assert row["completion"] == chain_target(operands, 4)
        assert row["completion"].rsplit("|", 1)[1] == row["solution"]
        assert len(row["completion"]) + 1 == completion_tokens()


def test_splits_are_disjoint_and_fixed():
    train = set(make_chain_dataset(2000, split="train")["prompt"])
    test = set(make_chain_dataset(300, split="test")["prompt"])
    assert not train & test
    assert all(chain_split(parse_operands(p)) == "test" for p in test)


def test_tokenizer_covers_the_task_one_character_per_token():
    tokenizer = build_tokenizer()
    row = make_chain_dataset(1, with_target=True)[0]
    ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    assert len(ids) == len(row["completion"]) and tokenizer.decode(ids) == row["completion"]


def test_settings_have_their_own_cache_directory(tmp_path):
    assert ChainModelSettings().cache_key() != TinyModelSettings().cache_key()
    assert ChainModelSettings().cache_key() != ChainModelSettings(num_operands=4).cache_key()
    settings = ChainModelSettings(warmup_steps=2, warmup_batch_size=4)
    path = ensure_tiny_base_model(tmp_path, settings)
    assert path.split("/")[-1].startswith("tiny-chain-")
    marker = json.loads((tmp_path / path.split("/")[-1] / MARKER_FILE).read_text())
    assert marker["settings"]["num_operands"] == 3 and marker["build"]["warmup_steps_done"] == 2
    assert ensure_tiny_base_model(tmp_path, settings) == path  # cached


def test_warm_up_in_a_subprocess_rebuilds_the_subclass(tmp_path):
    settings = ChainModelSettings(warmup_steps=1, warmup_batch_size=2, num_operands=2)
    path = ensure_tiny_base_model(tmp_path, settings, isolate=True)
    marker = json.loads((tmp_path / path.split("/")[-1] / MARKER_FILE).read_text())
    assert marker["settings"]["num_operands"] == 2


def test_training_script_loads_the_chain_task():
    from soup_trl.scripts import train

    script_args, training_args, _ = train.parse_args(["--config", "tiny_chain_luffy", "--max_train_samples", "8"])
    data, _ = train.load_datasets(script_args, training_args)
    assert data[0]["target"] == chain_target(parse_operands(data[0]["prompt"]), 4)


def test_problems_are_the_same_on_every_machine():
    # string-seeded random.Random and blake2b splits: no platform or library dependence
    assert make_chain_dataset(3)["prompt"] == ["0952+0311+0760=", "0536+0585+0217=", "0620+0578+0399="]

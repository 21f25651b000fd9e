"""Adaptive refresh (`soup_refresh_drift`): behavior samples are replaced within a cycle once the current policy has
drifted from them, between `soup_refresh_min_steps` and `soup_behavior_steps` steps; checked on real tiny-model runs
against fresh models rebuilt from parameter snapshots."""

from functools import partial

import pytest
import torch

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.testing.contract import ContractRecorder, broken_groups, prefix_denominators
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy

TEMPERATURE = 0.8
T = 4


def refresh_run(model_dir, make_config, make_dataset, output_dir=None, resume=None, **overrides):
    settings = dict(
        soup_behavior_steps=T, soup_truncation="ratio", soup_prefix_ratio=0.5, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, num_generations=4, temperature=TEMPERATURE, max_steps=2 * T,
    )  # fmt: skip
    if output_dir is not None:
        settings["output_dir"] = output_dir
    args = make_config(**{**settings, **overrides})
    trainer = SOUPTrainer(model_dir, shaped_reward, args=args, train_dataset=make_dataset(100))
    recorder = ContractRecorder(trainer) if resume is None else None  # a resumed run starts inside a recorded cycle
    trainer.train(resume_from_checkpoint=resume)
    return trainer, None if recorder is None else recorder.records


def test_config_names_bad_refresh_fields(tmp_path):
    def config(**fields):
        return SOUPConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **fields)

    with pytest.raises(ValueError, match="soup_refresh_drift must be None"):
        config(soup_refresh_drift=-0.1)
    with pytest.raises(ValueError, match="needs soup_behavior_steps >= 2"):
        config(soup_refresh_drift=0.1, soup_behavior_steps=1)
    with pytest.raises(ValueError, match="soup_refresh_min_steps must be an integer >= 1"):
        config(soup_refresh_drift=0.1, soup_refresh_min_steps=0)
    with pytest.raises(ValueError, match="soup_history_max_age instead"):
        config(soup_refresh_drift=0.1, soup_behavior_source="history")


@pytest.fixture(scope="module")
def always(tiny_model_dir, make_config, make_dataset):
    """A threshold of 0 refreshes as soon as the bound allows: every `soup_refresh_min_steps` = 2 steps."""
    return refresh_run(tiny_model_dir, make_config, make_dataset, soup_refresh_drift=0.0, soup_refresh_min_steps=2)


def test_refreshes_happen_at_the_bounds_and_are_logged(always):
    trainer, records = always
    # each cycle of 4 steps: sampled at step 0, served 2 steps, refreshed at step 2
    assert [c["cycle"].first_step for c in records["cycles"]] == [0, 2, 0, 2]
    assert [s["step"] for s in records["steps"]] == [0, 1, 0, 1, 0, 1, 0, 1]  # steps within each behavior sample
    refreshes = [h["soup/refresh"] for h in trainer.state.log_history if "soup/refresh" in h]
    assert refreshes == [0.0, 0.0, 1.0, 0.0] * 2
    drift = [h["soup/prefix_abs_log_ratio"] for h in trainer.state.log_history if "soup/prefix_abs_log_ratio" in h]
    assert len(drift) == 2 and all(d > 0 for d in drift)  # measured before each refresh of a cycle
    assert broken_groups(records, 4) == 0


def test_refreshed_prefixes_are_weighted_against_the_refreshing_policy(always, tiny_model_dir):
    _, records = always
    measured = prefix_denominators(records, partial(SnapshotPolicy, tiny_model_dir, temperature=TEMPERATURE))
    assert measured.rows > 0 and measured.error < 1e-4 and measured.other > 1e-3


def test_a_threshold_never_reached_is_fixed_t_soup(tiny_model_dir, make_config, make_dataset):
    adaptive, records = refresh_run(tiny_model_dir, make_config, make_dataset, soup_refresh_drift=1e9)
    fixed, _ = refresh_run(tiny_model_dir, make_config, make_dataset)
    assert len(records["cycles"]) == 2
    expected = dict(fixed.model.named_parameters())
    for name, param in adaptive.model.named_parameters():
        assert torch.equal(param, expected[name]), name


def test_resume_after_a_refresh_is_exact(tiny_model_dir, make_config, make_dataset, tmp_path):
    def run(name, resume=None):
        return refresh_run(
            tiny_model_dir, make_config, make_dataset, output_dir=tmp_path / name, resume=resume,
            soup_refresh_drift=0.0, soup_refresh_min_steps=2, save_strategy="steps", save_steps=3,
        )[0]  # fmt: skip

    full = run("full")
    resumed = run("resumed", resume=str(tmp_path / "full" / "checkpoint-3"))  # step 3: after the first refresh
    expected = dict(full.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name

"""A short SOUP run on the tiny model: every parameter trains and the reward metrics are logged."""

import torch

from soup_trl import SOUPTrainer
from soup_trl.testing.rewards import shaped_reward


def test_every_parameter_changes_and_metrics_are_logged(tiny_model_dir, make_config, make_dataset):
    args = make_config(soup_behavior_steps=2)
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(64))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    history = trainer.state.log_history
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 4
    for key in ("reward", "rewards/shaped_reward/mean", "soup/prefix_token_frac", "entropy", "clip_ratio/region_mean"):
        assert all(key in h for h in logged), key
    assert logged[0]["soup/prefix_token_frac"] == 0.0  # step 1 of a cycle is on-policy
    assert logged[1]["soup/prefix_token_frac"] > 0.0
    # no value is logged empty: TRL's vLLM sampler metrics (`sampling/*`) do not exist without vLLM, and no metric of
    # the package is None on a step that has nothing to measure
    assert not [key for h in history for key, value in h.items() if key.startswith("sampling/") or value is None]
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(before[name], param.detach()), f"{name} did not change"

"""With soup_behavior_steps=1 SOUPTrainer is GRPOTrainer: same seed and config, same parameters after training."""

import pytest
import torch
from tiny_rewards import shaped_reward
from trl import GRPOConfig, GRPOTrainer

from soup_trl import SOUPConfig, SOUPTrainer

# set explicitly: GRPOConfig's defaults differ from SOUPConfig's (epsilon_high)
LOSS = dict(per_device_train_batch_size=4, seed=3, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", beta=0.0)


def train(trainer_cls, args, model_dir, prompts):
    trainer = trainer_cls(model_dir, shaped_reward, args=args, train_dataset=prompts)
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return initial, final, losses


@pytest.mark.parametrize("accumulation", [1, 2])
def test_t1_reproduces_grpo_exactly(tiny_model_dir, make_config, make_dataset, accumulation):
    grpo_args = make_config(GRPOConfig, gradient_accumulation_steps=accumulation, **LOSS)
    soup_args = make_config(SOUPConfig, gradient_accumulation_steps=accumulation, soup_behavior_steps=1, **LOSS)
    grpo_init, grpo_final, grpo_losses = train(GRPOTrainer, grpo_args, tiny_model_dir, make_dataset(64))
    soup_init, soup_final, soup_losses = train(SOUPTrainer, soup_args, tiny_model_dir, make_dataset(64))
    assert len(grpo_losses) == 4 and soup_losses == grpo_losses
    for name, value in grpo_final.items():
        assert torch.equal(soup_init[name], grpo_init[name])
        assert torch.equal(soup_final[name], value), name
    # the runs really trained, so equality is not the trivial one of two untouched models
    assert any(not torch.equal(grpo_init[n], grpo_final[n]) for n in grpo_final)

"""With soup_behavior_steps=1 SOUPTrainer is GRPOTrainer: same seed and config, same parameters after training."""

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.testing.rewards import shaped_reward

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


@pytest.mark.filterwarnings("ignore:soup_prefix_loss is set but does nothing")
@pytest.mark.parametrize("prefix_loss", ["mask", "minpro"])
def test_t1_reproduces_grpo_exactly_with_every_prefix_loss(tiny_model_dir, make_config, make_dataset, prefix_loss):
    """Without prefixes the prefix-loss choice has nothing to act on: T = 1 is GRPOTrainer, bit for bit, whatever it is
    ("token_ratio", the default, is the test above)."""
    grpo_args = make_config(GRPOConfig, gradient_accumulation_steps=2, **LOSS)
    soup_args = make_config(SOUPConfig, gradient_accumulation_steps=2, soup_behavior_steps=1, soup_prefix_loss=prefix_loss,
                            **LOSS)  # fmt: skip
    _, grpo_final, grpo_losses = train(GRPOTrainer, grpo_args, tiny_model_dir, make_dataset(64))
    _, soup_final, soup_losses = train(SOUPTrainer, soup_args, tiny_model_dir, make_dataset(64))
    assert len(grpo_losses) == 4 and soup_losses == grpo_losses
    for name, value in grpo_final.items():
        assert torch.equal(soup_final[name], value), name


SETTINGS = {  # SOUP settings whose generation calls have rows that stop at different lengths
    "ratio T=3": dict(soup_behavior_steps=3, soup_prefix_ratio=0.5),
    "prefix budget T=3": dict(soup_behavior_steps=3, soup_truncation="prefix_budget", soup_prefix_budget=0.5),
    "history": dict(soup_behavior_steps=1, soup_behavior_source="history", soup_prefix_ratio=0.5),
}


@pytest.mark.parametrize("setting", list(SETTINGS), ids=list(SETTINGS))
def test_compacted_generation_trains_the_same(tiny_model_dir, make_config, make_dataset, setting, monkeypatch):
    """`soup_compact_generation` (the default) changes which rows the decoding forward passes compute, nothing else: the
    same completions, losses and parameters as `generate`'s own loop, with fewer rows forwarded (behavior samples,
    per-row-budget continuations and history-seeded continuations alike)."""
    from transformers import Qwen2ForCausalLM

    forward = Qwen2ForCausalLM.forward
    rows = []

    def counting_forward(self, input_ids=None, *args, **kwargs):
        if not torch.is_grad_enabled() and input_ids is not None and input_ids.size(1) == 1:  # one decoding step
            rows.append(input_ids.size(0))
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(Qwen2ForCausalLM, "forward", counting_forward)
    runs = {}
    for compact in (False, True):
        rows.clear()
        args = make_config(**LOSS, max_steps=6, soup_compact_generation=compact, **SETTINGS[setting])
        runs[compact] = (*train(SOUPTrainer, args, tiny_model_dir, make_dataset(16)), sum(rows))
    (_, plain, plain_losses, plain_rows), (_, compacted, compacted_losses, compacted_rows) = runs[False], runs[True]
    assert compacted_losses == plain_losses
    for name, value in plain.items():
        assert torch.equal(compacted[name], value), name
    assert compacted_rows < plain_rows

"""A run stopped in the middle of a SOUP cycle and resumed ends with the parameters of an uninterrupted run."""

import os

import torch

from soup_trl import SOUPTrainer
from soup_trl.testing.rewards import shaped_reward


def make_trainer(model_dir, args, prompts):
    trainer = SOUPTrainer(model_dir, shaped_reward, args=args, train_dataset=prompts)
    trainer.behavior_samplings = 0
    sample = trainer._sample_cycle

    def counting_sample(inputs, *args, **kwargs):
        trainer.behavior_samplings += 1
        return sample(inputs, *args, **kwargs)

    trainer._sample_cycle = counting_sample
    return trainer


def test_resume_mid_cycle_is_exact(tiny_model_dir, make_config, make_dataset, tmp_path):
    def config(name):
        # step 4 is step 1 of the second cycle's 3
        return make_config(
            output_dir=tmp_path / name, soup_behavior_steps=3, gradient_accumulation_steps=2, max_steps=6,
            save_strategy="steps", save_steps=4,
        )

    uninterrupted = make_trainer(tiny_model_dir, config("full"), make_dataset(144))
    uninterrupted.train()
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert os.path.exists(checkpoint / "soup_cycle_rank0.pt")
    assert uninterrupted.behavior_samplings == 2

    resumed = make_trainer(tiny_model_dir, config("resumed"), make_dataset(144))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.behavior_samplings == 0  # steps 5 and 6 used the saved behavior samples
    expected = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name
    saved = torch.load(checkpoint / "soup_cycle_rank0.pt", weights_only=False)
    assert saved["rows_per_step"] == 16 and len(saved["completion_ids"]) == 48
    assert any(h.get("soup/prefix_token_frac", 0) > 0 for h in resumed.state.log_history)  # spliced steps resumed

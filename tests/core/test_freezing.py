"""Training only the top decoder layers (`trainable_top_layers`): what trains, what stays, and the error."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from soup_trl import SOUPTrainer
from soup_trl.core.freezing import decoder_layers, train_top_layers_only
from soup_trl.testing.rewards import shaped_reward


def test_only_the_top_layers_and_the_final_norm_train(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    layers = decoder_layers(model)
    trainable, total = train_top_layers_only(model, 1)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    top = len(layers) - 1
    assert names and all(n.startswith(f"model.layers.{top}.") or n.startswith("model.norm.") for n in names)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) < total
    assert not model.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("bad", [0, 99])
def test_a_layer_count_out_of_range_names_the_field(tiny_model_dir, bad):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"trainable_top_layers must be in 1\.\.\d+"):
        train_top_layers_only(model, bad)


def test_training_moves_the_top_layer_only(tiny_model_dir, make_config, make_dataset):
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=make_config(soup_behavior_steps=2),
                          train_dataset=make_dataset(64))  # fmt: skip
    train_top_layers_only(trainer.model, 1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    top = len(decoder_layers(trainer.model)) - 1
    assert moved and all(n.startswith((f"model.layers.{top}.", "model.norm.")) for n in moved)


def test_the_training_script_takes_the_field():
    from soup_trl.scripts.train import parse_args

    script_args, _, _ = parse_args(["--config", "smollm2_soup_ratio", "--output_dir", "/tmp/unused"])
    assert script_args.trainable_top_layers == 4

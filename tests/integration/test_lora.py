"""SOUP trains LoRA adapters through PEFT, and the behavior log-probs are those of the adapted policy; the shipped LoRA
recipe (TRL's ModelConfig fields `use_peft`, `lora_*`) trains adapters only."""

import json

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from trl import get_peft_config

import soup_trl
from soup_trl import SOUPTrainer
from soup_trl.scripts import train
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, snapshot

TEMPERATURE = 0.8


def lora_config():
    # lora_dropout 0: the adapted policy is deterministic, so its log-probs can be recomputed exactly
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def test_lora_adapters_train_and_prefixes_use_the_adapted_behavior_policy(tiny_model_dir, make_config, make_dataset):
    args = make_config(soup_behavior_steps=3, temperature=TEMPERATURE, learning_rate=5e-2)
    trainer = SOUPTrainer(
        tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(64), peft_config=lora_config()
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    cycles = []
    sample_cycle = trainer._sample_cycle

    def recording_sample(inputs, *args, **kwargs):
        params = snapshot(trainer.model)
        cycle = sample_cycle(inputs, *args, **kwargs)
        cycles.append((params, cycle))
        return cycle

    trainer._sample_cycle = recording_sample
    trainer.train()

    for name, param in trainer.model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == ("lora_" in name), name  # adapters train, the base model stays frozen

    params, cycle = cycles[1]  # second cycle: the adapters have moved away from their zero-initialised B
    adapted = SnapshotPolicy(tiny_model_dir, params, TEMPERATURE, wrap=lambda model: get_peft_model(model, lora_config()))
    checked, longest = 0, (0, None, None, None)
    for row in range(cycle.rows_per_step, len(cycle.completion_ids)):
        prompt, completion = cycle.prompt_ids[row], cycle.completion_ids[row]
        kept = int(cycle.prefix_lengths[row])  # behavior log-probs are kept for prefix positions only
        got = cycle.behavior_logps[row, :kept]
        torch.testing.assert_close(got, adapted.logps(prompt, completion)[:kept], atol=1e-4, rtol=1e-4)
        checked += kept
        longest = max(longest, (kept, prompt, completion, got), key=lambda x: x[0])
    assert checked > 2 * 8  # prefix tokens of the 16 rows of steps 2 and 3
    kept, prompt, completion, got = longest
    base_logps = SnapshotPolicy(tiny_model_dir, temperature=TEMPERATURE).logps(prompt, completion)[:kept]
    assert (base_logps - got).abs().max() > 1e-3  # the adapters matter


def test_the_lora_recipe_asks_for_adapters_through_trls_model_config():
    script_args, args, model_args = train.parse_args(["--config", "tiny_arithmetic_lora"])
    peft_config = get_peft_config(model_args)  # what the training script passes to the trainer as peft_config
    assert model_args.use_peft and isinstance(peft_config, LoraConfig)
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (8, 16, 0.0)
    assert peft_config.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert args.soup_behavior_steps == 4 and args.learning_rate == 1e-3 and script_args.method == "soup"


def test_the_lora_recipe_trains_only_the_adapters(tiny_model_dir, tmp_path, monkeypatch):
    """Two steps of the recipe through the training script (the tiny random model, and a reward that varies within
    groups so that the adapters get a gradient): only adapter weights are trainable and move, and the run directory
    holds the adapters alone."""
    trainers = []

    class Recorded(SOUPTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append((self, {n: p.detach().clone() for n, p in self.model.named_parameters()}))

    monkeypatch.setattr(soup_trl, "SOUPTrainer", Recorded)  # the class the training script looks up for `soup`
    run = tmp_path / "run"
    train.main(*train.parse_args(
        ["--config", "tiny_arithmetic_lora", "--model_name_or_path", tiny_model_dir, "--output_dir", str(run),
         "--reward_funcs", "soup_trl.testing.rewards.shaped_reward", "--max_steps", "2", "--logging_steps", "1",
         "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "8",
         "--max_train_samples", "32", "--num_threads", "1", "--learning_rate", "5e-2"]
    ))  # fmt: skip
    ((trainer, before),) = trainers
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, param in trainer.model.named_parameters():
        assert torch.equal(before[name], param.detach()) == ("lora_" not in name), name  # adapters move, nothing else
    assert sum("loss" in h for h in json.loads((run / "trainer_state.json").read_text())["log_history"]) == 2
    assert not (run / "model.safetensors").exists()
    saved = load_file(run / "adapter_model.safetensors")
    assert saved and all("lora_" in key for key in saved)
    assert json.loads((run / "adapter_config.json").read_text())["r"] == 8

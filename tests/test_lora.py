"""SOUP trains LoRA adapters through PEFT, and the behavior log-probs are those of the adapted policy."""

import torch
from peft import LoraConfig, get_peft_model
from policy_snapshots import SnapshotPolicy, snapshot
from tiny_rewards import shaped_reward

from soup_trl import SOUPTrainer

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
    sample_cycle = trainer._sample_behavior_cycle

    def recording_sample(inputs):
        params = snapshot(trainer.model)
        cycle = sample_cycle(inputs)
        cycles.append((params, cycle))
        return cycle

    trainer._sample_behavior_cycle = recording_sample
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
        got = cycle.behavior_logps[row - cycle.rows_per_step, :kept]
        torch.testing.assert_close(got, adapted.logps(prompt, completion)[:kept], atol=1e-4, rtol=1e-4)
        checked += kept
        longest = max(longest, (kept, prompt, completion, got), key=lambda x: x[0])
    assert checked > 2 * 8  # prefix tokens of the 16 rows of steps 2 and 3
    kept, prompt, completion, got = longest
    base_logps = SnapshotPolicy(tiny_model_dir, temperature=TEMPERATURE).logps(prompt, completion)[:kept]
    assert (base_logps - got).abs().max() > 1e-3  # the adapters matter

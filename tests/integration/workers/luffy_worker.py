"""One LUFFY training run in several processes, launched by tests/integration/test_distributed_luffy.py.

Each process records every generation batch it scored (prompts, which rows are traces, advantages, how many rows it
sampled) and the off-policy token share of its micro-batches, and writes them to OUT/rank{N}.json.
"""

from __future__ import annotations

import json
import os

from datasets import Dataset
from trl import GRPOTrainer

from soup_trl import LUFFYConfig, LUFFYTrainer
from soup_trl.rewards.arithmetic import scratchpad
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import launched_worker, leave_group, small_config


def main():
    args, state = launched_worker()
    pairs = [(a, b) for a in range(12) for b in range(12)]
    rows = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a, b in pairs], "target": [scratchpad(a, b) for a, b in pairs]})
    config = small_config(args.out, LUFFYConfig, max_steps=3, accelerator_config={"use_configured_state": True})
    trainer = LUFFYTrainer(args.model, shaped_reward, args=config, train_dataset=rows)

    scored, fractions, sampled = [], [], []
    score, compute_loss = trainer._generate_and_score_completions, trainer.compute_loss
    base_generate = GRPOTrainer._generate_single_turn

    def recording_generate(self, prompt_ids, *a, **k):
        sampled.append(len(prompt_ids))
        return base_generate(self, prompt_ids, *a, **k)

    def recording_score(inputs):
        output = score(inputs)
        mask = output["prompt_mask"].bool()
        scored.append(
            {
                "prompts": [output["prompt_ids"][i][mask[i]].tolist() for i in range(len(mask))],
                "trace_rows": output["off_policy_mask"].any(1).tolist(),
                "advantages": output["advantages"].tolist(),
                "sampled": sampled[-1],
            }
        )
        return output

    def recording_loss(model, inputs, *a, **k):
        fractions.append((inputs["off_policy_mask"].sum() / inputs["completion_mask"].sum()).item())
        return compute_loss(model, inputs, *a, **k)

    GRPOTrainer._generate_single_turn = recording_generate
    trainer._generate_and_score_completions = recording_score
    trainer.compute_loss = recording_loss
    trainer.train()

    with open(os.path.join(args.out, f"rank{state.process_index}.json"), "w") as f:
        json.dump(
            {"scored": scored, "off_policy_token_frac": fractions, "log_history": trainer.state.log_history}, f
        )
    leave_group(state)


if __name__ == "__main__":
    main()

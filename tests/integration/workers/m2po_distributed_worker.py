"""One M2PO training run, launched by tests/integration/test_distributed_m2po.py in two processes.

Each process writes OUT/rank{N}.json: for every loss micro-batch, the step, the prompts of its rows, their advantages
and the step at which its batch was sampled; and every sampling (global step, step that trains on it).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from accelerate import PartialState
from datasets import Dataset

from soup_trl import M2POConfig, M2POTrainer
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import leave_group


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--staleness", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    state = PartialState(cpu=True, backend="gloo")  # `cpu=True`: the launched processes form one gloo group
    prompts = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(12) for b in range(12)]})
    config = M2POConfig(
        output_dir=args.out,
        m2po_staleness=args.staleness,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_generations=4,
        max_completion_length=10,
        learning_rate=1e-2,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=args.save_steps,
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        accelerator_config={"use_configured_state": True},
        disable_tqdm=True,
    )
    trainer = M2POTrainer(args.model, shaped_reward, args=config, train_dataset=prompts)

    records, samplings = [], []
    compute_loss, sample_batch = trainer.compute_loss, trainer._sample_batch

    def recording_loss(model, inputs, *a, **k):
        rows = range(len(inputs["prompt_ids"]))
        records.append(
            {
                "step": trainer.state.global_step,
                "prompts": [inputs["prompt_ids"][i][inputs["prompt_mask"][i].bool()].tolist() for i in rows],
                "advantages": inputs["advantages"].tolist(),
                "staleness": trainer._metrics["train"]["m2po/staleness"][-1],
            }
        )
        return compute_loss(model, inputs, *a, **k)

    def recording_sample(inputs, train_step):
        samplings.append([trainer.state.global_step, train_step])
        return sample_batch(inputs, train_step)

    trainer.compute_loss, trainer._sample_batch = recording_loss, recording_sample
    trainer.train()
    with open(os.path.join(args.out, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"records": records, "samplings": samplings}, f)
    if state.is_main_process:
        with open(os.path.join(args.out, "log_history.json"), "w") as f:
            json.dump(trainer.state.log_history, f)
    leave_group(state)


if __name__ == "__main__":
    main()

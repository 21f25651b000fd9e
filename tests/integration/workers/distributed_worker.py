"""One SOUP training run, launched by tests/integration/test_distributed.py in one or several processes.

Each process records what every optimizer step trained on (the prompts of its rows, their prefix lengths, the step
within the cycle) and writes it to OUT/rank{N}.json; rank 0 also writes the final parameters and the log history.

`--sampler hashed` replaces token sampling by a deterministic function of each row's tokens and its rank within
its group, so that runs with different process layouts see the same completions for the same global batch (with
real sampling every process draws from its own random stream, and the layouts cannot be compared).

`--truncation whole_on_rank1` cuts every row of process 1 at 0 (no prefix, nothing for its behavior forward to score)
and the others by the ratio, so that process 1 must run the behavior forwards the others run without rows of its own.
`--check-call-budgets` also records, after training, the continuation limit each process computes for rows whose
budgets differ by process (`soup_trl.soup.continuation.call_budgets`): process 0 with a filler row only, process 1
with two long rows, for vLLM server mode and for a tensor-parallel group of every process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
from collections import Counter

import torch
from accelerate import PartialState
from trl import GRPOTrainer

from soup_trl import SOUPTrainer, register_truncation
from soup_trl.soup.continuation import call_budgets
from soup_trl.testing.rewards import mixed_reward, shaped_reward
from soup_trl.testing.runs import leave_group, prompt_dataset, small_config


def hashed_generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
    """Completions that depend only on the row's tokens and on its rank among identical rows of the call."""
    seen = Counter()
    budget = self.generation_config.max_new_tokens  # generation budget of this call
    eos = self.eos_token_ids[0]
    vocab = [t for t in range(len(self.processing_class)) if t not in (eos, self._tokenizer.pad_token_id)]
    completions = []
    for ids in prompt_ids:
        key = tuple(ids)
        digest = hashlib.sha256(repr((key, seen[key])).encode()).digest()
        seen[key] += 1
        length = 1 + digest[0] % self.max_completion_length  # not of `budget`: it depends on the other rows
        body = [vocab[b % len(vocab)] for b in digest[1 : 1 + length]]
        completions.append(body[: length - 1] + [eos] if digest[-1] % 3 else body)
    return [c[:budget] for c in completions], None


@register_truncation("whole_on_rank1", needs_logps=False)
def whole_on_rank1(inputs, prefix_ratio):
    if int(os.environ.get("RANK", "0")) == 1:
        return torch.zeros_like(inputs.content_lengths)
    return (inputs.content_lengths.double() * prefix_ratio).round().long()


CALL_BUDGETS = {0: [1], 1: [40, 12]}  # process 0: one filler row; process 1: two rows with long budgets


def agreed_limits(state) -> dict:
    """`call_budgets` on every process, for server mode and for a tensor-parallel group of all processes."""
    import types

    import torch.distributed as dist

    budgets = CALL_BUDGETS[state.process_index]
    group = dist.new_group(list(range(state.num_processes)))
    server = types.SimpleNamespace(use_vllm=True, vllm_generation=types.SimpleNamespace(mode="server"))
    colocate = types.SimpleNamespace(
        use_vllm=True,
        vllm_generation=types.SimpleNamespace(mode="colocate", tensor_parallel_size=state.num_processes, tp_group=group),
    )
    return {"server": call_budgets(server, budgets), "tensor_parallel": call_budgets(colocate, budgets)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--behavior-steps", type=int, default=2)
    parser.add_argument("--truncation", default="ratio")
    parser.add_argument("--sampler", choices=["real", "hashed"], default="real")
    parser.add_argument("--deepspeed", default=None, help="DeepSpeed JSON config (ZeRO-3 over gloo on CPU)")
    parser.add_argument("--save-steps", type=int, default=0, help="save a checkpoint every N steps (0: never)")
    parser.add_argument("--resume", default=None, help="checkpoint directory to resume from")
    parser.add_argument("--dynamic-sampling", action="store_true", help="with a reward that has zero-variance groups")
    parser.add_argument("--behavior-source", default="fresh", help="soup_behavior_source")
    parser.add_argument("--prompts", type=int, default=144, help="training prompts (few: they come back)")
    parser.add_argument("--check-call-budgets", action="store_true", help="record call_budgets across processes")
    args = parser.parse_args()

    torch.set_num_threads(1)
    if args.deepspeed:  # DeepSpeed over gloo: without a GPU Accelerate would leave the backend unset
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        state = PartialState(backend="gloo")
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # `cpu=True` is what makes Accelerate treat the launched processes as one MULTI_CPU (gloo) group
        state = PartialState(cpu=True, backend="gloo")
    else:
        state = PartialState()
    if args.sampler == "hashed":
        GRPOTrainer._generate_single_turn = hashed_generate

    config = small_config(
        args.out,
        soup_behavior_steps=args.behavior_steps,
        soup_truncation=args.truncation,
        soup_prefix_ratio=0.5,
        soup_entropy_top_k=4,
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.accumulation,
        adam_epsilon=1e-4,  # keeps Adam from blowing float-order noise on near-zero gradients up to a full step
        max_steps=args.steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        deepspeed=args.deepspeed,
        accelerator_config={"use_configured_state": True} if state.num_processes > 1 else None,
        dynamic_sampling=args.dynamic_sampling,
        soup_behavior_source=args.behavior_source,
    )
    reward = mixed_reward if args.dynamic_sampling else shaped_reward
    trainer = SOUPTrainer(args.model, reward, args=config, train_dataset=prompt_dataset(args.prompts))

    records = []
    compute_loss = trainer.compute_loss

    def recording_loss(model, inputs, *a, **k):
        prompt_rows = [
            inputs["prompt_ids"][i][inputs["prompt_mask"][i].bool()].tolist() for i in range(len(inputs["prompt_ids"]))
        ]
        records.append(
            {
                "step": trainer.state.global_step,
                "cycle_position": trainer._step % trainer.args.steps_per_generation,
                "prompts": prompt_rows,
                "prefix_lengths": inputs["soup_prefix_mask"].sum(1).tolist(),
                "completion_lengths": inputs["completion_mask"].sum(1).tolist(),
                "advantages": inputs["advantages"].tolist(),
                "from_history": trainer._metrics["train"].get("soup/history_row_frac", [None])[-1],
            }
        )
        return compute_loss(model, inputs, *a, **k)

    trainer.compute_loss = recording_loss
    behavior_samplings = []
    sample_cycle = trainer._sample_cycle

    def counting_sample(inputs, *a, **k):
        behavior_samplings.append(trainer.state.global_step)
        return sample_cycle(inputs, *a, **k)

    trainer._sample_cycle = counting_sample
    trainer.train(resume_from_checkpoint=args.resume)

    model = trainer.accelerator.unwrap_model(trainer.model)
    meta = {
        "partitioned": any(p.numel() == 0 for p in model.parameters()),  # ZeRO-3 leaves empty local tensors
        "behavior_samplings": behavior_samplings,  # global step at each behavior sampling of this process
    }
    if args.check_call_budgets:
        meta["call_budgets"] = agreed_limits(state)
    with open(os.path.join(args.out, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"meta": meta, "records": records}, f)
    if trainer.is_deepspeed_enabled:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(model.parameters()))
    else:
        gathered = contextlib.nullcontext()
    with gathered:
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
    if state.is_main_process:
        torch.save(params, os.path.join(args.out, "params.pt"))
        with open(os.path.join(args.out, "log_history.json"), "w") as f:
            json.dump(trainer.state.log_history, f)
    leave_group(state)


if __name__ == "__main__":
    main()

"""SOUP runs against a real vLLM server (TRL's server mode), launched by tests/integration/test_vllm_server.py in two
processes.

The run is set up so that the processes' continuation budgets differ widely: EOS is forbidden (a logit bias of -100
sent with every request), so every behavior completion has `max_completion_length` (L) tokens, and the truncation
`split_budgets` cuts process 0's rows at L - 1 (budget 1) and process 1's at 0, 1, 2, 3 (budgets L .. L - 3). Server
mode sends both processes' prompts in one request with one `max_tokens`, which process 0 sends.

Two runs, one after the other, against the same server: `agreed` as the package runs, and `local`, where each process
takes the largest budget of its own rows as the call's limit (`call_budgets` without the agreement across processes,
as before the fix). Each writes OUT/<run>/rank{N}.json: what every scored row was trained on (prefix and completion
lengths, whether it ends with EOS), the budgets and limit of each continuation call, and (process 0) every request
sent to the server.

The weight transfer to the server is switched off (`without_weight_transfer`: NCCL, CUDA only) and the runs train at
learning rate 0, so the server's weights stay the trainer's.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from soup_trl import SOUPTrainer, register_truncation
from soup_trl.soup import continuation
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import leave_group, prompt_dataset, small_config
from soup_trl.testing.vllm_server import without_weight_transfer

MAX_LEN = 10
STEPS = 3  # one cycle: step 1 on whole rows, steps 2 and 3 spliced


@register_truncation("split_budgets", needs_logps=False)
def split_budgets(inputs, max_completion_length):
    """Process 0: every row cut at L - 1 (continuation budget 1); process 1: at 0, 1, 2, 3 in turn (budgets L .. L-3)."""
    lengths = inputs.content_lengths
    if int(os.environ.get("RANK", "0")) == 0:
        return torch.full_like(lengths, max_completion_length - 1)
    return torch.arange(len(lengths), device=lengths.device) % 4


def local_limit(agreed_budgets):
    """`call_budgets` with the call's limit taken from this process's rows only (the collectives still run)."""

    def call_budgets(trainer, budgets):
        _, engine_budgets = agreed_budgets(trainer, budgets)
        return max(budgets), engine_budgets

    return call_budgets


def run(args, state, name: str, agreed_budgets) -> None:
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    eos = AutoTokenizer.from_pretrained(args.model).eos_token_id
    config = small_config(
        out,
        soup_behavior_steps=STEPS,
        soup_truncation="split_budgets",
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=MAX_LEN,
        max_steps=STEPS,
        learning_rate=0.0,  # the server's weights are never updated (without_weight_transfer)
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url=args.server_url,
        vllm_server_timeout=600,  # the server may still be starting (test_vllm_server.py starts both at once)
        generation_kwargs={"logit_bias": {str(eos): -100}},  # sent with every request: the server never samples EOS
        accelerator_config={"use_configured_state": True},
    )
    trainer = SOUPTrainer(args.model, shaped_reward, args=config, train_dataset=prompt_dataset(64))
    requests, calls, rows = [], [], []

    if state.is_main_process:  # the process that sends the requests
        client = trainer.vllm_generation.vllm_client
        generate = client.generate

        def recording_generate(prompts, **kwargs):
            output = generate(prompts, **kwargs)
            requests.append(
                {
                    "step": trainer.state.global_step,
                    "n": kwargs["n"],
                    "prompts": len(prompts),
                    "max_tokens": kwargs["max_tokens"],
                    "lengths": [len(c) for c in output["completion_ids"]],
                    "logprob_lengths": [len(lp) for lp in output["logprobs"]],
                }
            )
            return output

        client.generate = recording_generate

    budgets_of_call = agreed_budgets if name == "agreed" else local_limit(agreed_budgets)

    def recording_budgets(trainer_, budgets):
        limit, engine_budgets = budgets_of_call(trainer_, budgets)
        calls.append({"step": trainer.state.global_step, "budgets": list(budgets), "limit": limit})
        return limit, engine_budgets

    compute_loss = trainer.compute_loss

    def recording_loss(model, inputs, *a, **k):
        lengths = inputs["completion_mask"].sum(1)
        last = inputs["completion_ids"].gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        rows.append(
            {
                "step": trainer.state.global_step,
                "cycle_position": trainer._step % trainer.args.steps_per_generation,
                "prefix_lengths": inputs["soup_prefix_mask"].sum(1).tolist(),
                "completion_lengths": lengths.tolist(),
                "ends_with_eos": (last == eos).tolist(),
            }
        )
        return compute_loss(model, inputs, *a, **k)

    trainer.compute_loss = recording_loss
    continuation.call_budgets = recording_budgets  # continue_rows looks it up in its module at each call
    try:
        trainer.train()
    finally:
        continuation.call_budgets = agreed_budgets
    with open(os.path.join(out, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"requests": requests, "calls": calls, "rows": rows}, f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--server-url", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    state = PartialState(cpu=True, backend="gloo")
    with without_weight_transfer():
        for name in ("agreed", "local"):
            run(args, state, name, continuation.call_budgets)
    leave_group(state)


if __name__ == "__main__":
    main()

"""Keeping processes in step, and the policy's no-grad forward that every method runs outside its loss.

With several processes, TRL's generation and the model's forward are collective: a weight sync, ZeRO-3's parameter
gathering, a vLLM server request sliced by process. When processes need different amounts of work (history hits,
dynamic sampling's refills, a step whose rows on one process are all whole) each runs as much as the process with the
most, padding with filler rows that it discards.
"""

from __future__ import annotations

import torch
from trl.models.utils import disable_gradient_checkpointing


def most_over_processes(accelerator, count: int) -> int:
    """The largest `count` of any process (every process must call it, in the same order)."""
    if accelerator.num_processes == 1:
        return count
    return int(accelerator.gather(torch.tensor([count], device=accelerator.device)).max())


def on_any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` holds on at least one process (every process must call it, in the same order)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).max() > 0)


@torch.no_grad()
def no_grad_logps(trainer, prompt_ids, prompt_mask, completion_ids, completion_mask, compute_entropy: bool = False):
    """(B, C) log-probs (and entropies, else None) of the trainer's current policy on the given completion tokens,
    no grad, at the trainer's temperature; `per_device_train_batch_size` rows per forward, as GRPOTrainer's own."""
    if completion_ids.size(1) == 0:  # no token to score
        return completion_ids.new_zeros(completion_ids.shape, dtype=torch.float32), None
    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
            batch_size=trainer.args.per_device_train_batch_size,
            compute_entropy=compute_entropy,
        )
    return logps, entropies


def filler_forward(trainer, rows: int) -> None:
    """A no-grad forward over `rows` one-token filler rows, for a process that has nothing to forward while others
    do (ZeRO-3 and DDP forwards are collective)."""
    if rows:
        filler = torch.full((rows, 1), trainer._tokenizer.pad_token_id, device=trainer.accelerator.device)
        ones = torch.ones_like(filler)
        no_grad_logps(trainer, filler, ones, filler, ones)

"""Keeping processes in step, and the policy's no-grad forward that every method runs outside its loss.

With several processes, TRL's generation and the model's forward are collective: a weight sync, ZeRO-3's parameter
gathering, a vLLM server request sliced by process. When processes need different amounts of work (history hits,
dynamic sampling's refills, a step whose rows on one process are all whole) each runs as much as the process with the
most, padding with filler rows that it discards.
"""

from __future__ import annotations

import torch
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import pad


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
def no_grad_logps(
    trainer, prompt_ids, prompt_mask, completion_ids, completion_mask, compute_entropy: bool = False, batch_size=None
):
    """(B, C) log-probs (and entropies, else None) of the trainer's current policy on the given completion tokens,
    no grad, at the trainer's temperature; `batch_size` rows per forward (`per_device_train_batch_size`, as
    GRPOTrainer's own, by default). Every process must make the same number of forwards: a batch without completion
    tokens still runs one (a one-token filler)."""
    if completion_ids.size(1) == 0:  # no token to score, but the forward others make is collective
        filler_forward(trainer, 1)
        return completion_ids.new_zeros(completion_ids.shape, dtype=torch.float32), None
    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
            batch_size=batch_size or trainer.args.per_device_train_batch_size,
            compute_entropy=compute_entropy,
        )
    return logps, entropies


def length_chunks(prompt_lengths: list[int], completion_lengths: list[int], token_budget: int) -> list[list[int]]:
    """Rows (indices) grouped into forward chunks, longest rows first: a chunk padded to its longest prompt and its
    longest completion holds at most `token_budget` tokens (a row longer than the budget gets a chunk of its own)."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: (-(prompt_lengths[i] + completion_lengths[i]), i))
    chunks: list[list[int]] = []
    widest_prompt = widest_completion = 0
    for i in order:
        prompt, completion = max(widest_prompt, prompt_lengths[i]), max(widest_completion, completion_lengths[i])
        if chunks and (len(chunks[-1]) + 1) * (prompt + completion) <= token_budget:
            chunks[-1].append(i)
            widest_prompt, widest_completion = prompt, completion
        else:
            chunks.append([i])
            widest_prompt, widest_completion = prompt_lengths[i], completion_lengths[i]
    return chunks


def pad_rows(rows: list[list[int]], side: str, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows padded on `side` to one width, and their mask."""
    tensors = [torch.tensor(r, dtype=torch.long) for r in rows]
    ids = pad(tensors, padding_value=pad_token_id, padding_side=side)
    mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side=side)
    return ids, mask


@torch.no_grad()
def lockstep_logps(trainer, prompts: list[list[int]], completions: list[list[int]], compute_entropy: bool = False):
    """(B, W) log-probs (and entropies, else None) of each completion after its prompt under the trainer's current
    policy, no grad; W is the longest completion, and positions past a row's completion hold 0.

    Rows are grouped by length (`length_chunks`), each chunk padded to its own widest row and forwarded at once, at
    most `per_device_train_batch_size` times the longest row's tokens per chunk (a training micro-batch's size): a
    call of many short rows makes few forwards, and none pads a short row to the longest. Every process makes as many
    forwards as the process with the most, one-token fillers for the missing ones (ZeRO-3 and DDP forwards are
    collective), also a process with no token to score. Every process must call it, in the same order."""
    device, pad_id = trainer.accelerator.device, trainer._tokenizer.pad_token_id
    width = max((len(c) for c in completions), default=0)
    logps = torch.zeros(len(prompts), width, device=device)
    entropies = torch.zeros(len(prompts), width, device=device) if compute_entropy else None
    rows = [i for i, completion in enumerate(completions) if completion]
    prompt_lengths, completion_lengths = [len(prompts[i]) for i in rows], [len(completions[i]) for i in rows]
    longest = max((p + c for p, c in zip(prompt_lengths, completion_lengths)), default=0)
    chunks = length_chunks(prompt_lengths, completion_lengths, trainer.args.per_device_train_batch_size * longest)
    forwards = most_over_processes(trainer.accelerator, len(chunks))
    for chunk in chunks:
        index = [rows[j] for j in chunk]
        prompt_ids, prompt_mask = (t.to(device) for t in pad_rows([prompts[i] for i in index], "left", pad_id))
        completion_ids, completion_mask = (
            t.to(device) for t in pad_rows([completions[i] for i in index], "right", pad_id)
        )
        chunk_logps, chunk_entropies = no_grad_logps(
            trainer, prompt_ids, prompt_mask, completion_ids, completion_mask, compute_entropy, len(index)
        )
        for k, i in enumerate(index):
            n = len(completions[i])
            logps[i, :n] = chunk_logps[k, :n].float()
            if compute_entropy:
                entropies[i, :n] = chunk_entropies[k, :n].float()
    for _ in range(forwards - len(chunks)):
        filler_forward(trainer, 1)
    return logps, entropies


def filler_forward(trainer, rows: int) -> None:
    """A no-grad forward over `rows` one-token filler rows, for a process that has nothing to forward while others
    do (ZeRO-3 and DDP forwards are collective)."""
    if rows:
        filler = torch.full((rows, 1), trainer._tokenizer.pad_token_id, device=trainer.accelerator.device)
        ones = torch.ones_like(filler)
        no_grad_logps(trainer, filler, ones, filler, ones)

"""Behavior sampling and cutting: what a cycle starts with.

At the start of a cycle (or a refresh) the current policy, the cycle's behavior policy, samples completions for the
cycle's prompts, or, with history-seeded prefixes, a prompt's stored rollouts stand in for them; every row but step
1's fresh ones is then cut by the truncation strategy, and the behavior log-probs of the prefix tokens are kept (a
no-grad forward for fresh rows, the stored denominators for history rows). A strategy that refines its cuts
(`drift`) shortens them when a step is scored, with the policy that continues them (`refine_cuts`).

With several processes every process makes the same generation calls and forwards, with as many rows as the process
with the most (`soup_trl.core.lockstep`).
"""

from __future__ import annotations

import contextlib
import copy

import torch

from ..core.lockstep import lockstep_logps, most_over_processes, pad_rows
from .continuation import max_new_tokens
from .cycle import BehaviorCycle
from .metrics import cut_tokens, log_cut_tokens
from .truncation import TruncationInputs, clamp_prefix_lengths, content_lengths, step_generator


@torch.no_grad()
def sample_cycle(trainer, inputs: list[dict], first_step: int, history=None) -> BehaviorCycle:
    """Behavior samples of the current policy for the cycle's rows `inputs` (its steps from `first_step` on), cut.

    Rows without stored rollouts (`history`, or none) are sampled now: step 1's in full (trained on whole), the later
    steps' in full or up to the strategy's behavior budget. Rows with stored rollouts (any step) are cut from them and
    decode nothing here."""
    args, truncation = trainer.args, trainer.truncation
    rows_per_step = len(inputs) // (args.soup_behavior_steps - first_step)
    prompt_ids, images, multimodal_fields = trainer._tokenize_prompts(copy.deepcopy([x["prompt"] for x in inputs]))
    if images is not None or multimodal_fields:
        raise ValueError("SOUPTrainer with soup_behavior_steps > 1 supports text prompts only.")
    prompt_ids = [list(p) for p in prompt_ids]
    num_rows, step0 = len(prompt_ids), trainer.state.global_step
    if history is not None:
        stored, ages = history.rows(prompt_ids, step0)
    else:
        stored, ages = [None] * num_rows, [float("nan")] * num_rows
    fresh_head = [i for i in range(rows_per_step) if stored[i] is None]
    fresh_tail = [i for i in range(rows_per_step, num_rows) if stored[i] is None]
    completion_ids: list = [None] * num_rows
    sampler_logps: list | None = [None] * num_rows if trainer.use_vllm else None
    budget = truncation.behavior_budget
    if budget is None:  # the cycle's fresh rows in full
        parts = [(fresh_head + fresh_tail, rows_per_step, None)]
    else:  # steps 2..T only up to the prefix budget: as many rows per call as keep its new tokens within a step's
        tail_chunk = rows_per_step * max(1, trainer.max_completion_length // max(budget, 1))
        parts = [(fresh_head, rows_per_step, None), (fresh_tail, tail_chunk, budget)]
    for rows, chunk, limit in parts:
        with max_new_tokens(trainer, limit) if limit is not None else contextlib.nullcontext():
            ids, logps = sample_rows(trainer, [prompt_ids[i] for i in rows], chunk, prompt_ids[0])
        for j, i in enumerate(rows):
            completion_ids[i] = list(ids[j])
            if sampler_logps is not None:
                sampler_logps[i] = [float("nan") if x is None else x for x in logps[j]]
    for i, rollout in enumerate(stored):
        if rollout is not None:
            completion_ids[i] = rollout.completion_ids.tolist()
            if sampler_logps is not None:  # no sampler log-probs are stored: the trainer's stand in (ratio 1)
                sampler_logps[i] = rollout.logps.tolist()

    whole = [i < rows_per_step and stored[i] is None for i in range(num_rows)]
    cut = [i for i in range(num_rows) if not whole[i]]  # every row but step 1's fresh ones
    device = trainer.accelerator.device
    cut_prefix, lengths, behavior_logps, sampled_at = cut_rows(
        trainer, [prompt_ids[i] for i in cut], [completion_ids[i] for i in cut], [stored[i] for i in cut], step0
    )
    width = behavior_logps.size(1)
    index = torch.tensor(cut, dtype=torch.long, device=device)
    prefix_lengths = torch.zeros(num_rows, dtype=torch.long, device=device).index_copy(0, index, cut_prefix)
    positions = cut_positions(cut_prefix, lengths)
    all_sampled_at = torch.full((num_rows, width), step0, dtype=torch.long, device=device)
    return BehaviorCycle(
        inputs=inputs,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
        sampler_logps=sampler_logps,
        behavior_logps=behavior_logps.new_zeros(num_rows, width).index_copy(0, index, behavior_logps),
        prefix_lengths=prefix_lengths,
        cut_positions=torch.full((num_rows,), float("nan"), device=device).index_copy(0, index, positions),
        rows_per_step=rows_per_step,
        whole=whole,
        prefix_sampled_at=all_sampled_at.index_copy(0, index, sampled_at),
        history_age=torch.tensor(ages, dtype=torch.float32, device=device),
        first_step=first_step,
    )


def cut_positions(prefix_lengths: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) prefix length / content length, NaN for empty completions."""
    positions = prefix_lengths.float() / lengths.float().clamp(min=1)
    positions[lengths == 0] = float("nan")
    return positions


def sample_rows(trainer, prompt_ids: list, rows_per_call: int, filler: list[int]) -> tuple[list, list | None]:
    """Sample completions for `prompt_ids` (each prompt once per group row). vLLM takes them in one call; Transformers
    generation takes `rows_per_call` rows per call (one optimizer step's for full completions), so its memory peak
    is on-policy training's, not T times it. With several processes every process makes the same calls with the
    same number of rows, as TRL's generation needs."""
    rows = most_over_processes(trainer.accelerator, len(prompt_ids))
    padded = prompt_ids + [filler] * (rows - len(prompt_ids))
    chunk = len(padded) if trainer.use_vllm else rows_per_call
    completion_ids, logprobs = [], []
    for start in range(0, len(padded), max(chunk, 1)):
        ids, logps = trainer._generate_rows(padded[start : start + chunk], trainer.num_generations)
        completion_ids += list(ids)
        logprobs = None if logps is None else logprobs + list(logps)
    n = len(prompt_ids)
    return completion_ids[:n], None if logprobs is None else logprobs[:n]


def cut_rows(trainer, prompt_ids, completion_ids, stored, step0):
    """Cut the rows to continue: their prefix lengths (B,), content lengths (B,), the behavior log-probs (B, W) of
    the prefix tokens and the step that sampled each (B, W). Behavior log-probs (and entropies when the strategy
    ranks by them) of freshly sampled rows come from one forward pass, those of stored rows from the history. A
    strategy that cuts by length alone is asked first, and the forward then covers prefix positions only (up to
    each row's prefix). Every process makes the same behavior forwards, also one with no row to cut."""
    args, device, truncation = trainer.args, trainer.accelerator.device, trainer.truncation
    log_cuts = args.soup_log_cut_tokens and not truncation.refines  # refined cuts are logged when a step is scored
    if not completion_ids:  # nothing to cut on this process (other processes may still log cut tokens)
        if log_cuts:
            log_cut_tokens(trainer, [])
        lockstep_logps(trainer, [], [])  # the forward other processes may run
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 0, device=device), torch.zeros(0, 0, dtype=torch.long, device=device)
    pad_id = trainer._tokenizer.pad_token_id
    completion_tensor, completion_mask = (t.to(device) for t in pad_rows(completion_ids, "right", pad_id))
    lengths = content_lengths(completion_tensor, completion_mask, trainer.eos_token_ids)
    behavior = TruncationInputs(completion_tensor, completion_mask, lengths)
    if truncation.needs_logps or truncation.needs_entropy:
        behavior.logps, behavior.entropies = cut_rows_logps(
            trainer, prompt_ids, completion_ids, stored, completion_tensor.size(1), truncation.needs_entropy
        )
    cut_prefix = clamp_prefix_lengths(truncation.cut(behavior).to(device), lengths, trainer.max_completion_length)
    if log_cuts:
        log_cut_tokens(trainer, cut_tokens(completion_tensor, completion_mask, cut_prefix))
    prefix_width = int(cut_prefix.max())
    logps = behavior.logps
    if logps is None:  # only each row's prefix needs its log-probs
        prefixes = [c[:k] for c, k in zip(completion_ids, cut_prefix.tolist())]
        logps, _ = cut_rows_logps(trainer, prompt_ids, prefixes, stored, prefix_width, False)
    sampled_at = torch.full((len(completion_ids), prefix_width), step0, dtype=torch.long, device=device)
    for j, rollout in enumerate(stored):
        if rollout is not None:
            steps = rollout.sampled_at[:prefix_width].to(device, torch.long)
            sampled_at[j, : steps.numel()] = steps
    return cut_prefix, lengths, logps[:, :prefix_width], sampled_at


def cut_rows_logps(trainer, prompt_ids, completion_ids, stored, width, entropies):
    """(B, width) behavior log-probs (and entropies) of the rows to cut: a forward pass over the freshly sampled rows,
    the stored values for rows from the history (a forward for them too when entropies are needed but were not
    stored; their denominators stay the stored ones, of the policy that sampled the tokens). The forward is the
    processes' lockstep forward (`soup_trl.core.lockstep.lockstep_logps`)."""
    device = trainer.accelerator.device
    forward = [j for j, r in enumerate(stored) if r is None or (entropies and r.entropies is None)]
    logps = torch.zeros(len(completion_ids), width, device=device)
    ents = torch.zeros(len(completion_ids), width, device=device) if entropies else None
    f_logps, f_ents = lockstep_logps(
        trainer, [prompt_ids[j] for j in forward], [completion_ids[j][:width] for j in forward], entropies
    )
    if forward:
        logps[forward, : f_logps.size(1)] = f_logps
        if entropies:
            ents[forward, : f_ents.size(1)] = f_ents
    for j, rollout in enumerate(stored):
        if rollout is None:
            continue
        n = min(width, rollout.logps.numel())
        logps[j, :n] = rollout.logps[:n].to(device)
        if entropies and rollout.entropies is not None:
            ents[j, :n] = rollout.entropies[:n].to(device, torch.float32)
    return logps, ents


def refine_cuts(trainer, cycle: BehaviorCycle, rows: slice) -> None:
    """Refine the step's proposed cuts with the policy that continues them (`TruncationStrategy.refine`), in the
    cycle itself, and log their cut tokens (the cycle logged none for such a strategy)."""
    index = [rows.start + j for j, w in enumerate(cycle.whole[rows]) if not w]
    device, accelerator = trainer.accelerator.device, trainer.accelerator
    log_cuts = trainer.args.soup_log_cut_tokens
    if not index:  # no row to cut here; other processes have some
        lockstep_logps(trainer, [], [])  # the forward they run
        if log_cuts:
            log_cut_tokens(trainer, [])
        return
    proposed = cycle.prefix_lengths[index]
    width = int(proposed.max())
    pad_id = trainer._tokenizer.pad_token_id
    completion_tensor, completion_mask = (
        t.to(device) for t in pad_rows([cycle.completion_ids[i] for i in index], "right", pad_id)
    )
    current, _ = lockstep_logps(trainer, [cycle.prompt_ids[i] for i in index], [cycle.completion_ids[i][:width] for i in index])
    current = torch.nn.functional.pad(current, (0, width - current.size(1)))  # (B, width)
    lengths = content_lengths(completion_tensor, completion_mask, trainer.eos_token_ids)
    inputs = TruncationInputs(
        completion_tensor[:, :width], completion_mask[:, :width], lengths, logps=cycle.behavior_logps[index][:, :width]
    )
    generator = step_generator(trainer.args.seed, trainer.state.global_step, accelerator.process_index)
    refined = trainer.truncation.refine(inputs, current, proposed, generator)
    refined = torch.minimum(refined.to(device).long(), proposed)
    cycle.prefix_lengths[index] = refined
    cycle.cut_positions[index] = cut_positions(refined, lengths)
    if log_cuts:
        log_cut_tokens(trainer, cut_tokens(completion_tensor, completion_mask, refined))

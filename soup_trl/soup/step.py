"""Scoring one optimizer step of a cycle: the plan of the step goes through GRPOTrainer's own scoring, and its output
gets SOUP's token-level denominators.

`score_step` serves the step's plan to generation (whole rows as sampled, prefixes continued by the current policy:
`soup_trl.soup.continuation`), lets GRPOTrainer reward and score the spliced rows, applies dynamic sampling when it is
on, then `apply_prefixes`: behavior log-probs on prefix tokens (`old_per_token_logps`), `soup_prefix_mask`, the DAPO
normaliser of the step, and the vLLM sampler-mismatch correction of spliced rows. Groups are only ever moved whole:
the step's rows are shuffled by group, then split into gradient-accumulation micro-batches.
"""

from __future__ import annotations

import contextlib

import torch
from trl.trainer.utils import split_tensor_dict

from ..core.lockstep import on_any_process
from ..core.masks import loss_tokens
from .behavior import refine_cuts
from .cycle import BehaviorCycle
from .history import history_fields
from .metrics import SAMPLING_METRICS, log_cycle_metrics, sampling_metrics
from .ops import dapo_num_items, group_permutation, importance_sampling_ratio, mix_old_logps, prefix_mask_from_lengths


def score_step(trainer, cycle: BehaviorCycle, step: int) -> list[dict]:
    """The micro-batches of the cycle's `step` (counted from the cycle's first step), scored."""
    rows = cycle.step_rows(step)
    whole = cycle.whole[rows]
    if trainer.truncation.refines and on_any_process(trainer.accelerator, not all(whole)):
        refine_cuts(trainer, cycle, rows)
    prefix_lengths = cycle.prefix_lengths[rows]
    plan = cycle.plan(rows)
    metrics = trainer._metrics["train"]
    # where the step's own scoring logs TRL's values (`get`: reading a missing key would create it in the defaultdict,
    # and TRL would log an empty metric on every step)
    marks = {name: len(metrics.get(name, ())) for name in SAMPLING_METRICS}
    with without_old_logps_forward(trainer):
        with trainer._serving(plan):
            output, rewards = trainer._score(cycle.inputs[rows])
        if not plan.used:
            raise RuntimeError("SOUP: GRPOTrainer scored the step without asking for its completions.")
        # Refilled groups are fresh on-policy groups: no prefix (source row -1)
        output, source = trainer._dynamic_sampling(output, rewards) if trainer.args.dynamic_sampling else (output, None)

    spliced = not all(whole)  # a step of whole rows only is on-policy: no stored denominators, as in GRPO
    behavior_logps = cycle.behavior_logps[rows] if spliced else None
    sampled_at = cycle.prefix_sampled_at[rows]
    device = prefix_lengths.device
    if source is None:
        source = torch.arange(cycle.rows_per_step, device=device)
    else:
        source = source.to(device)
        prefix_lengths = torch.where(source >= 0, prefix_lengths[source.clamp(min=0)], 0)
        sampled_at = sampled_at[source.clamp(min=0)]
        if behavior_logps is not None:  # rows without a prefix never read it (their prefix mask is 0)
            behavior_logps = behavior_logps[source.clamp(min=0).to(behavior_logps.device)]
    output = apply_prefixes(trainer, output, prefix_lengths, behavior_logps)
    if behavior_logps is not None and trainer.use_vllm and trainer.vllm_importance_sampling_correction:
        # TRL measured the step's mismatch before the prefix denominators were the behavior policy's: its values
        # compared the current trainer with the behavior engine on prefix tokens (policy drift, not sampler mismatch)
        mode = trainer.vllm_importance_sampling_mode
        mask = loss_tokens(output)
        corrected = sampling_metrics(
            trainer, output["old_per_token_logps"], output["sampling_per_token_logps"],
            output["importance_sampling_ratio"], mask, mode.startswith("sequence"),
        )
        for name, value in corrected.items():
            metrics[name][marks[name]] = value
    if trainer.history is not None:
        output.update(history_fields(output, source, prefix_lengths, sampled_at, trainer.state.global_step, plan))
    log_cycle_metrics(
        trainer,
        step,
        cycle.cut_positions[rows] if spliced else None,
        cycle.history_age[rows] if trainer.history is not None else None,
    )

    # Shuffle whole groups within the step, then split it into its gradient-accumulation micro-batches
    permutation = group_permutation(cycle.rows_per_step, trainer.num_generations)
    output = {key: permute_rows(value, permutation) for key, value in output.items()}
    return split_tensor_dict(output, trainer.args.gradient_accumulation_steps)


@contextlib.contextmanager
def without_old_logps_forward(trainer):
    """Score a step of a cycle without GRPOTrainer's no-grad forward for `old_per_token_logps`.

    Step 1's samples come from the policy whose loss forward follows, so their denominators are the detached loss
    log-probs, exactly as in on-policy training. On spliced steps the continuation tokens' denominators are the
    same current policy's, so `apply_prefixes` leaves them NaN ("the current policy at loss time") and the loss
    forward fills them in (`SOUPTrainer._on_policy_forward`); only the prefix tokens carry stored behavior log-probs.
    vLLM's sampler-mismatch correction needs trainer log-probs at scoring time, so with it the forward is kept.
    GRPOTrainer decides by `steps_per_generation`, which is read for that and nothing else while a step is scored.
    """
    if trainer.use_vllm and trainer.vllm_importance_sampling_correction:
        yield
        return
    cycle_steps = trainer.args.steps_per_generation
    trainer.args.steps_per_generation = trainer.args.gradient_accumulation_steps
    try:
        yield
    finally:
        trainer.args.steps_per_generation = cycle_steps


def apply_prefixes(trainer, output: dict, prefix_lengths: torch.Tensor, behavior_logps: torch.Tensor | None) -> dict:
    """The scored step with SOUP's fields: `soup_prefix_mask`, token-level denominators (behavior log-probs on prefix
    tokens, the current policy's or NaN elsewhere), the vLLM correction of spliced rows and the step's DAPO count (of
    the tokens in the loss: without the prefix when `soup_prefix_loss` leaves it out)."""
    completion_mask = output["completion_mask"]
    prefix_mask = prefix_mask_from_lengths(prefix_lengths.to(completion_mask.device), completion_mask.size(1))
    output["soup_prefix_mask"] = prefix_mask * completion_mask
    prefix_loss = trainer.prefix_loss
    loss_mask = prefix_loss.loss_mask(loss_tokens(output), prefix_mask)  # the tokens in the loss
    if not prefix_loss.trains_prefix:  # the step's DAPO count: the tokens in the loss (a collective: every process)
        output["num_items_in_batch"] = trainer.accelerator.gather(loss_mask.sum()).sum()
    if behavior_logps is not None:
        # Continuation tokens: the current policy's log-probs when GRPOTrainer computed them, else NaN, filled in by
        # the loss forward of the same policy (see `without_old_logps_forward`)
        current = output.get("old_per_token_logps")
        if current is None:
            current = torch.full(completion_mask.shape, float("nan"), device=completion_mask.device)
        output["old_per_token_logps"] = mix_old_logps(current, behavior_logps, prefix_mask)
        if trainer.use_vllm and trainer.vllm_importance_sampling_correction:
            # Prefix tokens were sampled by the behavior engine: compare them with the behavior trainer log-probs,
            # so that the correction measures sampler mismatch, not policy drift. It covers the tokens in the loss
            # (with "mask", the continuation only: a prefix out of the loss is context, as the prompt is).
            output["importance_sampling_ratio"] = importance_sampling_ratio(
                output["old_per_token_logps"],
                output["sampling_per_token_logps"],
                loss_mask,
                trainer.vllm_importance_sampling_mode,
                trainer.vllm_importance_sampling_clip_min,
                trainer.vllm_importance_sampling_clip_max,
            )
    output["num_items_in_batch"] = dapo_num_items(
        output["num_items_in_batch"], trainer.args.steps_per_generation, trainer.args.gradient_accumulation_steps
    )
    return output


def with_prefix_mask(inputs: dict) -> dict:
    """A batch without prefixes (on-policy, or evaluation) in SOUP's form: `soup_prefix_mask` all 0."""
    inputs["soup_prefix_mask"] = torch.zeros_like(inputs["completion_mask"])
    return inputs


def permute_rows(value, permutation: torch.Tensor):
    """A batch entry's rows in `permutation`'s order (tensors with a batch dimension and per-row lists)."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value[permutation.to(value.device)]
    if isinstance(value, list):
        return [value[i] for i in permutation.tolist()]
    return value

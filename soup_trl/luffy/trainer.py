"""`LUFFYTrainer`: LUFFY (Learning to reason Under oFF-policY guidance) on TRL's GRPOTrainer, off-policy traces inside
each group."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..core.generation import patched_attribute
from ..core.trainer import MethodTrainer, PolicyForward
from .config import LUFFYConfig
from .model_card import PAPER
from .ops import (
    off_policy_metrics,
    off_policy_sums,
    off_policy_token_loss,
    strip_reopened_think,
    trace_content,
    trace_row_mask,
)

logger = logging.getLogger(__name__)

@dataclass
class _TracePlan:
    """What `_generate_single_turn` serves for one generation batch: a trace for the trace rows, None elsewhere."""

    traces: list[str | None]
    used: bool = False


class LUFFYTrainer(MethodTrainer):
    """
    LUFFY ([Learning to Reason under Off-Policy Guidance](https://huggingface.co/papers/2504.14945)) on top of TRL's
    `GRPOTrainer`.

    Each group of G = `num_generations` rows holds G - n rows sampled from the current policy and n =
    `luffy_num_traces` rows whose completion is the prompt's off-policy trace (the dataset column
    `luffy_trace_field`, tokenized without special tokens, plus EOS, cut to `max_completion_length`; a leading
    `<think>\\n` is dropped when the templated prompt already ends with one). Trace rows are rewarded and enter the
    group's advantage like any row. Sampled tokens get GRPOTrainer's DAPO loss; trace tokens get -A * f(p), with p the
    current policy's probability of the token at the trainer's temperature and f(p) = p / (p + gamma) (policy
    shaping; no behavior probability, no clip). One token-level normaliser, `num_items_in_batch`, counts both kinds.

    Before training, prompts whose trace does not fit the model's context window (prompt + trace + EOS longer than
    the model config's `max_position_embeddings`) are dropped, as LUFFY's data rule does; a row without a trace fails
    with an error naming the column. Evaluation samples all rows (no traces).

    Hooks overridden (everything else is GRPOTrainer's):

    - `_score` (`MethodTrainer`'s scoring of one batch): serves the trace plan of the batch while GRPOTrainer scores
      it, then adds `off_policy_mask` (B, C) (1 on trace tokens). Dynamic sampling's refills are scored the same way.
    - `_generate_single_turn`: samples only the G - n on-policy rows of each group and puts the trace tokens in the
      trace rows (trace rows are never decoded).
    - `_calculate_rewards`: logs the mean reward of sampled and of trace rows separately (rows a reward function
      failed on are unscorable, as in every trainer of the package: `MethodTrainer._calculate_rewards`).
    - `_loss_inputs` / `_after_loss` (`MethodTrainer`'s loss-forward hooks): GRPOTrainer's loss gets the batch with
      trace tokens zeroed in `tool_mask` (its mask of tokens the policy did not write), so that it covers sampled
      tokens only; then the trace tokens' shaped loss, computed from that same forward's log-probs (with their
      graph, no extra forward pass), is added, divided by the same DAPO normaliser.
    - `_prepare_train_dataset`: the context-window rule above, before the data checks every trainer runs.

    `MethodTrainer` adds what every method of the package shares: data checks, guarded rewards, the compact console,
    complete checkpoints (a checkpoint whose write was interrupted is never resumed from), the model card.

    Metrics: `luffy/off_policy_token_frac` (trace tokens / loss tokens), `luffy/off_policy_prob_mean` (mean p on trace
    tokens), `luffy/shaping_weight_mean` (mean gradient weight d f(p) / d log p = gamma * p / (p + gamma)^2 on trace
    tokens, the factor that replaces the importance ratio), `luffy/on_policy_reward`, `luffy/trace_reward` and
    `luffy/dropped_prompts` (prompts dropped by the data rule).

    Deviations from LUFFY's released code (a verl fork): the loss is normalised by the token count of the generation
    batch (the package's DAPO normaliser), not by the padded length; sampled tokens keep DAPO's clip (the released
    script removes it); no entropy bonus (the released script uses 0.001; TRL's `entropy_coef` would apply to sampled
    tokens only); advantages follow `scale_rewards` (TRL's default "group" divides by the group's std, as the LUFFY
    paper's formula does; the released script does not: set `scale_rewards="none"` for that); with `beta` > 0 the KL
    term covers sampled tokens only. With n > 1 the n trace rows of a group repeat the prompt's one trace.
    """

    _tag_names = ["trl", "grpo", "luffy"]
    _name = "LUFFY"
    config_class = LUFFYConfig
    paper = PAPER
    console_fields = (("luffy/off_policy_token_frac", "off-policy", "%"),)
    luffy_dropped_prompts = 0  # prompts dropped by the context-window rule (set by `_prepare_train_dataset`)

    def __init__(self, model, reward_funcs=None, args: LUFFYConfig | None = None, **kwargs):
        self.reject_multi_turn(kwargs, "LUFFYTrainer: traces are single-turn.")
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._luffy_plan: _TracePlan | None = None

    def _prepare_train_dataset(self, dataset):
        dataset, self.luffy_dropped_prompts = self._filter_traces(dataset)
        return dataset

    # ------------------------------------------------------------------ data

    def _trace_ids(self, prompt_ids: list[list[int]], traces: list[str]) -> list[list[int]]:
        """Token ids of trace rows' completions, EOS included, before the cut to max_completion_length."""
        if not traces:
            return []
        prompt_texts = self._tokenizer.batch_decode(prompt_ids)
        traces = [strip_reopened_think(trace, prompt) for trace, prompt in zip(traces, prompt_texts)]
        eos = self._tokenizer.eos_token_id
        return [ids + [eos] for ids in self._tokenizer(traces, add_special_tokens=False)["input_ids"]]

    def _filter_traces(self, dataset, chunk: int = 256):
        """Check that every row has a trace and drop the prompts whose trace does not fit the model's context."""
        column = self.args.luffy_trace_field
        if not hasattr(dataset, "column_names"):
            raise TypeError(f"LUFFYTrainer needs a map-style datasets.Dataset to check its traces, got {type(dataset)}.")
        if column not in dataset.column_names:
            raise ValueError(
                f"luffy_trace_field={column!r}: the training dataset has no column {column!r}. Available columns: "
                f"{sorted(dataset.column_names)}. Set luffy_trace_field to the column holding the off-policy traces."
            )
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        keep, missing, cut = [], [], 0
        for start in range(0, len(dataset), chunk):
            rows = dataset[start : start + chunk]
            prompt_ids, _, _ = self._tokenize_prompts(rows["prompt"])
            found = {}  # row -> (prompt ids, trace)
            for offset, (prompt, value) in enumerate(zip(prompt_ids, rows[column])):
                try:
                    found[start + offset] = prompt, trace_content(value, column)
                except ValueError as err:
                    missing.append((start + offset, str(err)))
            prompts, traces = zip(*found.values()) if found else ((), ())
            for row, prompt, ids in zip(found, prompts, self._trace_ids(list(prompts), list(traces))):
                if context is None or len(prompt) + len(ids) <= context:
                    keep.append(row)
                    cut += len(ids) > self.max_completion_length
        if missing:
            first = "; ".join(f"row {i}: {reason}" for i, reason in missing[:3])
            raise ValueError(
                f"luffy_trace_field={column!r}: {len(missing)} of {len(dataset)} training rows have no usable trace "
                f"({first}). Every prompt needs its off-policy trace in column {column!r}."
            )
        dropped = len(dataset) - len(keep)
        if dropped:
            logger.warning(
                "LUFFY: dropped %d of %d prompts whose prompt + trace + EOS exceeds the model's context (%d tokens).",
                dropped, len(dataset), context,
            )
            if not keep:
                raise ValueError(f"LUFFY: every prompt's trace exceeds the model's context ({context} tokens).")
            dataset = dataset.select(keep, keep_in_memory=True)
        if cut:
            logger.warning(
                "LUFFY: %d traces are longer than max_completion_length=%d tokens and will be cut to it.",
                cut, self.max_completion_length,
            )
        return dataset, dropped

    # ------------------------------------------------------------------ generation and scoring

    def _score(self, inputs):
        if not self.model.training:  # evaluation samples every row
            output, rewards = super()._score(inputs)
            output["off_policy_mask"] = torch.zeros_like(output["completion_mask"])
            return output, rewards

        args = self.args
        column = args.luffy_trace_field
        is_trace = trace_row_mask(len(inputs), self.num_generations, args.luffy_num_traces)
        if column not in inputs[0]:
            raise RuntimeError(f"LUFFY: the training batch has no column {column!r} (luffy_trace_field).")
        plan = _TracePlan([trace_content(x[column], column) if t else None for x, t in zip(inputs, is_trace.tolist())])
        with self._serving(plan):
            output, rewards = super()._score(inputs)
        if not plan.used:
            raise RuntimeError("LUFFY: GRPOTrainer scored the batch without asking for its completions.")

        completion_mask = output["completion_mask"]
        output["off_policy_mask"] = completion_mask * is_trace.to(completion_mask.device).unsqueeze(1).long()  # (B, C)
        self._metrics["train"]["luffy/dropped_prompts"].append(float(self.luffy_dropped_prompts))
        return output, rewards

    def _serving(self, plan: _TracePlan):
        """While active, `_generate_single_turn` and `_calculate_rewards` serve `plan` (GRPOTrainer calls them from
        inside its scoring, so the plan cannot travel in a call)."""
        return patched_attribute(self, "_luffy_plan", plan)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        plan = self._luffy_plan
        if plan is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if plan.used or len(prompt_ids) != len(plan.traces):
            raise RuntimeError("LUFFY: the generation call does not match the batch's trace plan.")
        if images is not None or multimodal_fields:
            raise ValueError("LUFFYTrainer supports text prompts only.")
        plan.used = True
        sampled_rows = [i for i, trace in enumerate(plan.traces) if trace is None]
        sampled, sampled_logps = super()._generate_single_turn(
            [prompt_ids[i] for i in sampled_rows], None, {}, num_generations - self.args.luffy_num_traces
        )
        trace_rows = [i for i, trace in enumerate(plan.traces) if trace is not None]
        trace_ids = self._trace_ids([prompt_ids[i] for i in trace_rows], [plan.traces[i] for i in trace_rows])

        completion_ids = [None] * len(prompt_ids)
        logprobs = None if sampled_logps is None else [None] * len(prompt_ids)
        for k, i in enumerate(sampled_rows):
            completion_ids[i] = list(sampled[k])
            if logprobs is not None:
                logprobs[i] = list(sampled_logps[k])
        for i, ids in zip(trace_rows, trace_ids):
            completion_ids[i] = ids[: self.max_completion_length]
            if logprobs is not None:  # the sampler did not write these tokens: no sampler log-probs (NaN)
                logprobs[i] = [float("nan")] * len(completion_ids[i])
        return completion_ids, logprobs

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F)
        if self._luffy_plan is not None:  # gathered rows of all processes, whole groups in order
            rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
            rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
            is_trace = trace_row_mask(len(rewards), self.num_generations, self.args.luffy_num_traces).to(rewards.device)
            self._metrics["train"]["luffy/on_policy_reward"].append(torch.nanmean(rewards[~is_trace]).item())
            self._metrics["train"]["luffy/trace_reward"].append(torch.nanmean(rewards[is_trace]).item())
        return rewards_per_func

    # ------------------------------------------------------------------ loss

    def _loss_inputs(self, inputs: dict) -> dict:
        # GRPOTrainer's loss skips the tokens its `tool_mask` zeroes (tokens the policy did not write): so do traces
        off_policy_mask = inputs["off_policy_mask"]
        tool_mask = inputs.get("tool_mask", torch.ones_like(off_policy_mask))
        return {**inputs, "tool_mask": tool_mask * (1 - off_policy_mask)}

    def _after_loss(self, loss, inputs, forward: PolicyForward):
        off_policy_mask = inputs["off_policy_mask"]
        logps = forward.logps  # (B, C), graph kept
        gamma = self.args.luffy_shaping_gamma
        shaped = off_policy_token_loss(logps, inputs["advantages"], off_policy_mask, gamma)  # (B, C)
        loss = loss + shaped.sum() / self._dapo_normaliser(inputs)
        self._log_off_policy_metrics(logps, off_policy_mask, inputs["completion_mask"])
        return loss

    def _dapo_normaliser(self, inputs) -> torch.Tensor:
        """The normaliser of GRPOTrainer's DAPO loss for this micro-batch (same formula as `_compute_loss`)."""
        normaliser = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            normaliser = normaliser * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normaliser

    def _log_off_policy_metrics(self, logps, off_policy_mask, completion_mask):
        totals = off_policy_sums(logps, off_policy_mask, completion_mask, self.args.luffy_shaping_gamma)
        self._log_sums(totals, off_policy_metrics)

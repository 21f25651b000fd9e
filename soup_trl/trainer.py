"""SOUPTrainer: GRPOTrainer with token-level single-sample mix-policy batches."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import pad, split_tensor_dict

from .budgets import transformers_row_budgets, vllm_row_budgets
from .config import SOUPConfig
from .core.trainer import MethodTrainer, PolicyForward
from .dynamic_sampling import PromptStream, concat_batches, group_has_variance, group_rows, take_rows
from .history import Record, RolloutHistory, prompt_key, trained_rollouts, warn_if_dropout
from .model_card import PAPER, soup_card_section
from .ops import (
    continuation_budgets,
    dapo_num_items,
    fill_current_logps,
    fit_width,
    group_permutation,
    importance_sampling_ratio,
    mix_old_logps,
    prefix_mask_from_lengths,
    splice,
    stats_to_metrics,
    step_major_order,
    token_stats,
)
from .truncation import (
    CUT_TOKENS_FILE,
    TruncationInputs,
    clamp_prefix_lengths,
    content_lengths,
    cut_tokens,
    get_truncation_strategy,
    step_generator,
)

logger = logging.getLogger(__name__)


class _StepMajorSampler(torch.utils.data.Sampler):
    """Reorders every generation batch of a sampler with `step_major_order` (see there)."""

    def __init__(self, sampler, num_steps: int, num_processes: int, rows_per_step: int):
        self.sampler = sampler
        self.order = step_major_order(num_steps, num_processes, rows_per_step)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == len(self.order):
                yield from (batch[i] for i in self.order)
                batch = []
        yield from batch  # an incomplete last batch is left as it is

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)


@dataclass
class _GenerationPlan:
    """What `_generate_single_turn` serves for one scored step instead of sampling from scratch: per row, either a
    whole behavior completion (served as it is) or a behavior prefix for the current policy to continue."""

    prompt_ids: list[list[int]]
    tokens: list[list[int]]  # whole completions (rows with `whole`) and prefixes to continue (the others)
    whole: list[bool]
    logprobs: list[list[float]] | None = None  # sampler log-probs of `tokens` (vLLM), else None
    filler: list[int] | None = None  # a prompt to decode and discard when other processes continue rows and this none
    used: bool = False

    @property
    def prefixes(self) -> list[list[int]] | None:
        """The prefixes this step continues (None when every row is a whole completion)."""
        prefixes = [t for t, w in zip(self.tokens, self.whole) if not w]
        return prefixes or None


@dataclass
class _BehaviorCycle:
    """Everything one behavior sampling leaves for the T steps of its cycle (one process's rows)."""

    inputs: list[dict]  # dataset rows, T * rows_per_step, groups contiguous
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    sampler_logps: list[list[float]] | None  # vLLM sampling log-probs, None on the transformers path
    behavior_logps: torch.Tensor  # (N, W) behavior log-probs of the prefix tokens (0 beyond a row's prefix)
    prefix_lengths: torch.Tensor  # (N,) prefix kept (0 for whole rows)
    cut_positions: torch.Tensor  # (N,) prefix length / content length, NaN for whole rows and empty completions
    rows_per_step: int
    whole: list[bool]  # rows trained on as sampled (step 1's fresh rows); the others are cut and continued
    prefix_sampled_at: torch.Tensor  # (N, W) the optimizer step that sampled each prefix token
    history_age: torch.Tensor  # (N,) age in steps of a row's stored group (history rows), NaN for fresh rows
    first_step: int = 0  # the step of the dataloader's cycle this sampling starts at (> 0 after a refresh)


def _upgraded_cycle(saved: dict) -> dict:
    """A saved cycle in today's fields: checkpoints written before history-seeded prefixes kept behavior log-probs for
    steps 2..T only and trained step 1 on whole rows."""
    if "whole" in saved:
        return saved
    rows, per_step = len(saved["completion_ids"]), saved["rows_per_step"]
    tail = saved["behavior_logps"]
    saved["behavior_logps"] = torch.cat([tail.new_zeros(per_step, tail.size(1)), tail])
    saved["whole"] = [i < per_step for i in range(rows)]
    saved["cut_positions"][:per_step] = float("nan")
    saved["prefix_sampled_at"] = torch.zeros(rows, tail.size(1), dtype=torch.long)
    saved["history_age"] = torch.full((rows,), float("nan"))
    return saved


class SOUPTrainer(MethodTrainer):
    """
    SOUP (Single-sample Mix-pOlicy Unified Paradigm) on top of TRL's `GRPOTrainer`.

    Every `soup_behavior_steps` (T) optimizer steps, the current policy samples full completions for the T steps'
    prompts in one generation call. Step 1 trains on its own samples as GRPO does. For steps 2..T every stored
    completion is cut to a prefix by the configured truncation strategy, the current policy writes the
    continuation from prompt + prefix, the spliced sequence is rewarded and its group advantages computed, and the
    loss uses token-level ratios: prefix tokens against the behavior log-probs kept from sampling time,
    continuation tokens against the current policy. With T = 1 it is GRPOTrainer, unchanged.

    Hooks overridden (everything else, including the loss, is GRPOTrainer's; `MethodTrainer` adds what every method
    of the package shares: data checks, guarded rewards, the compact console, complete checkpoints, the model card):

    - `_prepare_inputs`: the cycle schedule. Samples behavior completions at the start of a cycle, then scores one
      optimizer step at a time through GRPOTrainer's own `_generate_and_score_completions`, and post-processes its
      output: behavior log-probs on prefix tokens (`old_per_token_logps`), `soup_prefix_mask`, the DAPO normaliser
      of the step, and the vLLM sampler-mismatch correction of spliced rows. Groups are only ever moved whole.
    - `_generate_single_turn`: during SOUP scoring, returns the stored behavior completions (step 1) or writes the
      continuations of the prefixes with the current policy, each row within its own token budget (steps 2..T).
    - `_on_policy_forward` / `_after_loss` (`MethodTrainer`'s loss-forward hooks): the continuation tokens' NaN
      denominators become the loss forward's own log-probs, and SOUP's per-token diagnostics are logged from that
      forward (no extra forward pass).
    - `_get_train_sampler`: with several processes, reorders each cycle's batch so that every optimizer step trains
      on the same global rows whatever the number of processes.
    - `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: a checkpoint taken in the middle of a cycle
      keeps each process's behavior samples, and a resumed run finishes the cycle with them.
    - `_generate_and_score_completions` / `_calculate_rewards` (only with `dynamic_sampling=True`): DAPO's dynamic
      sampling; zero-variance groups are replaced by groups of further prompts (see `soup_trl.dynamic_sampling`).
      Rows a reward function failed on are unscorable (`MethodTrainer._calculate_rewards`); the rewards are kept for
      dynamic sampling's group filter.
    - `_card_section`: the run's SOUP settings and recipe in the model card.

    Every batch handed to `compute_loss` carries `soup_prefix_mask` (1 on off-policy prefix tokens).
    """

    _tag_names = ["trl", "grpo", "soup"]
    _name = "SOUP"
    config_class = SOUPConfig
    paper = PAPER
    console_fields = (("dynamic_sampling/kept_group_frac", "kept groups", "%"),)

    def __init__(self, model, reward_funcs=None, args: SOUPConfig | None = None, **kwargs):
        args = self._checked_args(model, args)
        if args.soup_uses_cycles:
            self.reject_multi_turn(
                kwargs,
                f"soup_behavior_steps={args.soup_behavior_steps}, soup_behavior_source={args.soup_behavior_source!r}: "
                "SOUP splices single-turn completions. Use soup_behavior_steps=1 and soup_behavior_source='fresh' for "
                "multi-turn rollouts.",
            )
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self.soup_truncation = get_truncation_strategy(args.soup_truncation)
        self._soup_history: RolloutHistory | None = None
        self._soup_step_keys: list[bytes] = []  # the prompt key of each row of the step being trained
        if args.soup_behavior_source == "history":
            self._soup_history = RolloutHistory(self.num_generations, args.soup_history_max_age, args.soup_history_pool)
            warn_if_dropout(self.model)
        self._soup_cycle: _BehaviorCycle | None = None
        self._soup_step_batches: list[dict] | None = None
        self._soup_plan: _GenerationPlan | None = None
        self._soup_rewards_per_func: torch.Tensor | None = None
        self._soup_prompts: PromptStream | None = None  # refill prompts of dynamic sampling
        self._soup_drift_sums = torch.zeros(2, dtype=torch.float64)  # adaptive refresh: sum |log ratio|, tokens

    # ------------------------------------------------------------------ schedule

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if self.args.soup_behavior_steps == 1 or self.accelerator.num_processes == 1:
            return sampler
        rows_per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        return _StepMajorSampler(sampler, self.args.soup_behavior_steps, self.accelerator.num_processes, rows_per_step)

    def _prepare_inputs(self, generation_batch):
        if not self.model.training or not self.args.soup_uses_cycles:
            return self._with_prefix_mask(super()._prepare_inputs(generation_batch))

        accumulation = self.args.gradient_accumulation_steps
        cycle_position = self._step % self.args.steps_per_generation  # micro-step within the cycle
        step = cycle_position // accumulation  # optimizer step within the dataloader's cycle
        if cycle_position == 0 or self._soup_cycle is None:
            if cycle_position != 0:
                logger.warning(
                    "SOUP: no behavior samples for this cycle (resumed mid-cycle?); sampling new behavior completions "
                    "with the current policy for the remaining steps of the cycle."
                )
            self._soup_cycle = self._sample_rest_of_cycle(generation_batch, step)
        if cycle_position % accumulation == 0 or self._soup_step_batches is None:
            if self.args.soup_refresh_drift is not None:
                reason = self._refresh_reason(step)
                self._metrics["train"]["soup/refresh"].append(float(reason is not None))
                if reason is not None:
                    logger.info("SOUP: refreshing the behavior samples at step %d: %s.", self.state.global_step + 1, reason)
                    self._soup_cycle = self._sample_rest_of_cycle(generation_batch, step)
                self._soup_drift_sums.zero_()
            self._soup_step_batches = self._score_cycle_step(step - self._soup_cycle.first_step)
        return self._soup_step_batches[cycle_position % accumulation]

    def _sample_rest_of_cycle(self, generation_batch: list[dict], step: int) -> _BehaviorCycle:
        """Behavior samples from the current policy for the cycle's steps from `step` on (all of it at step 0)."""
        rows_per_step = len(generation_batch) // self.args.soup_behavior_steps
        return self._sample_behavior_cycle(generation_batch[step * rows_per_step :], first_step=step)

    def _refresh_reason(self, step: int) -> str | None:
        """Why the behavior samples are refreshed before `step` (adaptive refresh), or None: the last step's mean
        |log ratio| between the current and the behavior policy on prefix tokens, over every process, exceeded
        `soup_refresh_drift`, and the samples have served at least `soup_refresh_min_steps` steps."""
        served = step - self._soup_cycle.first_step
        if step == 0 or served < self.args.soup_refresh_min_steps:
            return None
        total, count = self.accelerator.reduce(self._soup_drift_sums.to(self.accelerator.device), reduction="sum").tolist()
        if count == 0:
            return None
        drift = total / count
        self._metrics["train"]["soup/prefix_abs_log_ratio"].append(drift)
        if drift <= self.args.soup_refresh_drift:
            return None
        return (
            f"prefix |log ratio| {drift:.4g} > soup_refresh_drift {self.args.soup_refresh_drift:g} after {served} "
            f"step(s) of these behavior samples"
        )

    @staticmethod
    def _with_prefix_mask(inputs: dict) -> dict:
        inputs["soup_prefix_mask"] = torch.zeros_like(inputs["completion_mask"])
        return inputs

    # ------------------------------------------------------------------ behavior sampling

    @torch.no_grad()
    def _sample_behavior_cycle(self, inputs: list[dict], first_step: int = 0) -> _BehaviorCycle:
        args = self.args
        rows_per_step = len(inputs) // (args.soup_behavior_steps - first_step)
        prompts = copy.deepcopy([x["prompt"] for x in inputs])
        prompt_ids, images, multimodal_fields = self._tokenize_prompts(prompts)
        if images is not None or multimodal_fields:
            raise ValueError("SOUPTrainer with soup_behavior_steps > 1 supports text prompts only.")
        prompt_ids = [list(p) for p in prompt_ids]
        num_rows, step0 = len(prompt_ids), self.state.global_step
        stored, ages = (
            self._soup_history.rows(prompt_ids, step0)
            if self._soup_history is not None
            else ([None] * num_rows, [float("nan")] * num_rows)
        )
        # Rows without stored rollouts are sampled now: step 1's in full (trained on whole), the later steps' in full
        # or up to the prefix budget. Rows with stored rollouts (any step) are cut from them and decode nothing here.
        fresh_head = [i for i in range(rows_per_step) if stored[i] is None]
        fresh_tail = [i for i in range(rows_per_step, num_rows) if stored[i] is None]
        filler = prompt_ids[0]
        completion_ids: list = [None] * num_rows
        sampler_logps: list | None = [None] * num_rows if self.use_vllm else None
        budget = self.soup_truncation.behavior_budget
        if budget is None:  # the cycle's fresh rows in full
            parts = [(fresh_head + fresh_tail, rows_per_step, None)]
        else:  # steps 2..T only up to the prefix budget: as many rows per call as keep its new tokens within a step's
            tokens = budget(args)
            tail_chunk = rows_per_step * max(1, self.max_completion_length // max(tokens, 1))
            parts = [(fresh_head, rows_per_step, None), (fresh_tail, tail_chunk, tokens)]
        for rows, chunk, limit in parts:
            with self._max_new_tokens(limit) if limit is not None else contextlib.nullcontext():
                ids, logps = self._sample_behavior([prompt_ids[i] for i in rows], chunk, filler)
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
        device = self.accelerator.device
        cut_prefix, lengths, behavior_logps, sampled_at = self._cut_rows(
            [prompt_ids[i] for i in cut], [completion_ids[i] for i in cut], [stored[i] for i in cut], step0
        )
        prefix_width = behavior_logps.size(1)
        index = torch.tensor(cut, dtype=torch.long, device=device)
        prefix_lengths = torch.zeros(num_rows, dtype=torch.long, device=device).index_copy(0, index, cut_prefix)
        cut_positions = torch.full((num_rows,), float("nan"), device=device)
        positions = cut_prefix.float() / lengths.float().clamp(min=1)
        positions[lengths == 0] = float("nan")
        cut_positions = cut_positions.index_copy(0, index, positions)
        all_logps = behavior_logps.new_zeros(num_rows, prefix_width).index_copy(0, index, behavior_logps)
        all_sampled_at = torch.full((num_rows, prefix_width), step0, dtype=torch.long, device=device)
        all_sampled_at = all_sampled_at.index_copy(0, index, sampled_at)
        return _BehaviorCycle(
            inputs=inputs,
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
            sampler_logps=sampler_logps,
            behavior_logps=all_logps,
            prefix_lengths=prefix_lengths,
            cut_positions=cut_positions,
            rows_per_step=rows_per_step,
            whole=whole,
            prefix_sampled_at=all_sampled_at,
            history_age=torch.tensor(ages, dtype=torch.float32, device=device),
            first_step=first_step,
        )

    def _cut_rows(self, prompt_ids, completion_ids, stored, step0):
        """Cut the rows to continue: their prefix lengths (B,), content lengths (B,), the behavior log-probs (B, W) of
        the prefix tokens and the step that sampled each (B, W). Behavior log-probs (and entropies when the strategy
        ranks by them) of freshly sampled rows come from one forward pass, those of stored rows from the history. A
        strategy that cuts by length alone is asked first, and the forward then covers prefix positions only (up to
        the longest prefix)."""
        args, device, strategy = self.args, self.accelerator.device, self.soup_truncation
        if not completion_ids:  # nothing to cut on this process (other processes may still log cut tokens)
            if args.soup_log_cut_tokens and strategy.refine is None:
                self._log_cut_tokens([])
            self._filler_forward(self._aligned(0))  # the behavior forward other processes may run
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty, torch.zeros(0, 0, device=device), torch.zeros(0, 0, dtype=torch.long, device=device)
        prompt_tensor, prompt_mask = (t.to(device) for t in self._pad_rows(prompt_ids, "left"))
        completion_tensor, completion_mask = (t.to(device) for t in self._pad_rows(completion_ids, "right"))
        lengths = content_lengths(completion_tensor, completion_mask, self.eos_token_ids)
        behavior = TruncationInputs(completion_tensor, completion_mask, lengths)
        if strategy.needs_logps or strategy.needs_entropy:
            behavior.logps, behavior.entropies = self._cut_rows_logps(
                prompt_tensor, prompt_mask, completion_tensor, completion_mask, stored, completion_tensor.size(1),
                strategy.needs_entropy,
            )
        proposal = strategy.fn(behavior, args, None)
        cut_prefix = clamp_prefix_lengths(proposal.to(device), lengths, self.max_completion_length)
        if args.soup_log_cut_tokens and strategy.refine is None:  # refined cuts are logged when a step is scored
            self._log_cut_tokens(cut_tokens(completion_tensor, completion_mask, cut_prefix))
        prefix_width = int(cut_prefix.max())
        behavior_logps = behavior.logps
        if behavior_logps is None:
            behavior_logps, _ = self._cut_rows_logps(
                prompt_tensor, prompt_mask, completion_tensor[:, :prefix_width], completion_mask[:, :prefix_width],
                stored, prefix_width, False,
            )
        behavior_logps = behavior_logps[:, :prefix_width]
        sampled_at = torch.full((len(completion_ids), prefix_width), step0, dtype=torch.long, device=device)
        for j, rollout in enumerate(stored):
            if rollout is not None:
                steps = rollout.sampled_at[:prefix_width].to(device, torch.long)
                sampled_at[j, : steps.numel()] = steps
        return cut_prefix, lengths, behavior_logps, sampled_at

    def _cut_rows_logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask, stored, width, entropies):
        """(B, W) behavior log-probs (and entropies) of the rows to cut: a forward pass over the freshly sampled rows,
        the stored values for rows from the history (a forward for them too when entropies are needed but were not
        stored; their denominators stay the stored ones, of the policy that sampled the tokens).

        With several processes, every process runs the forward over as many rows as the process with the most (ZeRO-3
        and DDP forwards are collective), repeating its first row (a process without rows runs `_filler_forward`)."""
        forward = [j for j, r in enumerate(stored) if r is None or (entropies and r.entropies is None)]
        need = self._aligned(len(forward) if width > 0 else 0)
        device = completion_ids.device
        logps = torch.zeros(completion_ids.shape, device=device)
        ents = torch.zeros(completion_ids.shape, device=device) if entropies else None
        if need:
            padded = forward + [forward[0] if forward else 0] * (need - len(forward))
            index = torch.tensor(padded, dtype=torch.long, device=device)
            f_logps, f_ents = self._behavior_logps(
                prompt_ids[index], prompt_mask[index], completion_ids[index], completion_mask[index], entropies
            )
            rows = index[: len(forward)]
            logps[rows] = f_logps[: len(forward)].float()
            if entropies:
                ents[rows] = f_ents[: len(forward)].float()
        for j, rollout in enumerate(stored):
            if rollout is None:
                continue
            n = min(width, rollout.logps.numel())
            logps[j, :n] = rollout.logps[:n].to(device)
            if entropies and rollout.entropies is not None:
                ents[j, :n] = rollout.entropies[:n].to(device, torch.float32)
        return logps, ents

    def _log_cut_tokens(self, token_ids: list) -> None:
        """Append this cycle's cut tokens, every process's, to OUTPUT_DIR/soup_cut_tokens.jsonl (one line, written by
        the main process). A resumed run writes the lines after its checkpoint again: readers keep a step's last."""
        gathered = gather_object([token_ids])  # one list per process, in process order
        if not self.accelerator.is_main_process:
            return
        ids = [t for rows in gathered for t in rows if t is not None]
        record = {
            "step": self.state.global_step + 1,  # the cycle's first optimizer step
            "truncation": self.args.soup_truncation,
            "token_ids": ids,
            "tokens": [self._tokenizer.decode([t]) for t in ids],
            "uncut_rows": sum(t is None for rows in gathered for t in rows),
        }
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, CUT_TOKENS_FILE), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _sample_behavior(self, prompt_ids: list, rows_per_call: int, filler: list[int]) -> tuple[list, list | None]:
        """Sample completions for `prompt_ids` (each prompt once per group row). vLLM takes them in one call; Transformers
        generation takes `rows_per_call` rows per call (one optimizer step's for full completions), so its memory peak
        is on-policy training's, not T times it. With several processes every process makes the same calls with the
        same number of rows (`_aligned`), as TRL's generation needs."""
        rows = self._aligned(len(prompt_ids))
        padded = prompt_ids + [filler] * (rows - len(prompt_ids))
        chunk = len(padded) if self.use_vllm else rows_per_call
        completion_ids, logprobs = [], []
        for start in range(0, len(padded), max(chunk, 1)):
            ids, logps = super()._generate_single_turn(padded[start : start + chunk], None, {}, self.num_generations)
            completion_ids += list(ids)
            logprobs = None if logps is None else logprobs + list(logps)
        n = len(prompt_ids)
        return completion_ids[:n], None if logprobs is None else logprobs[:n]

    def _aligned(self, rows: int) -> int:
        """The number of rows every process decodes in a generation call of which this process needs `rows`: the most
        any process needs. TRL's generation is collective (weight syncs, ZeRO-3 parameter gathering, vLLM server
        requests sliced by process), and with history-seeded prefixes processes can need different numbers of rows; a
        process below the most decodes filler rows and discards them."""
        if self.accelerator.num_processes == 1:
            return rows
        return int(self.accelerator.gather(torch.tensor([rows], device=self.accelerator.device)).max())

    def _behavior_logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask, compute_entropy: bool):
        """(B, C) log-probs (and entropies) of the current policy on the given completion tokens, no grad."""
        if completion_ids.size(1) == 0:  # no prefix anywhere: nothing to score
            return completion_ids.new_zeros(completion_ids.shape, dtype=torch.float32), None
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([prompt_mask, completion_mask], dim=1),
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
                compute_entropy=compute_entropy,
            )
        return logps, entropies

    def _pad_rows(self, rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = [torch.tensor(r, dtype=torch.long) for r in rows]
        ids = pad(tensors, padding_value=self._tokenizer.pad_token_id, padding_side=side)
        mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side=side)
        return ids, mask

    # ------------------------------------------------------------------ scoring one optimizer step

    def _score_cycle_step(self, step: int) -> list[dict]:
        cycle = self._soup_cycle
        rows = slice(step * cycle.rows_per_step, (step + 1) * cycle.rows_per_step)
        whole = cycle.whole[rows]
        if self.soup_truncation.refine is not None and self._on_any_process(not all(whole)):
            self._refine_cuts(cycle, rows)
        prefix_lengths = cycle.prefix_lengths[rows]
        kept = [None if w else k for w, k in zip(whole, prefix_lengths.tolist())]  # whole rows: all their tokens
        plan = _GenerationPlan(
            prompt_ids=cycle.prompt_ids[rows],
            tokens=[c[:k] for c, k in zip(cycle.completion_ids[rows], kept)],
            whole=whole,
            logprobs=None if cycle.sampler_logps is None else [lp[:k] for lp, k in zip(cycle.sampler_logps[rows], kept)],
            filler=cycle.prompt_ids[0],
        )
        self._soup_plan = plan
        with self._without_old_logps_forward():
            try:
                output = self._generate_and_score_completions(cycle.inputs[rows])
            finally:
                self._soup_plan = None
            if not plan.used:
                raise RuntimeError("SOUP: GRPOTrainer scored the step without asking for its completions.")
            # Refilled groups are fresh on-policy groups: no prefix (source row -1)
            output, source = self._dynamic_sampling(output) if self.args.dynamic_sampling else (output, None)

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
        output = self._apply_prefixes(output, prefix_lengths, behavior_logps)
        if self._soup_history is not None:
            output.update(self._history_fields(output, source, prefix_lengths, sampled_at))
            self._soup_step_keys = [prompt_key(p) for p in plan.prompt_ids]
        self._log_cycle_metrics(
            step,
            cycle.cut_positions[rows] if spliced else None,
            cycle.history_age[rows] if self._soup_history is not None else None,
        )

        # Shuffle whole groups within the step, then split it into its gradient-accumulation micro-batches
        permutation = group_permutation(cycle.rows_per_step, self.num_generations)
        output = {key: self._permute_rows(value, permutation) for key, value in output.items()}
        return split_tensor_dict(output, self.args.gradient_accumulation_steps)

    @contextlib.contextmanager
    def _without_old_logps_forward(self):
        """Score a step of a cycle without GRPOTrainer's no-grad forward for `old_per_token_logps`.

        Step 1's samples come from the policy whose loss forward follows, so their denominators are the detached loss
        log-probs, exactly as in on-policy training. On spliced steps the continuation tokens' denominators are the
        same current policy's, so `_apply_prefixes` leaves them NaN ("the current policy at loss time") and the loss
        forward fills them in (`_get_per_token_logps_and_entropies`); only the prefix tokens carry stored behavior
        log-probs. vLLM's sampler-mismatch correction needs trainer log-probs at scoring time, so with it the
        forward is kept.
        """
        if self.use_vllm and self.vllm_importance_sampling_correction:
            yield
            return
        cycle_steps = self.args.steps_per_generation
        self.args.steps_per_generation = self.args.gradient_accumulation_steps
        try:
            yield
        finally:
            self.args.steps_per_generation = cycle_steps

    def _apply_prefixes(self, output: dict, prefix_lengths: torch.Tensor, behavior_logps: torch.Tensor | None):
        completion_mask = output["completion_mask"]
        prefix_mask = prefix_mask_from_lengths(prefix_lengths.to(completion_mask.device), completion_mask.size(1))
        output["soup_prefix_mask"] = prefix_mask * completion_mask
        if behavior_logps is not None:
            # Continuation tokens: the current policy's log-probs when GRPOTrainer computed them, else NaN, filled in by
            # the loss forward of the same policy (see `_without_old_logps_forward`)
            current = output.get("old_per_token_logps")
            if current is None:
                current = torch.full(completion_mask.shape, float("nan"), device=completion_mask.device)
            output["old_per_token_logps"] = mix_old_logps(current, behavior_logps, prefix_mask)
        if behavior_logps is not None and self.use_vllm and self.vllm_importance_sampling_correction:
            # Prefix tokens were sampled by the behavior engine: compare them with the behavior trainer log-probs,
            # so that the correction measures sampler mismatch, not policy drift.
            mask = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
            output["importance_sampling_ratio"] = importance_sampling_ratio(
                output["old_per_token_logps"],
                output["sampling_per_token_logps"],
                mask,
                self.vllm_importance_sampling_mode,
                self.vllm_importance_sampling_clip_min,
                self.vllm_importance_sampling_clip_max,
            )
        output["num_items_in_batch"] = dapo_num_items(
            output["num_items_in_batch"], self.args.steps_per_generation, self.args.gradient_accumulation_steps
        )
        return output

    @staticmethod
    def _permute_rows(value, permutation: torch.Tensor):
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return value[permutation.to(value.device)]
        if isinstance(value, list):
            return [value[i] for i in permutation.tolist()]
        return value

    def _refine_cuts(self, cycle: _BehaviorCycle, rows: slice) -> None:
        """Refine the step's proposed cuts with the policy that continues them (`TruncationStrategy.refine`), in the
        cycle itself, and log their cut tokens (the cycle logged none for such a strategy)."""
        index = [rows.start + j for j, w in enumerate(cycle.whole[rows]) if not w]
        device = self.accelerator.device
        if not index:  # no row to cut here; other processes have some
            self._filler_forward(self._aligned(0))
            if self.args.soup_log_cut_tokens:
                self._log_cut_tokens([])
            return
        proposed = cycle.prefix_lengths[index]
        width = int(proposed.max())
        completion_tensor, completion_mask = (
            t.to(device) for t in self._pad_rows([cycle.completion_ids[i] for i in index], "right")
        )
        current = self._aligned_logps([cycle.prompt_ids[i] for i in index], completion_tensor, completion_mask, width)
        lengths = content_lengths(completion_tensor, completion_mask, self.eos_token_ids)
        inputs = TruncationInputs(
            completion_tensor[:, :width], completion_mask[:, :width], lengths, logps=cycle.behavior_logps[index][:, :width]
        )
        generator = step_generator(self.args, self.state.global_step, self.accelerator.process_index)
        refined = self.soup_truncation.refine(inputs, current, proposed, self.args, generator)
        refined = torch.minimum(refined.to(device).long(), proposed)
        cycle.prefix_lengths[index] = refined
        positions = refined.float() / lengths.float().clamp(min=1)
        positions[lengths == 0] = float("nan")
        cycle.cut_positions[index] = positions
        if self.args.soup_log_cut_tokens:
            self._log_cut_tokens(cut_tokens(completion_tensor, completion_mask, refined))

    def _on_any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self.accelerator.gather(torch.tensor([float(flag)], device=self.accelerator.device)).max() > 0)

    def _filler_forward(self, rows: int) -> None:
        """A no-grad forward over `rows` one-token filler rows, for a process that has nothing to forward while others
        do (ZeRO-3 and DDP forwards are collective)."""
        if rows:
            filler = torch.full((rows, 1), self._tokenizer.pad_token_id, device=self.accelerator.device)
            ones = torch.ones_like(filler)
            self._behavior_logps(filler, ones, filler, ones, False)

    def _aligned_logps(self, prompt_ids: list, completion_ids, completion_mask, width: int) -> torch.Tensor:
        """(B, width) current-policy log-probs of the first `width` completion tokens, no grad; with several processes
        every process forwards as many rows as the process with the most (repeating its first row)."""
        need = self._aligned(len(prompt_ids) if width > 0 else 0)
        if need == 0:
            return torch.zeros(len(prompt_ids), width, device=completion_ids.device)
        prompt_tensor, prompt_mask = (t.to(completion_ids.device) for t in self._pad_rows(prompt_ids, "left"))
        index = torch.tensor(list(range(len(prompt_ids))) + [0] * (need - len(prompt_ids)), device=completion_ids.device)
        logps, _ = self._behavior_logps(
            prompt_tensor[index], prompt_mask[index], completion_ids[index, :width], completion_mask[index, :width], False
        )
        return logps[: len(prompt_ids)].float()

    def _history_fields(self, output: dict, source, prefix_lengths, prefix_sampled_at) -> dict:
        """What `_after_loss` needs to store a trained row: its row of the step (`soup_history_row`, -1 for refilled
        rows, which are not stored) and the step that sampled each of its tokens (`soup_sampled_at`)."""
        completion_mask = output["completion_mask"]
        width = completion_mask.size(1)
        now = torch.full(completion_mask.shape, self.state.global_step, dtype=torch.long, device=completion_mask.device)
        prefix = prefix_mask_from_lengths(prefix_lengths.to(completion_mask.device), width).bool()
        stored = fit_width(prefix_sampled_at.to(completion_mask.device), width)
        return {"soup_history_row": source.to(completion_mask.device), "soup_sampled_at": torch.where(prefix, stored, now)}

    def _log_cycle_metrics(self, step: int, cut_positions: torch.Tensor | None, history_age: torch.Tensor | None):
        metrics = self._metrics["train"]
        metrics["soup/cycle_step"].append(float(step + 1))
        if cut_positions is not None:
            gathered = self.accelerator.gather(cut_positions)
            metrics["soup/cut_position_mean"].append(torch.nanmean(gathered).item())
        if history_age is not None:
            gathered = self.accelerator.gather(history_age)
            from_history = ~gathered.isnan()
            metrics["soup/history_row_frac"].append(from_history.float().mean().item())
            if from_history.any():
                metrics["soup/history_age_mean"].append(gathered[from_history].mean().item())

    # ------------------------------------------------------------------ dynamic sampling

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.args.dynamic_sampling and self.model.training and self._soup_plan is None:
            output, _ = self._dynamic_sampling(output)  # on-policy path (T = 1); SOUP's steps refill in scoring
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._soup_rewards_per_func = rewards_per_func  # (all processes' rows, functions), read by dynamic sampling
        return rewards_per_func

    def _new_prompt_stream(self) -> PromptStream:
        """Refill prompts of this process: its own seeded order over the training set."""
        return PromptStream(self.train_dataset, self.args.seed + 1_000_003 * (self.accelerator.process_index + 1))

    def _groups_with_variance(self, num_rows: int) -> torch.Tensor:
        """Which of this process's groups in the batch just scored have rewards that are not all equal."""
        per_func = self._soup_rewards_per_func
        local = per_func[self.accelerator.process_index * num_rows : (self.accelerator.process_index + 1) * num_rows]
        if self.multi_objective_aggregation == "sum_then_normalize":
            rewards = (local * self.reward_weights.to(local.device).unsqueeze(0)).nansum(dim=1)
            rewards[torch.isnan(local).all(dim=1)] = float("nan")
            return group_has_variance(rewards, self.num_generations)
        columns = [group_has_variance(local[:, i], self.num_generations) for i in range(local.size(1))]
        return torch.stack(columns).any(dim=0)

    def _dynamic_sampling(self, output: dict) -> tuple[dict, torch.Tensor]:
        """Drop zero-variance groups and refill them with groups of further prompts, whole groups only.

        Returns the batch (same number of rows) and, per row, the index of its source row in `output` (-1 for
        refilled rows). Every process runs the same number of refill rounds (the most any process needs).
        """
        group_size, device = self.num_generations, self.accelerator.device
        num_rows = output["completion_ids"].size(0)
        keep = self._groups_with_variance(num_rows)
        kept = keep.nonzero().flatten()
        parts, sources = [take_rows(output, group_rows(kept, group_size))], [group_rows(kept, group_size)]
        missing, rounds = int((~keep).sum()), 0
        while rounds < self.args.dynamic_sampling_max_rounds:
            need = int(self.accelerator.gather(torch.tensor([missing], device=device)).max())
            if need == 0:
                break
            rounds += 1
            if self._soup_prompts is None:
                self._soup_prompts = self._new_prompt_stream()
            inputs = [row for row in self._soup_prompts.take(need) for _ in range(group_size)]
            extra = super()._generate_and_score_completions(inputs)
            good = self._groups_with_variance(len(inputs)).nonzero().flatten()[:missing]
            parts.append(take_rows(extra, group_rows(good, group_size)))
            sources.append(torch.full((len(good) * group_size,), -1, dtype=torch.long))
            missing -= len(good)
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/kept_group_frac"].append(self.accelerator.gather(keep.float()).mean().item())
        metrics["dynamic_sampling/rounds"].append(float(rounds))
        unfilled = self.accelerator.gather(torch.tensor([float(missing)], device=device)).sum().item()
        metrics["dynamic_sampling/unfilled_group_frac"].append(unfilled / (keep.numel() * self.accelerator.num_processes))
        if missing:
            logger.warning(
                "dynamic sampling: %d of %d groups still have equal rewards after %d refill rounds "
                "(dynamic_sampling_max_rounds); this step trains on the other groups only.",
                missing, keep.numel(), rounds,
            )
            filler_rows = group_rows((~keep).nonzero().flatten()[:missing], group_size)
            filler = take_rows(output, filler_rows)
            filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])  # out of the loss and its count
            parts.append(filler)
            sources.append(filler_rows)
        merged = concat_batches(parts, self._tokenizer.pad_token_id) if len(parts) > 1 else parts[0]
        loss_mask = merged["completion_mask"] * merged.get("tool_mask", 1)
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return merged, torch.cat(sources)

    # ------------------------------------------------------------------ generation hook

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        plan = self._soup_plan
        if plan is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if plan.used or [list(p) for p in prompt_ids] != plan.prompt_ids:
            raise RuntimeError(
                "SOUP: the prompts GRPOTrainer tokenized for this step differ from the cycle's behavior prompts."
            )
        plan.used = True
        completion_ids = [list(t) for t in plan.tokens]
        logprobs = None if plan.logprobs is None else [list(lp) for lp in plan.logprobs]
        open_rows = [i for i, w in enumerate(plan.whole) if not w]
        calls = self._aligned(len(open_rows))
        if calls == 0:  # every row (of every process) is a whole completion: nothing to decode
            return completion_ids, logprobs

        # One call continues every open row of the step, each within its own budget; a process with fewer open rows
        # than another continues filler rows (1 token each) and drops them.
        prefixes = [plan.tokens[i] for i in open_rows]
        extended = [list(prompt_ids[i]) + list(p) for i, p in zip(open_rows, prefixes)]
        budgets = continuation_budgets([len(p) for p in prefixes], self.max_completion_length)
        extended += [list(plan.filler)] * (calls - len(open_rows))
        all_budgets = budgets + [1] * (calls - len(open_rows))
        with self._max_new_tokens(max(all_budgets)), self._row_budgets(all_budgets):
            continuations, continuation_logps = super()._generate_single_turn(extended, None, {}, 1)
        if self._budgets_per_row:  # what a row returns past its budget is padding (Transformers), not decoded tokens
            self._decoded_tokens -= sum(max(0, len(c) - b) for c, b in zip(continuations, all_budgets))
        continuations = list(continuations)[: len(open_rows)]  # filler rows dropped
        if continuation_logps is not None:
            continuation_logps = list(continuation_logps)[: len(open_rows)]
        for i, row in zip(open_rows, splice(prefixes, continuations, budgets)):
            completion_ids[i] = row
        if continuation_logps is not None:
            kept = [plan.logprobs[i] for i in open_rows]
            for i, row in zip(open_rows, splice(kept, continuation_logps, budgets)):
                logprobs[i] = row
        return completion_ids, logprobs

    def _row_budgets(self, budgets: list[int]):
        """Each continuation row stops at its own budget: a stopping rule (Transformers `generate`) or per-prompt
        `max_tokens` (vLLM colocate without tensor parallelism). vLLM server mode and colocate with tensor parallelism
        take one limit per call: there every row may decode up to the step's largest budget, and `splice` drops the
        excess. (Transformers continuous batching is rejected by `SOUPConfig` when T > 1.)"""
        if not self._budgets_per_row:
            return contextlib.nullcontext()
        if not self.use_vllm:
            return transformers_row_budgets(self.accelerator.unwrap_model(self.model_wrapped), budgets)
        return vllm_row_budgets(self.vllm_generation.llm, budgets)

    @property
    def _budgets_per_row(self) -> bool:
        """Whether a generation call stops each row at its own budget (see `_row_budgets`)."""
        if not self.use_vllm:
            return True
        return self.vllm_generation.mode == "colocate" and self.vllm_generation.tensor_parallel_size == 1

    @contextlib.contextmanager
    def _max_new_tokens(self, limit: int):
        """Cap the generation length of the next call (each row's own budget: `_row_budgets`, and `splice` cuts to it)."""
        target = self.vllm_generation if self.use_vllm else self.generation_config
        field = "max_completion_length" if self.use_vllm else "max_new_tokens"
        previous = getattr(target, field)
        setattr(target, field, limit)
        try:
            yield
        finally:
            setattr(target, field, previous)

    # ------------------------------------------------------------------ diagnostics

    def _on_policy_forward(self, forward: PolicyForward) -> None:
        # NaN denominators mean "the current policy at loss time": this forward's log-probs, before GRPOTrainer's loss
        # reads them (it reads `old_per_token_logps` after this forward)
        old = forward.inputs.get("old_per_token_logps")
        if old is not None:
            prefix = forward.inputs.get("soup_prefix_mask")
            forward.inputs["old_per_token_logps"] = fill_current_logps(old, forward.logps.detach(), prefix)

    def _after_loss(self, loss, inputs, forward: PolicyForward):
        if forward.entropies is not None and self._logs_this_step():
            self._log_token_metrics(inputs, forward.logps.detach(), forward.entropies)
        if self._soup_history is not None and self.model.training and "soup_history_row" in inputs:
            self._store_trained_rows(inputs, forward)
        if self.args.soup_refresh_drift is not None and self.model.training and "old_per_token_logps" in inputs:
            # adaptive refresh's signal: |log ratio| on this step's prefix tokens
            mask = (inputs["soup_prefix_mask"] * inputs["completion_mask"]).bool()
            gap = (forward.logps.detach() - forward.inputs["old_per_token_logps"]).abs()[mask]
            self._soup_drift_sums += torch.tensor([gap.sum().item(), float(gap.numel())])
        return loss

    def _store_trained_rows(self, inputs: dict, forward: PolicyForward) -> None:
        """Put the rows this loss trained on into the rollout history, with the denominators the loss used (every
        process's rows, on every process: the history is the same whatever the number of processes)."""
        old = forward.inputs.get("old_per_token_logps")  # filled in by `_on_policy_forward`; None on on-policy steps
        denominators = forward.logps.detach() if old is None else old
        entropies = forward.entropies if self.soup_truncation.needs_entropy else None
        rollouts = trained_rollouts(
            inputs["completion_ids"], inputs["completion_mask"], denominators, inputs["soup_sampled_at"], entropies
        )
        rows_per_step = len(self._soup_step_keys)
        records = [
            Record(
                key=self._soup_step_keys[row],
                slot=row % self.num_generations,
                order=self.accelerator.process_index * rows_per_step + row,
                recorded_at=self.state.global_step,
                rollout=rollout,
            )
            for row, rollout in zip(inputs["soup_history_row"].tolist(), rollouts)
            if row >= 0
        ]
        if self.accelerator.num_processes > 1:
            records = gather_object(records)
        self._soup_history.add(records)

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step being computed is one the Trainer logs. SOUP's per-token diagnostics are measured
        on those steps only (every process decides alike: their reduction is a collective)."""
        if not self.model.training or self.args.logging_strategy != "steps":
            return True
        step = self.state.global_step + 1  # incremented after this step's optimizer update
        if step == 1 and self.args.logging_first_step:
            return True
        return self.state.logging_steps > 0 and step % self.state.logging_steps == 0

    def _log_token_metrics(self, inputs: dict, logps: torch.Tensor, entropies: torch.Tensor):
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        old = inputs.get("old_per_token_logps")
        totals = token_stats(
            logps,
            logps if old is None else old,
            inputs["advantages"],
            entropies,
            mask,
            inputs["soup_prefix_mask"],
            self.epsilon_low,
            self.epsilon_high,
        )
        totals = self.accelerator.reduce(totals, reduction="sum")
        mode = "train" if self.model.training else "eval"
        for name, value in stats_to_metrics(totals).items():
            self._metrics[mode][name].append(value)

    # ------------------------------------------------------------------ checkpoints

    def _cycle_file(self, folder: str) -> str:
        return os.path.join(folder, f"soup_cycle_rank{self.accelerator.process_index}.pt")

    def _prompt_stream_file(self, folder: str) -> str:
        return os.path.join(folder, f"soup_prompt_stream_rank{self.accelerator.process_index}.pt")

    def _history_file(self, folder: str) -> str:
        return os.path.join(folder, "soup_history.pt")

    def _save_optimizer_and_scheduler(self, folder):
        super()._save_optimizer_and_scheduler(folder)
        os.makedirs(folder, exist_ok=True)
        if self._soup_history is not None and self.accelerator.is_main_process:  # the same on every process
            torch.save(self._soup_history.state_dict(), self._history_file(folder))
        if self._soup_prompts is not None:  # how far dynamic sampling's refill prompts have been drawn
            torch.save({"drawn": self._soup_prompts.drawn}, self._prompt_stream_file(folder))
        mid_cycle = (self.state.global_step * self.args.gradient_accumulation_steps) % self.args.steps_per_generation
        if self.args.soup_behavior_steps > 1 and mid_cycle and self._soup_cycle is not None:
            # Each process keeps its own behavior samples, so that a resumed run finishes the cycle with them
            cycle = {
                k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in dataclasses.asdict(self._soup_cycle).items()
            }
            torch.save({**cycle, "drift_sums": self._soup_drift_sums.clone()}, self._cycle_file(folder))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and os.path.exists(self._prompt_stream_file(checkpoint)):
            self._soup_prompts = self._new_prompt_stream()
            self._soup_prompts.drawn = torch.load(self._prompt_stream_file(checkpoint))["drawn"]
        if checkpoint is not None and self._soup_history is not None:
            path = self._history_file(checkpoint)
            if os.path.exists(path):
                self._soup_history.load_state_dict(torch.load(path, weights_only=False))
            else:
                logger.warning(
                    "SOUP: %s has no rollout history (trained with soup_behavior_source='fresh'?); the history starts "
                    "empty and fills from the next step on.", checkpoint,
                )
        if checkpoint is None or not self.args.soup_uses_cycles:
            return
        # The Trainer skips the batches it already trained on without calling training_step: put the micro-step
        # counter back where the interrupted run was, so the cycle schedule continues from there.
        self._step = self.state.global_step * self.args.gradient_accumulation_steps
        if self._step % self.args.steps_per_generation == 0:
            return  # resumed at a cycle boundary: the next step samples a new cycle anyway
        path = self._cycle_file(checkpoint)
        if not os.path.exists(path):
            logger.warning(
                "SOUP: %s has no behavior samples for process %d (checkpoint saved by an older version?); the rest of "
                "the cycle will use new behavior samples from the current policy.", checkpoint,
                self.accelerator.process_index,
            )
            return
        device = self.accelerator.device
        saved = _upgraded_cycle(torch.load(path, weights_only=False))
        self._soup_drift_sums = saved.pop("drift_sums", torch.zeros(2, dtype=torch.float64))
        self._soup_cycle = _BehaviorCycle(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
        )

    # ------------------------------------------------------------------ model card

    def _card_section(self) -> str:
        return soup_card_section(self.args)

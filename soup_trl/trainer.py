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
from .model_card import PAPER, soup_card_section
from .ops import (
    continuation_budgets,
    dapo_num_items,
    fill_current_logps,
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

    def __len__(self):
        return len(self.sampler)


@dataclass
class _GenerationPlan:
    """What `_generate_single_turn` serves for one scored step instead of sampling from scratch."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]] | None = None  # step 1: the behavior completions themselves
    logprobs: list[list[float]] | None = None  # their sampler log-probs (vLLM), step 1 only
    prefixes: list[list[int]] | None = None  # steps 2..T: behavior prefixes to continue
    prefix_logprobs: list[list[float]] | None = None  # sampler log-probs of the prefixes (vLLM)
    used: bool = False


@dataclass
class _BehaviorCycle:
    """Everything one behavior sampling leaves for the T steps of its cycle (one process's rows)."""

    inputs: list[dict]  # dataset rows, T * rows_per_step, groups contiguous
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    sampler_logps: list[list[float]] | None  # vLLM sampling log-probs, None on the transformers path
    behavior_logps: torch.Tensor  # (N - rows_per_step, C) behavior trainer log-probs of the rows of steps 2..T
    prefix_lengths: torch.Tensor  # (N,) prefix kept for steps 2..T (0 for step 1)
    cut_positions: torch.Tensor  # (N,) prefix length / content length, NaN for empty completions
    rows_per_step: int


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
        if args.soup_behavior_steps > 1:
            self.reject_multi_turn(
                kwargs,
                f"soup_behavior_steps={args.soup_behavior_steps}: SOUP splices single-turn completions. Use "
                "soup_behavior_steps=1 for multi-turn rollouts.",
            )
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self.soup_truncation = get_truncation_strategy(args.soup_truncation)
        self._soup_cycle: _BehaviorCycle | None = None
        self._soup_step_batches: list[dict] | None = None
        self._soup_plan: _GenerationPlan | None = None
        self._soup_rewards_per_func: torch.Tensor | None = None
        self._soup_prompts: PromptStream | None = None  # refill prompts of dynamic sampling

    # ------------------------------------------------------------------ schedule

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if self.args.soup_behavior_steps == 1 or self.accelerator.num_processes == 1:
            return sampler
        rows_per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        return _StepMajorSampler(sampler, self.args.soup_behavior_steps, self.accelerator.num_processes, rows_per_step)

    def _prepare_inputs(self, generation_batch):
        if not self.model.training or self.args.soup_behavior_steps == 1:
            return self._with_prefix_mask(super()._prepare_inputs(generation_batch))

        accumulation = self.args.gradient_accumulation_steps
        cycle_position = self._step % self.args.steps_per_generation  # micro-step within the cycle
        if cycle_position == 0 or self._soup_cycle is None:
            if cycle_position != 0:
                logger.warning(
                    "SOUP: no behavior samples for this cycle (resumed mid-cycle?); sampling new behavior completions "
                    "with the current policy for the remaining steps of the cycle."
                )
            self._soup_cycle = self._sample_behavior_cycle(generation_batch)
        if cycle_position % accumulation == 0 or self._soup_step_batches is None:
            self._soup_step_batches = self._score_cycle_step(cycle_position // accumulation)
        return self._soup_step_batches[cycle_position % accumulation]

    @staticmethod
    def _with_prefix_mask(inputs: dict) -> dict:
        inputs["soup_prefix_mask"] = torch.zeros_like(inputs["completion_mask"])
        return inputs

    # ------------------------------------------------------------------ behavior sampling

    @torch.no_grad()
    def _sample_behavior_cycle(self, inputs: list[dict]) -> _BehaviorCycle:
        args = self.args
        rows_per_step = len(inputs) // args.soup_behavior_steps
        prompts = copy.deepcopy([x["prompt"] for x in inputs])
        prompt_ids, images, multimodal_fields = self._tokenize_prompts(prompts)
        if images is not None or multimodal_fields:
            raise ValueError("SOUPTrainer with soup_behavior_steps > 1 supports text prompts only.")
        budget = self.soup_truncation.behavior_budget
        if budget is None:  # the whole cycle in full
            completion_ids, sampler_logps = self._sample_behavior(prompt_ids, rows_per_step)
        else:  # step 1 in full, steps 2..T only up to the prefix budget
            head_ids, head_logps = self._sample_behavior(prompt_ids[:rows_per_step], rows_per_step)
            tokens = budget(args)
            # Rows that decode at most `tokens` tokens: as many per call as keep a call's new tokens within a full
            # step's (T - 1 steps of tails in one call when the budget is short enough)
            tail_chunk = rows_per_step * max(1, self.max_completion_length // max(tokens, 1))
            with self._max_new_tokens(tokens):
                tail_ids, tail_logps = self._sample_behavior(prompt_ids[rows_per_step:], tail_chunk)
            completion_ids = head_ids + tail_ids
            sampler_logps = None if head_logps is None else head_logps + tail_logps
        if sampler_logps is not None:
            sampler_logps = [[float("nan") if x is None else x for x in row] for row in sampler_logps]

        # Behavior log-probs (and entropies when the strategy ranks by them) of the rows of steps 2..T, in one
        # forward pass; step 1 is scored like GRPO and needs none. A strategy that cuts by length alone is asked
        # first, and the forward then covers prefix positions only (up to the longest prefix).
        device = self.accelerator.device
        strategy = self.soup_truncation
        prompt_tensor, prompt_mask = self._pad_rows(prompt_ids[rows_per_step:], "left")
        completion_tensor, completion_mask = self._pad_rows(completion_ids[rows_per_step:], "right")
        completion_tensor, completion_mask = completion_tensor.to(device), completion_mask.to(device)
        prompt_tensor, prompt_mask = prompt_tensor.to(device), prompt_mask.to(device)
        lengths = content_lengths(completion_tensor, completion_mask, self.eos_token_ids)
        behavior = TruncationInputs(completion_tensor, completion_mask, lengths)
        if strategy.needs_logps or strategy.needs_entropy:
            behavior.logps, behavior.entropies = self._behavior_logps(
                prompt_tensor, prompt_mask, completion_tensor, completion_mask, strategy.needs_entropy
            )
        proposal = strategy.fn(behavior, args, None)
        tail_prefix = clamp_prefix_lengths(proposal.to(device), lengths, self.max_completion_length)
        if args.soup_log_cut_tokens:
            self._log_cut_tokens(cut_tokens(completion_tensor, completion_mask, tail_prefix))
        behavior_logps = behavior.logps
        if behavior_logps is None:
            width = int(tail_prefix.max()) if tail_prefix.numel() else 0
            behavior_logps, _ = self._behavior_logps(
                prompt_tensor, prompt_mask, completion_tensor[:, :width], completion_mask[:, :width], False
            )

        head = torch.zeros(rows_per_step, dtype=torch.long, device=device)  # step 1 trains on whole samples
        head_cuts = torch.zeros(rows_per_step, device=device)
        tail_cuts = tail_prefix.float() / lengths.float().clamp(min=1)
        tail_cuts[lengths == 0] = float("nan")
        return _BehaviorCycle(
            inputs=inputs,
            prompt_ids=[list(p) for p in prompt_ids],
            completion_ids=[list(c) for c in completion_ids],
            sampler_logps=sampler_logps,
            behavior_logps=behavior_logps,
            prefix_lengths=torch.cat([head, tail_prefix]),
            cut_positions=torch.cat([head_cuts, tail_cuts]),
            rows_per_step=rows_per_step,
        )

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

    def _sample_behavior(self, prompt_ids: list, rows_per_call: int) -> tuple[list, list | None]:
        """Sample completions for `prompt_ids` (each prompt once per group row). vLLM takes them in one call; Transformers
        generation takes `rows_per_call` rows per call (one optimizer step's for full completions), so its memory peak
        is on-policy training's, not T times it."""
        chunk = len(prompt_ids) if self.use_vllm else rows_per_call
        completion_ids, logprobs = [], []
        for start in range(0, len(prompt_ids), max(chunk, 1)):
            ids, logps = super()._generate_single_turn(
                prompt_ids[start : start + chunk], None, {}, self.num_generations
            )
            completion_ids += list(ids)
            logprobs = None if logps is None else logprobs + list(logps)
        return completion_ids, logprobs

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
        prefix_lengths = cycle.prefix_lengths[rows]
        if step == 0:
            plan = _GenerationPlan(
                prompt_ids=cycle.prompt_ids[rows],
                completion_ids=cycle.completion_ids[rows],
                logprobs=cycle.sampler_logps[rows] if cycle.sampler_logps is not None else None,
            )
        else:
            kept = prefix_lengths.tolist()
            plan = _GenerationPlan(
                prompt_ids=cycle.prompt_ids[rows],
                prefixes=[c[:k] for c, k in zip(cycle.completion_ids[rows], kept)],
                prefix_logprobs=(
                    [lp[:k] for lp, k in zip(cycle.sampler_logps[rows], kept)]
                    if cycle.sampler_logps is not None
                    else None
                ),
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

        behavior_rows = slice(rows.start - cycle.rows_per_step, rows.stop - cycle.rows_per_step)
        behavior_logps = cycle.behavior_logps[behavior_rows] if step > 0 else None
        if source is not None:
            device = prefix_lengths.device
            prefix_lengths = torch.where(source.to(device) >= 0, prefix_lengths[source.clamp(min=0).to(device)], 0)
            if behavior_logps is not None:  # rows without a prefix never read it (their prefix mask is 0)
                behavior_logps = behavior_logps[source.clamp(min=0).to(behavior_logps.device)]
        output = self._apply_prefixes(output, prefix_lengths, behavior_logps)
        self._log_cycle_metrics(step, cycle.cut_positions[rows] if step > 0 else None)

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

    def _log_cycle_metrics(self, step: int, cut_positions: torch.Tensor | None):
        metrics = self._metrics["train"]
        metrics["soup/cycle_step"].append(float(step + 1))
        if cut_positions is not None:
            gathered = self.accelerator.gather(cut_positions)
            metrics["soup/cut_position_mean"].append(torch.nanmean(gathered).item())

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
        if plan.prefixes is None:
            return plan.completion_ids, plan.logprobs

        budgets = continuation_budgets([len(p) for p in plan.prefixes], self.max_completion_length)
        extended = [list(p) + list(x) for p, x in zip(prompt_ids, plan.prefixes)]
        with self._max_new_tokens(max(budgets)), self._row_budgets(budgets):
            continuations, logprobs = super()._generate_single_turn(extended, None, {}, 1)
        completion_ids = splice(plan.prefixes, continuations, budgets)
        if logprobs is not None:
            logprobs = splice(plan.prefix_logprobs, logprobs, budgets)
        return completion_ids, logprobs

    def _row_budgets(self, budgets: list[int]):
        """Each continuation row stops at its own budget: a stopping rule (Transformers `generate`) or per-prompt
        `max_tokens` (vLLM colocate without tensor parallelism). vLLM server mode and colocate with tensor parallelism
        take one limit per call: there every row may decode up to the step's largest budget, and `splice` drops the
        excess. (Transformers continuous batching is rejected by `SOUPConfig` when T > 1.)"""
        if not self.use_vllm:
            return transformers_row_budgets(self.accelerator.unwrap_model(self.model_wrapped), budgets)
        generation = self.vllm_generation
        if generation.mode == "colocate" and generation.tensor_parallel_size == 1:
            return vllm_row_budgets(generation.llm, budgets)
        return contextlib.nullcontext()

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
        return loss

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

    def _save_optimizer_and_scheduler(self, folder):
        super()._save_optimizer_and_scheduler(folder)
        os.makedirs(folder, exist_ok=True)
        if self._soup_prompts is not None:  # how far dynamic sampling's refill prompts have been drawn
            torch.save({"drawn": self._soup_prompts.drawn}, self._prompt_stream_file(folder))
        mid_cycle = (self.state.global_step * self.args.gradient_accumulation_steps) % self.args.steps_per_generation
        if self.args.soup_behavior_steps > 1 and mid_cycle and self._soup_cycle is not None:
            # Each process keeps its own behavior samples, so that a resumed run finishes the cycle with them
            cycle = {
                k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in dataclasses.asdict(self._soup_cycle).items()
            }
            torch.save(cycle, self._cycle_file(folder))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and os.path.exists(self._prompt_stream_file(checkpoint)):
            self._soup_prompts = self._new_prompt_stream()
            self._soup_prompts.drawn = torch.load(self._prompt_stream_file(checkpoint))["drawn"]
        if checkpoint is None or self.args.soup_behavior_steps == 1:
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
        saved = torch.load(path, weights_only=False)
        self._soup_cycle = _BehaviorCycle(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
        )

    # ------------------------------------------------------------------ model card

    def _card_section(self) -> str:
        return soup_card_section(self.args)

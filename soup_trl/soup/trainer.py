"""SOUPTrainer: GRPOTrainer with token-level single-sample mix-policy batches.

The trainer is a list of hooks; each calls a module of this folder: `cycle` (records and schedule), `behavior`
(behavior sampling and cutting), `step` (scoring one step), `continuation` (continuations within per-row budgets),
`prefix_loss` (what the loss does with the prefix tokens), `refresh`, `history`, `metrics`, `checkpoint`.
"""

from __future__ import annotations

import logging
import os

from ..core.generation import patched_attribute
from ..core.masks import loss_tokens
from ..core.samplers import StepMajorSampler
from ..core.trainer import MethodTrainer, PolicyForward
from .behavior import sample_cycle
from .checkpoint import CYCLE_STATE, HISTORY_STATE, cycle_state, load_history, mid_cycle, restore_cycle
from .config import SOUPConfig
from .continuation import continue_rows
from .cycle import BehaviorCycle, CyclePosition, GenerationPlan, rest_of_cycle
from .history import RolloutHistory, build_history, store_trained_rows
from .metrics import log_mismatch, stats_to_metrics, token_stats
from .model_card import PAPER, soup_card_section
from .ops import fill_current_logps
from .prefix_loss import get_prefix_loss, weight_metrics
from .refresh import DriftMeter, refresh_reason
from .step import score_step, with_prefix_mask
from .truncation import get_truncation_strategy

logger = logging.getLogger(__name__)


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
    of the package shares: data checks, guarded rewards, dynamic sampling, the compact console, complete checkpoints
    with their extra state, the model card):

    - `_prepare_inputs`: the cycle schedule (`CyclePosition`). Samples behavior completions at the start of a cycle
      (`_sample_cycle`: `soup_trl.soup.behavior`), refreshes them when the policy drifted (`soup_trl.soup.refresh`),
      then scores one optimizer step at a time (`_score_step`: `soup_trl.soup.step`) through GRPOTrainer's own
      scoring, and post-processes its output: behavior log-probs on prefix tokens (`old_per_token_logps`),
      `soup_prefix_mask`, the DAPO normaliser of the step, and the vLLM sampler-mismatch correction of spliced rows.
      Groups are only ever moved whole.
    - `_generate_single_turn`: while a step is scored (`_serving`), returns the stored behavior completions (step 1)
      or writes the continuations of the prefixes with the current policy, each row within its own token budget
      (steps 2..T: `soup_trl.soup.continuation`).
    - `_loss_inputs` / `_on_policy_forward` / `_after_loss` (`MethodTrainer`'s loss hooks): the continuation tokens'
      NaN denominators become the loss forward's own log-probs; the prefix-loss choice (`soup_prefix_loss`:
      `soup_trl.soup.prefix_loss`) adjusts the batch GRPOTrainer's loss reads (the paper's token-level ratios leave it
      as it is; "mask" takes the prefix out of the loss, "minpro" weighs each token's advantage); SOUP's per-token
      diagnostics, the trained rows of the rollout history and adaptive refresh's drift are taken from that forward
      (no extra forward pass).
    - `_get_train_sampler`: with several processes, reorders each cycle's batch so that every optimizer step trains
      on the same global rows whatever the number of processes (`soup_trl.core.samplers.StepMajorSampler`).
    - `_process_state` / `_restore_process_state` / `_save_shared_files` / `_load_shared_files` (checkpoint state): a
      checkpoint taken in the middle of a cycle keeps each process's behavior samples, and a resumed run finishes the
      cycle with them; the rollout history is saved once, its tokens as raw files (`soup_trl.soup.checkpoint`).
    - `_card_section`: the run's SOUP settings and recipe in the model card.

    Every batch handed to `compute_loss` carries `soup_prefix_mask` (1 on off-policy prefix tokens).
    """

    _tag_names = ["trl", "grpo", "soup"]
    _name = "SOUP"
    config_class = SOUPConfig
    paper = PAPER
    console_fields = (("soup/prefix_token_frac", "prefix", "%"), ("soup/prefix/clip_ratio", "prefix clip", ".2g"))
    process_state_names = (CYCLE_STATE,)

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
        self.truncation = get_truncation_strategy(args.soup_truncation).bind(args)
        self.prefix_loss = get_prefix_loss(args.soup_prefix_loss)
        self.history: RolloutHistory | None = build_history(self)  # with soup_behavior_source="history"
        self._cycle: BehaviorCycle | None = None  # this process's behavior samples of the running cycle
        self._step_batches: list[dict] | None = None  # the micro-batches of the optimizer step being trained
        self._drift = DriftMeter()  # adaptive refresh: the prefix tokens' drift in the losses since the last step
        self._plan: GenerationPlan | None = None  # what generation serves, only while a step is scored (`_serving`)

    # ------------------------------------------------------------------ schedule

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if self.args.soup_behavior_steps == 1 or self.accelerator.num_processes == 1:
            return sampler
        rows_per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        return StepMajorSampler(sampler, self.args.soup_behavior_steps, self.accelerator.num_processes, rows_per_step)

    def _prepare_inputs(self, generation_batch):
        if not self.model.training or not self.args.soup_uses_cycles:
            return with_prefix_mask(super()._prepare_inputs(generation_batch))
        args = self.args
        at = CyclePosition.of(self._step, args.steps_per_generation, args.gradient_accumulation_steps)
        if at.starts_cycle or self._cycle is None:
            if not at.starts_cycle:
                logger.warning(
                    "SOUP: no behavior samples for this cycle (resumed mid-cycle?); sampling new behavior completions "
                    "with the current policy for the remaining steps of the cycle."
                )
            self._cycle = self._sample_cycle(rest_of_cycle(generation_batch, at.step, args.soup_behavior_steps), at.step)
        if at.starts_step or self._step_batches is None:
            if args.soup_refresh_drift is not None:
                reason = refresh_reason(self, self._drift, at.step, at.step - self._cycle.first_step)
                if reason is not None:
                    logger.info("SOUP: refreshing the behavior samples at step %d: %s.", self.state.global_step + 1, reason)
                    rest = rest_of_cycle(generation_batch, at.step, args.soup_behavior_steps)
                    self._cycle = self._sample_cycle(rest, at.step)
            self._step_batches = self._score_step(self._cycle, at.step - self._cycle.first_step)
        return self._step_batches[at.micro_in_step]

    def _sample_cycle(self, inputs: list[dict], first_step: int) -> BehaviorCycle:
        """Behavior samples for the cycle's rows `inputs`, its steps from `first_step` on (all of it at step 0)."""
        return sample_cycle(self, inputs, first_step, self.history)

    def _score_step(self, cycle: BehaviorCycle, step: int) -> list[dict]:
        """The micro-batches of `cycle`'s `step` (counted from the cycle's first step)."""
        return score_step(self, cycle, step)

    # ------------------------------------------------------------------ generation

    def _serving(self, plan: GenerationPlan):
        """While active, `_generate_single_turn` serves `plan` (GRPOTrainer calls it from inside its scoring, so the
        plan cannot travel in a call)."""
        return patched_attribute(self, "_plan", plan)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self._plan is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        return continue_rows(self, self._plan, prompt_ids)

    def _generate_rows(self, prompt_ids: list[list[int]], num_generations: int):
        """Sample `num_generations` completions per token-id prompt with the current policy (no plan served)."""
        return super()._generate_single_turn(prompt_ids, None, {}, num_generations)

    # ------------------------------------------------------------------ loss

    def _loss_inputs(self, inputs: dict) -> dict:
        return self.prefix_loss.loss_inputs(inputs)

    def _on_policy_forward(self, forward: PolicyForward) -> None:
        # NaN denominators mean "the current policy at loss time": this forward's log-probs, before GRPOTrainer's loss
        # reads them (it reads `old_per_token_logps` and `advantages` after this forward)
        old = forward.inputs.get("old_per_token_logps")
        if old is not None:
            prefix = forward.inputs.get("soup_prefix_mask")
            forward.inputs["old_per_token_logps"] = fill_current_logps(old, forward.logps.detach(), prefix)
        self.prefix_loss.on_policy_forward(forward.inputs, forward.logps.detach())

    def _after_loss(self, loss, inputs, forward: PolicyForward):
        logps, old = forward.logps.detach(), forward.inputs.get("old_per_token_logps")
        logged = self._logs_this_step()
        if forward.entropies is not None and logged:
            # the loss tokens (the prefix-loss choice may have left some out), placed in the whole completion
            completion, mask = loss_tokens(inputs), loss_tokens(forward.inputs)
            totals = token_stats(
                logps, logps if old is None else old, inputs["advantages"], forward.entropies, mask,
                inputs["soup_prefix_mask"], self.epsilon_low, self.epsilon_high, position_mask=completion,
            )
            self._log_sums(totals, stats_to_metrics)
        weights = self.prefix_loss.weight_sums(forward.inputs) if logged else None  # "minpro": its weights
        if weights is not None:
            self._log_sums(weights, weight_metrics)
        if logged and "sampling_per_token_logps" in inputs:  # vLLM: each segment against the engine that sampled it
            log_mismatch(self, logps, inputs)
        if self.history is not None and self.model.training and "soup_history_row" in inputs:
            entropies = forward.entropies if self.truncation.needs_entropy else None
            store_trained_rows(self, inputs, logps if old is None else old, entropies)
        if self.args.soup_refresh_drift is not None and self.model.training and old is not None:
            self._drift.add(logps, old, inputs["soup_prefix_mask"] * inputs["completion_mask"])
        return loss

    # ------------------------------------------------------------------ checkpoint state

    def _process_state(self):
        state = super()._process_state()
        args = self.args
        if args.soup_behavior_steps > 1 and self._cycle is not None and mid_cycle(
            self.state.global_step, args.gradient_accumulation_steps, args.steps_per_generation
        ):  # each process keeps its own behavior samples, so that a resumed run finishes the cycle with them
            state[CYCLE_STATE] = cycle_state(self._cycle, self._drift.sums)
        return state

    def _restore_process_state(self, found):
        super()._restore_process_state(found)
        args = self.args
        if not args.soup_uses_cycles:
            return
        # The Trainer skips the batches it already trained on without calling training_step: put the micro-step
        # counter back where the interrupted run was, so the cycle schedule continues from there.
        self._step = self.state.global_step * args.gradient_accumulation_steps
        if not mid_cycle(self.state.global_step, args.gradient_accumulation_steps, args.steps_per_generation):
            return  # resumed at a cycle boundary: the next step samples a new cycle anyway
        if CYCLE_STATE not in found:
            logger.warning(
                "SOUP: the checkpoint has no behavior samples for process %d (saved by an older version?); the rest of "
                "the cycle will use new behavior samples from the current policy.", self.accelerator.process_index,
            )
            return
        self._cycle, sums = restore_cycle(found[CYCLE_STATE], self.accelerator.device)
        self._drift = DriftMeter(sums)

    def _save_shared_files(self, folder):
        if self.history is not None:  # the same on every process: written once, its tokens streamed to raw files
            self.history.save(os.path.join(folder, HISTORY_STATE))

    def _load_shared_files(self, folder):
        if self.history is not None and not load_history(self.history, folder):
            logger.warning(
                "SOUP: the checkpoint has no rollout history (trained with soup_behavior_source='fresh'?); the history "
                "starts empty and fills from the next step on."
            )

    # ------------------------------------------------------------------ model card

    def _card_section(self) -> str:
        return soup_card_section(self.args)

"""`MethodTrainer`: the set-up and hooks that every training method of the package shares, on TRL's `GRPOTrainer`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id

from .checkpoints import CompleteCheckpoints
from .config import MethodConfig
from .console import use_compact_console
from .data_checks import check_training_data, warn_if_tokenizer_drops_characters
from .dynamic_sampling import (
    LEGACY_PROMPT_STREAM_STATE,
    PROMPT_STREAM_STATE,
    PromptStream,
    refill_groups,
    refill_seed,
)
from .generation import compacted_generation
from .model_card import Paper, describe_local_base_model
from .process_state import load_state, save_state
from .reward_guard import fail_rows, guard_reward_funcs
from .samplers import EpochReplaySampler

MULTI_TURN_ARGUMENTS = ("tools", "rollout_func", "environment_factory")


@dataclass
class PolicyForward:
    """The policy forward pass of one `compute_loss` call, as `_get_per_token_logps_and_entropies` returned it.

    `inputs` is the batch GRPOTrainer's loss reads (a hook may change it in place before the loss does);
    `logps` (B, C) keeps its graph, `entropies` (B, C) is None when GRPOTrainer did not compute them.
    """

    inputs: dict
    logps: torch.Tensor | None = None
    entropies: torch.Tensor | None = None


class MethodTrainer(CompleteCheckpoints, GRPOTrainer):
    """
    Base of the package's trainers (`SOUPTrainer`, `M2POTrainer`, `LUFFYTrainer`): GRPOTrainer, plus what every method
    needs and nothing a method decides.

    At construction, in this order: the config's type is checked (`config_class`; `None` gives a default config,
    as GRPOTrainer does); GRPOTrainer is built; `_prepare_train_dataset` may filter the training data (LUFFY drops
    traces that do not fit the context); the console callback becomes one short line per log
    (`soup_trl.core.console`, with the method's `console_fields`); a tokenizer that loses characters of the first
    prompts is warned about; the training data is checked (`soup_trl.core.data_checks`); and every plain reward
    function is wrapped so that one odd sample cannot stop training (`soup_trl.core.reward_guard`).

    Hooks overridden:

    - `_generate_and_score_completions`: GRPOTrainer's scoring through `_score` (a method's hook: its scoring of one
      batch, with each row's rewards), then, with `dynamic_sampling=True`, DAPO's dynamic sampling: zero-variance
      groups are replaced by groups of further prompts scored the same way (`soup_trl.core.dynamic_sampling`).
    - `_calculate_rewards`: rows a reward function failed on become unscorable (`fail_rows`: NaN rewards, advantage
      0, out of their group's statistics); `_score` hands each row's rewards to its caller.
    - `compute_loss` and `_get_per_token_logps_and_entropies`: the policy forward pass of each loss call is kept as a
      `PolicyForward` (no extra forward pass). A method overrides up to three small hooks instead:
      `_loss_inputs` (the batch handed to GRPOTrainer's loss), `_on_policy_forward` (called right after the policy
      forward, before the loss reads the batch) and `_after_loss` (the loss and the forward, once GRPOTrainer is done).
    - `_generate_single_turn`: on the Transformers `generate` path, stopped rows leave the forward batch
      (`compact_generation`, `soup_trl.core.generation`); the tokens are generate's own. Every call's decoded
      tokens are counted, and `training_step` logs them per optimizer step, summed over processes
      (`decoded_tokens`: behavior samples, continuations and filler rows included).
    - `_get_train_sampler`: GRPOTrainer's sampler, wrapped so that a run resumed in a later epoch keeps the
      uninterrupted run's data order (`soup_trl.core.samplers.EpochReplaySampler`).
    - `create_model_card`: a local base model is named by its path, and the method adds `_card_section()`.
    - `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: state beyond the model and optimizer is
      saved with the checkpoint and restored on resume (`soup_trl.core.process_state`): dynamic sampling's refill
      position, and a method's own (`_process_state` / `_restore_process_state`, per process; `_save_shared_files` /
      `_load_shared_files`, large state the same on every process, written once by the main process).
    - `CompleteCheckpoints` (`_save_checkpoint`, `train`): a checkpoint whose write was interrupted is never resumed
      from.

    Shared helpers for methods: `_log_sums` (sums reduced over processes, then turned into logged means).
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    paper: ClassVar[Paper | None] = None
    console_fields: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # the method's own (log key, label, format)
    # the method's own pieces of checkpoint state (`_process_state`), and the older names of some of them
    process_state_names: ClassVar[tuple[str, ...]] = ()
    process_state_aliases: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.paper is not None:
            cls._paper = cls.paper.as_trl()

    def __init__(self, model, reward_funcs=None, args: MethodConfig | None = None, **kwargs):
        args = self._checked_args(model, args)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        if self.train_dataset is not None:
            self.train_dataset = self._prepare_train_dataset(self.train_dataset)
        use_compact_console(self, extra=self.console_fields + (("dynamic_sampling/kept_group_frac", "kept groups", "%"),))
        warn_if_tokenizer_drops_characters(self.processing_class, self.train_dataset)
        check_training_data(self)
        guard_reward_funcs(self)
        self._policy_forward: PolicyForward | None = None
        self._decoded_tokens = 0  # tokens this process's generation calls decoded since the last optimizer step
        self._refill_prompts: PromptStream | None = None  # dynamic sampling's refill prompts (created on first use)
        self._reward_capture: list | None = None  # set while `_score` runs: where `_calculate_rewards` puts rewards

    @classmethod
    def _checked_args(cls, model, args):
        config_class = cls.config_class
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            return config_class(f"{str(name).split('/')[-1]}-{cls._name}")
        if not isinstance(args, config_class):
            raise TypeError(
                f"{cls.__name__} needs a {config_class.__name__}, got {type(args).__name__}. {config_class.__name__} "
                f"accepts every GRPOConfig field: replace `GRPOConfig(...)` with `{config_class.__name__}(...)`."
            )
        return args

    @staticmethod
    def reject_multi_turn(kwargs: dict[str, Any], why: str) -> None:
        """Fail when the trainer is given multi-turn arguments (tools, rollouts, environments) it cannot use."""
        given = [name for name in MULTI_TURN_ARGUMENTS if kwargs.get(name)]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with {why}")

    def _get_train_sampler(self, dataset=None):
        return EpochReplaySampler(super()._get_train_sampler(dataset))

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        args = (prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if self.use_vllm or self.use_transformers_continuous_batching or not self.args.compact_generation:
            completion_ids, logprobs = super()._generate_single_turn(*args)
        else:
            with compacted_generation(self.accelerator.unwrap_model(self.model_wrapped)):
                completion_ids, logprobs = super()._generate_single_turn(*args)
        if self.model.training:  # evaluation's generation is not a training step's cost
            self._decoded_tokens += sum(len(ids) for ids in completion_ids)
        return completion_ids, logprobs

    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        if self._step % self.current_gradient_accumulation_steps == 0:  # an optimizer step ended (as TRL's step_time)
            decoded = torch.tensor(float(self._decoded_tokens), device=self.accelerator.device)
            self._metrics["train"]["decoded_tokens"].append(self.accelerator.reduce(decoded, reduction="sum").item())
            self._decoded_tokens = 0
        return output

    def _prepare_train_dataset(self, dataset):
        """The training data the method trains on (before it is checked); the dataset itself unless a method filters."""
        return dataset

    # ------------------------------------------------------------------ scoring and rewards

    def _generate_and_score_completions(self, inputs):
        batch, rewards = self._score(inputs)
        if self.args.dynamic_sampling and self.model.training:
            batch, _ = self._dynamic_sampling(batch, rewards)
        return batch

    def _score(self, inputs: list[dict]) -> tuple[dict, torch.Tensor]:
        """One batch of dataset rows sampled and scored by GRPOTrainer, as the method trains on it, and the rewards
        per function of this process's rows (B, F). A method that changes how a batch is scored overrides this."""
        with self._capturing_rewards() as captured:
            batch = super()._generate_and_score_completions(inputs)
        rows = batch["completion_ids"].size(0)
        start = self.accelerator.process_index * rows
        return batch, captured[-1][start : start + rows]

    def _dynamic_sampling(
        self, batch: dict, rewards: torch.Tensor, score: Callable[[list[dict]], tuple[dict, torch.Tensor]] | None = None
    ) -> tuple[dict, torch.Tensor]:
        """DAPO's dynamic sampling of a scored batch: the batch with its zero-variance groups replaced by groups of
        further prompts (scored by `score`, `_score` by default), and each row's source row (-1 for refills)."""
        return refill_groups(self, batch, rewards, score or self._score)

    @contextlib.contextmanager
    def _capturing_rewards(self):
        """While active, every `_calculate_rewards` call appends its (all processes' rows, functions) rewards to the
        list this yields (GRPOTrainer computes them inside its scoring and does not return them)."""
        outer, self._reward_capture = self._reward_capture, []
        try:
            yield self._reward_capture
        finally:
            self._reward_capture = outer

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F)
        rewards_per_func = fail_rows(self, rewards_per_func)
        if self._reward_capture is not None:
            self._reward_capture.append(rewards_per_func)
        return rewards_per_func

    # ------------------------------------------------------------------ metrics

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step being computed is one the Trainer logs (every process decides alike, so a method
        may measure costly diagnostics on those steps only, with collectives)."""
        if not self.model.training or self.args.logging_strategy != "steps":
            return True
        step = self.state.global_step + 1  # incremented after this step's optimizer update
        if step == 1 and self.args.logging_first_step:
            return True
        return self.state.logging_steps > 0 and step % self.state.logging_steps == 0

    def _log_sums(self, totals: torch.Tensor, to_metrics: Callable[[torch.Tensor], dict[str, float]]) -> None:
        """Reduce `totals` (sums over this process's tokens or rows) over processes, then log `to_metrics(sums)` in the
        current mode (every process must call it, in the same order)."""
        totals = self.accelerator.reduce(totals, reduction="sum")
        mode = "train" if self.model.training else "eval"
        for name, value in to_metrics(totals).items():
            self._metrics[mode][name].append(value)

    # ------------------------------------------------------------------ checkpoint state

    def _process_state(self) -> dict[str, Any]:
        """This process's pieces of checkpoint state, by name (None: nothing to save); a method adds its own."""
        return {PROMPT_STREAM_STATE: None if self._refill_prompts is None else {"drawn": self._refill_prompts.drawn}}

    def _restore_process_state(self, found: dict[str, Any]) -> None:
        """Restore the pieces a checkpoint held for this process (a method restores its own and calls this)."""
        if PROMPT_STREAM_STATE in found:
            self._refill_prompts = PromptStream(self.train_dataset, refill_seed(self.args.seed, self.accelerator.process_index))
            self._refill_prompts.drawn = found[PROMPT_STREAM_STATE]["drawn"]

    def _save_shared_files(self, folder: str) -> None:
        """Write checkpoint state that is the same on every process, and large, as files of the method's own in
        `folder` (the main process calls it)."""

    def _load_shared_files(self, folder: str) -> None:
        """Restore what `_save_shared_files` wrote in checkpoint `folder` (every process calls it)."""

    def _save_optimizer_and_scheduler(self, folder):
        super()._save_optimizer_and_scheduler(folder)
        save_state(folder, self._process_state(), self.accelerator.process_index)
        if self.accelerator.is_main_process:
            self._save_shared_files(folder)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        names = (PROMPT_STREAM_STATE, *self.process_state_names)
        aliases = {PROMPT_STREAM_STATE: LEGACY_PROMPT_STREAM_STATE, **self.process_state_aliases}
        self._restore_process_state(load_state(checkpoint, names, self.accelerator.process_index, aliases))
        self._load_shared_files(checkpoint)

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss_inputs = self._loss_inputs(inputs)
        self._policy_forward = PolicyForward(loss_inputs)
        try:
            loss = super().compute_loss(model, loss_inputs, return_outputs, num_items_in_batch)
        finally:
            forward, self._policy_forward = self._policy_forward, None
        if forward.logps is None:
            raise RuntimeError(f"{self._name}: GRPOTrainer computed the loss without a policy forward pass.")
        return self._after_loss(loss, inputs, forward)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        forward = self._policy_forward
        if forward is not None and forward.logps is None:  # the first forward of compute_loss is the policy's
            forward.logps, forward.entropies = output[0], output[1]
            self._on_policy_forward(forward)
        return output

    def _loss_inputs(self, inputs: dict) -> dict:
        """The batch GRPOTrainer's loss reads (a method may mask tokens out of it)."""
        return inputs

    def _on_policy_forward(self, forward: PolicyForward) -> None:
        """Called right after the policy forward of `compute_loss`, before GRPOTrainer's loss reads `forward.inputs`."""

    def _after_loss(self, loss: torch.Tensor, inputs: dict, forward: PolicyForward) -> torch.Tensor:
        """The loss to back-propagate, from GRPOTrainer's loss of the batch `inputs` and its policy forward."""
        return loss

    # ------------------------------------------------------------------ model card

    def _card_section(self) -> str:
        """Markdown the method appends to the model card (its settings)."""
        return ""

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            path = Path(self.args.output_dir) / "README.md"
            base_model = get_config_model_id(self.model.config)
            local_base = base_model if base_model and os.path.isdir(base_model) else None
            card = describe_local_base_model(path.read_text(), local_base, self.hub_model_id or self.args.output_dir)
            path.write_text(card + self._card_section())

"""`MethodTrainer`: the set-up and hooks that every training method of the package shares, on TRL's `GRPOTrainer`."""

from __future__ import annotations

import os
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
from .generation import compacted_generation
from .model_card import Paper, describe_local_base_model
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

    - `_calculate_rewards`: rows a reward function failed on become unscorable (`fail_rows`: NaN rewards, advantage
      0, out of their group's statistics).
    - `compute_loss` and `_get_per_token_logps_and_entropies`: the policy forward pass of each loss call is kept as a
      `PolicyForward` (no extra forward pass). A method overrides up to three small hooks instead:
      `_loss_inputs` (the batch handed to GRPOTrainer's loss), `_on_policy_forward` (called right after the policy
      forward, before the loss reads the batch) and `_after_loss` (the loss and the forward, once GRPOTrainer is done).
    - `_generate_single_turn`: on the Transformers `generate` path, stopped rows leave the forward batch
      (`soup_compact_generation`, `soup_trl.core.generation`); the tokens are generate's own. Every call's decoded
      tokens are counted, and `training_step` logs them per optimizer step, summed over processes
      (`decoded_tokens`: behavior samples, continuations and filler rows included).
    - `_get_train_sampler`: GRPOTrainer's sampler, wrapped so that a run resumed in a later epoch keeps the
      uninterrupted run's data order (`soup_trl.core.samplers.EpochReplaySampler`).
    - `create_model_card`: a local base model is named by its path, and the method adds `_card_section()`.
    - `CompleteCheckpoints` (`_save_checkpoint`, `train`): a checkpoint whose write was interrupted is never resumed
      from.
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    paper: ClassVar[Paper | None] = None
    console_fields: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # the method's own (log key, label, format)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.paper is not None:
            cls._paper = cls.paper.as_trl()

    def __init__(self, model, reward_funcs=None, args: MethodConfig | None = None, **kwargs):
        args = self._checked_args(model, args)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        if self.train_dataset is not None:
            self.train_dataset = self._prepare_train_dataset(self.train_dataset)
        use_compact_console(self, extra=self.console_fields)
        warn_if_tokenizer_drops_characters(self.processing_class, self.train_dataset)
        check_training_data(self)
        guard_reward_funcs(self)
        self._policy_forward: PolicyForward | None = None
        self._decoded_tokens = 0  # tokens this process's generation calls decoded since the last optimizer step

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
        if self.use_vllm or self.use_transformers_continuous_batching or not self.args.soup_compact_generation:
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

    # ------------------------------------------------------------------ rewards

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F)
        return fail_rows(self, rewards_per_func)

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

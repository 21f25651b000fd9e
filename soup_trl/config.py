"""SOUPConfig: GRPOConfig plus the SOUP fields and the paper's DAPO defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from .core.config import MethodConfig
from .truncation import TRUNCATION_STRATEGIES, get_truncation_strategy


@dataclass
class SOUPConfig(MethodConfig):
    r"""
    Configuration for [`SOUPTrainer`]: every field of `GRPOConfig`, plus the `soup_*` fields below.

    Every `soup_behavior_steps` (T) optimizer steps the current policy (the cycle's behavior policy) samples full
    completions for T steps' worth of prompts. Step 1 trains on them exactly as GRPO would. For steps 2..T each
    completion is cut to a prefix by `soup_truncation`, the current policy writes the continuation, the spliced
    sequence is rewarded, and the loss uses token-level importance ratios: prefix tokens against the behavior
    policy, continuation tokens against the policy that wrote them.

    Defaults follow the paper's DAPO setting: `loss_type="dapo"`, `epsilon=0.2` and `beta=0` are GRPOConfig's own
    defaults; `epsilon_high` is re-defaulted to the paper's 0.28 (GRPOConfig's default is `epsilon`). The console and
    recipe fields (`soup_console`, `soup_recipe`) are `MethodConfig`'s.
    T is implemented with `steps_per_generation = T * gradient_accumulation_steps`, so leave
    `steps_per_generation` and `generation_batch_size` unset.
    """

    soup_behavior_steps: int = field(
        default=8,
        metadata={
            "help": "T: number of optimizer steps one behavior sampling serves. 1 means plain on-policy DAPO "
            "(identical to GRPOTrainer)."
        },
    )
    soup_truncation: str = field(
        default="ratio",
        metadata={
            "help": "Where behavior completions are cut: 'ratio' keeps the first round(len * soup_prefix_ratio) "
            "tokens; 'entropy' cuts at a position drawn from the soup_entropy_top_k highest-entropy positions; "
            "'prefix_budget' samples only soup_prefix_budget behavior tokens for steps 2..T and keeps them all. "
            "Other strategies can be registered with soup_trl.truncation.register_truncation and chosen by name, or as "
            "'my_module:name' (the module is imported first, so a recipe or the command line can name it)."
        },
    )
    soup_prefix_ratio: float = field(
        default=0.5,
        metadata={"help": "Fraction of a behavior completion kept as off-policy prefix ('ratio' truncation), in [0, 1)."},
    )
    soup_entropy_top_k: int = field(
        default=32,
        metadata={"help": "k for 'entropy' truncation: the cut is drawn uniformly among the k highest-entropy positions."},
    )

    soup_prefix_budget: float = field(
        default=0.25,
        metadata={
            "help": "Behavior token budget for 'prefix_budget' truncation: the behavior policy samples only this many "
            "tokens for steps 2..T. Below 1: a fraction of max_completion_length; from 1 on: a number of tokens."
        },
    )
    soup_log_cut_tokens: bool = field(
        default=True,
        metadata={
            "help": "With soup_behavior_steps > 1, append the tokens at the cycle's cuts (each spliced row's first "
            "resampled behavior token) to OUTPUT_DIR/soup_cut_tokens.jsonl, one line per cycle; `soup-trl plot` "
            "draws their frequencies (the paper's Figure 3)."
        },
    )

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO's dynamic sampling: groups whose rewards are all equal are dropped after scoring and replaced "
            "by groups of further training prompts (whole groups), so every step trains on its configured number of "
            "groups, each with reward variance > 0. With soup_behavior_steps > 1 it applies to the spliced groups; "
            "refills are fresh on-policy groups."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=10,
        metadata={
            "help": "Extra generation rounds one step may spend refilling dropped groups. If groups are still missing "
            "after them, the step trains on the groups it has (the missing slots are masked out of the loss), with a "
            "warning and the dynamic_sampling/unfilled_group_frac metric."
        },
    )
    # DAPO defaults used by the paper
    epsilon_high: float | None = field(
        default=0.28,
        metadata={"help": "Upper clipping bound (clip-higher). The paper uses 0.28."},
    )

    def _field_errors(self) -> list[str]:
        errors = []
        if not isinstance(self.soup_behavior_steps, int) or self.soup_behavior_steps < 1:
            errors.append(f"soup_behavior_steps must be an integer >= 1, got {self.soup_behavior_steps!r}.")
        if self.soup_truncation not in TRUNCATION_STRATEGIES:
            try:
                get_truncation_strategy(self.soup_truncation)
            except ValueError as err:
                errors.append(str(err))
        if not 0.0 <= self.soup_prefix_ratio < 1.0:
            errors.append(f"soup_prefix_ratio must be in [0, 1), got {self.soup_prefix_ratio!r}.")
        if not self.soup_prefix_budget > 0 or (self.soup_prefix_budget >= 1 and self.soup_prefix_budget % 1):
            errors.append(
                f"soup_prefix_budget must be a fraction in (0, 1) or a whole number of tokens >= 1, got "
                f"{self.soup_prefix_budget!r}."
            )
        if not isinstance(self.soup_entropy_top_k, int) or self.soup_entropy_top_k < 1:
            errors.append(f"soup_entropy_top_k must be an integer >= 1, got {self.soup_entropy_top_k!r}.")
        if not isinstance(self.dynamic_sampling_max_rounds, int) or self.dynamic_sampling_max_rounds < 0:
            errors.append(
                f"dynamic_sampling_max_rounds must be an integer >= 0, got {self.dynamic_sampling_max_rounds!r}."
            )
        return errors + super()._field_errors()

    def _before_grpo_post_init(self) -> None:
        if self.soup_behavior_steps > 1:
            self._check_cycle_compatible()
            # One dataloader batch holds the prompts of a whole cycle; GRPOTrainer derives generation_batch_size.
            self.steps_per_generation = self.soup_behavior_steps * self.gradient_accumulation_steps

    def _derived_errors(self) -> list[str]:
        if self.soup_behavior_steps > 1 and self.max_completion_length < 2:
            return [
                f"max_completion_length must be >= 2 with soup_behavior_steps > 1 (a prefix must leave room for a "
                f"continuation), got {self.max_completion_length}."
            ]
        return []

    def _check_cycle_compatible(self):
        t = self.soup_behavior_steps
        cycle_steps = t * self.gradient_accumulation_steps
        if self.steps_per_generation == cycle_steps:
            self.generation_batch_size = None  # derived again by GRPOConfig (a config being re-initialised)
        elif self.steps_per_generation is not None or self.generation_batch_size is not None:
            raise ValueError(
                f"steps_per_generation / generation_batch_size are set by SOUP (steps_per_generation = "
                f"soup_behavior_steps * gradient_accumulation_steps). Leave them unset with soup_behavior_steps={t}; "
                "use per_device_train_batch_size and gradient_accumulation_steps to size a step."
            )
        if self.num_iterations != 1:
            raise ValueError(
                f"num_iterations={self.num_iterations} is not supported with soup_behavior_steps={t}: SOUP trains "
                "once on each spliced batch. Set num_iterations=1, or soup_behavior_steps=1 for plain GRPO."
            )
        rows_per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if rows_per_step % self.num_generations != 0:
            raise ValueError(
                f"per_device_train_batch_size * gradient_accumulation_steps ({rows_per_step}) must be a multiple of "
                f"num_generations ({self.num_generations}) with soup_behavior_steps={t}, so that every process scores "
                "whole groups at every step."
            )
        if self.use_transformers_continuous_batching:
            raise ValueError(
                f"use_transformers_continuous_batching is not supported with soup_behavior_steps={t}: continuations "
                "need a per-row token budget. Use the default transformers generate path or vLLM."
            )

"""SOUPConfig: GRPOConfig plus the SOUP fields and the paper's DAPO defaults."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments
from trl import GRPOConfig

from .checkpoints import HubTokenNotPickled
from .truncation import TRUNCATION_STRATEGIES, get_truncation_strategy

# Transformers 5.20 renamed gradient_checkpointing to activation_checkpointing; TRL sets the old name to True, which
# prints a deprecation warning for every config. The package's configs keep TRL's default (on) through the new name:
# they declare `gradient_checkpointing_field()` and call `default_activation_checkpointing` before GRPOConfig's __post_init__.
# On Transformers < 5.20, which has only the old name, they declare the new one as an alias of it
# (`activation_checkpointing_field()`), so that recipes and code written with the new name run on every supported version.
# TRL 1.16 itself calls the gradient-checkpointing methods that Transformers 5.20 renamed (activation_checkpointing_*);
# the resulting FutureWarnings are about TRL's code, not the user's, and would print on every run of every method.
warnings.filterwarnings(
    "ignore",
    message=r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated",
    category=FutureWarning,
)

HAS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}


def gradient_checkpointing_field():
    return field(default=None, metadata={"help": "Deprecated name of activation_checkpointing (on by default)."})


def activation_checkpointing_field():
    return field(
        default=None,
        metadata={
            "help": "Activation (gradient) checkpointing, on by default; this Transformers version calls it "
            "gradient_checkpointing."
        },
    )


def default_activation_checkpointing(config) -> None:
    """Checkpointing on unless the user set either name (the user's own use of the old name still warns)."""
    if not HAS_ACTIVATION_CHECKPOINTING:  # the new name is the config's own alias of the old one
        new, old = config.activation_checkpointing, config.gradient_checkpointing
        if new is not None and old is not None and new != old:
            raise ValueError(
                f"activation_checkpointing={new!r} and gradient_checkpointing={old!r} disagree; they name the same "
                "setting: set one of them."
            )
        value = True if new is None and old is None else bool(new if old is None else old)
        config.activation_checkpointing = config.gradient_checkpointing = value
        return
    if config.activation_checkpointing is None and config.gradient_checkpointing is None:
        config.activation_checkpointing = True


def no_activation_checkpointing() -> dict:
    """TrainingArguments keywords that turn checkpointing off under every name this Transformers version has."""
    return {"gradient_checkpointing": False} | ({"activation_checkpointing": False} if HAS_ACTIVATION_CHECKPOINTING else {})


@dataclass
class SOUPConfig(HubTokenNotPickled, GRPOConfig):
    r"""
    Configuration for [`SOUPTrainer`]: every field of `GRPOConfig`, plus the `soup_*` fields below.

    Every `soup_behavior_steps` (T) optimizer steps the current policy (the cycle's behavior policy) samples full
    completions for T steps' worth of prompts. Step 1 trains on them exactly as GRPO would. For steps 2..T each
    completion is cut to a prefix by `soup_truncation`, the current policy writes the continuation, the spliced
    sequence is rewarded, and the loss uses token-level importance ratios: prefix tokens against the behavior
    policy, continuation tokens against the policy that wrote them.

    Defaults follow the paper's DAPO setting: `loss_type="dapo"`, `epsilon=0.2`, `epsilon_high=0.28`, `beta=0`.
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
            "Other strategies can be registered with soup_trl.truncation.register_truncation."
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
    soup_console: str = field(
        default="compact",
        metadata={
            "help": "Console output: 'compact' prints one short line per log (loss, reward, length, entropy, clip "
            "share, SOUP's prefix share); 'full' prints Transformers' whole log dict. Every metric reaches "
            "trainer_state.json and report_to either way."
        },
    )

    soup_recipe: str | None = field(
        default=None,
        metadata={"help": "Recipe file the run was launched with; recorded in the model card (set by the script)."},
    )

    gradient_checkpointing: bool | None = gradient_checkpointing_field()
    if not HAS_ACTIVATION_CHECKPOINTING:
        activation_checkpointing: bool | None = activation_checkpointing_field()

    # DAPO defaults used by the paper
    epsilon_high: float | None = field(
        default=0.28,
        metadata={"help": "Upper clipping bound (clip-higher). The paper uses 0.28."},
    )

    def __post_init__(self):
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
        if self.soup_console not in ("compact", "full"):
            errors.append(f"soup_console must be 'compact' or 'full', got {self.soup_console!r}.")
        if errors:
            raise ValueError(" ".join(errors))
        default_activation_checkpointing(self)

        if self.soup_behavior_steps > 1:
            self._check_cycle_compatible()
            # One dataloader batch holds the prompts of a whole cycle; GRPOTrainer derives generation_batch_size.
            self.steps_per_generation = self.soup_behavior_steps * self.gradient_accumulation_steps
        super().__post_init__()
        if self.soup_behavior_steps > 1 and self.max_completion_length < 2:
            raise ValueError(
                f"max_completion_length must be >= 2 with soup_behavior_steps > 1 (a prefix must leave room for a "
                f"continuation), got {self.max_completion_length}."
            )

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

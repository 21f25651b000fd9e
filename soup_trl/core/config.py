"""`MethodConfig`: what the config of every training method of the package adds to TRL's `GRPOConfig`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from .checkpoints import HubTokenNotPickled
from .compat import (
    HAS_ACTIVATION_CHECKPOINTING,
    activation_checkpointing_field,
    default_activation_checkpointing,
    gradient_checkpointing_field,
)
from .console import CONSOLE_MODES

#: Shared fields whose first spelling carried SOUP's prefix: (old name, new name). The old names are accepted for one
#: release (soup-trl 0.2), with a FutureWarning, and removed in 0.3.
RENAMED_FIELDS = (
    ("soup_console", "console"),
    ("soup_compact_generation", "compact_generation"),
    ("soup_recipe", "recipe"),
)


def _renamed(new: str) -> dict:
    return {"help": f"Deprecated spelling of `{new}` (removed in soup-trl 0.3): set `{new}` instead."}


@dataclass
class MethodConfig(HubTokenNotPickled, GRPOConfig):
    r"""
    Base of the package's method configs (`SOUPConfig`, `M2POConfig`, `LUFFYConfig`): every field of `GRPOConfig`,
    plus the fields every trainer of the package reads (console, compacted generation, recipe, DAPO's dynamic
    sampling), and one way to check fields.

    A method's config subclasses it, declares its own fields and overrides up to three hooks, which
    `__post_init__` calls in this order:

    - `_field_errors()`: messages for its invalid fields (each naming the field, the value and what is allowed);
      all of them, this class's included, are raised together as one `ValueError` before anything else runs;
    - `_before_grpo_post_init()`: fields the method derives before `GRPOConfig.__post_init__` reads them;
    - `_derived_errors()`: messages for combinations that can only be checked once GRPOConfig derived its fields
      (`steps_per_generation`, `generation_batch_size`), raised together.

    Activation checkpointing stays on by default under whichever name this Transformers version has
    (`soup_trl.core.compat`), and `hub_token` is never pickled into `training_args.bin` (`HubTokenNotPickled`).
    The first spellings of the shared fields (`soup_console`, `soup_compact_generation`, `soup_recipe`) still work
    for this release, with a FutureWarning (`RENAMED_FIELDS`).
    """

    console: str = field(
        default="compact",
        metadata={
            "help": "Console output: 'compact' prints one short line per log (loss, reward, length, entropy, clip "
            "share and the method's own share: SOUP's prefix, M2PO's masked tokens, LUFFY's off-policy tokens); "
            "'full' prints Transformers' whole log dict. Every metric reaches trainer_state.json and report_to "
            "either way."
        },
    )
    compact_generation: bool = field(
        default=True,
        metadata={
            "help": "Transformers generation (not vLLM, not continuous batching) drops a row from the forward batch "
            "and the KV cache once it has stopped, instead of decoding padding for it until the call's longest row is "
            "done. The sampled tokens are generate's own (the same random draws from the same distributions); only the "
            "forward passes shrink. False runs generate's loop as it is. See soup_trl.core.generation."
        },
    )
    recipe: str | None = field(
        default=None,
        metadata={"help": "Recipe file the run was launched with; recorded in the model card (set by the script)."},
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO's dynamic sampling, with any method: groups whose rewards are all equal are dropped after "
            "scoring and replaced by groups of further training prompts (whole groups), so every step trains on its "
            "configured number of groups, each with reward variance > 0. With SOUP's soup_behavior_steps > 1 it "
            "applies to the spliced groups; refills are fresh on-policy groups."
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

    soup_console: str | None = field(default=None, metadata=_renamed("console"))
    soup_compact_generation: bool | None = field(default=None, metadata=_renamed("compact_generation"))
    soup_recipe: str | None = field(default=None, metadata=_renamed("recipe"))

    gradient_checkpointing: bool | None = gradient_checkpointing_field()
    if not HAS_ACTIVATION_CHECKPOINTING:
        activation_checkpointing: bool | None = activation_checkpointing_field()

    def _field_errors(self) -> list[str]:
        errors = []
        if self.console not in CONSOLE_MODES:
            errors.append(f"console must be 'compact' or 'full', got {self.console!r}.")
        rounds = self.dynamic_sampling_max_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            errors.append(f"dynamic_sampling_max_rounds must be an integer >= 0, got {rounds!r}.")
        return errors

    def _before_grpo_post_init(self) -> None:
        """Derive fields that GRPOConfig's `__post_init__` reads (a subclass's hook)."""

    def _derived_errors(self) -> list[str]:
        return []

    def _inert_fields(self) -> list[str]:
        """Messages for fields set away from their defaults that the chosen settings never read (a subclass's hook;
        each message names the field and the setting it needs). `__post_init__` warns with them."""
        if not self.dynamic_sampling and self._is_set("dynamic_sampling_max_rounds"):
            return ["dynamic_sampling_max_rounds is set but does nothing without dynamic_sampling=True."]
        return []

    def _is_set(self, name: str) -> bool:
        """Whether field `name` holds something other than its default."""
        return getattr(self, name) != self.__dataclass_fields__[name].default

    def group_size_error(self, rows: int, rows_name: str, why: str) -> str | None:
        """The message when `rows` (a process's rows of one step or generation batch, described by `rows_name`) do not
        split into whole groups of `num_generations`, else None; `why` says what needs whole groups."""
        if rows % self.num_generations:
            return f"{rows_name} ({rows}) must be a multiple of num_generations ({self.num_generations}), so that {why}."
        return None

    def _rename_deprecated_fields(self) -> None:
        for old, new in RENAMED_FIELDS:
            value = getattr(self, old)
            if value is None:
                continue
            if self._is_set(new) and getattr(self, new) != value:
                raise ValueError(
                    f"{old}={value!r} and {new}={getattr(self, new)!r} are both set; {old} is the deprecated spelling "
                    f"of {new}: set only {new}."
                )
            warnings.warn(
                f"{old} is deprecated and will be removed in soup-trl 0.3; set {new} instead (same values).",
                FutureWarning,
                stacklevel=4,
            )
            setattr(self, new, value)
            setattr(self, old, None)

    def __post_init__(self):
        self._rename_deprecated_fields()
        errors = self._field_errors()
        if errors:
            raise ValueError(" ".join(errors))
        default_activation_checkpointing(self)
        self._before_grpo_post_init()
        super().__post_init__()
        errors = self._derived_errors()
        if errors:
            raise ValueError(" ".join(errors))
        for message in self._inert_fields():
            warnings.warn(message, UserWarning, stacklevel=3)


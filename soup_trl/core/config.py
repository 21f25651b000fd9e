"""`MethodConfig`: what the config of every training method of the package adds to TRL's `GRPOConfig`."""

from __future__ import annotations

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


@dataclass
class MethodConfig(HubTokenNotPickled, GRPOConfig):
    r"""
    Base of the package's method configs (`SOUPConfig`, `M2POConfig`, `LUFFYConfig`): every field of `GRPOConfig`,
    plus the console, generation and recipe fields every trainer reads, and one way to check fields.

    A method's config subclasses it, declares its own fields and overrides up to three hooks, which
    `__post_init__` calls in this order:

    - `_field_errors()`: messages for its invalid fields (each naming the field, the value and what is allowed);
      all of them, this class's included, are raised together as one `ValueError` before anything else runs;
    - `_before_grpo_post_init()`: fields the method derives before `GRPOConfig.__post_init__` reads them;
    - `_derived_errors()`: messages for combinations that can only be checked once GRPOConfig derived its fields
      (`steps_per_generation`, `generation_batch_size`), raised together.

    Activation checkpointing stays on by default under whichever name this Transformers version has
    (`soup_trl.core.compat`), and `hub_token` is never pickled into `training_args.bin` (`HubTokenNotPickled`).
    """

    soup_console: str = field(
        default="compact",
        metadata={
            "help": "Console output: 'compact' prints one short line per log (loss, reward, length, entropy, clip "
            "share and the method's own share: SOUP's prefix, M2PO's masked tokens, LUFFY's off-policy tokens); "
            "'full' prints Transformers' whole log dict. Every metric reaches trainer_state.json and report_to "
            "either way."
        },
    )
    soup_compact_generation: bool = field(
        default=True,
        metadata={
            "help": "Transformers generation (not vLLM, not continuous batching) drops a row from the forward batch "
            "and the KV cache once it has stopped, instead of decoding padding for it until the call's longest row is "
            "done. The sampled tokens are generate's own (the same random draws from the same distributions); only the "
            "forward passes shrink. False runs generate's loop as it is. See soup_trl.core.generation."
        },
    )
    soup_recipe: str | None = field(
        default=None,
        metadata={"help": "Recipe file the run was launched with; recorded in the model card (set by the script)."},
    )

    gradient_checkpointing: bool | None = gradient_checkpointing_field()
    if not HAS_ACTIVATION_CHECKPOINTING:
        activation_checkpointing: bool | None = activation_checkpointing_field()

    def _field_errors(self) -> list[str]:
        errors = []
        if self.soup_console not in CONSOLE_MODES:
            errors.append(f"soup_console must be 'compact' or 'full', got {self.soup_console!r}.")
        return errors

    def _before_grpo_post_init(self) -> None:
        """Derive fields that GRPOConfig's `__post_init__` reads (a subclass's hook)."""

    def _derived_errors(self) -> list[str]:
        return []

    def __post_init__(self):
        errors = self._field_errors()
        if errors:
            raise ValueError(" ".join(errors))
        default_activation_checkpointing(self)
        self._before_grpo_post_init()
        super().__post_init__()
        errors = self._derived_errors()
        if errors:
            raise ValueError(" ".join(errors))

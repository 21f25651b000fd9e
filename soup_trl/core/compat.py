"""Transformers version differences every config of the package papers over: the activation-checkpointing rename.

Transformers 5.20 renamed `gradient_checkpointing` to `activation_checkpointing`; TRL sets the old name to True, which
prints a deprecation warning for every config. The package's configs keep TRL's default (on) through the new name:
`MethodConfig` declares `gradient_checkpointing_field()` and calls `default_activation_checkpointing` before
GRPOConfig's `__post_init__`. On Transformers < 5.20, which has only the old name, it declares the new one as an alias
of it (`activation_checkpointing_field()`), so that recipes and code written with the new name run on every supported
version. TRL 1.16 itself calls the gradient-checkpointing methods that Transformers 5.20 renamed
(activation_checkpointing_*); the resulting FutureWarnings are about TRL's code, not the user's, and would print on
every run of every method.
"""

from __future__ import annotations

import warnings
from dataclasses import field, fields

from transformers import TrainingArguments

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

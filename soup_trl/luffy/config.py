"""`LUFFYConfig`: GRPOConfig plus LUFFY's trace column, traces per group and shaping."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import MethodConfig


@dataclass
class LUFFYConfig(MethodConfig):
    r"""
    Configuration for [`LUFFYTrainer`]: every field of `GRPOConfig`, plus the `luffy_*` fields below.

    In every group of `num_generations` rows, the last `luffy_num_traces` rows are an off-policy trace taken from the
    dataset column `luffy_trace_field`; the other rows are sampled from the current policy. `epsilon_high` defaults to
    0.28 (the package's DAPO setting), and only `loss_type="dapo"` is supported.
    """

    luffy_trace_field: str = field(
        default="target",
        metadata={
            "help": "Dataset column holding each prompt's off-policy trace: a string, or a one-message list "
            "[{'role': 'assistant', 'content': TRACE}] (the LUFFY data's format)."
        },
    )
    luffy_num_traces: int = field(
        default=1,
        metadata={"help": "Off-policy trace rows per group; the other num_generations - luffy_num_traces are sampled."},
    )
    luffy_shaping_gamma: float = field(
        default=0.1,
        metadata={"help": "gamma of LUFFY's policy shaping f(p) = p / (p + gamma) on trace tokens."},
    )

    epsilon_high: float | None = field(
        default=0.28,
        metadata={"help": "Upper clipping bound of the on-policy tokens (clip-higher), as in the package's DAPO."},
    )

    def _field_errors(self) -> list[str]:
        errors = []
        if not isinstance(self.luffy_trace_field, str) or not self.luffy_trace_field:
            errors.append(f"luffy_trace_field must be a dataset column name, got {self.luffy_trace_field!r}.")
        if not isinstance(self.luffy_num_traces, int) or self.luffy_num_traces < 1:
            errors.append(f"luffy_num_traces must be an integer >= 1, got {self.luffy_num_traces!r}.")
        if not self.luffy_shaping_gamma > 0:
            errors.append(f"luffy_shaping_gamma must be > 0, got {self.luffy_shaping_gamma!r}.")
        return errors + super()._field_errors()

    def _derived_errors(self) -> list[str]:
        errors = []
        if self.luffy_num_traces >= self.num_generations:
            errors.append(
                f"luffy_num_traces ({self.luffy_num_traces}) must be below num_generations ({self.num_generations}): "
                "every group needs at least one sampled row."
            )
        if self.loss_type != "dapo":
            errors.append(
                f"loss_type={self.loss_type!r} is not supported by LUFFY: trace and sampled tokens share DAPO's "
                "token-level normaliser. Set loss_type='dapo'."
            )
        error = self.group_size_error(
            self.per_device_train_batch_size * self.steps_per_generation,
            "per_device_train_batch_size * steps_per_generation",
            "every process holds whole groups, each with its trace rows",
        )
        if error:
            errors.append(error)
        if self.remove_unused_columns:
            errors.append(
                f"remove_unused_columns=True would drop the trace column {self.luffy_trace_field!r}. Set it to False."
            )
        return errors

"""`M2POConfig`: GRPOConfig plus M2PO's staleness and second-moment budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.config import MethodConfig


@dataclass
class M2POConfig(MethodConfig):
    r"""
    Configuration for [`M2POTrainer`]: every field of `GRPOConfig`, plus `m2po_staleness` and `m2po_tau`.

    Each optimizer step trains on one batch (`per_device_train_batch_size * gradient_accumulation_steps` rows per
    process) that the policy sampled `m2po_staleness` optimizer steps earlier. The loss is GRPOTrainer's DAPO loss
    (`loss_type="dapo"`, token-level normaliser) with M2PO's trust region in place of the epsilon clip: `epsilon` and
    `epsilon_high` are not used.
    """

    m2po_staleness: int = field(
        default=256,
        metadata={
            "help": "Optimizer steps between sampling a batch and training on it (0: on-policy). The first batches "
            "are sampled up front by the initial policy. 256 is the M2PO paper's headline setting."
        },
    )
    m2po_tau: float = field(
        default=0.04,
        metadata={
            "help": "Second-moment budget: the largest mean of (log r)^2 over the harmful tokens of a micro-batch "
            "(A > 0 with r > 1, or A < 0 with r < 1) before the largest of them are clipped."
        },
    )

    def _field_errors(self) -> list[str]:
        errors = []
        staleness = self.m2po_staleness
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            errors.append(f"m2po_staleness must be an integer >= 0 (0: on-policy), got {staleness!r}.")
        tau = self.m2po_tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
            errors.append(f"m2po_tau must be a finite number > 0 (the paper uses 0.04), got {tau!r}.")
        return errors + super()._field_errors()

    def _derived_errors(self) -> list[str]:
        errors = []
        if self.steps_per_generation != self.gradient_accumulation_steps:
            errors.append(
                f"steps_per_generation ({self.steps_per_generation}) must equal gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}) with M2PO, which samples one batch per optimizer step and "
                "queues it: leave steps_per_generation and generation_batch_size unset."
            )
        if self.num_iterations != 1:
            errors.append(
                f"num_iterations must be 1 with M2PO (every batch is trained on exactly once), got {self.num_iterations}."
            )
        error = self.group_size_error(
            self.per_device_train_batch_size * self.gradient_accumulation_steps,
            "per_device_train_batch_size * gradient_accumulation_steps",
            "every process queues whole groups",
        )
        if error:
            errors.append(error)
        if self.loss_type != "dapo":
            errors.append(
                f"loss_type must be 'dapo' with M2PO (token-level normalisation), got {self.loss_type!r}."
            )
        if self.importance_sampling_level != "token":
            errors.append(
                f"importance_sampling_level must be 'token' with M2PO (its trust region is per token), got "
                f"{self.importance_sampling_level!r}."
            )
        if self.delta is not None:
            errors.append(f"delta must be None with M2PO (no clip besides its trust region), got {self.delta!r}.")
        if self.off_policy_mask_threshold is not None:
            errors.append(
                "off_policy_mask_threshold must be None with M2PO (its trust region is the off-policy control), got "
                f"{self.off_policy_mask_threshold!r}."
            )
        return errors

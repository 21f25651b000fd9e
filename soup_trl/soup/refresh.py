"""Adaptive refresh (`soup_refresh_drift`): new behavior samples for the rest of a cycle once the current policy has
drifted too far from the behavior policy on the prefix tokens it trains on.

The signal is the mean |log ratio| between the current and the behavior policy on the prefix tokens of the last
optimizer step's losses, measured from the loss forward itself (no extra forward): each loss adds to a `DriftMeter`,
and before a step is scored `refresh_reason` reduces it over processes and decides.
"""

from __future__ import annotations

import torch


class DriftMeter:
    """Sums of |log ratio| on prefix tokens and their count since the meter was last reset (this process's)."""

    def __init__(self, sums: torch.Tensor | None = None):
        self.sums = torch.zeros(2, dtype=torch.float64) if sums is None else sums

    def add(self, logps: torch.Tensor, old_logps: torch.Tensor, prefix_mask: torch.Tensor) -> None:
        """One loss's prefix tokens (`prefix_mask`, (B, C)): the loss forward's log-probs against their denominators."""
        gap = (logps.detach() - old_logps).abs()[prefix_mask.bool()]
        self.sums += torch.tensor([gap.sum().item(), float(gap.numel())])

    def mean(self, accelerator) -> float | None:
        """The mean over every process (None without prefix tokens); every process must call it."""
        total, count = accelerator.reduce(self.sums.to(accelerator.device), reduction="sum").tolist()
        return None if count == 0 else total / count

    def reset(self) -> None:
        self.sums.zero_()


def refresh_reason(trainer, meter: DriftMeter, step: int, served: int) -> str | None:
    """Why the behavior samples are refreshed before the dataloader cycle's `step` (served `served` steps so far), or
    None: the last step's drift over every process exceeded `soup_refresh_drift`, and the samples have served at least
    `soup_refresh_min_steps` steps. Logs the drift it measured (`soup/prefix_abs_log_ratio`) and whether it refreshes
    (`soup/refresh`), and resets the meter."""
    args, metrics = trainer.args, trainer._metrics["train"]
    reason = None
    if step > 0 and served >= args.soup_refresh_min_steps:
        drift = meter.mean(trainer.accelerator)
        if drift is not None:
            metrics["soup/prefix_abs_log_ratio"].append(drift)
            if drift > args.soup_refresh_drift:
                reason = (
                    f"prefix |log ratio| {drift:.4g} > soup_refresh_drift {args.soup_refresh_drift:g} after {served} "
                    "step(s) of these behavior samples"
                )
    metrics["soup/refresh"].append(float(reason is not None))
    meter.reset()
    return reason

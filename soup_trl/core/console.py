"""A readable console for training runs: one short line per logging step, everything else to the trackers.

GRPOTrainer logs ~25 values per step and SOUP adds ~30 more (per segment, per relative-position bin). All of them
still reach `trainer_state.json` and every tracker in `report_to`; only what Transformers' progress callback prints
is replaced by `format_log_line`, e.g.::

    step 40/240 | loss -0.0213 | reward 0.152 ± 0.33 | len 9.6 | entropy 0.61 | clip 0.0022 | lr 0.0001 | prefix 17% | 0.31 s/step
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

# (log key, label, format); shown in this order when present. Each method adds its own keys through `extra`.
CONSOLE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("loss", "loss", ".4g"),
    ("reward", "reward", ".3g"),
    ("completions/mean_length", "len", ".3g"),
    ("entropy", "entropy", ".3g"),
    ("clip_ratio/region_mean", "clip", ".2g"),
    ("learning_rate", "lr", ".2g"),
)
SUMMARY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("train_runtime", "runtime s", ".4g"),
    ("train_steps_per_second", "steps/s", ".3g"),
    ("train_loss", "mean loss", ".4g"),
)
EVAL_PREFIX = "eval_"
CONSOLE_MODES = ("compact", "full")  # the values of every method config's `console`


def _format(value, spec: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if spec == "%":
        return f"{100 * value:.0f}%"
    if math.isfinite(value) and value != 0 and abs(value) < 1e-3 and spec.endswith("g"):
        return f"{value:.1e}"
    return format(value, spec)


def format_log_line(
    logs: Mapping[str, object],
    step: int | None = None,
    max_steps: int | None = None,
    extra: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """One short console line for a `Trainer.log` dict: the values a person watches, in a fixed order.

    Training logs show GRPO's main numbers (`extra` appends a method's own keys: SOUP's prefix share, ...);
    evaluation logs (`eval_*`) show the same fields under `eval`; the end-of-training summary shows runtime, speed
    and mean loss. Keys that are absent are skipped, so the same function serves every method.
    """
    if "train_runtime" in logs:
        fields = [f"{label} {_format(logs[key], spec)}" for key, label, spec in SUMMARY_FIELDS if key in logs]
        return "training done | " + " | ".join(fields)
    is_eval = any(key.startswith(EVAL_PREFIX) for key in logs)
    prefix = EVAL_PREFIX if is_eval else ""
    parts = []
    if step is not None:
        parts.append(f"{'eval ' if is_eval else ''}step {step}" + (f"/{max_steps}" if max_steps else ""))
    for key, label, spec in CONSOLE_FIELDS + tuple(extra):
        value = logs.get(prefix + key)
        if value is None:
            continue
        text = f"{label} {_format(value, spec)}"
        if key == "reward" and prefix + "reward_std" in logs:
            text += f" ± {_format(logs[prefix + 'reward_std'], '.2g')}"
        parts.append(text)
    if "step_time" in logs:
        parts.append(f"{_format(logs['step_time'], '.2g')} s/step")
    return " | ".join(parts)


class _CompactLines(TrainerCallback):
    """Mixin: print `format_log_line` instead of the whole log dict."""

    extra: tuple[tuple[str, str, str], ...] = ()

    def _line(self, state, logs) -> str:
        return format_log_line(logs, state.global_step, state.max_steps or None, self.extra)


class CompactProgressCallback(_CompactLines, ProgressCallback):
    """Transformers' progress bar, with one short line per log instead of the full dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(self._line(state, logs))


class CompactPrinterCallback(_CompactLines, PrinterCallback):
    """Transformers' printer (used with `disable_tqdm=True`), with one short line per log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(self._line(state, logs))


def use_compact_console(trainer, extra: tuple[tuple[str, str, str], ...] = ()) -> None:
    """Swap a trainer's console callback for its compact version (trackers and `log_history` are unaffected).

    Does nothing when the trainer's config asks for the full log dict (`console="full"`, a field of every method
    config: `soup_trl.core.config.MethodConfig`).
    """
    if trainer.args.console == "full":
        return
    for full, compact in ((ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)):
        if any(type(cb) is full for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(full)
            callback = compact()
            callback.extra = tuple(extra)
            trainer.add_callback(callback)

"""The offline tasks and the built-in models they train (CPU, no network): scratchpad addition, chained addition,
tiny Qwen2-style models warmed up on them, and `builtin` (the one resolver of `builtin:` model and task names).

    from soup_trl.toy import ensure_tiny_base_model, make_arithmetic_dataset
    model_path = ensure_tiny_base_model()          # built once (~1 min SFT warm-up on CPU), then cached
    dataset = make_arithmetic_dataset(2000)        # columns: prompt ("081+208="), solution ("289"), num_digits

Its reward is `soup_trl.rewards.arithmetic_reward`. The tiny tokenizer knows only the task's symbols `0-9 + = , |`.

May import: `soup_trl.core` and `soup_trl.rewards` (the tasks' own rewards build their targets); never a trainer.
"""

from .arithmetic import make_arithmetic_dataset
from .tiny_model import TinyModelSettings, build_tiny_model, build_tokenizer, ensure_tiny_base_model

__all__ = ["TinyModelSettings", "build_tiny_model", "build_tokenizer", "ensure_tiny_base_model", "make_arithmetic_dataset"]

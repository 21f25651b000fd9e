"""The SOUP paper's baselines as GRPOTrainer subclasses, each a config + trainer pair.

- `M2POConfig` / `M2POTrainer`: M2PO, training on samples `m2po_staleness` steps old within a second-moment trust
  region (`soup_trl.baselines.m2po`; its tensor math in `soup_trl.baselines.m2po_ops`).
- `LUFFYConfig` / `LUFFYTrainer`: LUFFY, groups that mix on-policy samples with off-policy traces from the data, the
  traces trained with policy shaping (`soup_trl.baselines.luffy`; its tensor math in `soup_trl.baselines.luffy_ops`).

Each method is a config + trainer pair on `soup_trl.core`'s `MethodConfig` / `MethodTrainer`, like SOUP, and its
tensor math a module of pure functions beside it.

May import: `soup_trl.core` only (never SOUP's modules: a baseline must not depend on the method it is compared with).
"""

from .luffy import LUFFYConfig, LUFFYTrainer
from .m2po import M2POConfig, M2POTrainer

__all__ = ["LUFFYConfig", "LUFFYTrainer", "M2POConfig", "M2POTrainer"]

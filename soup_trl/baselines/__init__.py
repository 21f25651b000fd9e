"""The SOUP paper's baselines as GRPOTrainer subclasses, each a config + trainer pair.

- `M2POConfig` / `M2POTrainer`: M2PO, training on samples `m2po_staleness` steps old within a second-moment trust
  region (`soup_trl.baselines.m2po`; its tensor math in `soup_trl.baselines.m2po_ops`).
"""

from .m2po import M2POConfig, M2POTrainer

__all__ = ["M2POConfig", "M2POTrainer"]

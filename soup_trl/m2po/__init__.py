"""M2PO (second-moment trust region on stale samples; arXiv 2510.01161), a baseline of the SOUP paper.

- `config`: `M2POConfig` (`m2po_staleness`, `m2po_tau`);
- `trainer`: `M2POTrainer`, GRPOTrainer's hooks: the staleness queue, the trust region set per micro-batch;
- `ops`: the trust region's tensor math, pure functions;
- `model_card`: the paper, for the model card.

May import: `soup_trl.core` and this folder only (never another method's folder: a baseline must not depend on the
method it is compared with).
"""

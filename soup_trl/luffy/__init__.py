"""LUFFY (off-policy traces inside each group, trained with policy shaping; arXiv 2504.14945), a baseline of the SOUP
paper.

- `config`: `LUFFYConfig` (`luffy_trace_field`, `luffy_num_traces`, `luffy_shaping_gamma`);
- `trainer`: `LUFFYTrainer`, GRPOTrainer's hooks: trace rows served in each group, their shaped loss;
- `ops`: traces and policy shaping's tensor math, pure functions;
- `model_card`: the paper, for the model card.

May import: `soup_trl.core` and this folder only (never another method's folder: a baseline must not depend on the
method it is compared with).
"""

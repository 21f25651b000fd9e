"""SOUP (Single-sample Mix-pOlicy Unified Paradigm): `SOUPConfig` and `SOUPTrainer`, and the small modules the trainer's
hooks call.

- `config`: `SOUPConfig` (every GRPOConfig field, the shared ones of `soup_trl.core.config.MethodConfig`, `soup_*`);
- `trainer`: `SOUPTrainer`, GRPOTrainer's hooks, each calling one of the modules below;
- `cycle`: a cycle's records (`BehaviorCycle`, `GenerationPlan`) and schedule (`CyclePosition`);
- `behavior`: behavior sampling and cutting at the start of a cycle, cuts refined when a step is scored;
- `step`: scoring one optimizer step (the plan through GRPOTrainer's scoring, token-level denominators, micro-batches);
- `continuation`: continuations within per-row budgets, and the splice;
- `truncation`: where a behavior completion is cut (registered strategies, `register_truncation`);
- `refresh`: adaptive refresh (`soup_refresh_drift`);
- `history`: history-seeded prefixes (`soup_behavior_source="history"`: the rollout store);
- `metrics`: per-token diagnostics by segment and position, the cycle's metrics, the tokens at the cuts;
- `checkpoint`: the cycle and the history in a checkpoint;
- `ops`: pure tensor functions of the loss (prefix masks, mixed denominators, the DAPO count, the vLLM correction);
- `prefix_loss`: what the loss does with the prefix tokens (`soup_prefix_loss`: token-level ratios, masked, MinPRO);
- `model_card`: the paper and the run's SOUP settings in the model card.

May import: `soup_trl.core` and this folder only. Nothing else of the package imports SOUP but `soup_trl.evaluation`
(relay sampling cuts completions as the trainer does), the commands and the test support.
"""

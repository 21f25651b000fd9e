"""The core every trainer of the package stands on: what SOUP and the baselines share, and nothing any one of them
decides.

- `trainer.MethodTrainer` / `config.MethodConfig`: the base of every method's trainer and config on TRL's
  `GRPOTrainer` / `GRPOConfig` (config type check, data checks, guarded rewards, compact console, loss-forward hooks,
  model card, complete checkpoints; the console and recipe fields);
- `checkpoints`: complete-checkpoint markers and resume; the hub token kept out of pickled configs;
- `console`: one short console line per log;
- `data_checks`: the training data checked before training starts;
- `reward_guard`: one odd sample never stops or skews training;
- `model_card`: paper metadata (`Paper`) and local base models in model cards;
- `compat`: Transformers version differences (the activation-checkpointing rename);
- `text`, `errors`, `runtime`: completion text, the user-error exceptions, torch threads and the end of a launched
  process.

May import: the standard library and third-party packages (torch, Transformers, TRL) only; nothing else of
`soup_trl`. Everything else in the package may import it.
"""

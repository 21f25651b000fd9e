"""The core every trainer of the package stands on: what SOUP and the baselines share, and nothing any one of them
decides.

- `trainer.MethodTrainer` / `config.MethodConfig`: the base of every method's trainer and config on TRL's
  `GRPOTrainer` / `GRPOConfig` (config type check, data checks, guarded rewards, dynamic sampling, compact console,
  loss-forward hooks, model card, complete checkpoints and their extra state, reduced metrics; the shared fields:
  console, compacted generation, recipe, dynamic sampling, the group-size check);
- `dynamic_sampling`: DAPO's dynamic sampling, for every trainer;
- `lockstep`: processes kept in step (the most rows any process needs, fillers) and the policy's no-grad forward;
- `samplers`: resumable data order; the step-major order of multi-step generation batches;
- `generation`: compacted decoding (stopped rows leave the forward batch);
- `process_state`: trainer state saved with a checkpoint, per process or shared;
- `checkpoints`: complete-checkpoint markers and resume; the hub token kept out of pickled configs;
- `console`: one short console line per log;
- `data_checks`: the training data checked before training starts;
- `reward_guard`: one odd sample never stops or skews training;
- `model_card`: paper metadata (`Paper`) and local base models in model cards;
- `compat`: Transformers version differences (the activation-checkpointing rename);
- `masks`: the loss tokens of a scored batch;
- `text`, `errors`, `runtime`, `cache`, `freezing`: completion text, the user-error exceptions, torch threads and the
  end of a launched process, the package's cache folder, training only the top layers.

May import: the standard library and third-party packages (torch, Transformers, TRL) only; nothing else of
`soup_trl`. Everything else in the package may import it.
"""

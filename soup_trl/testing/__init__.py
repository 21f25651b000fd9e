"""What the test suite, its launched workers and the benchmarks share (as `accelerate.test_utils` does for Accelerate):
importable wherever the package is installed, with no change to sys.path.

- `runs`: the suite's small training runs: `SMALL_RUN`, `small_config` (the one config factory of the tests, for any
  GRPOConfig subclass), `prompt_dataset`, and the start and end of a worker script started by `accelerate launch`;
- `rewards`: deterministic rewards for tiny random models (`shaped_reward`, `mixed_reward`);
- `bad_rewards`: reward functions that fail on some completions, and trainers that keep every scored batch;
- `snapshots`: parameter snapshots and fresh models that recompute a snapshot's log-probs independently;
- `contract`: a SOUP run recorded through its own hooks, and SOUP's contract checked on the records;
- `properties`: the hypothesis profiles of the property tests (`SOUP_HYPOTHESIS_PROFILE=fuzz` for a long fuzz);
- `evaluation`: for the evaluation tests: a backend that samples scripted completions (characters as token ids), the
  training_args.bin of a run, a SOUP run's log history to plot;
- `vllm_colocate`: TRL's vLLM colocate mode on CPU; it imports vLLM, so only after `pytest.importorskip("vllm")`;
- `vllm_server`: a real vLLM server in a subprocess for TRL's server mode, and the switch that turns off only its
  NCCL weight transfer (for runs at learning rate 0);
- `zero3_cpu.json`: a DeepSpeed ZeRO-3 configuration for launches on CPU (package data).

Nothing in the package imports this folder; it is for tests and benchmarks only.

May import: every room but `scripts` (the commands), by module: not the `soup_trl` facade.
"""

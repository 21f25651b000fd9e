"""The method comparison of `benchmarks/compare_methods.py`, in modules:

- `variants`: the variants (a recipe and its overrides) of each sweep, the sizes of a sweep, the tasks;
- `runs`: a run's spec and training argv, the process that trains and evaluates it, launching and resuming runs,
  reading their results;
- `statistics`: mean and 95% t-interval over seeds, paired differences and ratios, verdicts (pure functions);
- `summary`: the per-variant summary of a sweep, from its finished runs;
- `claims`: the paper's measurable claims, each a paired statistic of logged metrics with a verdict (pure);
- `reports`: the tables, plots and results files, and the docs pages' marked sections;
- `host`: the machine a benchmark runs on and this process's resident memory.

The scripts of `benchmarks/` import it as `comparison` (a script's directory is first on `sys.path`): `default_run.py`
and `step_time.py` share its statistics, launcher and memory reader.
"""

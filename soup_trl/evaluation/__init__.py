"""Evaluation: benchmarks, generation backends, avg@k / pass@k, relay inference, checkpoint selection, plots."""

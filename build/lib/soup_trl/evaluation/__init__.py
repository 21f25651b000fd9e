"""Evaluation: options (arguments), benchmarks, generation backends, avg@n / pass@k (runner), relay sampling,
checkpoint selection, run directories (runs), output directories (outputs) and plots."""

"""Evaluation: options (arguments), benchmarks, generation backends, avg@n / pass@k (runner), relay sampling,
checkpoint selection, run directories (runs), output directories (outputs) and plots.

May import: `soup_trl.core`, SOUP's pure functions (`soup_trl.soup.truncation`, `soup_trl.soup.continuation`,
`soup_trl.soup.metrics`: relay cuts completions as SOUP does, plots read its cut-token log), `soup_trl.rewards`
(grading) and `soup_trl.toy` (built-in models and their tasks' held-out sets); never a
trainer or a baseline, never the commands.
"""

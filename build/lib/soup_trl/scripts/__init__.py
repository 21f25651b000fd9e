"""Entry points: the `soup-trl` command and the training script the recipes run."""

"""Entry points: the `soup-trl` command and the training script the recipes run.

May import: everything in the package (this is the top room), including the `soup_trl` facade.
"""

"""Recipes shipped with the package: YAML files for `soup_trl.scripts.train` (`--config NAME`).

May import: nothing (data only).
"""

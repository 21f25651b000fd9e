"""Accelerate launch configs shipped with the package: `soup-trl train --accelerate_config NAME` takes one by name.

`zero3` and `zero2` (DeepSpeed, 8 processes, bf16), `multi_gpu` (DDP, 8 processes, bf16) and `cpu_2proc` (two CPU
processes over gloo, what the tests launch). Their paths, for `accelerate launch --config_file`:
`importlib.resources.files("soup_trl.accelerate_configs") / "zero3.yaml"`.

May import: nothing (data only).
"""

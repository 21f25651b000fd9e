"""Training only the top decoder layers of a causal LM: a cheap fine-tuning mode for CPUs and small budgets.

The bottom layers, the embeddings (and an LM head tied to them) are frozen; the top `n` decoder layers and the final
norm train. A frozen layer below every trainable one needs no backward pass at all (its inputs need no gradient),
so a step's backward covers the top layers only: on SmolLM2-135M (30 layers) training the top 4 cuts the backward
to about a seventh of full fine-tuning's. The forward pass, generation and every log-prob are those of the whole
model, so the methods' importance ratios are unchanged.
"""

from __future__ import annotations

import torch


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder layers of a Transformers causal LM (`model.model.layers` for Llama, Qwen2, Mistral ...)."""
    base = getattr(model, "base_model", model)
    for path in ("model.layers", "layers", "model.decoder.layers", "transformer.h"):
        node = base
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise ValueError(
        f"trainable_top_layers: cannot find the decoder layers of {type(model).__name__} (looked for model.layers, "
        "layers, model.decoder.layers, transformer.h). Train the whole model (trainable_top_layers unset) or use LoRA."
    )


def train_top_layers_only(model: torch.nn.Module, num_layers: int) -> tuple[int, int]:
    """Freeze everything but the top `num_layers` decoder layers and the final norm; returns (trainable, total)
    parameter counts."""
    layers = decoder_layers(model)
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"trainable_top_layers must be in 1..{len(layers)} (the model's decoder layers), got {num_layers}.")
    trainable = {id(p) for layer in layers[len(layers) - num_layers :] for p in layer.parameters()}
    norm = getattr(getattr(getattr(model, "base_model", model), "model", model), "norm", None)
    if isinstance(norm, torch.nn.Module):
        trainable |= {id(p) for p in norm.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    counts = [p.numel() for p in model.parameters()]
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(counts)

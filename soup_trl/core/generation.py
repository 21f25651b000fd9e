"""Transformers generation without decoding finished rows: `compacted_sample` and `compacted_generation`.

`model.generate` samples a batch in lock-step: once a row has stopped (its EOS, or a stopping criterion such as a
per-row budget) it keeps going through every forward pass on padding until the longest row is done. A GRPO step's rows
stop at different lengths, and a SOUP step's continuations even more so (each row stops at its own budget), so a large
share of such a call's forward work is spent on rows whose tokens are thrown away.

`compacted_sample` is `generate`'s multinomial-sampling / greedy loop (`GenerationMixin._sample`) that drops a row from
the forward batch, and its entries from the KV cache, as soon as it stops. Everything else is `generate`'s: inputs,
cache, logits processors and stopping criteria are prepared by `generate` itself (the loop is passed as its
`custom_generate` callable), processors and stopping criteria see the whole batch every step, and tokens are drawn from
the whole batch's distributions, so the random draws are the ones `generate`'s own loop makes and the returned ids are
the same (stopped rows padded). Only the forward passes shrink: a call costs the tokens its rows decode, not its row
count times its longest row.

Where dropping rows is not known to be safe, `generate`'s own loop runs unchanged (`why_not_compacted` names the
reason): several processes that must keep forwarding in step (`synced_gpus`, which `generate` turns on by default
for several processes under ZeRO-3 or FSDP, whether or not TRL gathered the weights for generation: so a multi-GPU
ZeRO-3 run of the Transformers path decodes as `generate` does, stopped rows included), a streamer, outputs beyond token ids (`return_dict_in_generate`), a cache other than `DynamicCache` (static, offloaded,
quantized caches), encoder-decoder models, model inputs beyond text (images, whose models may keep per-batch state),
no padding token, no EOS stopping criterion.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache
from transformers.generation.utils import GenerationMixin
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module

# model inputs `generate` keeps per row and extends every step; their batch dimension is the second to last
ROW_INPUTS = ("attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids")
# model inputs that hold no per-row state
PLAIN_INPUTS = ("use_cache", "logits_to_keep", "output_attentions", "output_hidden_states", "return_dict")


def why_not_compacted(model, generation_config, synced_gpus: bool, streamer, model_kwargs: dict) -> str | None:
    """Why a `generate` call must run `generate`'s own loop instead of `compacted_sample`, or None when it need not."""
    if synced_gpus:
        return "synced_gpus: every process must run as many forward passes as the others"
    if streamer is not None:
        return "a streamer is attached"
    if generation_config.return_dict_in_generate:
        return "return_dict_in_generate asks for more than token ids"
    if model.config.is_encoder_decoder:
        return "encoder-decoder model"
    if generation_config._pad_token_tensor is None:
        return "no padding token for stopped rows"
    if generation_config.prefill_chunk_size is not None:
        return "chunked prefill"
    caches = [value for value in model_kwargs.values() if isinstance(value, Cache)]
    if len(caches) != 1 or type(caches[0]) is not DynamicCache or not model_kwargs.get("use_cache", True):
        return "the KV cache is not one DynamicCache"
    other = [
        key
        for key, value in model_kwargs.items()
        if value is not None and not isinstance(value, Cache) and key not in ROW_INPUTS + PLAIN_INPUTS
    ]
    if other:
        return f"model inputs beyond text: {', '.join(sorted(other))}"
    return None


def compacted_sample(
    model,
    input_ids: torch.LongTensor,
    logits_processor,
    stopping_criteria,
    generation_config,
    synced_gpus: bool = False,
    streamer=None,
    **model_kwargs,
) -> torch.LongTensor:
    """`generate`'s sampling / greedy loop, with stopped rows out of the forward passes (see the module docstring).

    Called by `model.generate(..., custom_generate=compacted_sample)` with what `generate` prepared; returns the
    (batch, prompt + new) token ids, rows padded after they stop, as `generate` does."""
    stops_on_eos = any(hasattr(criterion, "eos_token_id") for criterion in stopping_criteria)
    # `generate` hands a `custom_generate` callable neither `synced_gpus` nor the streamer: its own default is taken
    synced_gpus = synced_gpus or _synced_by_default(model)
    reason = why_not_compacted(model, generation_config, synced_gpus, streamer, model_kwargs)
    if reason is not None or not stops_on_eos:
        return GenerationMixin._sample(
            model, input_ids, logits_processor, stopping_criteria, generation_config,
            synced_gpus=synced_gpus, streamer=streamer, **model_kwargs,
        )  # fmt: skip

    pad = generation_config._pad_token_tensor.to(input_ids.device)
    batch = input_ids.size(0)
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    active = torch.arange(batch, device=input_ids.device)  # rows in the forward batch, in batch order
    outputs = model._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=not generation_config.is_assistant)
    with model._optimize_model_for_decode():
        while True:
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=False)
            logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)
            del outputs
            if active.numel() < batch:  # stopped rows: any distribution, their draws are replaced by padding
                logits = logits.new_zeros(batch, logits.size(-1)).index_copy_(0, active, logits)
            scores = logits_processor(input_ids, logits)
            if generation_config.do_sample:
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            next_tokens = torch.where(unfinished, next_tokens, pad)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
            unfinished = unfinished & ~stopping_criteria(input_ids, None)
            if not unfinished.any():
                break
            going_on = unfinished[active]
            if not going_on.all():
                keep = going_on.nonzero().squeeze(1)
                _keep_rows(model_kwargs, keep)
                active = active[keep]
            model_inputs = model.prepare_inputs_for_generation(input_ids[active], next_sequence_length=1, **model_kwargs)
            outputs = model(**model_inputs, return_dict=True)
    return input_ids


def _keep_rows(model_kwargs: dict, keep: torch.Tensor) -> None:
    """Keep the rows `keep` (indices into the current forward batch) of the cache and the per-row model inputs."""
    for key in ROW_INPUTS:
        value = model_kwargs.get(key)
        if isinstance(value, torch.Tensor):
            model_kwargs[key] = value.index_select(value.dim() - 2, keep)
    for value in model_kwargs.values():
        if isinstance(value, Cache):
            value.batch_select_indices(keep)


@contextlib.contextmanager
def patched_attribute(obj, name: str, value):
    """Set an instance attribute for the duration of the block, then restore what the instance had (or the class's)."""
    had, previous = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, previous)
        else:
            delattr(obj, name)


@contextlib.contextmanager
def compacted_generation(model):
    """While active, `model.generate` decodes with `compacted_sample` (sampling and greedy calls; beam search, assisted
    decoding, streamers and processes that generate in step are left to `generate`, and so is a call that names its
    own `custom_generate`)."""
    original = model.generate

    def generate(*args, **kwargs):
        if kwargs.get("custom_generate") is None and _compactable_call(model, kwargs):
            kwargs["custom_generate"] = compacted_sample
        return original(*args, **kwargs)

    with patched_attribute(model, "generate", generate):
        yield


def _compactable_call(model, kwargs: dict) -> bool:
    """Whether a `generate` call may run `compacted_sample`, decided before `generate` sees it: `generate` hands a
    `custom_generate` callable neither the streamer nor `synced_gpus` as the caller gave them."""
    config = kwargs.get("generation_config") or model.generation_config
    if (kwargs.get("num_beams") or config.num_beams or 1) > 1 or kwargs.get("assistant_model") is not None:
        return False
    if kwargs.get("streamer") is not None:
        return False
    synced_gpus = kwargs.get("synced_gpus")
    return not (_synced_by_default(model) if synced_gpus is None else synced_gpus)


def _synced_by_default(model) -> bool:
    """`generate`'s default `synced_gpus`: several processes whose weights are sharded (ZeRO-3, FSDP) forward in step."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    several = distributed and torch.distributed.get_world_size() > 1
    return several and (is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model))

"""Compacted generation (`soup_trl.core.generation`): the tokens of `generate`'s own loop, with stopped rows out of the
forward passes.

Every comparison runs the same call twice from the same seed, once through `generate`'s loop and once through
`compacted_sample`, on the tiny model with left-padded prompts of different lengths, EOS stops and per-row budgets
(`RowBudgets`, the stopping rule of SOUP's continuations), and counts the rows each forward pass computed.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from soup_trl.core.generation import compacted_generation, compacted_sample, why_not_compacted
from soup_trl.soup.continuation import RowBudgets

BUDGETS = [3, 24, 9, 1, 17, 6]
# the padding token is never sampled (as in training), so that a row's padding marks where it stopped
SAMPLING = {
    "sampling": dict(do_sample=True, temperature=1.0, suppress_tokens=[0]),
    "top-p top-k": dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=8, suppress_tokens=[0]),
    "greedy": dict(do_sample=False, suppress_tokens=[0]),
    "repetition penalty": dict(do_sample=True, repetition_penalty=1.3, suppress_tokens=[0]),
}


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.forward_rows = []  # rows of each forward pass's input

    def count(module, args, kwargs):
        model.forward_rows.append(kwargs["input_ids"].size(0))

    model.register_forward_pre_hook(count, with_kwargs=True)
    return model


ROWS = len(BUDGETS)


def prompts(model, rows=ROWS):
    """Left-padded prompts of 2..7 tokens (row i has 7 - i), tokens drawn from a fixed seed."""
    generator = torch.Generator().manual_seed(5)
    pad = model.generation_config.pad_token_id
    ids = torch.randint(4, model.config.vocab_size, (rows, 7), generator=generator)
    mask = torch.ones_like(ids)
    for i in range(rows):
        ids[i, : min(i, 5)] = pad
        mask[i, : min(i, 5)] = 0
    return ids, mask


def run(model, compact: bool, budgets=BUDGETS, seed=0, **generate_kwargs):
    """(token ids, rows of every decoding forward pass) of one generate call from `seed`."""
    ids, mask = prompts(model, len(budgets))
    config = generate_kwargs.pop("generation_config", None) or GenerationConfig(
        max_new_tokens=max(budgets),
        pad_token_id=model.generation_config.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
        **generate_kwargs.pop("sampling", SAMPLING["sampling"]),
    )
    criteria = StoppingCriteriaList([RowBudgets(budgets)])
    model.forward_rows.clear()
    torch.manual_seed(seed)
    if compact:
        with compacted_generation(model):
            out = model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, stopping_criteria=criteria, **generate_kwargs
            )
    else:
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, stopping_criteria=criteria, **generate_kwargs
        )
    if not isinstance(out, torch.Tensor):
        out = out.sequences
    return out, list(model.forward_rows[1:])  # the first forward is the prefill


def new_tokens(model, out):
    """Per row, the tokens it decoded (up to and including its EOS, or up to its budget)."""
    new = out[:, prompts(model)[0].size(1) :]
    return (new != model.generation_config.pad_token_id).sum(dim=1)


@pytest.mark.parametrize("sampling", list(SAMPLING), ids=list(SAMPLING))
def test_same_tokens_as_generate(model, sampling):
    for seed in range(3):
        plain, plain_rows = run(model, compact=False, seed=seed, sampling=SAMPLING[sampling])
        compacted, compacted_rows = run(model, compact=True, seed=seed, sampling=SAMPLING[sampling])
        assert torch.equal(compacted, plain), seed
        # generate's loop forwards every row until the longest is done; the compacted loop each row until it stops
        assert len(compacted_rows) == len(plain_rows)
        assert all(rows == len(BUDGETS) for rows in plain_rows)
        decoded = new_tokens(model, compacted)
        assert sum(compacted_rows) == int((decoded - 1).sum())  # a row's first token comes from the prefill
        assert sum(compacted_rows) < sum(plain_rows)


def test_rows_stop_at_their_budget_or_eos(model):
    out, _ = run(model, compact=True, seed=1)
    new = out[:, prompts(model)[0].size(1) :]
    eos, pad = model.generation_config.eos_token_id, model.generation_config.pad_token_id
    for row, budget in zip(new.tolist(), BUDGETS):
        content = [t for t in row if t != pad]
        assert len(content) <= budget
        assert len(content) == budget or content[-1] == eos
        assert row[len(content) :] == [pad] * (len(row) - len(content))  # padded after it stopped, never resumed


def test_one_row_and_every_row_stopping_at_once(model):
    for budgets in ([5], [4, 4, 4]):
        plain, _ = run(model, compact=False, budgets=budgets, seed=2)
        compacted, rows = run(model, compact=True, budgets=budgets, seed=2)
        assert torch.equal(compacted, plain)


class Recorder(BaseStreamer):
    def __init__(self):
        self.puts = 0

    def put(self, value):
        self.puts += 1

    def end(self):
        pass


def test_unsupported_calls_run_generates_own_loop(model):
    """With a streamer, or with more outputs than token ids, the compacted loop hands the call to generate's loop:
    the same result, every row in every forward pass."""
    plain, _ = run(model, compact=False, seed=4)
    streamed, rows = run(model, compact=True, seed=4, streamer=Recorder())
    assert torch.equal(streamed, plain) and all(r == len(BUDGETS) for r in rows)
    config = GenerationConfig(
        max_new_tokens=max(BUDGETS),
        pad_token_id=model.generation_config.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
        **SAMPLING["sampling"],
        return_dict_in_generate=True,
        output_scores=True,
    )
    with_scores, rows = run(model, compact=True, seed=4, generation_config=config)
    assert torch.equal(with_scores, plain) and all(r == len(BUDGETS) for r in rows)


def test_why_not_compacted_names_the_reason(model):
    from transformers import DynamicCache

    config = GenerationConfig(pad_token_id=0, eos_token_id=2)
    config._pad_token_tensor = torch.tensor(0)
    text = {"attention_mask": torch.ones(2, 3), "cache": DynamicCache(), "use_cache": True, "logits_to_keep": 1}
    assert why_not_compacted(model, config, False, None, text) is None
    assert "synced_gpus" in why_not_compacted(model, config, True, None, text)
    assert "streamer" in why_not_compacted(model, config, False, Recorder(), text)
    assert "pixel_values" in why_not_compacted(model, config, False, None, {**text, "pixel_values": torch.ones(1)})
    assert "DynamicCache" in why_not_compacted(model, config, False, None, {**text, "cache": None})
    config._pad_token_tensor = None
    assert "padding token" in why_not_compacted(model, config, False, None, text)


def test_beam_search_is_left_to_generate(model):
    ids, mask = prompts(model, 2)
    config = GenerationConfig(max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0, eos_token_id=2)
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    with compacted_generation(model):
        beams = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert torch.equal(beams, plain)


def test_callable_is_generates_custom_generate(model):
    """`compacted_sample` is a `custom_generate` callable: generate runs it when it is named directly too."""
    ids, mask = prompts(model)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, pad_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    torch.manual_seed(0)
    direct = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, custom_generate=compacted_sample)
    assert torch.equal(direct, plain)


def test_named_directly_under_sharded_processes_it_runs_generates_loop_in_step(model, monkeypatch):
    """`generate` does not hand a `custom_generate` callable its `synced_gpus`: named directly under several processes
    with sharded weights (ZeRO-3, FSDP), `compacted_sample` takes generate's default and runs generate's loop in step
    with the other processes (here faked: one process, the loop recorded instead of run)."""
    from transformers.generation.utils import GenerationMixin

    import soup_trl.core.generation as generation

    calls = []

    def recorded(model, input_ids, *args, synced_gpus=False, **kwargs):
        calls.append(synced_gpus)
        return input_ids

    monkeypatch.setattr(generation, "_synced_by_default", lambda model: True)
    monkeypatch.setattr(GenerationMixin, "_sample", staticmethod(recorded))
    ids, mask = prompts(model)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, pad_token_id=0, eos_token_id=2)
    model.generate(input_ids=ids, attention_mask=mask, generation_config=config, custom_generate=compacted_sample)
    assert calls == [True]

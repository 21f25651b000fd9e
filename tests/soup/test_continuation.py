"""SOUP's continuation (`soup_trl.soup.continuation`): per-row budgets (no row decodes tokens that would be thrown
away) and the splice of behavior prefixes and continuations, on hand-made lists and as a hypothesis property."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from soup_trl.soup.continuation import (
    RowBudgets,
    call_budgets,
    continuation_budgets,
    splice,
    transformers_row_budgets,
    vllm_row_budgets,
)
from soup_trl.testing.properties import examples


def test_row_budgets_stop_each_row_at_its_own_count():
    criteria = RowBudgets([1, 3])
    prompt = torch.zeros(2, 5, dtype=torch.long)
    assert criteria(torch.cat([prompt, torch.ones(2, 1, dtype=torch.long)], 1), None).tolist() == [True, False]
    assert criteria(torch.ones(2, 7, dtype=torch.long), None).tolist() == [True, False]
    assert criteria(torch.ones(2, 8, dtype=torch.long), None).tolist() == [True, True]


def test_row_budgets_refuse_a_batch_of_another_size():
    """One budget per generated row: a batch with more rows (num_return_sequences > 1) cannot be matched to them."""
    import pytest

    with pytest.raises(RuntimeError, match="asked for 4 rows but 2 row budgets were set"):
        RowBudgets([1, 3])(torch.zeros(4, 6, dtype=torch.long), None)


def test_transformers_generate_decodes_only_the_budgets(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    batch = tok(["12+34=", "1+2=", "123+4="], return_tensors="pt", padding=True)
    budgets = [2, 5, 9]
    # EOS and padding are never sampled (bad_words_ids), so that only the budgets (and max_new_tokens) stop rows
    kwargs = dict(max_new_tokens=max(budgets), do_sample=True, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, bad_words_ids=[[tok.eos_token_id], [tok.pad_token_id]])
    torch.manual_seed(0)
    with transformers_row_budgets(model, budgets):
        out = model.generate(**batch, **kwargs)
    assert "generate" not in vars(model)  # the model's own method again afterwards
    new = out[:, batch["input_ids"].size(1):]
    decoded = (new != tok.pad_token_id).sum(dim=1).tolist()
    assert decoded == budgets
    assert new.size(1) == max(budgets)


def test_vllm_row_budgets_give_each_prompt_its_max_tokens():
    class Params:
        def __init__(self, max_tokens):
            self.max_tokens = max_tokens

        def clone(self):
            return Params(self.max_tokens)

    class Engine:  # records what the patched generate passes on
        def generate(self, prompts, sampling_params=None, **kwargs):
            return [p.max_tokens for p in sampling_params]

    engine = Engine()
    with vllm_row_budgets(engine, [3, 7]):
        assert engine.generate([[1], [2]], sampling_params=Params(16)) == [3, 7]
    assert "generate" not in vars(engine)


def test_splice_respects_each_budget():
    prefixes = [[1, 2], [], [3]]
    continuations = [[7, 8, 9], [4, 5], [6, 6, 6, 6]]
    budgets = continuation_budgets([2, 0, 1], 4)
    assert budgets == [2, 4, 3]
    assert splice(prefixes, continuations, budgets) == [[1, 2, 7, 8], [4, 5], [3, 6, 6, 6]]


def test_budget_must_leave_a_token():
    with pytest.raises(ValueError, match="budget"):
        continuation_budgets([4], 4)


@settings(max_examples=examples("splice"))
@given(data=st.data(), max_completion_length=st.integers(1, 16), rows=st.integers(0, 6))
def test_splice_keeps_prefixes_and_the_length_bound(data, max_completion_length, rows):
    prefix_lengths = data.draw(st.lists(st.integers(0, max_completion_length - 1), min_size=rows, max_size=rows))
    prefixes = [data.draw(st.lists(st.integers(0, 99), min_size=k, max_size=k)) for k in prefix_lengths]
    continuations = [data.draw(st.lists(st.integers(0, 99), max_size=2 * max_completion_length)) for _ in prefixes]
    budgets = continuation_budgets(prefix_lengths, max_completion_length)
    spliced = splice(prefixes, continuations, budgets)
    for row, prefix, continuation in zip(spliced, prefixes, continuations):
        assert len(row) <= max_completion_length
        assert row[: len(prefix)] == prefix
        assert row[len(prefix) :] == continuation[: max_completion_length - len(prefix)]


# ---------------------------------------------------------------------------------------------- the call's limit


def engine_trainer(use_vllm: bool, mode: str | None = None, tensor_parallel_size: int = 1):
    """What `call_budgets` reads of a trainer: whether it generates with vLLM, and how its engine is shared."""
    generation = SimpleNamespace(mode=mode, tensor_parallel_size=tensor_parallel_size, tp_group=None)
    return SimpleNamespace(use_vllm=use_vllm, vllm_generation=generation)


def test_each_process_own_engine_stops_each_row_at_its_own_budget():
    assert call_budgets(engine_trainer(False), [3, 9, 1]) == (9, [3, 9, 1])  # Transformers generate
    assert call_budgets(engine_trainer(True, "colocate"), [3, 9, 1]) == (9, [3, 9, 1])  # vLLM colocate, one GPU


def test_server_mode_takes_one_limit_for_the_request():
    """One process here; with several, the limit is the largest of every process's budgets (the two-process check:
    tests/integration/test_distributed.py)."""
    assert call_budgets(engine_trainer(True, "server"), [3, 9, 1]) == (9, None)

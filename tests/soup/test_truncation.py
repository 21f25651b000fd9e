"""Truncation strategies and prefix bounds (`soup_trl.soup.truncation`) on hand-made tensors, and as hypothesis
properties. A strategy of the user's own: tests/soup/test_truncation_custom.py; the drift test:
tests/soup/test_truncation_drift.py."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from soup_trl.soup.continuation import continuation_budgets
from soup_trl.soup.truncation import (
    TRUNCATION_STRATEGIES,
    TruncationInputs,
    clamp_prefix_lengths,
    content_lengths,
    entropy_truncation,
    get_truncation_strategy,
    prefix_budget_tokens,
    ratio_truncation,
    register_truncation,
)
from soup_trl.testing.properties import examples

EOS, PAD = 1, 0


def batch(rows, width=None):
    """Right-padded ids and mask from lists of token ids."""
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def test_content_lengths_exclude_terminal_eos_only():
    ids, mask = batch([[5, 6, 7, EOS], [5, 6, 7, 8], [EOS], [5, EOS, 6]])
    # an EOS that is not the last real token does not count as terminal
    assert content_lengths(ids, mask, [EOS]).tolist() == [3, 4, 0, 3]


def test_content_lengths_with_several_eos_ids():
    ids, mask = batch([[5, 9], [5, EOS], [5, 6]])
    assert content_lengths(ids, mask, [EOS, 9]).tolist() == [1, 1, 2]


@pytest.mark.parametrize(
    "lengths, ratio, expected",
    [
        ([10, 7, 5, 3, 1, 0], 0.5, [5, 4, 2, 2, 0, 0]),  # round half to even: 3.5 -> 4, 2.5 -> 2, 1.5 -> 2, 0.5 -> 0
        ([10, 7, 5], 0.0, [0, 0, 0]),
        ([10, 7, 5], 0.3, [3, 2, 2]),  # 2.1 -> 2, 1.5 -> 2
        ([10, 7, 5], 0.99, [10, 7, 5]),
    ],
)
def test_ratio_truncation_rounds_like_python(lengths, ratio, expected):
    inputs = TruncationInputs(
        completion_ids=torch.zeros(len(lengths), 1), completion_mask=torch.ones(len(lengths), 1),
        content_lengths=torch.tensor(lengths),
    )
    got = ratio_truncation(inputs, prefix_ratio=ratio)
    assert got.tolist() == expected
    assert got.tolist() == [round(n * ratio) for n in lengths]


def test_clamp_never_keeps_eos_and_leaves_budget():
    proposal = torch.tensor([9, 4, 3, 2, -1])
    lengths = torch.tensor([8, 4, 5, 0, 3])
    # max_completion_length 6: at most 5 tokens kept; never more than the content; never negative
    assert clamp_prefix_lengths(proposal, lengths, 6).tolist() == [5, 4, 3, 0, 0]


def test_one_token_completions_keep_no_prefix():
    ids, mask = batch([[EOS], [7]])
    lengths = content_lengths(ids, mask, [EOS])
    args = SimpleNamespace(soup_prefix_ratio=0.9, soup_entropy_top_k=4, max_completion_length=1)
    inputs = TruncationInputs(ids, mask, lengths, entropies=torch.ones(2, 1))
    for name in ("ratio", "entropy"):
        cut = get_truncation_strategy(name).bind(args).cut(inputs, torch.Generator().manual_seed(0))
        assert clamp_prefix_lengths(cut, lengths, 1).tolist() == [0, 0]


def test_entropy_truncation_picks_among_top_k_and_ignores_padding():
    ids, mask = batch([[5, 6, 7, 8, EOS], [5, 6, EOS]], width=5)
    entropies = torch.tensor(
        [
            [0.1, 3.0, 0.2, 2.0, 0.3],
            [0.5, 0.1, 0.2, 9.0, 9.0],  # padding carries huge values: must never be chosen
        ]
    )
    inputs = TruncationInputs(ids, mask, content_lengths(ids, mask, [EOS]), entropies=entropies)
    seen = [set(), set()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        cut = entropy_truncation(inputs, entropy_top_k=2, max_completion_length=8, generator=generator)
        seen[0].add(cut[0].item())
        seen[1].add(cut[1].item())
    assert seen[0] == {1, 3}  # the two highest-entropy positions
    assert seen[1] == {0, 2}  # top-2 among the three real positions


def test_entropy_truncation_is_uniform_over_top_k():
    ids, mask = batch([[5, 6, 7, 8, 9, 10, EOS]])
    entropies = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    inputs = TruncationInputs(ids, mask, content_lengths(ids, mask, [EOS]), entropies=entropies)
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([entropy_truncation(inputs, 3, 16, generator) for _ in range(3000)]).flatten()
    counts = torch.bincount(draws, minlength=7)[4:].float() / 3000
    assert counts.sum() == 1.0  # only positions 4, 5, 6
    assert torch.all((counts - 1 / 3).abs() < 0.04)


def test_entropy_cut_at_eos_keeps_content_without_eos():
    ids, mask = batch([[5, 6, EOS]])
    lengths = content_lengths(ids, mask, [EOS])
    inputs = TruncationInputs(ids, mask, lengths, entropies=torch.tensor([[0.0, 0.0, 5.0]]))
    cut = entropy_truncation(inputs, entropy_top_k=1, max_completion_length=8)
    assert cut.tolist() == [2]
    assert clamp_prefix_lengths(cut, lengths, 8).tolist() == [2]  # EOS itself is regenerated


def test_entropy_truncation_needs_entropies():
    ids, mask = batch([[5, EOS]])
    inputs = TruncationInputs(ids, mask, content_lengths(ids, mask, [EOS]))
    with pytest.raises(ValueError, match="entropies"):
        entropy_truncation(inputs, entropy_top_k=1, max_completion_length=8)


def test_registry_lists_names_and_accepts_new_strategy(make_config):
    with pytest.raises(ValueError, match="'drift', 'entropy', 'prefix_budget', 'ratio'"):
        get_truncation_strategy("nope")

    @register_truncation("third", needs_entropy=True)
    def third(inputs):
        return inputs.content_lengths // 3

    try:
        strategy = get_truncation_strategy("third")
        assert strategy.fn is third and strategy.needs_entropy and strategy.behavior_budget is None
        make_config(soup_truncation="third")  # a registered name is a valid config value
    finally:
        del TRUNCATION_STRATEGIES["third"]
    with pytest.raises(ValueError, match="soup_truncation='third'"):
        make_config(soup_truncation="third")


@pytest.mark.parametrize(
    "budget, max_len, expected",
    [(0.25, 100, 25), (0.5, 5, 2), (0.01, 10, 1), (64, 512, 64), (600, 512, 511), (0.999, 10, 9)],
)
def test_prefix_budget_tokens(budget, max_len, expected):
    assert prefix_budget_tokens(budget, max_len) == expected
    args = SimpleNamespace(soup_prefix_budget=budget, max_completion_length=max_len)
    assert get_truncation_strategy("prefix_budget").bind(args).behavior_budget == expected


def test_prefix_budget_keeps_the_whole_behavior_sample():
    ids, mask = batch([[5, 6, 7], [5, EOS], [EOS]])
    lengths = content_lengths(ids, mask, [EOS])
    strategy = get_truncation_strategy("prefix_budget")
    assert strategy.behavior_budget is prefix_budget_tokens
    args = SimpleNamespace(soup_prefix_budget=3, max_completion_length=10)
    assert strategy.bind(args).cut(TruncationInputs(ids, mask, lengths)).tolist() == [3, 1, 0]
    # a longer completion (a stored rollout of soup_behavior_source="history", decoded in full) keeps the budget
    args = SimpleNamespace(soup_prefix_budget=2, max_completion_length=10)
    assert strategy.bind(args).cut(TruncationInputs(ids, mask, lengths)).tolist() == [2, 1, 0]


def test_a_strategy_receives_the_settings_it_names():
    """Parameters are read from the config by name (`prefix_ratio` from soup_prefix_ratio, `max_completion_length`
    as it is); the strategy never sees the config, and relay evaluation calls it with the value alone."""
    assert get_truncation_strategy("ratio").parameters == ("prefix_ratio",)
    assert get_truncation_strategy("entropy").parameters == ("entropy_top_k", "max_completion_length")
    assert get_truncation_strategy("prefix_budget").parameters == ("prefix_budget", "max_completion_length")
    assert get_truncation_strategy("drift").parameters == ("prefix_ratio", "drift_lenience")
    bound = get_truncation_strategy("drift").bind(SimpleNamespace(soup_prefix_ratio=0.5, soup_drift_lenience=0.3))
    assert bound.values == {"prefix_ratio": 0.5, "drift_lenience": 0.3} and bound.refines and not bound.needs_logps
    ids, mask = batch([[5, 6, 7, 8, EOS]])
    assert bound.cut(TruncationInputs(ids, mask, content_lengths(ids, mask, [EOS]))).tolist() == [2]


def test_a_setting_the_config_lacks_is_named():
    @register_truncation("needs_a_field", needs_logps=False)
    def needs_a_field(inputs, no_such_setting):
        return inputs.content_lengths

    try:
        strategy = get_truncation_strategy("needs_a_field")
        assert strategy.setting_errors(SimpleNamespace(soup_prefix_ratio=0.5)) == [
            "soup_truncation='needs_a_field': the strategy reads a setting 'no_such_setting', but the config has "
            "neither a field soup_no_such_setting nor no_such_setting. Name the strategy's parameters after config "
            "fields (prefix_ratio reads soup_prefix_ratio, max_completion_length reads max_completion_length)."
        ]
        with pytest.raises(ValueError, match="no_such_setting"):
            strategy.bind(SimpleNamespace())
    finally:
        del TRUNCATION_STRATEGIES["needs_a_field"]


def test_a_first_release_strategy_gets_the_whole_config_with_a_warning():
    """`fn(inputs, args, generator)`, `refine(inputs, current, proposed, args, generator)`, `budget(args)`: the form of
    soup-trl 0.1, called positionally with the config, for one more release."""
    seen = {}

    def budget(args):
        return args.max_completion_length // 2

    def refine(inputs, current, proposed, args, generator):
        seen["refine"] = (args.tag, generator)
        return proposed - 1

    @register_truncation("old_style", needs_logps=False, behavior_budget=budget, refine=refine)
    def old_style(inputs, args, generator):
        seen["fn"] = (args.tag, generator)
        return inputs.content_lengths

    config = SimpleNamespace(tag="the config", max_completion_length=10)
    try:
        strategy = get_truncation_strategy("old_style")
        assert strategy.parameters == ("args",) and strategy.setting_errors(config) == []
        with pytest.warns(FutureWarning, match="takes the whole config as `args`"):
            bound = strategy.bind(config)
        ids, mask = batch([[5, 6, EOS]])
        inputs = TruncationInputs(ids, mask, content_lengths(ids, mask, [EOS]))
        generator = torch.Generator()
        assert bound.cut(inputs, generator).tolist() == [2] and seen["fn"] == ("the config", generator)
        assert bound.refine(inputs, None, torch.tensor([2]), generator).tolist() == [1]
        assert seen["refine"] == ("the config", generator)
        assert bound.behavior_budget == 5
    finally:
        del TRUNCATION_STRATEGIES["old_style"]


def test_the_old_module_path_still_registers_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("soup_trl.truncation", None)
    with pytest.warns(FutureWarning, match="soup_trl.truncation moved"):
        old = importlib.import_module("soup_trl.truncation")
    assert old.register_truncation is register_truncation and old.TruncationInputs is TruncationInputs


@st.composite
def behavior_batches(draw):
    """Right-padded behavior completions: random lengths, an EOS at the end of some, padding that may be the EOS id."""
    rows = draw(st.integers(1, 6))
    max_completion_length = draw(st.integers(1, 12))
    pad = draw(st.sampled_from([PAD, EOS]))  # some tokenizers pad with their EOS token
    lengths = draw(st.lists(st.integers(0, max_completion_length), min_size=rows, max_size=rows))
    ends = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    width = max(lengths + [1])
    ids = torch.full((rows, width), pad, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for i, (length, eos) in enumerate(zip(lengths, ends)):
        body = draw(st.lists(st.integers(2, 40), min_size=length, max_size=length))  # never the EOS id
        if eos and length:
            body[-1] = EOS
        ids[i, :length] = torch.tensor(body, dtype=torch.long)
        mask[i, :length] = 1
    expected_content = torch.tensor([n - (e and n > 0) for n, e in zip(lengths, ends)])
    entropies = torch.tensor(draw(st.lists(st.floats(0, 5), min_size=rows * width, max_size=rows * width)))
    args = SimpleNamespace(
        max_completion_length=max_completion_length,
        soup_prefix_ratio=draw(st.floats(0, 1)),
        soup_entropy_top_k=draw(st.integers(1, 16)),
        soup_prefix_budget=draw(st.one_of(st.floats(0.01, 0.99), st.integers(1, 20).map(float))),
        soup_drift_lenience=draw(st.floats(0.01, 1)),
    )
    return ids, mask, expected_content, entropies.view(rows, width), args


@settings(max_examples=examples("truncation"))
@given(batch=behavior_batches(), strategy=st.sampled_from(sorted(TRUNCATION_STRATEGIES)), seed=st.integers(0, 2**16))
def test_truncation_never_keeps_the_eos_exceeds_bounds_or_leaves_no_budget(batch, strategy, seed):
    ids, mask, expected_content, entropies, args = batch
    lengths = content_lengths(ids, mask, [EOS])
    assert torch.equal(lengths, expected_content)
    inputs = TruncationInputs(ids, mask, lengths, torch.zeros(ids.shape), entropies)
    proposal = TRUNCATION_STRATEGIES[strategy].bind(args).cut(inputs, torch.Generator().manual_seed(seed))
    prefix = clamp_prefix_lengths(proposal, lengths, args.max_completion_length)
    assert (prefix >= 0).all()
    assert (prefix <= lengths).all()  # the EOS (at position content length) is never in the prefix
    assert (prefix <= mask.sum(dim=1)).all()  # padding is never kept
    budgets = continuation_budgets(prefix.tolist(), args.max_completion_length)
    assert min(budgets) >= 1
    for row, k in enumerate(prefix.tolist()):
        assert EOS not in ids[row, :k].tolist()


@settings(max_examples=examples("entropy"))
@given(batch=behavior_batches(), seed=st.integers(0, 2**16))
def test_entropy_cut_is_a_real_position_among_the_top_k(batch, seed):
    """Before any clamp: the cut is a real token position (never padding) ranked among the k highest entropies."""
    ids, mask, _, entropies, args = batch
    lengths = content_lengths(ids, mask, [EOS])
    inputs = TruncationInputs(ids, mask, lengths, None, entropies)
    cuts = entropy_truncation(
        inputs, args.soup_entropy_top_k, args.max_completion_length, torch.Generator().manual_seed(seed)
    )
    for row, cut in enumerate(cuts.tolist()):
        real = min(int(mask[row].sum()), args.max_completion_length)
        if real == 0:
            assert cut == 0
            continue
        assert 0 <= cut < real
        candidates = entropies[row, :real]
        assert (candidates > candidates[cut]).sum() < args.soup_entropy_top_k

"""Property tests (hypothesis) of the pure functions: truncation, splicing, the step-major order, M2PO's threshold and
pass@k (docs/reliability.md).

The quick suite runs a fixed, derandomized set of examples (`EXAMPLES` per property). For a longer, randomized fuzz:
`SOUP_HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_properties.py` (20 times as many examples).
"""

import math
import os
from fractions import Fraction
from types import SimpleNamespace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soup_trl.core.samplers import step_major_order
from soup_trl.evaluation.runner import pass_at_k
from soup_trl.m2po.ops import harmful_token_mask, m2po_per_token_loss, m2po_trust_region
from soup_trl.soup.continuation import continuation_budgets, splice
from soup_trl.soup.truncation import (
    TRUNCATION_STRATEGIES,
    TruncationInputs,
    clamp_prefix_lengths,
    content_lengths,
    entropy_truncation,
)

#: Examples per property in the quick suite (about 15 s for the module on one core).
EXAMPLES = {"truncation": 100, "entropy": 100, "splice": 150, "step_major_order": 200, "m2po": 100, "pass_at_k": 200}
settings.register_profile(
    "quick",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("SOUP_HYPOTHESIS_PROFILE", "quick")
settings.load_profile(PROFILE)


def examples(name: str) -> int:
    return EXAMPLES[name] * (20 if PROFILE == "fuzz" else 1)


EOS, PAD = 1, 0


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


@settings(max_examples=examples("step_major_order"))
@given(
    steps=st.integers(1, 6),
    processes=st.integers(1, 8),
    groups_per_step=st.integers(1, 4),
    group_size=st.integers(1, 8),
)
def test_step_major_order_is_a_permutation_keeping_groups_whole(steps, processes, groups_per_step, group_size):
    rows_per_step = groups_per_step * group_size  # per process
    order = step_major_order(steps, processes, rows_per_step)
    total = steps * processes * rows_per_step
    assert sorted(order) == list(range(total))
    for start in range(0, total, group_size):  # every group lands whole and aligned
        block = order[start : start + group_size]
        assert block[0] % group_size == 0 and block == list(range(block[0], block[0] + group_size))
    share = steps * rows_per_step  # process p's contiguous share, split into `steps` steps
    for step in range(steps):
        rows = [i for p in range(processes) for i in order[p * share + step * rows_per_step :][:rows_per_step]]
        assert sorted(rows) == list(range(step * processes * rows_per_step, (step + 1) * processes * rows_per_step))


@st.composite
def token_batches(draw):
    rows, width = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    log_ratio = torch.tensor(draw(st.lists(st.floats(-3, 3, width=32), min_size=rows * width, max_size=rows * width)))
    advantages = torch.tensor(draw(st.lists(st.floats(-2, 2, width=32), min_size=rows, max_size=rows)))
    mask = torch.tensor(draw(st.lists(st.integers(0, 1), min_size=rows * width, max_size=rows * width)))
    tau = draw(st.floats(0, 4))
    return log_ratio.view(rows, width), advantages, mask.view(rows, width), tau


@settings(max_examples=examples("m2po"))
@given(batch=token_batches())
def test_m2po_masks_only_harmful_tokens_and_keeps_their_second_moment_within_tau(batch):
    log_ratio, advantages, mask, tau = batch
    region = m2po_trust_region(log_ratio, advantages, mask, tau)
    harmful = harmful_token_mask(log_ratio, advantages, mask)
    assert torch.equal(region.harmful, harmful)
    assert not (region.clipped & ~harmful).any()  # a non-harmful token is never masked
    squared = log_ratio.double().square()
    if region.clipped.any():
        kept = harmful & ~region.clipped
        if kept.any():
            assert squared[kept].mean().item() <= tau
    else:
        assert not harmful.any() or squared[harmful].mean().item() <= tau + 1e-12
    # the loss of every loss token the threshold keeps is the plain -A r (no other clip acts); clipped ones get no
    # gradient (tokens outside the mask never reach the loss)
    log_ratio = log_ratio.clone().requires_grad_(True)
    loss, _ = m2po_per_token_loss(log_ratio, advantages, mask, tau)
    plain = -advantages.unsqueeze(1) * torch.exp(log_ratio)
    kept = mask.bool() & ~region.clipped
    assert torch.equal(loss[kept], plain[kept])
    loss.sum().backward()
    assert (log_ratio.grad[region.clipped] == 0).all()


@settings(max_examples=examples("pass_at_k"))
@given(data=st.data(), n=st.integers(1, 30))
def test_pass_at_k_is_monotone_in_k_and_matches_the_closed_form(data, n):
    c = data.draw(st.integers(0, n))
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    for k, value in enumerate(values, start=1):
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert math.isclose(value, float(exact), rel_tol=1e-12, abs_tol=1e-12)
        assert (value == 1.0) == (n - c < k) and (value == 0.0) == (c == 0)

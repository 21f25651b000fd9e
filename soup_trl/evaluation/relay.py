"""Relay sampling at inference (the paper's section 5.1, Figure 4 and appendix B).

A behavior model A samples n full answers per problem. Each answer is cut with SOUP's length-ratio rule, exactly as
the trainer cuts behavior samples (`soup_trl.truncation`): the prefix keeps the first round(len * ratio) tokens, len
counting the tokens before the EOS (Python's round: halves go to even), so the EOS is never kept, and at least one
token of the completion budget is left. Model B then continues every prompt + prefix once, within the remaining
budget, and the relay sample is prefix + continuation (token level). B alone samples n answers for the same
problems; pass@k of relay sampling minus pass@k of B is the curve of Figure 4.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..ops import continuation_budgets, splice
from ..truncation import TruncationInputs, clamp_prefix_lengths, content_lengths, ratio_truncation
from .runner import ProblemResult, Sample


def relay_prefix_lengths(completions: list[list[int]], eos_token_ids, ratio: float, max_new_tokens: int) -> list[int]:
    """Prefix length kept from each behavior completion: the trainer's 'ratio' truncation, clamped the same way."""
    if not completions:
        return []
    width = max(1, max(len(c) for c in completions))
    ids = torch.zeros(len(completions), width, dtype=torch.long)
    mask = torch.zeros(len(completions), width, dtype=torch.long)
    for row, c in enumerate(completions):
        ids[row, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[row, : len(c)] = 1
    lengths = content_lengths(ids, mask, sorted(eos_token_ids))
    proposal = ratio_truncation(TruncationInputs(ids, mask, lengths), SimpleNamespace(soup_prefix_ratio=ratio))
    return clamp_prefix_lengths(proposal, lengths, max_new_tokens).tolist()


def relay_continue(
    backend,
    prompt_ids: list[list[int]],
    behavior: list[ProblemResult],
    ratio: float,
    max_new_tokens: int,
    sampling,
    behavior_eos_ids=(),
    desc: str = "relay: continuing",
) -> list[ProblemResult]:
    """B (`backend`) continues every behavior sample of every problem from prompt + prefix; returns relay samples.

    `behavior_eos_ids` are the behavior model's EOS ids (the prefix never keeps one of them or of B's). Each relay
    sample records its prefix length and the behavior completion it came from (`ProblemResult.extra`).
    """
    eos_ids = set(backend.eos_token_ids) | set(behavior_eos_ids)
    rows, budgets, prefixes, where = [], [], [], []
    for p, (ids, result) in enumerate(zip(prompt_ids, behavior)):
        completions = [s.token_ids for s in result.samples]
        lengths = relay_prefix_lengths(completions, eos_ids, ratio, max_new_tokens)
        for s, (completion, k) in enumerate(zip(completions, lengths)):
            prefixes.append(completion[:k])
            rows.append(list(ids) + completion[:k])
            where.append((p, s))
        budgets.extend(continuation_budgets(lengths, max_new_tokens))
    continuations = [c[0] for c in backend.generate(rows, 1, budgets, sampling, desc=desc)]
    spliced = splice(prefixes, continuations, budgets)

    relay = [ProblemResult(r.id, r.problem, r.gold, [None] * len(r.samples), [{}] * len(r.samples)) for r in behavior]
    for (p, s), ids, prefix in zip(where, spliced, prefixes):
        behavior_sample = behavior[p].samples[s]
        relay[p].samples[s] = Sample(ids, backend.decode(ids), backend.ends_with_eos(ids))
        relay[p].extra[s] = {
            "prefix_tokens": len(prefix),
            "behavior_tokens": len(behavior_sample.token_ids),
            "prefix": backend.decode(prefix),
            "behavior_completion": behavior_sample.text,
            "behavior_reward": behavior_sample.grade.reward if behavior_sample.grade else None,
        }
    return relay


def difference_curves(relay: dict[str, dict], target: dict[str, dict]) -> dict[str, dict[str, float]]:
    """pass@k(relay) - pass@k(B) per benchmark and k."""
    return {
        name: {k: relay[name]["pass@k"][k] - target[name]["pass@k"][k] for k in relay[name]["pass@k"]}
        for name in relay
    }

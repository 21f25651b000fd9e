"""Relay sampling (`soup_trl.evaluation.relay`): the prefix lengths of the trainer's truncation, the token-level splice
of a behavior prefix and the target model's continuation (on a scripted backend), and the pass@k difference curves.
"""

from soup_trl.evaluation.arguments import SamplingArguments
from soup_trl.evaluation.relay import difference_curves, relay_continue, relay_prefix_lengths
from soup_trl.evaluation.runner import ProblemResult, Sample
from soup_trl.testing.evaluation import EOS, ScriptedBackend, ids


def test_relay_prefix_lengths_follow_the_trainer_truncation():
    completions = [ids("abcdefghij"), ids("abcdefgh", eos=False), [EOS], [], ids("abcdefghijkl", eos=False)]
    # round half to even: 10 * 0.25 = 2.5 -> 2; the EOS is never counted nor kept
    assert relay_prefix_lengths(completions, {EOS}, 0.25, 12) == [2, 2, 0, 0, 3]
    assert relay_prefix_lengths(completions, {EOS}, 0.5, 12) == [5, 4, 0, 0, 6]
    assert relay_prefix_lengths([ids("abcdefg")], {EOS}, 0.5, 12) == [4]  # 3.5 -> 4
    # at least one token of budget is left: 12 * 0.99 = 11.88 -> 12, clamped to 12 - 1
    assert relay_prefix_lengths(completions, {EOS}, 0.99, 12) == [10, 8, 0, 0, 11]
    assert relay_prefix_lengths([], {EOS}, 0.5, 12) == []


def test_relay_continue_splices_prefix_and_continuation_at_token_level():
    behavior = [ProblemResult("0", "Q", "g", [Sample(ids("abcdefghij"), "abcdefghij", True), Sample([EOS], "", True)])]
    behavior.append(ProblemResult("1", "R", "g", [Sample(ids("wxyz", eos=False), "wxyz", False)] * 2))
    target = ScriptedBackend(lambda text: ["0123456789"])
    prompt_ids = [ids("Q:", eos=False), ids("R:", eos=False)]
    relay = relay_continue(target, prompt_ids, behavior, 0.5, 8, SamplingArguments(seed=3))

    call = target.calls[0]
    assert call["n"] == 1
    assert call["rows"] == [
        ids("Q:abcde", eos=False),
        ids("Q:", eos=False),
        ids("R:wx", eos=False),
        ids("R:wx", eos=False),
    ]
    assert call["budgets"] == [3, 8, 6, 6]
    assert [s.text for s in relay[0].samples] == ["abcde012", "01234567"]
    assert relay[0].samples[0].token_ids == ids("abcde012", eos=False) and not relay[0].samples[0].finished
    assert [s.text for s in relay[1].samples] == ["wx012345", "wx012345"]
    assert relay[0].extra[0]["prefix_tokens"] == 5 and relay[0].extra[0]["prefix"] == "abcde"
    assert relay[0].extra[1]["prefix_tokens"] == 0 and relay[0].extra[1]["behavior_tokens"] == 1


def test_difference_curves():
    relay = {"a": {"pass@k": {"1": 0.5, "2": 0.75}}}
    target = {"a": {"pass@k": {"1": 0.25, "2": 0.75}}}
    assert difference_curves(relay, target) == {"a": {"1": 0.25, "2": 0.0}}

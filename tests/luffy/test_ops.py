"""LUFFY's tensor functions (`soup_trl.luffy.ops`) on hand-made tensors: policy shaping, the off-policy token loss
and its sums, which rows of a group are traces, and how a trace is read."""

import pytest
import torch

from soup_trl.luffy.ops import (
    off_policy_sums,
    off_policy_token_loss,
    policy_shaping,
    shaping_gradient_weight,
    strip_reopened_think,
    trace_content,
    trace_row_mask,
)

GAMMA = 0.1  # luffy_shaping_gamma


def test_policy_shaping_values():
    probs = torch.tensor([0.1, 0.4, 0.9, 1.0])
    torch.testing.assert_close(policy_shaping(probs, 0.1), torch.tensor([0.5, 0.8, 0.9, 1.0 / 1.1]))
    torch.testing.assert_close(policy_shaping(torch.tensor([0.5]), 0.5), torch.tensor([0.5]))


def test_shaping_gradient_weight_values_and_autograd():
    probs = torch.tensor([0.1, 0.4, 0.9])
    # gamma * p / (p + gamma)^2: 0.01 / 0.04, 0.04 / 0.25, 0.09 / 1
    torch.testing.assert_close(shaping_gradient_weight(probs, 0.1), torch.tensor([0.25, 0.16, 0.09]))
    logps = torch.log(probs).requires_grad_()
    policy_shaping(torch.exp(logps), 0.1).sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([0.25, 0.16, 0.09]))


def test_off_policy_token_loss_values_and_gradient():
    logps = torch.log(torch.tensor([[0.1, 0.4, 0.9], [0.4, 0.9, 0.5]])).requires_grad_()
    advantages = torch.tensor([2.0, -0.5])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = off_policy_token_loss(logps, advantages, mask, GAMMA)
    # -A * f(p) on masked tokens: f = [0.5, 0.8, -], [0.8, 0.9, 0.5 / 0.6]
    expected = torch.tensor([[-1.0, -1.6, 0.0], [0.4, 0.45, 0.5 * (0.5 / 0.6)]])
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    # d(-A f(p)) / d log p = -A * gamma * p / (p + gamma)^2
    expected_grad = torch.tensor([[-0.5, -0.32, 0.0], [0.08, 0.045, 0.5 * 0.05 / 0.36]])
    torch.testing.assert_close(logps.grad, expected_grad)


def test_mixed_loss_on_hand_made_tensors():
    """One DAPO normaliser over sampled and trace tokens: sampled tokens clipped, trace tokens shaped."""
    logps = torch.log(torch.tensor([[0.5, 0.3], [0.1, 0.4]]))
    old = torch.log(torch.tensor([[0.25, 0.3], [0.9, 0.9]]))  # trace rows' old log-probs play no part
    advantages = torch.tensor([1.0, -0.5])
    off = torch.tensor([[0, 0], [1, 1]])
    ratio = torch.exp(logps - old)  # row 0: [2, 1]
    sampled = -torch.min(ratio * advantages[:, None], ratio.clamp(0.8, 1.28) * advantages[:, None]) * (1 - off)
    total = (sampled + off_policy_token_loss(logps, advantages, off, GAMMA)).sum() / 4  # 4 tokens, both kinds
    # row 0: -1.28 (clipped) - 1; row 1: 0.5 * 0.5 + 0.5 * 0.8
    assert total.item() == pytest.approx((-1.28 - 1.0 + 0.25 + 0.4) / 4)


def test_off_policy_sums():
    logps = torch.log(torch.tensor([[0.1, 0.4], [0.9, 0.5]]))
    off = torch.tensor([[1, 1], [0, 0]])
    loss_mask = torch.tensor([[1, 1], [1, 0]])
    torch.testing.assert_close(off_policy_sums(logps, off, loss_mask, GAMMA), torch.tensor([2.0, 3.0, 0.5, 0.41]))


@pytest.mark.parametrize(
    "rows, group, traces, first, expected",
    [
        (8, 4, 1, 0, [0, 0, 0, 1, 0, 0, 0, 1]),
        (6, 3, 2, 0, [0, 1, 1, 0, 1, 1]),
        (4, 4, 1, 2, [0, 1, 0, 0]),  # rows 2..5 of a batch
    ],
)
def test_trace_row_mask(rows, group, traces, first, expected):
    assert trace_row_mask(rows, group, traces, first).tolist() == [bool(x) for x in expected]


def test_trace_content_formats_and_errors():
    assert trace_content("12|3", "target") == "12|3"
    assert trace_content([{"role": "assistant", "content": "12|3"}], "target") == "12|3"
    for bad in [None, "", "  ", [], [{"role": "assistant", "content": None}], [{"content": "a"}, {"content": "b"}]]:
        with pytest.raises(ValueError, match="luffy_trace_field='target'"):
            trace_content(bad, "target")


@pytest.mark.parametrize(
    "trace, prompt, expected",
    [
        ("<think>\nabc</think>", "<|Assistant|><think>\n", "abc</think>"),
        ("<think>\nabc", "<|im_start|>assistant\n", "<think>\nabc"),
        ("abc", "<think>\n", "abc"),
    ],
)
def test_strip_reopened_think(trace, prompt, expected):
    assert strip_reopened_think(trace, prompt) == expected

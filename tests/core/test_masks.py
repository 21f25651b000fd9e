"""The loss tokens of a scored batch (`soup_trl.core.masks`), on hand-made masks."""

import torch

from soup_trl.core.masks import loss_tokens


def test_loss_tokens_are_the_completion_tokens_without_a_tool_mask():
    completion = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert loss_tokens({"completion_mask": completion}) is completion


def test_the_tool_mask_takes_tokens_out_of_the_loss():
    completion = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tool = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1]])
    assert loss_tokens({"completion_mask": completion, "tool_mask": tool}).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]

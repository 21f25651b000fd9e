"""benchmarks/step_time.py's counting: decoded tokens per row and a generation call's decode iterations, on hand-made
completions."""

from step_time import call_cost, decoded_tokens, row_tokens

EOS, PAD = 2, 0


def test_a_row_counts_up_to_its_eos_else_its_non_padding_tokens():
    rows = [[5, 6, EOS, PAD], [5, 6, 7, 8], [5, PAD, PAD, PAD], [EOS, PAD, PAD, PAD]]
    assert row_tokens(rows, EOS, PAD) == [3, 4, 1, 1]
    assert decoded_tokens(rows, EOS, PAD) == 9


def test_a_call_lasts_as_many_decoding_steps_as_its_longest_row():
    """Three short rows and one long one: 4 + 1 + 1 + 1 tokens, 4 iterations; no rows: nothing."""
    rows = [[5, 6, 7, 8], [EOS, PAD, PAD, PAD], [5, PAD, PAD, PAD], [EOS, PAD, PAD, PAD]]
    assert call_cost(rows, EOS, PAD) == (7, 4)
    assert call_cost([], EOS, PAD) == (0, 0)

"""pass@k of the evaluation runner (`soup_trl.evaluation.runner.pass_at_k`): a hypothesis property against the
closed form.

The runner's example-based tests (hand-computed pass@k, avg@n, the files of a run) are still in tests/test_eval.py.
"""

import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from soup_trl.evaluation.runner import pass_at_k
from soup_trl.testing.properties import examples


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

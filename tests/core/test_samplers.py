"""The step-major order of a generation batch's rows (`soup_trl.core.samplers`): every process's share of every
optimizer step, whole groups kept together."""

from hypothesis import given, settings
from hypothesis import strategies as st

from soup_trl.core.samplers import step_major_order
from soup_trl.testing.properties import examples


def test_step_major_order():
    # 2 steps, 2 processes, 2 rows per process per step: global step s = rows [4s, 4s + 4)
    order = step_major_order(num_steps=2, num_processes=2, rows_per_step=2)
    assert order == [0, 1, 4, 5, 2, 3, 6, 7]  # process 0 holds [step 0, step 1] shares, then process 1
    assert step_major_order(3, 1, 4) == list(range(12))  # one process: unchanged


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

"""Processes kept in step (`soup_trl.core.lockstep`): forward chunks by length, and the lockstep forward's values and
forward count on the tiny model (every process makes the same forwards: a process with nothing to score still runs
one where the others run one)."""

import pytest
import torch

from soup_trl import SOUPTrainer
from soup_trl.core.lockstep import length_chunks, lockstep_logps, most_over_processes, no_grad_logps, on_any_process
from soup_trl.testing.rewards import shaped_reward


def test_chunks_take_the_longest_rows_first_and_keep_within_the_token_budget():
    prompts, completions = [4, 4, 2, 4, 3], [6, 1, 2, 10, 3]  # rows of 10, 5, 4, 14 and 6 tokens
    # rows 3 and 0 pad to 4 + 10 = 14 each (28); rows 4, 1, 2 to 4 + 3 = 7 each (21)
    assert length_chunks(prompts, completions, 28) == [[3, 0], [4, 1, 2]]
    assert length_chunks(prompts, completions, 14) == [[3], [0], [4, 1], [2]]  # [4, 1, 2] would pad to 3 x 7
    assert length_chunks(prompts, completions, 1000) == [[3, 0, 4, 1, 2]]
    assert length_chunks([9], [9], 4) == [[0]]  # a row over the budget forwards alone
    assert length_chunks([], [], 10) == []


def test_a_chunk_is_padded_to_its_widest_prompt_and_completion_together():
    # one long prompt and one long completion in different rows pad each other: 2 x (8 + 8) > 20
    assert length_chunks([8, 1], [1, 8], 20) == [[0], [1]]
    assert length_chunks([8, 1], [1, 8], 32) == [[0, 1]]


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, make_config, make_dataset):
    return SOUPTrainer(tiny_model_dir, shaped_reward, args=make_config(soup_behavior_steps=2), train_dataset=make_dataset())


def count_forwards(trainer, monkeypatch) -> list:
    calls, original = [], trainer._get_per_token_logps_and_entropies

    def counting(model, input_ids, *args, **kwargs):
        calls.append(tuple(input_ids.shape))
        return original(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", counting)
    return calls


def test_lockstep_logps_equal_each_rows_own_forward(trainer, monkeypatch):
    prompts = [[5, 6, 7], [5, 8], [9, 9, 9, 9], [6]]
    completions = [[3, 4], [3, 4, 5, 6, 7], [], [8]]
    calls = count_forwards(trainer, monkeypatch)
    logps, entropies = lockstep_logps(trainer, prompts, completions, compute_entropy=True)
    assert logps.shape == entropies.shape == (4, 5)
    # per_device_train_batch_size (8) x the longest row (7 tokens) = 56 tokens: the three rows with tokens fit one
    # forward, padded to the widest prompt (3) and completion (5)
    assert calls == [(3, 8)]
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        n = len(completion)
        assert (logps[row, n:] == 0).all() and (entropies[row, n:] == 0).all()
        if n == 0:
            continue
        alone, alone_entropies = no_grad_logps(
            trainer, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long),
            torch.tensor([completion]), torch.ones(1, n, dtype=torch.long), True,
        )  # fmt: skip
        torch.testing.assert_close(logps[row, :n], alone[0].float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropies[row, :n], alone_entropies[0].float(), atol=1e-5, rtol=1e-5)


def test_a_call_without_tokens_to_score_still_forwards_where_others_would(trainer, monkeypatch):
    calls = count_forwards(trainer, monkeypatch)
    logps, _ = no_grad_logps(
        trainer, torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.long),
        torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long),
    )  # fmt: skip
    assert logps.shape == (1, 0)
    assert calls == [(1, 2)]  # a one-token filler forward: under ZeRO-3 the other processes' forward gathers weights
    calls.clear()
    logps, entropies = lockstep_logps(trainer, [], [])
    assert logps.shape == (0, 0) and entropies is None
    assert calls == []  # one process: nobody to keep in step with


def test_one_process_agrees_with_itself(trainer):
    assert most_over_processes(trainer.accelerator, 3) == 3
    assert on_any_process(trainer.accelerator, True) and not on_any_process(trainer.accelerator, False)

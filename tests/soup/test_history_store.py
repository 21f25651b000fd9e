"""The rollout history's flat token store (`soup_trl.soup.history_store`): in memory and in a machine's files (one
process writes, the others map), compaction, and checkpoints as raw files; and the history's age limit in epochs."""

import logging
import math

import numpy as np
import pytest
import torch

from soup_trl.soup.history import (
    Record,
    Rollout,
    RolloutHistory,
    epoch_steps,
    history_notes,
    max_age_steps,
    prompt_key,
    served_fraction,
)
from soup_trl.soup.history_store import TokenStore


def fields(ids, step=0):
    n = len(ids)
    return (np.array(ids), -np.arange(1, n + 1) / 10, np.full(n, step), None)


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "files"])
def test_append_read_compact_and_save(tmp_path, on_disk):
    store = TokenStore(str(tmp_path / "node") if on_disk else None)
    assert store.append([fields([5, 6, 7]), fields([8, 9], step=2)]) == [0, 3]
    assert store.append([fields([10])]) == [5]
    read = store.read(3, 2)
    assert read["ids"].tolist() == [8, 9] and read["sampled_at"].tolist() == [2, 2]
    assert read["logps"].tolist() == pytest.approx([-0.1, -0.2]) and read["entropies"].tolist() == [0.0, 0.0]
    assert store.nbytes() == 6 * 14
    assert store.compact([(5, 1), (0, 3)]) == [0, 1]  # the rollout at 3 was evicted: the others move up
    assert store.length == 4 and store.read(0, 1)["ids"].tolist() == [10] and store.read(1, 3)["ids"].tolist() == [5, 6, 7]
    store.save(str(tmp_path / "ckpt"), [(1, 3)])
    assert np.fromfile(tmp_path / "ckpt.ids.bin", np.int32).tolist() == [5, 6, 7]
    restored = TokenStore(str(tmp_path / "node2") if on_disk else None)
    restored.load_files(str(tmp_path / "ckpt"))
    assert restored.length == 3 and restored.read(0, 3)["ids"].tolist() == [5, 6, 7]
    if on_disk:
        store.close()
        assert not (tmp_path / "node").exists()  # the writer removes the machine's files


def test_a_reader_maps_what_the_writer_of_its_machine_writes(tmp_path):
    """Every process appends the same rollouts (the history is the same everywhere); only the writer writes, and a
    reader sees the writer's tokens at the same offsets, also after a compaction to the files' next generation."""
    folder = str(tmp_path / "node")
    writer, reader = TokenStore(folder, writer=True), TokenStore(folder, writer=False)
    for store in (writer, reader):
        assert store.append([fields([1, 2, 3]), fields([4, 5])]) == [0, 3]
    assert reader.read(3, 2)["ids"].tolist() == [4, 5]
    for store in (writer, reader):  # the writer first: the barrier between them is the caller's
        assert store.compact([(3, 2)]) == [0]
    assert reader.generation == writer.generation == 1 and reader.read(0, 2)["ids"].tolist() == [4, 5]
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == sorted(
        f"{name}.1.bin" for name in ("ids", "logps", "sampled_at", "entropies")
    )  # the old generation is gone


def test_a_history_in_files_serves_and_checkpoints_as_one_in_memory(tmp_path):
    def history(store):
        h = RolloutHistory(2, max_age=10, store=store)
        for step in range(3):
            h.add(Record(prompt_key([p]), s, s, step, Rollout.of(torch.arange(3) + 10 * p, torch.full((3,), -1.0),
                                                                  torch.full((3,), step)))
                  for p in range(2) for s in range(2))  # fmt: skip
        return h

    in_memory, on_disk = history(None), history(TokenStore(str(tmp_path / "node")))
    for h in (in_memory, on_disk):
        served, ages = h.rows([[1], [1]], step=4)
        assert [r.completion_ids.tolist() for r in served] == [[10, 11, 12]] * 2 and ages == [2.0, 2.0]
    on_disk.save(str(tmp_path / "soup_history"))
    resumed = RolloutHistory(2, max_age=10, store=TokenStore(str(tmp_path / "resumed")))
    resumed.load(str(tmp_path / "soup_history"))
    assert resumed.num_tokens() == in_memory.num_tokens() == 2 * 2 * 3
    assert resumed.state_dict()["fields"]["ids"].tolist() == in_memory.state_dict()["fields"]["ids"].tolist()


def test_a_checkpoint_of_soup_trl_0_1_still_loads():
    history = RolloutHistory(1, max_age=None)
    ids = torch.tensor([4, 5], dtype=torch.int32)
    legacy = {"group_size": 1, "pool": 1,
              "groups": {prompt_key([3]): [[(2, (ids, torch.tensor([-0.5, -0.25]), torch.tensor([1, 2], dtype=torch.int32), None))]]}}  # fmt: skip
    history.load_state_dict(legacy)
    (rollout,) = history.group(prompt_key([3]), 5)
    assert rollout.completion_ids.tolist() == [4, 5] and rollout.logps.tolist() == [-0.5, -0.25]
    assert history.age(prompt_key([3]), 5) == 4  # its oldest token was sampled at step 1


# ---------------------------------------------------------------------------------------------- the age limit


def test_the_age_limit_in_epochs():
    assert epoch_steps(17_398, 32) == 544 and epoch_steps(4_608, 32) == 144 and epoch_steps(10, 32) == 1
    assert max_age_steps(None, 1.0, 544) == 544
    assert max_age_steps(64, 1.0, 544) == 64  # the tighter of the two
    assert max_age_steps(None, 1.5, 144) == 216 and max_age_steps(None, None, 144) is None


def test_the_share_of_returns_served():
    """A prompt comes back once an epoch at a random place in it: the gap is triangular on (0, 2 epochs)."""
    assert served_fraction(None, 10) == 1.0
    assert served_fraction(10, 10) == 0.5 and served_fraction(20, 10) == 1.0 and served_fraction(30, 10) == 1.0
    assert served_fraction(5, 10) == pytest.approx(0.125) and served_fraction(15, 10) == pytest.approx(0.875)
    gaps = torch.rand(200_000) + 1 - torch.rand(200_000)  # one epoch's place, then the next epoch's
    assert (gaps <= 0.5).float().mean().item() == pytest.approx(0.125, abs=0.005)


def test_settings_that_never_serve_a_row_are_named():
    (one_epoch,) = history_notes(544, steps_per_epoch=544, total_steps=544)
    assert "no prompt comes back" in one_epoch and "soup_behavior_source='fresh'" in one_epoch
    (too_young,) = history_notes(64, steps_per_epoch=544, total_steps=2000)  # 0.1's default step limit
    assert f"about {served_fraction(64, 544):.1%}" in too_young and "soup_history_max_epochs" in too_young
    assert history_notes(544, steps_per_epoch=544, total_steps=2000) == []
    assert math.isclose(served_fraction(64, 544), (64 / 544) ** 2 / 2)


def test_the_trainer_warns_when_its_history_would_never_serve(tiny_model_dir, make_config, make_dataset, caplog):
    from soup_trl import SOUPTrainer
    from soup_trl.testing.rewards import shaped_reward

    args = make_config(soup_behavior_source="history", soup_behavior_steps=1, max_steps=4)  # 64 prompts: 32 steps
    with caplog.at_level(logging.WARNING):
        trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset())
    assert "this run trains 4 optimizer step(s) and one epoch of its prompts is 32" in caplog.text
    assert trainer.history.max_age == 32  # soup_history_max_epochs=1.0: one epoch
    trainer.history.store.close()

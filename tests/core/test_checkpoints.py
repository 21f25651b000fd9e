"""Complete checkpoints (`soup_trl.core.checkpoints`) on hand-made directories, and an in-process run that dies in
the middle of a save: a checkpoint is complete once its marker lists the sizes of its files, resume picks the newest
complete one, and `save_total_limit` deletes an older checkpoint only once the new one is complete.

Runs killed and resumed in fresh processes: tests/integration/test_kill_resume.py.
"""

import json
from pathlib import Path

import pytest

from soup_trl import SOUPTrainer
from soup_trl.core import checkpoints
from soup_trl.core.checkpoints import COMPLETE_MARKER, incomplete_reason, mark_complete, resolve_resume, unmark
from soup_trl.testing.rewards import shaped_reward


def make_checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    folder = run / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    (folder / "sub" / "state.pt").write_bytes(b"s")
    if complete:
        mark_complete(str(folder), step)
    return folder


def test_completeness_is_the_marker_and_the_sizes_it_lists(tmp_path):
    folder = make_checkpoint(tmp_path, 4)
    assert json.loads((folder / COMPLETE_MARKER).read_text()) == {
        "global_step": 4, "files": {"model.safetensors": 10, "sub/state.pt": 1},
    }  # fmt: skip
    assert incomplete_reason(str(folder)) is None
    (folder / "model.safetensors").write_bytes(b"w" * 3)
    assert incomplete_reason(str(folder)) == "model.safetensors has 3 bytes, not the 10 written"
    (folder / "model.safetensors").unlink()
    assert incomplete_reason(str(folder)) == "model.safetensors is missing"
    (folder / COMPLETE_MARKER).write_text("{")
    assert incomplete_reason(str(folder)).startswith(f"its {COMPLETE_MARKER} cannot be read")
    unmark(str(folder))
    assert incomplete_reason(str(folder)).startswith(f"it has no {COMPLETE_MARKER}")


def test_resume_picks_the_newest_complete_checkpoint_by_step(tmp_path, caplog):
    run = tmp_path / "run"
    for step in (2, 10):
        make_checkpoint(run, step)
    make_checkpoint(run, 12, complete=False)
    newest = str(run / "checkpoint-10")  # by step, not by name: "checkpoint-2" sorts after it as text
    assert resolve_resume(True, str(run)) == newest
    assert f"Not resuming from {run / 'checkpoint-12'}: it has no {COMPLETE_MARKER}" in caplog.text
    assert resolve_resume("true", str(run)) == newest  # `--resume_from_checkpoint true` from the command line
    assert resolve_resume(str(run / "checkpoint-2"), str(run)) == str(run / "checkpoint-2")
    assert resolve_resume(None, str(run)) is None and resolve_resume(False, str(run)) is None
    with pytest.raises(ValueError, match=rf"Cannot resume from {run / 'checkpoint-12'}: it has no {COMPLETE_MARKER} "
                                         rf".*resume from {newest} \(the newest complete checkpoint"):  # fmt: skip
        resolve_resume(str(run / "checkpoint-12"), str(tmp_path / "elsewhere"))
    for step in (2, 10):
        unmark(str(run / f"checkpoint-{step}"))
    with pytest.raises(ValueError, match=r"no complete checkpoint in .*run \(checkpoint directories: checkpoint-12, "
                                         r"checkpoint-10, checkpoint-2\)"):  # fmt: skip
        resolve_resume(True, str(run))


def save_every_step(make_config, run, **overrides):
    return make_config(output_dir=run, soup_behavior_steps=2, max_steps=3, save_strategy="steps", save_steps=1,
                       save_total_limit=1, **overrides)  # fmt: skip


def test_save_total_limit_deletes_only_once_the_new_checkpoint_is_complete(
    tiny_model_dir, make_config, make_dataset, tmp_path, monkeypatch
):
    SOUPTrainer(tiny_model_dir, shaped_reward, args=save_every_step(make_config, tmp_path / "whole"),
                train_dataset=make_dataset(64)).train()  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "whole").glob("checkpoint-*")) == ["checkpoint-3"]
    assert incomplete_reason(str(tmp_path / "whole" / "checkpoint-3")) is None

    # a run that dies after every file of checkpoint-2 is written, before its marker: checkpoint-1 must survive
    run = tmp_path / "dies"
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=save_every_step(make_config, run),
                          train_dataset=make_dataset(64))  # fmt: skip
    mark = checkpoints.mark_complete

    def dies_before_marking(folder, step):
        if step == 2:
            raise KeyboardInterrupt("killed before the marker of checkpoint-2")
        mark(folder, step)

    monkeypatch.setattr(checkpoints, "mark_complete", dies_before_marking)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (run / "checkpoint-2" / "trainer_state.json").exists()  # what Transformers alone would resume from
    assert resolve_resume(True, str(run)) == str(run / "checkpoint-1")

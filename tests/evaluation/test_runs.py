"""Training runs as the evaluation reads them (`soup_trl.evaluation.runs`): the saved models of a run in step order,
and a setting of the run's training_args.bin read without running code from the file.
"""

import json
import types

import pytest

from soup_trl.core.errors import UserError
from soup_trl.testing.evaluation import save_training_args


def test_saved_models_of_a_run(tmp_path):
    from soup_trl.evaluation.runs import saved_models

    run = tmp_path / "run"
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-5", "final-ish"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}")
    (run / "checkpoint-5" / "config.json").unlink()  # no model saved: skipped
    (run / "checkpoint-10" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UserError, match="checkpoint-2 has no tokenizer and neither has"):
        saved_models(run)
    models = saved_models(run, tokenizer="tok")
    assert [(m.name, m.step, m.tokenizer) for m in models] == [("checkpoint-2", 2, "tok"), ("checkpoint-10", 10, None)]
    (run / "config.json").write_text("{}")  # a final model in the run directory, its step from trainer_state.json
    (run / "tokenizer_config.json").write_text("{}")
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    assert [(m.name, m.step, m.tokenizer) for m in saved_models(run)] == [
        ("checkpoint-2", 2, str(run)),
        ("checkpoint-10", 10, None),
        ("final", 12, None),
    ]


def test_training_setting_reads_the_run_config_without_running_code_from_it(tmp_path):
    import torch

    from soup_trl.evaluation.runs import training_setting

    run = tmp_path / "run"
    save_training_args(run / "checkpoint-2", max_completion_length=77)
    save_training_args(run / "checkpoint-10", max_completion_length=99)
    assert training_setting(run, "max_completion_length") == (99, run / "checkpoint-10" / "training_args.bin")
    save_training_args(run, max_completion_length=55)  # the final model's config comes first
    assert training_setting(run, "max_completion_length") == (55, run / "training_args.bin")
    assert training_setting(run, "no_such_field") is None
    (tmp_path / "empty").mkdir()
    assert training_setting(tmp_path / "empty", "max_completion_length") is None

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    torch.save(types.SimpleNamespace(max_completion_length=MarkerOnUnpickle(marker)), hostile / "training_args.bin")
    value, _ = training_setting(hostile, "max_completion_length")
    assert not marker.exists()  # the callable the file names was not called ...
    torch.load(hostile / "training_args.bin", weights_only=False)
    assert marker.read_text() == "ran"  # ... as plain unpickling would have
    (hostile / "training_args.bin").write_text("not an archive")
    assert training_setting(hostile, "max_completion_length") is None


class MarkerOnUnpickle:
    """Unpickling this object writes a file (as any callable a pickle names would run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (write_marker, (str(self.path),))


def write_marker(path):
    from pathlib import Path

    Path(path).write_text("ran")
    return 0

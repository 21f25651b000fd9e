"""Output directories (`soup_trl.evaluation.outputs`): a new run directory never reuses one, and an output directory
that holds a previous run's results is refused, or cleared of that run's files only.
"""

import pytest

from soup_trl.core.errors import UserError


def test_new_run_dirs_never_reuse_a_directory(tmp_path):
    from soup_trl.evaluation.outputs import new_run_dir

    assert new_run_dir(tmp_path / "m") == tmp_path / "m" / "run-1"
    (tmp_path / "m" / "run-7").mkdir()
    (tmp_path / "m" / "notes").mkdir()
    assert new_run_dir(tmp_path / "m") == tmp_path / "m" / "run-8"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["notes", "run-1", "run-7", "run-8"]


def test_claim_output_dir_refuses_or_clears_a_previous_run(tmp_path):
    from soup_trl.evaluation.outputs import claim_output_dir, write_results

    out = tmp_path / "out"
    assert claim_output_dir(str(out), tmp_path / "unused", overwrite=False) == out
    for name in ("a.jsonl", "b.jsonl", "mine.txt"):
        (out / name).write_text("x")
    write_results(out, {"settings": {"num_samples": 4}}, ["a.jsonl", "b.jsonl", "../outside.txt"])
    (tmp_path / "outside.txt").write_text("kept")
    assert (out / "config.yaml").read_text() == "num_samples: 4\n"
    with pytest.raises(UserError, match="already holds the results of another run"):
        claim_output_dir(str(out), tmp_path / "unused", overwrite=False)
    assert claim_output_dir(str(out), tmp_path / "unused", overwrite=True) == out
    # the previous run's files are gone; files it did not list, and files outside the directory, stay
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert (tmp_path / "outside.txt").read_text() == "kept"
    assert not (tmp_path / "unused").exists()

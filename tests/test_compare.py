"""benchmarks/compare_methods.py: its statistics on hand-made numbers, and its quick mode end to end (slow)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("compare_methods", ROOT / "benchmarks" / "compare_methods.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cm = _load()


@pytest.mark.parametrize("df, expected", [(1, 12.706), (4, 2.776), (30, 2.042)])
def test_t_quantile_table(df, expected):
    assert cm.t_quantile_975(df) == expected


def test_t_quantile_beyond_the_table_approaches_the_normal():
    assert cm.t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)  # tables: 2.000
    assert cm.t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)  # tables: 1.980
    with pytest.raises(ValueError, match="degrees of freedom"):
        cm.t_quantile_975(0)


def test_mean_ci_of_five_values():
    stats = cm.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # std = sqrt(2.5), t(4) = 2.776
    assert stats["mean"] == 3.0 and stats["n"] == 5
    assert stats["std"] == pytest.approx(math.sqrt(2.5))
    assert stats["ci95"] == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))


def test_mean_ci_degenerate_cases():
    assert math.isnan(cm.mean_ci([0.5])["ci95"]) and cm.mean_ci([0.5])["mean"] == 0.5
    assert cm.mean_ci([])["n"] == 0


def test_paired_difference_uses_common_seeds_only():
    diff = cm.paired_difference({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.4, 1: 0.5, 3: 0.0})
    assert diff["seeds"] == [0, 1]
    assert diff["mean"] == pytest.approx(0.15)
    assert diff["std"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert diff["ci95"] == pytest.approx(12.706 * diff["std"] / math.sqrt(2))


@pytest.mark.parametrize(
    "mean, ci, expected",
    [
        (0.1, 0.05, "higher"),
        (-0.1, 0.05, "lower"),
        (0.02, 0.05, "no difference measured"),
        (0.1, math.nan, "not enough seeds"),
    ],
)
def test_verdict(mean, ci, expected):
    assert cm.verdict({"mean": mean, "ci95": ci, "n": 3}) == expected


def test_sensitivity_sweep_covers_tables_2_and_3():
    names = [v.name for v in cm.sensitivity_variants()]
    assert names == ["dapo", "soup_r0.25_T4", "soup_r0.5_T4", "soup_r0.75_T4", "soup_r0.5_T2", "soup_r0.5_T8"]


def test_every_method_recipe_is_shipped():
    from soup_trl.scripts.train import shipped_recipes

    assert {v.recipe for v in cm.METHOD_VARIANTS} <= set(shipped_recipes())


def test_fill_docs_replaces_only_its_section(tmp_path):
    page = tmp_path / "page.md"
    start, end = cm.DOC_MARKERS["methods"]
    page.write_text(f"intro\n{start}\nold\n{end}\nafter\n")
    cm.fill_docs(page, "methods", "new\n")
    assert page.read_text() == f"intro\n{start}\nnew\n{end}\nafter\n"
    with pytest.raises(SystemExit, match="sensitivity"):
        cm.fill_docs(page, "sensitivity", "x")


def test_reward_curve_averages_seeds_over_the_steps_they_share():
    runs = {
        0: {"log_history": [{"step": 1, "reward": 0.2}, {"step": 2, "reward": 0.4}, {"step": 3, "reward": 0.6}]},
        1: {"log_history": [{"step": 2, "reward": 0.6}, {"step": 3, "reward": 1.0}, {"step": 3, "train_runtime": 9}]},
    }
    curve = cm.reward_curve(runs, window=2)
    assert [c[0] for c in curve] == [2, 3]
    assert [c[1] for c in curve] == pytest.approx([0.5, 0.8])
    assert [c[2] for c in curve] == pytest.approx([0.5, 0.65])
    assert cm.reward_curve({0: {"log_history": [{"step": 1, "loss": 0.1}]}}) == []


def test_headline_table_has_one_row_per_method_with_its_verdict():
    def stats(mean, ci, n=5):
        return {"mean": mean, "ci95": ci, "n": n}

    summary = {
        "scale": {"seeds": 5, "steps": 100, "eval_problems": 300, "sample_problems": 300, "k": 8},
        "base_model": {"avg@k": 0.6},
        "variants": {
            "dapo": {"label": "DAPO (on-policy)", "avg@k": stats(0.78, 0.01)},
            "soup_ratio": {
                "label": "SOUP ratio",
                "avg@k": stats(0.80, 0.02),
                "avg@k - dapo": {**stats(0.02, 0.01), "verdict": "higher"},
                "step_time / dapo": stats(1.4, 0.05),
            },
        },
    }
    table = cm.headline(summary)
    assert "avg@8 60.0%" in table
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    assert rows[1] == ["DAPO (on-policy)", "78.0 ± 1.0", "", "(reference)", "-"]
    assert rows[2] == ["SOUP ratio", "80.0 ± 2.0", "+2.0 ± 1.0", "higher", "1.4 ± 0.1"]


def test_decoded_tokens_and_their_paired_ratio():
    run = {"log_history": [{"step": 1, "decoded_tokens": 100.0}, {"step": 2, "decoded_tokens": 50.0}, {"loss": 0.1}]}
    assert cm.decoded_tokens_per_step(run) == 75.0
    assert cm.decoded_tokens_per_step({"log_history": [{"loss": 0.1}]}) is None  # a run from before the metric
    ratio = cm.paired_ratio({0: 60.0, 1: 80.0, 2: 10.0}, {0: 120.0, 1: 100.0})  # seed 2 has no reference
    assert ratio["n"] == 2 and ratio["mean"] == pytest.approx(0.65)


def test_cost_columns_appear_once_runs_logged_decoded_tokens():
    def stats(mean, ci=0.0, n=5):
        return {"mean": mean, "ci95": ci, "n": n}

    metrics = {m: stats(0.5) for m in ("greedy_accuracy", "avg@k", "pass@8")}
    diffs = {f"{m} - dapo": {**stats(0.0), "verdict": "no difference measured"} for m in metrics}
    summary = {
        "scale": {"seeds": 5, "steps": 100, "eval_problems": 300, "sample_problems": 300, "k": 8},
        "variants": {
            "dapo": {"label": "DAPO", "seeds": list(range(5)), **metrics, "seconds_per_step": stats(1.0),
                     "decoded_tokens": stats(400.0), "peak_rss_mb": stats(900.0)},
            "soup_history": {"label": "history", "seeds": list(range(5)), **metrics, **diffs, "seconds_per_step": stats(0.9),
                             "step_time / dapo": stats(0.9, 0.05), "decoded_tokens": stats(220.0),
                             "decoded_tokens / dapo": stats(0.55, 0.02), "peak_rss_mb": stats(910.0)},
        },
    }  # fmt: skip
    table = cm.markdown(summary, "history")
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert header.rstrip(" |").endswith("decoded tokens/step | tokens / DAPO | peak RSS MB")
    row = next(line for line in table.splitlines() if line.startswith("| history"))
    assert [c.strip() for c in row.split("|")[-4:-1]] == ["220", "0.55 ± 0.02", "910"]
    for entry in summary["variants"].values():
        entry.pop("decoded_tokens")
    assert "decoded tokens/step" not in cm.markdown(summary, "history")  # results from before the metric


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_peak_resident_memory_is_the_run_process_own(tmp_path):
    """A run is a process started by the comparison: its peak must not include the parent's resident set, which
    Linux's ru_maxrss carries across the fork and exec that start it."""
    import subprocess

    ballast = bytearray(400 * 2**20)  # the parent holds 400 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    script = (
        "import resource, sys; sys.path.insert(0, sys.argv[1]); import compare_methods as cm; "
        "print(cm.peak_resident_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", script, str(ROOT / "benchmarks")], capture_output=True, text=True)
    own, maxrss = map(float, out.stdout.split())
    assert 0 < own < 200 < 400 <= maxrss  # ru_maxrss reports the parent's 400 MB
    del ballast


def test_readme_section_only_for_the_methods_sweep(capsys):
    with pytest.raises(SystemExit):
        cm.main(["--sweep", "sensitivity", "--readme", "README.md"])
    assert "--readme" in capsys.readouterr().err


def test_only_names_the_variants_it_knows(capsys):
    with pytest.raises(SystemExit):
        cm.main(["--only", "dapo,soup_typo"])
    err = capsys.readouterr().err
    assert "soup_typo" in err and "soup_ratio" in err  # the unknown name and the ones to choose from


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
def test_quick_comparison_writes_finite_results_and_resumes(tmp_path):
    cm.main(["--quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "results.json").read_text())
    assert set(summary["variants"]) == {v.name for v in cm.METHOD_VARIANTS}
    k = str(summary["scale"]["k"])
    for name, entry in summary["variants"].items():
        assert entry["seeds"] == [0, 1], name
        for metric in ("greedy_accuracy", "avg@k", f"pass@{k}", "seconds_per_step"):
            assert _finite(entry[metric]["mean"]) and _finite(entry[metric]["ci95"]), (name, metric)
        assert [point[0] for point in entry["train_reward"]] == list(range(1, 9)) or name == "m2po", name
        if name != "dapo":
            for metric in ("greedy_accuracy", "avg@k"):
                assert _finite(entry[f"{metric} - dapo"]["mean"]) and entry[f"{metric} - dapo"]["verdict"]
            assert _finite(entry["step_time / dapo"]["mean"]) and _finite(entry["decoded_tokens / dapo"]["mean"])
        assert _finite(entry["decoded_tokens"]["mean"]) and _finite(entry["peak_rss_mb"]["mean"]), name
    for name in cm.RELAY_VARIANTS:
        assert all(_finite(v["mean"]) for v in summary["variants"][name]["relay_minus_model"].values())
    for name in ("dapo", "soup_ratio"):  # the SOUP trainer logs entropy and clip ratio by position
        early, late = summary["variants"][name]["position_bins"]["entropy"]
        assert len(early) == len(late) == 10
    assert (tmp_path / "results.md").read_text().count("\n|") >= len(cm.METHOD_VARIANTS)
    for plot in ("position_bins.png", "accuracy.png", "train_reward.png"):
        assert (tmp_path / plot).stat().st_size > 0, plot
    assert {r["spec"]["model"] for r in map(json.loads, map(Path.read_text, (tmp_path / "runs").glob("*/result.json")))} == {
        summary["base_model"]["model"]
    }  # every run trained from the base model the comparison built and evaluated
    results = sorted((tmp_path / "runs").glob("*/result.json"))
    assert len(results) == 2 * len(cm.METHOD_VARIANTS)
    stamps = [p.stat().st_mtime_ns for p in results]
    cm.main(["--quick", "--out", str(tmp_path)])  # everything finished: nothing is trained again
    assert [p.stat().st_mtime_ns for p in results] == stamps
    invocations = json.loads((tmp_path / "invocations.json").read_text())
    assert [i["runs_trained"] for i in invocations] == [2 * len(cm.METHOD_VARIANTS), 0]
    assert f"{2 * len(cm.METHOD_VARIANTS)} runs trained and evaluated in" in (tmp_path / "results.md").read_text()


def test_the_real_model_comparison_trains_shipped_recipes_of_the_three_required_methods():
    from soup_trl.scripts.train import shipped_recipes

    task = cm.TASKS["smollm2"]
    assert {v.recipe for v in task.variants} <= set(shipped_recipes())
    assert {v.name for v in task.variants} >= {"dapo", "soup_ratio", "soup_prefix_budget"}
    assert task.full.seeds >= 3 and task.full.task == task.quick.task == "smollm2"
    assert cm.run_spec(task.variants[0], 0, task.full)["task"] == "smollm2"
    assert "task" not in cm.run_spec(cm.METHOD_VARIANTS[0], 0, cm.FULL["methods"])  # earlier chain runs stay valid


def test_word_problem_benchmark_holds_distinct_held_out_chat_problems():
    benchmark = cm.word_problem_benchmark(20, "greedy")
    assert benchmark.reward == "accuracy" and len(benchmark.problems) == 20
    assert len({p.problem for p in benchmark.problems}) == 20
    assert all(isinstance(p.prompt, list) and p.prompt[0]["role"] == "user" for p in benchmark.problems)

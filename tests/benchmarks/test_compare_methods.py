"""benchmarks/compare_methods.py and the modules of benchmarks/comparison/ it runs: the variants, the summary, the
tables and docs sections on hand-made numbers, the run process's memory, the command's checks, and its quick mode
end to end (slow). The statistics have their own tests (tests/benchmarks/test_comparison_statistics.py).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import compare_methods  # benchmarks/ is on sys.path (conftest.py), as when the script runs
import pytest
from comparison.reports import DOC_MARKERS, fill_docs, headline, markdown
from comparison.runs import run_spec, train_argv
from comparison.summary import decoded_tokens_per_step, reward_curve
from comparison.variants import FULL, METHOD_VARIANTS, RELAY_VARIANTS, TASKS, control_variants, sensitivity_variants

ROOT = Path(__file__).resolve().parent.parent.parent
BENCHMARKS = ROOT / "benchmarks"


def test_sensitivity_sweep_covers_tables_2_and_3():
    names = [v.name for v in sensitivity_variants()]
    assert names == ["dapo", "soup_r0.25_T4", "soup_r0.5_T4", "soup_r0.75_T4", "soup_r0.5_T2", "soup_r0.5_T8"]


def trained_configs(variants, scale, folder):
    """Each variant's training config, parsed from the argv its run trains with."""
    from soup_trl.scripts import train

    return {v.name: train.parse_args(train_argv(run_spec(v, 0, scale), folder / v.name))[1] for v in variants}


def rollout(config) -> int:
    """Optimizer steps one generation call serves."""
    return config.steps_per_generation // config.gradient_accumulation_steps


# what a run that keeps a half-way checkpoint for relay sampling (dapo, soup_ratio) sets beside its recipe
RUN_FIELDS = {"output_dir", "recipe", "save_strategy", "save_steps", "save_only_model"}


def test_control_sweep_holds_the_papers_figure_5_settings(tmp_path):
    """On-policy DAPO, DAPO with mini-batch updates at the staleness of each SOUP variant's cycle (4 and the paper's
    16 optimizer steps per rollout batch) and SOUP ratio (0.5, T=4; the paper's 0.7, T=16), as their runs parse them."""
    import dataclasses

    configs = trained_configs(control_variants(), FULL["control"], tmp_path)
    settings = {
        name: (c.soup_behavior_steps, rollout(c), c.soup_prefix_ratio if c.soup_behavior_steps > 1 else None)
        for name, c in configs.items()
    }
    assert settings == {"dapo": (1, 1, None), "dapo_minibatch": (1, 4, None), "dapo_minibatch16": (1, 16, None),
                        "soup_ratio": (4, 4, 0.5), "soup_r0.7_T16": (16, 16, 0.7)}  # fmt: skip
    assert rollout(configs["dapo_minibatch"]) == configs["soup_ratio"].soup_behavior_steps
    assert rollout(configs["dapo_minibatch16"]) == configs["soup_r0.7_T16"].soup_behavior_steps
    assert all(FULL["control"].steps % rollout(c) == 0 for c in configs.values())  # no rollout batch cut short
    dapo = dataclasses.asdict(configs["dapo"])
    for name in ("dapo_minibatch", "dapo_minibatch16"):  # otherwise DAPO's training: batch, lr, loss, clip range
        control = dataclasses.asdict(configs[name])
        changed = {key for key in dapo if dapo[key] != control[key]} - RUN_FIELDS
        assert changed == {"steps_per_generation", "generation_batch_size"}, name


def test_smollm2_control_sweep_compares_at_its_soup_recipes_staleness(tmp_path):
    task = TASKS["smollm2"]
    configs = trained_configs(task.sweep_variants("control"), task.full, tmp_path)
    assert {name: (c.soup_behavior_steps, rollout(c)) for name, c in configs.items()} == {
        "dapo": (1, 1), "dapo_minibatch": (1, 4), "soup_ratio": (4, 4)
    }  # fmt: skip
    assert task.out_dir("control") == "compare-smollm2-control" and task.doc_section("control") == "smollm2-control"
    assert TASKS["chain"].out_dir("control") == TASKS["chain"].doc_section("control") == "control"
    assert DOC_MARKERS["smollm2-control"] and DOC_MARKERS["control"]


def test_a_task_names_the_sweeps_it_has(capsys):
    with pytest.raises(SystemExit):
        compare_methods.main(["--task", "smollm2", "--sweep", "sensitivity"])
    assert "--task smollm2 has the sweeps methods, control, claims; not sensitivity" in capsys.readouterr().err


def test_every_method_recipe_is_shipped():
    from soup_trl.scripts.train import shipped_recipes

    assert {v.recipe for v in METHOD_VARIANTS} <= set(shipped_recipes())


def test_fill_docs_replaces_only_its_section(tmp_path):
    page = tmp_path / "page.md"
    start, end = DOC_MARKERS["methods"]
    page.write_text(f"intro\n{start}\nold\n{end}\nafter\n")
    fill_docs(page, "methods", "new\n")
    assert page.read_text() == f"intro\n{start}\nnew\n{end}\nafter\n"
    with pytest.raises(SystemExit, match="sensitivity"):
        fill_docs(page, "sensitivity", "x")


def test_reward_curve_averages_seeds_over_the_steps_they_share():
    runs = {
        0: {"log_history": [{"step": 1, "reward": 0.2}, {"step": 2, "reward": 0.4}, {"step": 3, "reward": 0.6}]},
        1: {"log_history": [{"step": 2, "reward": 0.6}, {"step": 3, "reward": 1.0}, {"step": 3, "train_runtime": 9}]},
    }
    curve = reward_curve(runs, window=2)
    assert [c[0] for c in curve] == [2, 3]
    assert [c[1] for c in curve] == pytest.approx([0.5, 0.8])
    assert [c[2] for c in curve] == pytest.approx([0.5, 0.65])
    assert reward_curve({0: {"log_history": [{"step": 1, "loss": 0.1}]}}) == []


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
    table = headline(summary)
    assert "avg@8 60.0%" in table
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    assert rows[1] == ["DAPO (on-policy)", "78.0 ± 1.0", "", "(reference)", "-"]
    assert rows[2] == ["SOUP ratio", "80.0 ± 2.0", "+2.0 ± 1.0", "higher", "1.4 ± 0.1"]


def test_decoded_tokens_per_step():  # their paired ratio: tests/benchmarks/test_comparison_statistics.py
    run = {"log_history": [{"step": 1, "decoded_tokens": 100.0}, {"step": 2, "decoded_tokens": 50.0}, {"loss": 0.1}]}
    assert decoded_tokens_per_step(run) == 75.0
    assert decoded_tokens_per_step({"log_history": [{"loss": 0.1}]}) is None  # a run from before the metric


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
    table = markdown(summary, "history")
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert header.rstrip(" |").endswith("decoded tokens/step | tokens / DAPO | peak RSS MB")
    row = next(line for line in table.splitlines() if line.startswith("| history"))
    assert [c.strip() for c in row.split("|")[-4:-1]] == ["220", "0.55 ± 0.02", "910"]
    for entry in summary["variants"].values():
        entry.pop("decoded_tokens")
    assert "decoded tokens/step" not in markdown(summary, "history")  # results from before the metric


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_peak_resident_memory_is_the_run_process_own(tmp_path):
    """A run is a process started by the comparison: its peak must not include the parent's resident set, which
    Linux's ru_maxrss carries across the fork and exec that start it."""
    ballast = bytearray(400 * 2**20)  # the parent holds 400 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    script = (
        "import resource; from comparison.host import peak_resident_mb; "
        "print(peak_resident_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=BENCHMARKS, capture_output=True, text=True)
    own, maxrss = map(float, out.stdout.split())
    assert 0 < own < 200 < 400 <= maxrss  # ru_maxrss reports the parent's 400 MB
    del ballast


@pytest.mark.parametrize("argv", [["--sweep", "sensitivity"], ["--sweep", "control"], ["--task", "smollm2"],
                                  ["--task", "smollm2", "--sweep", "claims"]])  # fmt: skip
def test_readme_section_only_for_the_chain_methods_and_claims_sweeps(capsys, argv):
    with pytest.raises(SystemExit):
        compare_methods.main([*argv, "--readme", "README.md"])
    assert "--readme" in capsys.readouterr().err


def test_the_readme_and_the_claims_page_have_the_claims_sweeps_sections():
    for page, sections in (("README.md", ("headline", "claims-readme")), ("docs/claims.md", ("claims", "smollm2-claims"))):
        text = (ROOT / page).read_text()
        assert all(marker in text for name in sections for marker in DOC_MARKERS[name]), page


def test_claims_sweep_trains_the_control_and_the_prefix_loss_choices_on_fewer_seeds(tmp_path):
    """DAPO, DAPO with mini-batch updates at SOUP's staleness and SOUP ratio at the seeds a +-1 point interval needs;
    the two prefix-loss choices, identical to SOUP ratio but for `soup_prefix_loss`, on fewer."""
    import dataclasses

    from comparison.variants import CLAIM_SEEDS, PREFIX_LOSS_SEEDS, variant_seeds

    scale = TASKS["chain"].full_scale("claims")
    assert scale.seeds == CLAIM_SEEDS and scale.steps == FULL["control"].steps
    variants = TASKS["chain"].sweep_variants("claims")
    configs = trained_configs(variants, scale, tmp_path)
    assert {n: (c.soup_behavior_steps, rollout(c), c.soup_prefix_loss) for n, c in configs.items()} == {
        "dapo": (1, 1, "token_ratio"), "dapo_minibatch": (1, 4, "token_ratio"), "soup_ratio": (4, 4, "token_ratio"),
        "soup_prefix_mask": (4, 4, "mask"), "soup_prefix_minpro": (4, 4, "minpro"),
    }  # fmt: skip
    soup = dataclasses.asdict(configs["soup_ratio"])
    for name in ("soup_prefix_mask", "soup_prefix_minpro"):
        other = dataclasses.asdict(configs[name])
        assert {key for key in soup if soup[key] != other[key]} - RUN_FIELDS == {"soup_prefix_loss"}, name
    seeds = {v.name: variant_seeds(v, scale.seeds) for v in variants}
    assert seeds["soup_prefix_mask"] == seeds["soup_prefix_minpro"] == range(PREFIX_LOSS_SEEDS)
    assert seeds["dapo"] == seeds["soup_ratio"] == range(CLAIM_SEEDS) and PREFIX_LOSS_SEEDS < CLAIM_SEEDS
    smollm2 = TASKS["smollm2"].full_scale("claims")
    assert smollm2.seeds > TASKS["smollm2"].full.seeds and smollm2.task == "smollm2"


def test_only_names_the_variants_it_knows(capsys):
    with pytest.raises(SystemExit):
        compare_methods.main(["--only", "dapo,soup_typo"])
    err = capsys.readouterr().err
    assert "soup_typo" in err and "soup_ratio" in err  # the unknown name and the ones to choose from


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
def test_quick_comparison_writes_finite_results_and_resumes(tmp_path):
    compare_methods.main(["--quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "results.json").read_text())
    assert set(summary["variants"]) == {v.name for v in METHOD_VARIANTS}
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
    for name in RELAY_VARIANTS:
        assert all(_finite(v["mean"]) for v in summary["variants"][name]["relay_minus_model"].values())
    for name in ("dapo", "soup_ratio"):  # the SOUP trainer logs entropy and clip ratio by position
        early, late = summary["variants"][name]["position_bins"]["entropy"]
        assert len(early) == len(late) == 10
    assert (tmp_path / "results.md").read_text().count("\n|") >= len(METHOD_VARIANTS)
    for plot in ("position_bins.png", "accuracy.png", "train_reward.png"):
        assert (tmp_path / plot).stat().st_size > 0, plot
    assert {r["spec"]["model"] for r in map(json.loads, map(Path.read_text, (tmp_path / "runs").glob("*/result.json")))} == {
        summary["base_model"]["model"]
    }  # every run trained from the base model the comparison built and evaluated
    results = sorted((tmp_path / "runs").glob("*/result.json"))
    assert len(results) == 2 * len(METHOD_VARIANTS)
    stamps = [p.stat().st_mtime_ns for p in results]
    compare_methods.main(["--quick", "--out", str(tmp_path)])  # everything finished: nothing is trained again
    assert [p.stat().st_mtime_ns for p in results] == stamps
    invocations = json.loads((tmp_path / "invocations.json").read_text())
    assert [i["runs_trained"] for i in invocations] == [2 * len(METHOD_VARIANTS), 0]
    assert f"{2 * len(METHOD_VARIANTS)} runs trained and evaluated in" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_quick_claims_sweep_fills_its_page_section_and_the_readme_line(tmp_path):
    """The claims sweep end to end on one seed of three variants (the command's wiring; the statistics and verdicts
    are tested on hand-made runs in test_comparison_claims.py): the claims table in results.json and in the docs
    page's section, the README's one line."""
    import shutil

    page, readme = tmp_path / "claims.md", tmp_path / "README.md"
    shutil.copyfile(ROOT / "docs" / "claims.md", page)
    shutil.copyfile(ROOT / "README.md", readme)

    def section(name):
        return page.read_text().split(f"<!-- {name}: start -->")[1].split(f"<!-- {name}: end -->")[0]

    smollm2_before = section("smollm2-claims")
    out = tmp_path / "out"
    compare_methods.main(["--sweep", "claims", "--quick", "--seeds", "1", "--only", "dapo,dapo_minibatch,soup_ratio",
                          "--out", str(out), "--docs", str(page), "--readme", str(readme)])  # fmt: skip
    claims = json.loads((out / "results.json").read_text())["claims"]
    rows = {(r["statistic"], r["variant"], r["reference"]): r for r in claims["claims"]}
    assert rows[("late_entropy", "soup_ratio", "dapo")]["n"] == 1 and claims["prefix_loss"] == []
    assert rows[("entropy", "dapo_minibatch", "dapo")]["verdict"] == "not enough seeds"  # one seed: no interval
    assert rows[("relay_gain", "soup_ratio", None)]["verdict"] == "not measured"  # --quick samples k = 4 < 8
    chain = section("claims")
    assert "SOUP clips fewer tokens than mini-batch updates" in chain and "`soup_ratio` minus `dapo`" in chain
    assert chain.startswith("\nQuick mode") and section("smollm2-claims") == smollm2_before  # the other task's is kept
    line = readme.read_text().split("<!-- claims-readme: start -->\n")[1].split("<!-- claims-readme: end -->")[0]
    assert line.startswith("The paper's 9 measurable claims on the chain task, 1 paired seed: ")
    assert line.count("\n") == 1 and "(docs/claims.md)" in line


def test_the_real_model_comparison_trains_shipped_recipes_of_the_three_required_methods():
    from soup_trl.scripts.train import shipped_recipes

    task = TASKS["smollm2"]
    assert {v.recipe for v in task.variants} <= set(shipped_recipes())
    assert {v.name for v in task.variants} >= {"dapo", "soup_ratio", "soup_prefix_budget"}
    assert task.full.seeds >= 3 and task.full.task == task.quick.task == "smollm2"
    assert run_spec(task.variants[0], 0, task.full)["task"] == "smollm2"
    assert "task" not in run_spec(METHOD_VARIANTS[0], 0, FULL["methods"])  # earlier chain runs stay valid


def test_each_task_is_scored_on_a_built_in_benchmark_of_soup_trl_eval():
    """One definition of the held-out problems: a comparison's runs are scored on the `soup-trl eval` benchmark of
    their task (its problems and grading: tests/evaluation/test_benchmarks.py)."""
    from soup_trl.evaluation.benchmarks import BUILTIN_BENCHMARKS, MODEL_BENCHMARKS

    assert {name: task.benchmark for name, task in TASKS.items()} == {"chain": "chain", "smollm2": "word_problems"}
    assert set(MODEL_BENCHMARKS.values()) >= {task.benchmark for task in TASKS.values()}
    assert {task.benchmark for task in TASKS.values()} <= set(BUILTIN_BENCHMARKS)


def test_the_commands_run_as_scripts_with_their_flags():
    """`python benchmarks/X.py` finds the comparison's modules (its directory is first on sys.path), and the
    comparison keeps its flags."""
    for script in ("compare_methods.py", "default_run.py", "step_time.py"):
        out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (script, out.stderr)
    out = subprocess.run([sys.executable, str(BENCHMARKS / "compare_methods.py"), "--help"], capture_output=True,
                         text=True)  # fmt: skip
    flags = ["--sweep", "--task", "--quick", "--seeds", "--steps", "--jobs", "--out", "--docs", "--readme", "--only"]
    assert all(flag in out.stdout for flag in flags) and "--run-one" not in out.stdout

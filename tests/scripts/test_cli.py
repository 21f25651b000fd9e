"""The `soup-trl` command (`soup_trl.scripts.cli`) end to end on CPU: eval, relay, select and plot on tiny random
models, and user errors.

The evaluation modules it runs have their unit tests in tests/evaluation/.
"""

import json
import shutil
import subprocess
import sys

import pytest

from soup_trl.evaluation.runner import pass_at_k
from soup_trl.scripts.cli import main
from soup_trl.testing.evaluation import make_log_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--limit", "3", "-n", "4", "--max-new-tokens", "6", "--backend", "hf", "--no-progress", "--threads", "1"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(capsys, *argv) -> str:
    """Run a command that must fail on user input: exit status 1 and one line on stderr, no traceback."""
    code, _, err = run(capsys, *argv)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    from soup_trl.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_b"), seed=1)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------------------------------


def test_eval_arithmetic_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code, out, _ = run(
        capsys, "eval", "--model", tiny_model_dir, "--benchmarks", "arithmetic", *FAST, "--output-dir", out_dir
    )
    assert code == 0
    report = json.loads((out_dir / "results.json").read_text())
    s = report["benchmarks"]["arithmetic"]
    assert report["backend"] == "hf" and report["num_samples"] == 4 and s["num_problems"] == 3
    records = jsonl(out_dir / "arithmetic.jsonl")
    assert len(records) == 12 and all(r["num_tokens"] <= 6 for r in records)
    # the summary is exactly what the per-sample grades give
    correct = [sum(r["reward"] for r in records if r["problem_id"] == pid) for pid in ("0", "1", "2")]
    assert s["avg@n"] == pytest.approx(sum(correct) / 12)
    for k in (1, 2, 4):
        assert s["pass@k"][str(k)] == pytest.approx(sum(pass_at_k(4, int(c), k) for c in correct) / 3)
    assert s["unparseable_answers"] == sum(r["status"] == "no_answer" for r in records)
    assert s["truncated_samples"] == sum(not r["finished"] for r in records)
    assert "| arithmetic | 3        |" in out and f"Results: {out_dir / 'results.json'}" in out
    assert (out_dir / "results.md").read_text().count("| arithmetic |") == 1

    # same seed, same samples
    run(
        capsys,
        "eval",
        "--model",
        tiny_model_dir,
        "--benchmarks",
        "arithmetic",
        *FAST,
        "--output-dir",
        tmp_path / "again",
    )
    assert jsonl(tmp_path / "again" / "arithmetic.jsonl") == records


def test_eval_local_math_file(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "mini_math.jsonl"
    rows = [
        {"question": "What is $1+1$?", "gold": 2},
        {"question": "Compute $\\frac{3}{4}+\\frac{1}{4}$.", "gold": "1"},
        {"question": "Solve $2x=6$ for $x$.", "gold": "$3$"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_dir = tmp_path / "eval"
    argv = ["eval", "--model", tiny_model_dir, "--benchmarks", data, "arithmetic", "--problem-field", "question"]
    code, out, _ = run(capsys, *argv, "--answer-field", "gold", *FAST, "--output-dir", out_dir)
    assert code == 0
    report = json.loads((out_dir / "results.json").read_text())
    assert list(report["benchmarks"]) == ["mini_math", "arithmetic"]
    math = report["benchmarks"]["mini_math"]
    assert math["reward"] == "accuracy" and math["num_problems"] == 3
    # a random tiny model writes no \boxed{} answer: every sample is unparseable, graded wrong, and reported
    assert math["avg@n"] == 0.0 and math["unparseable_answers"] == 12
    assert "mini_math: 12 of 12 answers could not be read by the grader (graded wrong)." in out
    assert [r["gold"] for r in jsonl(out_dir / "mini_math.jsonl")[::4]] == ["2", "1", "$3$"]
    assert "| average    |" in (out_dir / "results.md").read_text()


def test_eval_scores_a_tiny_chain_run_on_the_chain_held_out_set_by_default(tmp_path, capsys):
    """A run of a tiny_chain* recipe (here an untrained tiny model of the chain model's shape, saved with the recipe's
    training config) is evaluated on `chain` without --benchmarks: the method comparison's problems and grading."""
    import torch

    from soup_trl import SOUPConfig
    from soup_trl.evaluation.benchmarks import CHAIN_MAX_NEW_TOKENS, load_benchmark
    from soup_trl.toy.chain import ChainModelSettings
    from soup_trl.toy.tiny_model import build_tiny_model

    run_dir = tmp_path / "tiny-chain-run"
    build_tiny_model(run_dir, max_position_embeddings=ChainModelSettings().max_position_embeddings)
    config = SOUPConfig(output_dir=str(run_dir), use_cpu=True, bf16=False, report_to="none", recipe="tiny_chain")
    torch.save(config, run_dir / "training_args.bin")
    out_dir = tmp_path / "eval"
    argv = ["--limit", "3", "-n", "1", "--backend", "hf", "--no-progress", "--threads", "1", "--output-dir", out_dir]
    code, out, err = run(capsys, "eval", "--model", run_dir, *argv)
    assert code == 0, err
    report = json.loads((out_dir / "results.json").read_text())
    assert list(report["benchmarks"]) == ["chain"] and report["settings"]["benchmarks"] is None
    s = report["benchmarks"]["chain"]
    assert (s["num_problems"], s["num_samples"], s["reward"]) == (3, 1, "arithmetic")
    assert s["source"] == "builtin:chain (test split)" and s["max_new_tokens"] == CHAIN_MAX_NEW_TOKENS
    records = jsonl(out_dir / "chain.jsonl")
    assert [r["problem"] for r in records] == [p.problem for p in load_benchmark("chain", limit=3).problems]
    assert s["avg@n"] == pytest.approx(sum(r["reward"] for r in records) / 3)
    assert "| chain     | 3        |" in out and "chain: 3 problems x 1 samples, max 38 new tokens" in err


def test_eval_bad_input(tiny_model_dir, tmp_path, capsys):
    line = user_error(capsys, "eval", "--model", tiny_model_dir, "--benchmarks", "aime24,aime2025")
    assert line == (
        "soup-trl eval: error: unknown benchmark 'aime2025' (did you mean 'aime25'?). Valid names: aime24, aime25, "
        "amc23, arithmetic, chain, math500, minerva, olympiadbench, word_problems; or the path of a "
        ".jsonl/.json/.parquet file (with --problem-field/--answer-field)."
    )
    line = user_error(capsys, "eval", "--benchmarks", "math-500")
    assert line.startswith("soup-trl eval: error: unknown benchmark 'math-500' (did you mean 'math500'?).")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2" "answer": "4"}\n')
    line = user_error(capsys, "eval", "--model", tiny_model_dir, "--benchmarks", bad)
    assert line == f"soup-trl eval: error: {bad}, line 2: invalid JSON (Expecting ',' delimiter, column 19)."
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": "4"}\n{"problem": "3+3"}\n')
    line = user_error(capsys, "eval", "--model", tiny_model_dir, "--benchmarks", bad)
    assert line == (
        f"soup-trl eval: error: {bad}, line 3: no gold answer: none of the fields final_answer, answer, Answer (name it "
        "with --answer-field); the row has fields ['problem']."
    )
    line = user_error(capsys, "eval", "--model", tmp_path / "no_such_model", "--benchmarks", "arithmetic")
    assert line == f"soup-trl eval: error: model path {tmp_path / 'no_such_model'} does not exist."
    line = user_error(capsys, "eval", "--model", tiny_model_dir, "--benchmarks", "arithmetic", "-n", "0")
    assert line == "soup-trl eval: error: --num-samples must be >= 1, got 0."
    line = user_error(capsys, "eval", "--config", tmp_path / "missing.yaml")
    assert line == f"soup-trl eval: error: config file {tmp_path / 'missing.yaml'} does not exist."


# ----------------------------------------------------------------------------------------------------------------------
# One configuration system: --config FILE.yaml, flags in both spellings, run records
# ----------------------------------------------------------------------------------------------------------------------


def test_eval_config_file_equals_flags(tiny_model_dir, tmp_path, capsys):
    import yaml

    config = tmp_path / "eval.yaml"
    options = {"model": tiny_model_dir, "benchmarks": "arithmetic", "limit": 3, "num_samples": 2}
    options.update(max_new_tokens=6, backend="hf", progress=False, threads=1, output_dir=str(tmp_path / "from_yaml"))
    config.write_text(yaml.safe_dump(options))
    # a flag overrides the file
    code, out, _ = run(capsys, "eval", "--config", config, "--num-samples", "4")
    assert code == 0 and "| arithmetic | 3        |" in out and "avg@4" in out
    from_flags = tmp_path / "from_flags"
    code, _, _ = run(
        capsys, "eval", "--model", tiny_model_dir, "--benchmarks", "arithmetic", *FAST, "--output_dir", from_flags
    )
    assert code == 0
    assert jsonl(from_flags / "arithmetic.jsonl") == jsonl(tmp_path / "from_yaml" / "arithmetic.jsonl")
    by_yaml = json.loads((tmp_path / "from_yaml" / "results.json").read_text())["settings"]
    by_flags = json.loads((from_flags / "results.json").read_text())["settings"]
    assert {k: v for k, v in by_yaml.items() if k != "output_dir"} == {
        k: v for k, v in by_flags.items() if k != "output_dir"
    }
    # the record is every option, and the config.yaml written beside it reproduces the run
    from soup_trl.evaluation.arguments import EVAL_ARGUMENTS

    assert list(by_flags) == [f for group in EVAL_ARGUMENTS for f in group.__dataclass_fields__]
    code, _, _ = run(capsys, "eval", "--config", from_flags / "config.yaml", "--output-dir", tmp_path / "again")
    assert code == 0 and jsonl(tmp_path / "again" / "arithmetic.jsonl") == jsonl(from_flags / "arithmetic.jsonl")


@pytest.mark.parametrize("command", ["eval", "relay", "select"])
def test_both_flag_spellings_parse_alike(command):
    from soup_trl.scripts.cli import parse_command

    first = ["--behavior-model", "a"] if command == "relay" else (["RUN"] if command == "select" else [])
    dashes = ["--num-samples", "4", "--max-new-tokens", "7", "--output-dir", "o", "--no-chat-template", "--top-p", "1"]
    underscores = ["--num_samples", "4", "--max_new_tokens", "7", "--output_dir", "o", "--no_chat_template", "--top_p"]
    underscores.append("1")
    assert parse_command(command, first + dashes) == parse_command(command, first + underscores)
    parsed = {type(a).__name__: a for a in parse_command(command, first + dashes)}
    sampling, benchmarks = parsed["SamplingArguments"], parsed["BenchmarkArguments"]
    assert (sampling.num_samples, sampling.max_new_tokens, sampling.top_p) == (4, 7, 1.0)
    assert benchmarks.chat_template is False and parsed["OutputArguments"].output_dir == "o"


def test_a_command_error_shows_its_own_usage_and_a_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--num_sample", "4"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: soup-trl eval ")
    assert err.endswith(
        "soup-trl eval: error: unrecognized arguments: --num_sample 4 (did you mean '--num_samples'?)\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text("behavior_model: a\nnum_sample: 4\nbenchmarks: arithmetic\n")
    with pytest.raises(SystemExit):
        main(["relay", "--config", str(config)])
    err = capsys.readouterr().err
    assert err.startswith("usage: soup-trl relay ")
    assert f"soup-trl relay: error: {config}: unknown keys: num_sample (did you mean 'num_samples'?)" in err
    with pytest.raises(SystemExit):
        main(["selct", "RUN"])
    assert "unknown command 'selct' (did you mean 'select'?)" in capsys.readouterr().err


def test_defaults_in_help_and_docs_are_the_codes():
    """--help states each default from the code, and docs/evaluation.md's option tables are generated from it."""
    from dataclasses import MISSING, fields
    from pathlib import Path

    from soup_trl.evaluation.arguments import COMMAND_ARGUMENTS, options_markdown
    from soup_trl.evaluation.benchmarks import ARITHMETIC_MAX_NEW_TOKENS, MATH_MAX_NEW_TOKENS
    from soup_trl.scripts.cli import build_command_parser

    for command, groups in COMMAND_ARGUMENTS.items():
        help_text = " ".join(build_command_parser(command).format_help().split())
        for group in groups:
            for f in fields(group):
                if f.default is not MISSING:
                    assert f"(default: {' '.join(str(f.default).split())})" in help_text, (command, f.name)
    eval_help = " ".join(build_command_parser("eval").format_help().split())
    assert (
        f"None: {ARITHMETIC_MAX_NEW_TOKENS} for 'arithmetic'" in eval_help
        and f"{MATH_MAX_NEW_TOKENS} for math" in eval_help
    )
    docs = (Path(__file__).parent.parent.parent / "docs" / "evaluation.md").read_text()
    assert options_markdown() in docs, (
        "docs/evaluation.md's option tables differ from the code; regenerate them with: python -m "
        "soup_trl.scripts.docs"
    )


def test_default_output_dirs_never_overwrite_another_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    argv = ["eval", "--model", tiny_model_dir, *FAST]
    for _ in range(2):
        assert run(capsys, *argv, "--benchmarks", "arithmetic")[0] == 0
    runs = tmp_path / "eval_results" / "tiny_model0"
    assert sorted(p.name for p in runs.iterdir()) == ["run-1", "run-2"]
    assert all((runs / r / "results.json").is_file() for r in ("run-1", "run-2"))
    # an explicit --output-dir that holds results: refused, or cleared of that run's files with --overwrite
    out = tmp_path / "out"
    assert run(capsys, *argv, "--benchmarks", f"arithmetic,{data}", "--output-dir", out)[0] == 0
    assert (out / "d.jsonl").is_file()
    line = user_error(capsys, *argv, "--benchmarks", "arithmetic", "--output-dir", out)
    assert line.startswith(f"soup-trl eval: error: {out} already holds the results of another run")
    assert run(capsys, *argv, "--benchmarks", "arithmetic", "--output-dir", out, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["arithmetic.jsonl", "config.yaml", "results.json", "results.md"]


# ----------------------------------------------------------------------------------------------------------------------
# relay
# ----------------------------------------------------------------------------------------------------------------------


def test_relay_two_tiny_models(tiny_model_dir, second_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "relay"
    argv = ["relay", "--behavior-model", tiny_model_dir, "--model", second_model_dir, "--ratio", "0.5"]
    code, out, _ = run(capsys, *argv, "--benchmarks", "arithmetic", *FAST, "--output-dir", out_dir)
    assert code == 0
    report = json.loads((out_dir / "results.json").read_text())
    assert report["ratio"] == 0.5 and report["num_samples"] == 4
    for k in ("1", "2", "4"):
        diff = report["pass@k"]["relay"]["arithmetic"][k] - report["pass@k"]["target"]["arithmetic"][k]
        assert report["relay_minus_model"]["arithmetic"][k] == pytest.approx(diff)
    relay = jsonl(out_dir / "arithmetic.relay.jsonl")
    behavior = jsonl(out_dir / "arithmetic.behavior.jsonl")
    assert len(relay) == len(behavior) == len(jsonl(out_dir / "arithmetic.target.jsonl")) == 12
    for r, b in zip(relay, behavior):
        content = b["num_tokens"] - (1 if b["finished"] else 0)  # tokens before the EOS
        assert r["prefix_tokens"] == min(round(content * 0.5), content, 5)
        assert r["behavior_completion"] == b["completion"] and r["completion"].startswith(r["prefix"])
        assert r["num_tokens"] <= 6
    assert (out_dir / "relay_pass_at_k_difference.png").read_bytes()[:8] == PNG_MAGIC
    assert (out_dir / "relay_pass_at_k.png").read_bytes()[:8] == PNG_MAGIC
    assert "| arithmetic | relay - B" in out and "Figure 4 (relay minus B):" in out
    assert "relay A->B (0.5)" in (out_dir / "relay.md").read_text()


def test_relay_bad_ratio(tiny_model_dir, capsys):
    line = user_error(capsys, "relay", "--behavior-model", tiny_model_dir, "--model", tiny_model_dir, "--ratio", "1")
    assert line == "soup-trl relay: error: --ratio must be in [0, 1), got 1.0."


# ----------------------------------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_run(tiny_model_dir, second_model_dir, tmp_path):
    """A run directory with checkpoint-1 and checkpoint-2 saved by save_pretrained (tokenizer only at the top)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "run"
    for step, source in ((1, tiny_model_dir), (2, second_model_dir)):
        model = AutoModelForCausalLM.from_pretrained(source)
        with torch.no_grad():
            model.lm_head.weight.mul_(1.0 + 0.1 * step)
        model.save_pretrained(run_dir / f"checkpoint-{step}")
        (run_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": []})
        )
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run_dir)
    return run_dir


def test_select_two_checkpoints(fake_run, capsys):
    code, out, err = run(capsys, "select", fake_run, "--benchmarks", "arithmetic", *FAST)
    assert code == 0
    selection = json.loads((fake_run / "eval" / "selection.json").read_text())
    names = [m["name"] for m in selection["models"]]
    assert names == ["checkpoint-1", "checkpoint-2"] and selection["criterion"] == ["arithmetic"]
    for m in selection["models"]:
        per_model = json.loads((fake_run / "eval" / m["name"] / "results.json").read_text())
        assert m["score"] == per_model["benchmarks"]["arithmetic"]["avg@n"] == m["avg@n"]["arithmetic"]
    best_score = max(m["score"] for m in selection["models"])
    assert selection["best"]["name"] == next(m["name"] for m in selection["models"] if m["score"] == best_score)
    assert f"Best: {selection['best']['name']}" in out
    assert "mean avg@4 (arithmetic)" in (fake_run / "eval" / "selection.md").read_text()

    # a second run with the same settings reuses the evaluations
    code, out2, err2 = run(capsys, "select", fake_run, "--benchmarks", "arithmetic", *FAST)
    assert code == 0 and err2.count("reusing") == 2 and out2 == out


def test_select_ranks_a_final_model_and_refuses_other_settings(fake_run, tmp_path, capsys):
    shutil.copytree(fake_run / "checkpoint-2", fake_run, dirs_exist_ok=True)  # a final model in the run dir
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    argv = ["select", fake_run, "--benchmarks", f"arithmetic,{data}", *FAST]
    assert run(capsys, *argv)[0] == 0
    selection = json.loads((fake_run / "eval" / "selection.json").read_text())
    assert [m["name"] for m in selection["models"]] == ["checkpoint-1", "checkpoint-2", "final"]
    assert [m["step"] for m in selection["models"]] == [1, 2, 2]
    for m in selection["models"]:
        assert m["score"] == pytest.approx((m["avg@n"]["arithmetic"] + m["avg@n"]["d"]) / 2)
    scores = [m["score"] for m in selection["models"]]
    assert selection["best"]["name"] == selection["models"][scores.index(max(scores))]["name"]
    # other sampling options: refused before anything is evaluated, then replaced with --overwrite
    line = user_error(capsys, *argv, "--temperature", "1.0")
    assert line.startswith(f"soup-trl select: error: {fake_run / 'eval' / 'selection.json'} holds a selection made")
    code, _, err = run(capsys, *argv, "--temperature", "1.0", "--select-by", "d", "--overwrite")
    assert code == 0 and "reusing" not in err
    selection = json.loads((fake_run / "eval" / "selection.json").read_text())
    assert selection["criterion"] == ["d"] and selection["settings"]["temperature"] == 1.0


def test_select_bad_input(tmp_path, capsys):
    line = user_error(capsys, "select", tmp_path / "nope", "--benchmarks", "arithmetic")
    assert line == f"soup-trl select: error: run directory {tmp_path / 'nope'} does not exist."
    (tmp_path / "empty_run" / "checkpoint-3").mkdir(parents=True)
    line = user_error(capsys, "select", tmp_path / "empty_run", "--benchmarks", "arithmetic")
    assert line.startswith(f"soup-trl select: error: no model in {tmp_path / 'empty_run'}: no checkpoint-N directory")


# ----------------------------------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------------------------------


def test_plot_a_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "trainer_state.json").write_text(json.dumps({"global_step": 30, "log_history": make_log_history()}))
    code, out, _ = run(capsys, "plot", run_dir)
    assert code == 0
    names = ["training_curves.png", "reward.png", "prefix_vs_continuation.png", "position_bins.png"]
    assert out.splitlines() == [f"Read {run_dir / 'trainer_state.json'}", "Wrote:"] + [
        f"  {run_dir / 'plots' / name}" for name in names
    ]
    for name in names:
        assert (run_dir / "plots" / name).read_bytes()[:8] == PNG_MAGIC

    # SOUP's cut tokens (Figure 3), in the run directory beside trainer_state.json
    cuts = [{"step": 1, "truncation": "entropy", "tokens": [" so", " so", "\n"]},
            {"step": 4, "truncation": "entropy", "tokens": [" wait"]}]  # fmt: skip
    (run_dir / "soup_cut_tokens.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cuts))
    code, out, _ = run(capsys, "plot", run_dir)
    assert code == 0 and f"  {run_dir / 'plots' / 'cut_tokens.png'}" in out.splitlines()
    assert (run_dir / "plots" / "cut_tokens.png").read_bytes()[:8] == PNG_MAGIC

    # a plain GRPO run (no SOUP metrics), whose log is only in its newest checkpoint
    grpo = tmp_path / "grpo"
    for step in (5, 10):
        (grpo / f"checkpoint-{step}").mkdir(parents=True)
        history = [{"step": s, "reward": 0.1 * s, "entropy": 0.5} for s in range(1, step + 1)]
        (grpo / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    code, out, _ = run(capsys, "plot", grpo, "--output-dir", tmp_path / "figs")
    assert code == 0
    assert f"Read {grpo / 'checkpoint-10' / 'trainer_state.json'}" in out
    assert "Skipped position_bins.png: no soup/position_bin_* metrics logged" in out
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["reward.png", "training_curves.png"]


def test_plot_bad_input(tmp_path, capsys):
    line = user_error(capsys, "plot", tmp_path / "missing")
    assert line == f"soup-trl plot: error: run directory {tmp_path / 'missing'} does not exist."
    line = user_error(capsys, "plot", tmp_path)
    assert line.startswith(
        f"soup-trl plot: error: no trainer_state.json in {tmp_path} nor in its checkpoint-* directories."
    )
    (tmp_path / "trainer_state.json").write_text("{not json")
    assert "not a valid trainer_state.json" in user_error(capsys, "plot", tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# The installed command
# ----------------------------------------------------------------------------------------------------------------------


def soup_trl_command():
    path = shutil.which("soup-trl")
    return [path] if path else [sys.executable, "-m", "soup_trl.scripts.cli"]


def test_console_command_help_and_one_line_errors(tmp_path, capsys):
    """The installed command in its own process (its help, a one-line error); each command's help in this process
    (the same `main`, without paying a Python start and TRL's import for each)."""
    done = subprocess.run([*soup_trl_command(), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: soup-trl")
    helps = {}
    for name in ("eval", "relay", "select", "plot"):
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        helps[name] = capsys.readouterr().out
        assert exited.value.code == 0
        assert helps[name].startswith("usage: soup-trl")
    eval_help = helps["eval"]
    assert (
        "--num-samples" in eval_help and "--config FILE.yaml" in eval_help and "builtin:tiny-arithmetic" in eval_help
    )
    assert "cut_tokens.png" in helps["plot"]
    done = subprocess.run([*soup_trl_command(), "plot", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == f"soup-trl plot: error: run directory {tmp_path / 'nowhere'} does not exist.\n"


def test_version_names_the_package_and_the_libraries_it_trains_with(capsys):
    from importlib.metadata import version

    import soup_trl

    assert main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"soup-trl {soup_trl.__version__} (trl {version('trl')}, transformers ")
    assert soup_trl.__version__ == version("soup-trl")  # pyproject reads the package's own version

"""benchmarks/comparison/claims.py: each claim's statistic of a run, its paired difference and verdict, the resolution,
the tables and the README line, on hand-made runs; the claims sweep's per-variant seeds in the scheduler."""

import math
import random

import pytest
from comparison import runs as comparison_runs
from comparison.claims import (
    CLAIMS,
    LATE_BINS,
    PREFIX_LOSS_STATISTICS,
    claim_verdict,
    claims_text,
    evaluate_claims,
    late_entropy,
    late_reward,
    logged_mean,
    readme_line,
    relay_gain,
    reward_fluctuation,
)
from comparison.statistics import mean_ci, seeds_for_half_width, t_quantile_975
from comparison.variants import Scale, Variant


def test_seeds_for_half_width_is_the_first_n_whose_interval_is_narrow_enough():
    for std, half_width in ((2.9, 1.0), (3.62, 1.0), (0.5, 1.0), (10.0, 0.5)):
        n = seeds_for_half_width(std, half_width)
        assert t_quantile_975(n - 1) * std / math.sqrt(n) <= half_width
        assert n == 2 or t_quantile_975(n - 2) * std / math.sqrt(n - 1) > half_width
    assert seeds_for_half_width(2.9, 1.0) == 35  # the claims sweep's CLAIM_SEEDS (variants.py)
    with pytest.raises(ValueError, match="positive"):
        seeds_for_half_width(0.0, 1.0)


def run(rewards=(), entropy=None, bins=None, clip=None, high_clip=None, avg=None, relay=None) -> dict:
    """A run's result as runs.run_one writes it, with one log entry per step 1.. of the given rewards."""
    history = []
    for step, reward in enumerate(rewards, start=1):
        entry = {"step": step, "reward": reward}
        if entropy is not None:
            entry["entropy"] = entropy
        for b, value in (bins or {}).items():
            entry[f"soup/position_bin_{b}/entropy"] = value
        if clip is not None:
            entry["clip_ratio/region_mean"] = clip
        if high_clip is not None:
            entry["soup/high_entropy/clip_ratio"] = high_clip
        history.append(entry)
    history.append({"step": len(rewards), "train_runtime": 1.0})  # the summary entry logs no metric
    result = {"log_history": history}
    if avg is not None:
        result["avg@k"] = avg
    if relay is not None:
        result["relay_minus_model"] = {"1": -0.5, "8": relay}
    return result


def test_statistics_of_one_run():
    r = run(rewards=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.8, 0.6], entropy=0.3, bins={0: 1.0, 7: 0.1, 8: 0.2, 9: 0.6})
    assert logged_mean(r, "entropy") == pytest.approx(0.3)
    assert logged_mean(r, "clip_ratio/region_mean") is None  # never logged
    assert LATE_BINS == (7, 8, 9) and late_entropy(r) == pytest.approx(0.3)  # bins 7-9 only, not bin 0
    assert late_reward(r) == pytest.approx((0.8 + 0.6) / 2)  # steps 7 and 8: the last quarter of 8 steps
    steps = [0.2, 0.2, 0.2, 0.2, 0.2, -0.2, -0.2]
    assert reward_fluctuation(r) == pytest.approx(mean_ci(steps)["std"])
    assert relay_gain(run(relay=0.03)) == 0.03 and relay_gain(run()) is None
    assert reward_fluctuation(run(rewards=[1.0, 0.0])) is None and late_reward(run()) is None


@pytest.mark.parametrize(
    ("mean", "ci", "direction", "expected"),
    [(0.5, 0.2, +1, "reproduced"), (0.5, 0.2, -1, "not reproduced"), (-0.5, 0.2, -1, "reproduced"),
     (-0.5, 0.2, +1, "not reproduced"), (0.1, 0.2, +1, "no difference measured"),
     (0.1, math.nan, +1, "not enough seeds")],
)  # fmt: skip
def test_claim_verdict(mean, ci, direction, expected):
    assert claim_verdict({"mean": mean, "ci95": ci, "n": 5}, direction) == expected
    assert claim_verdict({"mean": math.nan, "ci95": math.nan, "n": 0}, direction) == "not measured"


def sweep_results(seeds: int = 12, prefix_seeds: int = 4) -> dict:
    """Hand-made runs in which every claim's effect is built in, clear of the seed-to-seed noise, except avg@k (the
    same for SOUP and DAPO but for noise) and the relay gain (negative)."""
    rng = random.Random(0)
    results = {name: {} for name in ("dapo", "dapo_minibatch", "soup_ratio", "soup_prefix_mask")}
    for seed in range(seeds):
        noise = [rng.gauss(0, 0.002) for _ in range(4)]
        base_avg = 0.7 + rng.gauss(0, 0.03)
        smooth = [0.6 + 0.01 * i for i in range(8)]  # SOUP: a higher, smoother reward
        jumpy = [0.5 + 0.01 * i + (0.1 if i % 2 else -0.1) for i in range(8)]
        late = {7: 0.05, 8: 0.05, 9: 0.05}
        results["dapo"][seed] = run(jumpy, 0.30 + noise[0], late, 0.0, 0.0, base_avg)
        results["dapo_minibatch"][seed] = run(jumpy, 0.40 + noise[1], late, 0.02 + noise[2] / 10, 0.05, base_avg)
        soup_late = {7: 0.09, 8: 0.09, 9: 0.09}
        results["soup_ratio"][seed] = run(smooth, 0.31, soup_late, 0.001, 0.002, base_avg + rng.gauss(0, 0.02),
                                          relay=-0.05 + noise[3])  # fmt: skip
        if seed < prefix_seeds:
            results["soup_prefix_mask"][seed] = run(smooth, 0.31, soup_late, 0.0, 0.0, base_avg)
    return results


def test_every_claim_gets_its_paired_difference_and_verdict():
    evaluated = evaluate_claims(sweep_results())
    rows = {(r["statistic"], r["variant"], r["reference"]): r for r in evaluated["claims"]}
    assert len(rows) == len(CLAIMS)
    expected = {
        ("entropy", "dapo_minibatch", "dapo"): "reproduced",
        ("clip_ratio", "dapo_minibatch", "dapo"): "reproduced",
        ("late_entropy", "soup_ratio", "dapo"): "reproduced",
        ("clip_ratio", "soup_ratio", "dapo_minibatch"): "reproduced",
        ("high_entropy_clip", "soup_ratio", "dapo_minibatch"): "reproduced",
        ("reward_fluctuation", "soup_ratio", "dapo"): "reproduced",
        ("avg@k", "soup_ratio", "dapo"): "no difference measured",
        ("relay_gain", "soup_ratio", None): "not reproduced",
    }
    for key, verdict in expected.items():
        assert rows[key]["verdict"] == verdict, key
        assert rows[key]["n"] == 12
    late = rows[("late_entropy", "soup_ratio", "dapo")]
    assert late["mean"] == pytest.approx(0.04) and late["variant_mean"] == pytest.approx(0.09)
    assert late["reference_mean"] == pytest.approx(0.05)
    clip = rows[("clip_ratio", "soup_ratio", "dapo_minibatch")]
    assert clip["mean"] == pytest.approx(0.001 - 0.02, abs=1e-3) and clip["mean"] + clip["ci95"] < 0
    # the resolution: the paired deviation of SOUP's avg@k difference and the seeds a +-1 point interval needs
    resolution = evaluated["resolution"]
    accuracy = rows[("avg@k", "soup_ratio", "dapo")]
    assert resolution["std"] == pytest.approx(accuracy["std"]) and resolution["n"] == 12
    assert resolution["seeds_needed"] == seeds_for_half_width(accuracy["std"], 0.01)


def test_prefix_loss_rows_pair_each_choice_with_soup_on_the_seeds_both_have():
    evaluated = evaluate_claims(sweep_results(prefix_seeds=4))
    side = evaluated["prefix_loss"]
    assert [r["statistic"] for r in side] == list(PREFIX_LOSS_STATISTICS)  # soup_prefix_mask only: minpro never ran
    assert all(r["variant"] == "soup_prefix_mask" and r["n"] == 4 and r["seeds"] == [0, 1, 2, 3] for r in side)
    clip = next(r for r in side if r["statistic"] == "clip_ratio")
    assert clip["mean"] == pytest.approx(-0.001) and clip["verdict"] == "lower"


def test_a_claim_without_its_runs_is_not_measured():
    results = sweep_results()
    del results["dapo_minibatch"]
    rows = {(r["statistic"], r["variant"]): r for r in evaluate_claims(results)["claims"]}
    assert rows[("entropy", "dapo_minibatch")]["verdict"] == "not measured"
    assert rows[("late_entropy", "soup_ratio")]["verdict"] == "reproduced"


def test_tables_and_readme_line():
    evaluated = evaluate_claims(sweep_results())
    labels = {"dapo": "DAPO", "dapo_minibatch": "DAPO mini-batch", "soup_ratio": "SOUP", "soup_prefix_mask": "mask"}
    text = claims_text(evaluated, labels, 8, "python benchmarks/compare_methods.py --sweep claims")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(CLAIMS) + 1 + len(PREFIX_LOSS_STATISTICS)  # two header rows, a row each
    cells = {row[0]: row[1:] for row in ([c.strip() for c in line.strip("|").split("|")] for line in table)}
    fewer_clips = cells["SOUP clips fewer tokens than mini-batch updates"]
    assert fewer_clips[:2] == ["§5.2, Fig. 5(b-c)", "clipped tokens: `soup_ratio` minus `dapo_minibatch`"]
    assert fewer_clips[2].startswith("0.100 / 1.99")  # SOUP's 0.1% and the mini-batch control's 2% (+ noise)
    assert fewer_clips[3].startswith("-1.89") and fewer_clips[3].endswith("% (n=12, sd 0.018)")
    assert fewer_clips[4] == "reproduced"
    assert cells["SOUP is more accurate on held-out problems"][1] == "held-out avg@8: `soup_ratio` minus `dapo`"
    relay = cells["Relay sampling beats single-model sampling at k >= 8"]
    assert relay[1] == "relay minus single-model pass@8: `soup_ratio`" and relay[4] == "not reproduced"
    assert relay[2] == f"{100 * evaluated['claims'][-1]['variant_mean']:.1f}"  # one side: the value itself
    assert f"needs {evaluated['resolution']['seeds_needed']} seeds" in text
    line = readme_line(evaluated, 12, "chain", "docs/claims.md")
    assert line == ("The paper's 9 measurable claims on the chain task, 12 paired seeds: 7 reproduced, 1 not reproduced, "
                    "1 no difference measured ([the claims, one by one](docs/claims.md)).\n")  # fmt: skip


def test_a_variant_with_fewer_seeds_is_scheduled_and_read_on_those_only(tmp_path, monkeypatch):
    launched = []

    def fake_launch(run_dir, spec, log, script=None):
        launched.append(run_dir.name)
        return 0

    monkeypatch.setattr(comparison_runs, "launch", fake_launch)
    variants = [Variant("dapo", "tiny_chain_dapo"), Variant("side", "tiny_chain", max_seeds=1)]
    scale = Scale(seeds=3, steps=2, eval_problems=1, sample_problems=1, k=1)
    assert comparison_runs.run_all(variants, scale, tmp_path, jobs=1, log=lambda _: None) == 4
    assert sorted(launched) == ["dapo-seed0", "dapo-seed1", "dapo-seed2", "side-seed0"]
    assert comparison_runs.load_results(variants, scale, tmp_path) == {"dapo": {}, "side": {}}  # nothing finished


def test_no_resolution_statement_without_a_paired_deviation():
    results = sweep_results(seeds=3)
    for seed, r in results["soup_ratio"].items():
        r["avg@k"] = results["dapo"][seed]["avg@k"]  # identical accuracies: a deviation of 0 says nothing
    evaluated = evaluate_claims(results)
    assert "seeds_needed" not in evaluated["resolution"] and evaluated["resolution"]["std"] == 0
    assert "Resolution" not in claims_text(evaluated, {}, 8, "cmd")

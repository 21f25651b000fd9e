"""What a comparison trains: the variants (a recipe and its overrides) of each sweep, the sizes of a sweep (`Scale`)
and the tasks (`Task`: the tiny chain model, or SmolLM2 on word problems) with their sweeps and held-out evaluation
benchmark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

SWEEPS = ("methods", "sensitivity", "history", "beyond", "control", "claims")
RELAY_VARIANTS = ("dapo", "soup_ratio")  # relay needs a half-way checkpoint: kept for these only
REFERENCE = "dapo"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    label: str = ""
    max_seeds: int | None = None  # fewer seeds than the sweep's (seeds 0 .. max_seeds - 1): a cheaper side question


def variant_seeds(variant: Variant, seeds: int) -> range:
    """The seeds a variant is run with in a sweep of `seeds` seeds."""
    return range(seeds if variant.max_seeds is None else min(seeds, variant.max_seeds))


METHOD_VARIANTS = [
    Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
    Variant("dapo_ds", "tiny_chain_dapo_ds", label="DAPO + dynamic sampling"),
    Variant("soup_ratio", "tiny_chain", label="SOUP ratio"),
    Variant("soup_entropy", "tiny_chain_soup_entropy", label="SOUP entropy"),
    Variant("soup_prefix_budget", "tiny_chain_soup_prefix_budget", label="SOUP prefix budget"),
    Variant("m2po", "tiny_chain_m2po", label="M2PO"),
    Variant("luffy", "tiny_chain_luffy", label="LUFFY"),
]
SMOLLM2_VARIANTS = [
    Variant("dapo", "smollm2_dapo", label="DAPO (on-policy)"),
    Variant("soup_ratio", "smollm2_soup_ratio", label="SOUP ratio"),
    Variant("soup_prefix_budget", "smollm2_soup_prefix_budget", label="SOUP prefix budget"),
]
SENSITIVITY_T, SENSITIVITY_RATIO = 4, 0.5  # the fixed T of the ratio sweep and the fixed ratio of the T sweep


def sensitivity_variants() -> list[Variant]:
    """DAPO (ratio 0, T = 1), SOUP ratio in {0.25, 0.5, 0.75} at T = 4, T in {2, 8} at ratio 0.5 (Tables 2-3)."""
    variants = [Variant("dapo", "tiny_chain_dapo", label="DAPO (T=1)")]
    settings = [(r, SENSITIVITY_T) for r in (0.25, 0.5, 0.75)] + [(SENSITIVITY_RATIO, t) for t in (2, 8)]
    for ratio, t in settings:
        overrides = ("--soup_prefix_ratio", str(ratio), "--soup_behavior_steps", str(t))
        variants.append(Variant(f"soup_r{ratio:g}_T{t}", "tiny_chain", overrides, f"SOUP ratio {ratio:g}, T={t}"))
    return variants


HISTORY_PROMPTS = 200  # 100 steps of 8 prompts: 4 epochs, so that every prompt comes back every 25 steps


def history_variants() -> list[Variant]:
    """Several epochs over 200 prompts: DAPO, SOUP with fresh behavior samples (T = 4), and SOUP with prefixes from
    each prompt's last trained rollouts (T = 1) at three staleness limits. A prompt comes back about 25 steps after
    it was trained on, and a prefix cut from a spliced rollout keeps its older tokens: with a limit of 64 steps (the
    default of soup-trl 0.1, when these runs were made) a prompt is served from history in its 2nd and 3rd epoch and
    sampled afresh in its 4th; with 30, every other epoch; with no limit, from its 2nd epoch on. The limits are in
    steps: the limit in epochs is lifted (1,000 epochs)."""
    data = ("--max_train_samples", str(HISTORY_PROMPTS))
    history = (*data, "--soup_behavior_source", "history", "--soup_behavior_steps", "1", "--soup_history_max_epochs",
               "1000")  # fmt: skip
    return [
        Variant("dapo", "tiny_chain_dapo", data, "DAPO (on-policy)"),
        Variant("soup_ratio", "tiny_chain", data, "SOUP ratio, T=4, fresh behavior samples"),
        Variant("soup_history", "tiny_chain", (*history, "--soup_history_max_age", "64"), "SOUP ratio, history, max age 64"),
        Variant("soup_history_age30", "tiny_chain", (*history, "--soup_history_max_age", "30"),
                "SOUP ratio, history, max age 30"),
        Variant("soup_history_no_limit", "tiny_chain", (*history, "--soup_history_max_age", "1000000"),
                "SOUP ratio, history, no age limit"),
        Variant("soup_history_pool2", "tiny_chain", (*history, "--soup_history_max_age", "64", "--soup_history_pool", "2"),
                "SOUP ratio, history, pool of 2 past rollouts per slot"),
    ]  # fmt: skip


# A little above the median (0.0014) of the prefix |log ratio| a T=8 run of this task logs (36 values, 0.0002 to
# 0.0068): soup-trl train --config tiny_chain --soup_behavior_steps 8 --soup_refresh_drift 1e9 --max_steps 48
# --logging_steps 1 (a threshold never reached: fixed T, with the signal logged)
REFRESH_DRIFT = 0.002


def beyond_variants() -> list[Variant]:
    """What the paper leaves open, against DAPO and fixed-T SOUP (ratio 0.5, T = 4): the drift-aware cut (the ratio cut
    shortened to the tokens the current policy accepts) and adaptive refresh (a behavior sample serves 2 to 8 steps,
    refreshed once the prefix |log ratio| exceeds REFRESH_DRIFT)."""
    return [
        Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
        Variant("soup_ratio", "tiny_chain", label="SOUP ratio, fixed T=4"),
        Variant("soup_drift", "tiny_chain", ("--soup_truncation", "drift", "--soup_drift_lenience", "0.5"),
                "SOUP drift-aware cut, T=4"),
        Variant("soup_refresh", "tiny_chain", ("--soup_behavior_steps", "8", "--soup_refresh_drift", str(REFRESH_DRIFT),
                                               "--soup_refresh_min_steps", "2"), "SOUP adaptive refresh, T=2..8"),
    ]  # fmt: skip


PAPER_CONTROL_STEPS, PAPER_CONTROL_RATIO = 16, 0.7  # Section 5.2: batch 512 in mini-batches of 32; SOUP 0.7, T = 16


def control_variants() -> list[Variant]:
    """The paper's three settings of Section 5.2 and Figure 5 on the chain task. On-policy DAPO: one update per rollout
    batch. DAPO with mini-batch updates: one rollout batch sampled for k optimizer steps, every update after the first
    off-policy on whole sequences (ratios against the sampling policy), at k = 4, the staleness of the SOUP ratio
    variant's cycle (tiny_chain.yaml, T = 4), and at the paper's k = 16. SOUP ratio at the comparison's 0.5, T = 4 and
    at the paper's Figure 5 setting, 0.7, T = 16. Every run logs entropy and clip ratio by relative position and the
    clipped share of high-entropy tokens from the same function (SOUPTrainer's `token_stats`)."""
    paper_steps = str(PAPER_CONTROL_STEPS)
    paper_soup = ("--soup_prefix_ratio", str(PAPER_CONTROL_RATIO), "--soup_behavior_steps", paper_steps)
    return [
        Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
        Variant("dapo_minibatch", "tiny_chain_dapo_minibatch", label="DAPO, mini-batch updates, 4 steps per batch"),
        Variant("dapo_minibatch16", "tiny_chain_dapo_minibatch", ("--steps_per_generation", paper_steps),
                f"DAPO, mini-batch updates, {paper_steps} steps per batch"),
        Variant("soup_ratio", "tiny_chain", label="SOUP ratio 0.5, T=4"),
        Variant(f"soup_r{PAPER_CONTROL_RATIO:g}_T{paper_steps}", "tiny_chain", paper_soup,
                f"SOUP ratio {PAPER_CONTROL_RATIO:g}, T={paper_steps}"),
    ]  # fmt: skip


def smollm2_control_variants() -> list[Variant]:
    """The control sweep on SmolLM2 at the staleness of its SOUP recipe (T = 4): on-policy DAPO, DAPO with mini-batch
    updates of 4 steps per rollout batch, SOUP ratio 0.5, T = 4. The paper's 16 is left out: a comparison run of this
    task is 20 steps, about one rollout batch of 16."""
    return [
        Variant("dapo", "smollm2_dapo", label="DAPO (on-policy)"),
        Variant("dapo_minibatch", "smollm2_dapo_minibatch", label="DAPO, mini-batch updates, 4 steps per batch"),
        Variant("soup_ratio", "smollm2_soup_ratio", label="SOUP ratio 0.5, T=4"),
    ]


# The claims sweep (docs/claims.md): seeds for a 95% interval of +-1 point on the paired avg@8 difference. The paired
# standard deviations of the SOUP and baseline avg@8 differences to DAPO in docs/results-cpu.md (10 distinct rows of 5
# seeds: half-width x sqrt(5) / t_{0.975,4}) have a root mean square of 2.9 points; t_{0.975,n-1} x 2.9 / sqrt(n) <= 1
# first holds at n = 35 (`statistics.seeds_for_half_width`; SOUP ratio's own 3.6 would need 53). The prefix-loss
# choices, a side question, get fewer seeds.
CLAIM_SEEDS, PREFIX_LOSS_SEEDS = 35, 10


def claims_variants() -> list[Variant]:
    """The paper's claims (docs/claims.md) on the chain task: on-policy DAPO, DAPO with mini-batch updates at the
    staleness of SOUP's cycle (4 steps per rollout batch) and SOUP ratio 0.5, T = 4 at `CLAIM_SEEDS` seeds; SOUP with
    the prefix out of the loss and with MinPRO's weights (`soup_prefix_loss`) at `PREFIX_LOSS_SEEDS`."""
    return [
        Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
        Variant("dapo_minibatch", "tiny_chain_dapo_minibatch", label="DAPO, mini-batch updates, 4 steps per batch"),
        Variant("soup_ratio", "tiny_chain", label="SOUP ratio 0.5, T=4"),
        Variant("soup_prefix_mask", "tiny_chain", ("--soup_prefix_loss", "mask"), "SOUP, prefix out of the loss",
                PREFIX_LOSS_SEEDS),
        Variant("soup_prefix_minpro", "tiny_chain", ("--soup_prefix_loss", "minpro"), "SOUP, MinPRO prefix weights",
                PREFIX_LOSS_SEEDS),
    ]  # fmt: skip


SWEEP_VARIANTS = {"sensitivity": sensitivity_variants, "history": history_variants, "beyond": beyond_variants,
                  "control": control_variants, "claims": claims_variants}  # fmt: skip
# further references of paired differences
SWEEP_OTHERS = {"history": ("soup_ratio",), "beyond": ("soup_ratio",), "control": ("dapo_minibatch", "dapo_minibatch16"),
                "claims": ("dapo_minibatch", "soup_ratio")}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one sweep: everything that changes the numbers except the variant and the seed."""

    seeds: int
    steps: int
    eval_problems: int  # greedy accuracy
    sample_problems: int  # avg@k, pass@k and relay
    k: int
    warmup_steps: int | None = None  # SFT steps of the base model (None: ChainModelSettings' default)
    base_model: str = ""  # path of the cached base model, filled in once it is built
    task: str = "chain"  # a name of TASKS


FULL = {"methods": Scale(seeds=5, steps=100, eval_problems=300, sample_problems=300, k=8)}
FULL["sensitivity"] = FULL["methods"]  # 5 seeds too: with 3, t_{0.975,2} = 4.3 makes most intervals uninformative
FULL["history"] = FULL["beyond"] = FULL["methods"]
# 96 steps, a multiple of 16: every rollout batch and cycle of the 16-step settings is trained on to its end (at 100,
# the last would sample 16 steps' prompts and train on 4 of them)
FULL["control"] = dataclasses.replace(FULL["methods"], steps=96)
FULL["claims"] = dataclasses.replace(FULL["control"], seeds=CLAIM_SEEDS)
QUICK = Scale(seeds=2, steps=8, eval_problems=40, sample_problems=16, k=4, warmup_steps=150)  # a smoke test


@dataclasses.dataclass(frozen=True)
class Task:
    """What a comparison trains and evaluates on: its methods, its base model and its held-out problems."""

    name: str
    variants: list[Variant]
    benchmark: str  # the held-out problems and their grading: a built-in benchmark of `soup-trl eval`
    full: Scale
    quick: Scale
    relay: tuple[str, ...]  # variants that keep a half-way checkpoint for relay sampling
    out: str  # default output directory under outputs/ (of the methods sweep; another sweep's is named after it)
    temperature: float = 1.0  # of the sampled evaluation (avg@k, pass@k): the recipes' training temperature
    sweeps: dict[str, Callable[[], list[Variant]]] = dataclasses.field(default_factory=dict)  # besides "methods"
    sweep_scales: dict[str, Scale] = dataclasses.field(default_factory=dict)  # a sweep's sizes other than `full`

    def full_scale(self, sweep: str) -> Scale:
        """The sizes of a sweep run in full (not `--quick`)."""
        return self.sweep_scales.get(sweep, self.full)

    def sweep_variants(self, sweep: str) -> list[Variant]:
        return self.variants if sweep == "methods" else self.sweeps[sweep]()

    def out_dir(self, sweep: str) -> str:
        """The sweep's default output directory under outputs/."""
        if sweep == "methods":
            return self.out
        return sweep if self.name == "chain" else f"{self.out}-{sweep}"

    def doc_section(self, sweep: str) -> str:
        """The docs section the sweep fills (`--docs`)."""
        if self.name == "chain":
            return sweep
        return self.name if sweep == "methods" else f"{self.name}-{sweep}"


TASKS = {
    "chain": Task("chain", METHOD_VARIANTS, "chain", FULL["methods"], QUICK, RELAY_VARIANTS, "compare-methods",
                  sweeps=SWEEP_VARIANTS, sweep_scales=FULL),
    # A real model: each step is seconds of CPU and evaluation decodes up to 128 tokens per sample, so fewer steps,
    # problems and samples; the sizes were chosen by measuring a step first (docs/real-model.md).
    "smollm2": Task(
        "smollm2", SMOLLM2_VARIANTS, "word_problems",
        Scale(seeds=3, steps=20, eval_problems=60, sample_problems=30, k=4, task="smollm2"),
        Scale(seeds=2, steps=2, eval_problems=4, sample_problems=2, k=2, task="smollm2"),
        (), "compare-smollm2", temperature=0.7,
        # claims: the control's three settings, as many seeds as fit 120 minutes on 2 cores at ~20 minutes a run
        # (docs/real-model.md: 9 runs in 89 minutes, 2 at a time): 4
        sweeps={"control": smollm2_control_variants, "claims": smollm2_control_variants},
        sweep_scales={"claims": Scale(seeds=4, steps=20, eval_problems=60, sample_problems=30, k=4, task="smollm2")},
    ),
}  # fmt: skip


def task_of(spec: dict[str, Any]) -> Task:
    return TASKS[spec.get("task", "chain")]

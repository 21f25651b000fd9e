"""Grading throughput: samples/s of `soup_trl.rewards.accuracy_reward` on 1,000 fixed completions.

The completions come from a seeded generator (`make_samples`): integers, fractions, roots, polynomials, intervals,
percentages, degrees, multiple-choice letters, scientific notation, anchored answers without a box, completions with
no answer, and a few pathological answers that run into the per-sample time limit. About half are correct.

Every configuration runs in a fresh Python process (so no parse cache carries over), grades the 1,000 samples in
calls of `--batch` samples (1,000: one evaluation batch; 16: a training step's worth), and prints samples/s and the
time of a first one-sample call (pool start-up and parser warm-up included). Run it from the checkout whose
`soup_trl` you want to measure::

    PYTHONPATH=. python benchmarks/grading_throughput.py --workers 1 2 --batch 1000 16

It also measures an older `soup_trl` that grades one sample at a time in the calling process under a SIGALRM deadline
(its main-thread path; ``--workers`` does not apply there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

PROSE = (
    "Let me work through this step by step. First I write down what is given and what is asked, then I simplify "
    "the expression, check the edge cases, and verify the result by substituting it back. "
)


def _integer(rng: random.Random, correct: bool) -> tuple[str, str]:
    k = rng.randint(-50, 5000)
    return str(k), str(k if correct else k + rng.choice((-2, -1, 1, 10)))


def _fraction(rng: random.Random, correct: bool) -> tuple[str, str]:
    a, b = rng.randint(1, 40), rng.randint(2, 41)
    gold = f"\\frac{a}{b}" if a < 10 and b < 10 else f"\\frac{{{a}}}{{{b}}}"  # datasets write \frac43 too
    answer = f"\\dfrac{{{a}}}{{{b}}}" if correct else f"\\frac{{{b}}}{{{a + 1}}}"
    return gold, answer


def _root(rng: random.Random, correct: bool) -> tuple[str, str]:
    a, b = rng.randint(2, 9), rng.choice((2, 3, 5, 6, 7))
    return f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b if correct else a * b}}}"


def _polynomial(rng: random.Random, correct: bool) -> tuple[str, str]:
    p, q = rng.randint(1, 9), rng.randint(1, 9)
    return f"x^2+{p + q}x+{p * q}", f"(x+{p})(x+{q if correct else q + 1})"


def _interval(rng: random.Random, correct: bool) -> tuple[str, str]:
    a, b = sorted(rng.sample(range(-20, 20), 2))
    gold = rng.choice((f"({a},{b})", f"[{a}, {b})", f"(-\\infty, {b}]"))
    return gold, gold.replace(" ", "") if correct else gold.replace(str(b), str(b + 1))


def _unit(rng: random.Random, correct: bool) -> tuple[str, str]:
    k = rng.randint(1, 99)
    kind = rng.randrange(3)
    if kind == 0:
        return f"{k}\\%", str(k if correct else k + 1)
    if kind == 1:
        return f"{k}^\\circ", str(k if correct else k + 5)
    letter = rng.choice("ABCDE")
    return f"\\text{{({letter})}}", letter if correct else "F"


def _scientific(rng: random.Random, correct: bool) -> tuple[str, str]:
    m, e = rng.randint(11, 99) / 10, rng.randint(-30, 30)
    return f"{m}e{e}", f"{m} \\times 10^{{{e if correct else e + 1}}}"


KINDS = [
    (_integer, 30),
    (_fraction, 15),
    (_root, 8),
    (_polynomial, 10),
    (_interval, 8),
    (_unit, 9),
    (_scientific, 5),
]
PATHOLOGICAL = [r"10^{10^{10^{10}}}", "(" * 3000 + "1" + ")" * 3000, "x" + "^{x" * 500 + "}" * 500]


def make_samples(n: int = 1000, seed: int = 0) -> list[tuple[str, str]]:
    """`n` (completion, gold) pairs, the same for a given seed."""
    rng = random.Random(seed)
    makers, weights = zip(*KINDS)
    spots = {n * (2 * k + 1) // (2 * len(PATHOLOGICAL)): answer for k, answer in enumerate(PATHOLOGICAL)}
    samples = []
    for i in range(n):
        roll = rng.random()
        if i in spots:
            samples.append((f"{PROSE}So we get \\boxed{{{spots[i]}}}.", str(rng.randint(1, 9))))
        elif roll < 0.05:  # anchored answer without a box
            k = rng.randint(1, 999)
            samples.append((f"{PROSE}The final answer is {k if rng.random() < 0.5 else k + 1}.", str(k)))
        elif roll < 0.13:  # no answer at all (e.g. cut at the token budget)
            samples.append((f"{PROSE}Now we expand the product and collect the terms of", str(rng.randint(1, 99))))
        else:
            gold, answer = rng.choices(makers, weights)[0](rng, rng.random() < 0.5)
            samples.append((f"{PROSE}Therefore the answer is $\\boxed{{{answer}}}$.", gold))
    return samples


def measure(batch: int, workers: int | None, ordinary_only: bool = False) -> dict:
    """Grade `make_samples()` in calls of `batch` samples in this process; return the numbers.

    `ordinary_only`: leave out the pathological samples (whose time limits otherwise dominate the total).
    """
    import logging

    logging.basicConfig(level=logging.ERROR)
    from soup_trl.rewards import ACCURACY_STATS, accuracy_reward

    if workers is not None:
        from soup_trl.rewards import deadline

        deadline.WORKERS = workers
    samples = make_samples()
    if ordinary_only:
        samples = [(c, g) for c, g in samples if not any(f"{{{p}}}" in c for p in PATHOLOGICAL)]
    completions, golds = [c for c, _ in samples], [g for _, g in samples]
    out: dict = {}
    start = time.perf_counter()
    accuracy_reward(["\\boxed{1}"], ["1"])
    out["first_call_s"] = time.perf_counter() - start
    rewards = []
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        rewards += accuracy_reward(completions[i : i + batch], golds[i : i + batch])
    out["seconds"] = time.perf_counter() - start
    out["samples"] = len(samples)
    out["samples_per_s"] = len(samples) / out["seconds"]
    out["correct"] = sum(r == 1.0 for r in rewards)
    out["timeouts"], out["errors"] = ACCURACY_STATS["timeout"], ACCURACY_STATS["error"]
    out["rewards_sha"] = hashlib.sha256(json.dumps(rewards).encode()).hexdigest()[:12]
    return out


def _configurations(workers: list[int], batches: list[int]) -> list[dict]:
    try:
        from soup_trl.rewards import deadline  # noqa: F401
    except ImportError:  # an older soup_trl, grading in the calling process
        return [{"mode": "main thread", "workers": None, "batch": b} for b in batches]
    return [{"mode": "worker pool", "workers": w, "batch": b} for b in batches for w in workers]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="grading worker processes")
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 16], help="samples per accuracy_reward call")
    parser.add_argument("--ordinary-only", action="store_true", help="leave out the pathological samples")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # one configuration, as JSON (run in a child process)
    args = parser.parse_args(argv)
    if args.single:
        config = json.loads(args.single)
        print(json.dumps(measure(config["batch"], config["workers"], config["ordinary_only"])))
        return 0

    print(f"cpus: {os.cpu_count()}")
    print("| mode | workers | batch | samples | samples/s | seconds | first call (s) | correct | timeouts | rewards sha | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for config in _configurations(args.workers, args.batch):
        config["ordinary_only"] = args.ordinary_only
        load = os.getloadavg()[0]  # other processes on the machine: the numbers are only comparable at a similar load
        child = subprocess.run(
            [sys.executable, __file__, "--single", json.dumps(config)], capture_output=True, text=True, check=True
        )
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {config['mode']} | {config['workers'] or '-'} | {config['batch']} | {r['samples']} | {r['samples_per_s']:.1f} | "
            f"{r['seconds']:.1f} | {r['first_call_s']:.2f} | {r['correct']} | {r['timeouts']} | {r['rewards_sha']} | {load:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

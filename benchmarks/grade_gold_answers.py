"""Grade benchmark gold answers against themselves, to measure how well an accuracy reward reads real golds.

For every row of every file, the gold answer is passed to the reward as ``solution`` in three forms (raw as the
dataset ships it, ``$``-wrapped, and ``\\boxed{}``), with the completion ``"... The answer is \\boxed{GOLD}."``
(``$`` signs inside GOLD are dropped in the completion: a model does not write them in a box). All three must
score 1.0. As a false-positive check, each gold is also paired with the gold of another problem that has a
different value: that must score 0.0.

Both `soup_trl.rewards.accuracy_reward` and TRL's `trl.rewards.accuracy_reward` are measured.

Usage::

    python benchmarks/grade_gold_answers.py data/math500.jsonl data/olympiadbench.jsonl:final_answer \\
        data/minerva.jsonl:solution --field answer

``FILE:FIELD`` overrides ``--field`` for one file. Files are .jsonl, .json (a list of objects) or .parquet. A field
holding a list (OlympiadBench's ``final_answer``) is joined with ", "; a number is written as an integer when it is
one (AMC's ``27.0``); a field holding a full solution (Minerva's ``solution``) is reduced to its last ``\\boxed{}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

FORMS = ("raw", "dollar", "boxed")


def load_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else list(data.values())
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def strip_dollars(text: str) -> str:
    return re.sub(r"(?<!\\)\$", "", text).strip()


def gold_forms(gold: str) -> dict[str, str]:
    bare = strip_dollars(gold)
    return {"raw": gold, "dollar": f"${bare}$", "boxed": f"\\boxed{{{bare}}}"}


def completion_for(gold: str) -> str:
    return (
        f"Let me work through this step by step.\n... so we are done. The answer is \\boxed{{{strip_dollars(gold)}}}."
    )


def _canonical(gold: str) -> str:
    s = strip_dollars(gold)
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle", " ", "{,}", "^\\circ", "^{\\circ}"):
        s = s.replace(junk, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    return re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?=", "", s)  # "x=5" has the value 5


def _same_value(a: str, b: str) -> bool:
    ca, cb = _canonical(a), _canonical(b)
    if ca == cb:
        return True
    try:
        return float(ca.replace(",", "")) == float(cb.replace(",", ""))
    except ValueError:
        return False


def cross_pairs(golds: list[str], shift: int = 1) -> list[int]:
    """For each gold, the index of the `shift`-th next gold (cyclically) with a different value (itself if none)."""
    n = len(golds)
    pairs = []
    for i in range(n):
        different = (k % n for k in range(i + 1, i + n) if not _same_value(golds[i], golds[k % n]))
        j = next((j for rank, j in enumerate(different, 1) if rank == shift), i)
        pairs.append(j)
    return pairs


def as_messages(completions: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": c}] for c in completions]


def run_reward(reward_func, completions, solutions, chat: bool) -> tuple[list, dict[str, list]]:
    """Rewards, and the columns the reward logged through `log_extra`."""
    extra: dict[str, list] = {}
    comps = as_messages(completions) if chat else completions
    rewards = reward_func(completions=comps, solution=solutions, log_extra=lambda k, v: extra.setdefault(k, v))
    return list(rewards), extra


def grade_file(golds: list[str], name: str, reward_func, chat: bool, cross_k: int = 1) -> tuple[dict, list[str]]:
    """Table cells for one reward on one file, and the lines describing its failures."""
    start = time.monotonic()
    completions = [completion_for(g) for g in golds]
    cells, scores, lines = {}, {}, []
    for form in FORMS:
        scores[form], extra = run_reward(reward_func, completions, [gold_forms(g)[form] for g in golds], chat)
        cells[f"{name}_{form}"] = 100.0 * sum(s == 1.0 for s in scores[form]) / max(len(golds), 1)
        if name == "ours" and form == "raw":
            unparsed = [i for i, p in enumerate(extra["gold_parsed"]) if p.startswith("[unparseable]")]
            cells["ours_strmatch"] = len(unparsed)
            lines += [f"  {i:4d} not parseable (graded by string match): {golds[i]!r}" for i in unparsed]
    false_pos = []
    for shift in range(1, cross_k + 1):
        partners = cross_pairs(golds, shift)
        cross, _ = run_reward(reward_func, [completions[j] for j in partners], golds, chat)
        false_pos += [(i, partners[i]) for i, s in enumerate(cross) if s == 1.0 and partners[i] != i]
    cells[f"{name}_fp"] = len(false_pos)
    cells[f"{name}_s"] = time.monotonic() - start
    for i, g in enumerate(golds):
        failed = [form for form in FORMS if scores[form][i] != 1.0]
        if failed:
            lines.append(f"  {i:4d} failed {failed}: {g!r}")
    lines += [f"  {i:4d} FALSE POSITIVE: gold {golds[i]!r} accepted {golds[j]!r}" for i, j in false_pos]
    return cells, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="FILE or FILE:FIELD (.jsonl, .json, .parquet)")
    parser.add_argument("--field", default="answer", help="gold-answer field when FILE has no :FIELD")
    parser.add_argument("--no-trl", action="store_true", help="skip TRL's accuracy_reward")
    parser.add_argument("--cross", type=int, default=1, help="wrong-answer partners per gold (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="grade only the first N rows of each file")
    parser.add_argument("--max-failures", type=int, default=30, help="failing golds to print per file and reward")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.ERROR)
    from soup_trl.rewards import accuracy_reward, gold_text

    rewards = {"ours": (accuracy_reward, False)}
    if not args.no_trl:
        from trl.rewards import accuracy_reward as trl_accuracy_reward

        rewards["trl"] = (trl_accuracy_reward, True)  # TRL's only accepts chat-message completions

    table, failures = [], []
    for spec in args.files:
        path_str, _, field = (spec, "", "") if Path(spec).exists() or ":" not in spec else spec.rpartition(":")
        path, field = Path(path_str), field or args.field
        golds = [gold_text(row[field]) for row in load_rows(path)[: args.limit]]
        row = {"file": path.stem, "n": len(golds)}
        for name, (func, chat) in rewards.items():
            cells, lines = grade_file(golds, name, func, chat, args.cross)
            row.update(cells)
            if lines:
                failures.append(f"\n{path.stem}, {name}:\n" + "\n".join(lines[: args.max_failures]))
        table.append(row)

    cols = ["file", "n", "ours_strmatch"] + [f"{name}_{c}" for name in rewards for c in (*FORMS, "fp", "s")]
    header = " | ".join(f"{c:>12}" for c in cols)
    print(header)
    print("-" * len(header))
    for row in table:
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:>12.1f}" if isinstance(v, float) else f"{v!s:>12}")
        print(" | ".join(cells))
    print(
        "\nraw / dollar / boxed: % of golds graded correct against themselves, with the gold passed raw, $-wrapped"
        " or boxed.\nfp: false positives among the n x --cross pairs (a gold vs. another problem's gold of a"
        " different value). s: seconds.\nours_strmatch: golds math-verify cannot parse (ours grades them by exact string match)."
    )
    print("".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

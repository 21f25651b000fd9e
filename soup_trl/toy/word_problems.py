"""Grade-school word problems made from templates: the real-language math task of the built-in real model.

Each problem is a short story with a name, a thing and its unit, and one to three operations (addition,
subtraction, multiplication, exact division), e.g.::

    Maya has 12 marbles. She buys 3 bags with 5 marbles in each bag. How many marbles does Maya have now?
    -> 27        worked solution: "3 × 5 = 15 marbles in the bags. 12 + 15 = 27. The answer is \\boxed{27}."

Numbers are small (answers below 1,000) and every intermediate result is a whole positive number, so that a
135M-parameter instruct model gets some of them right and reinforcement learning has something to improve. The
prompt asks for step-by-step reasoning and a final `\\boxed{}` answer (`MATH_PROMPT_TEMPLATE`, the paper recipes'
prompt), as chat messages for the model's chat template, and is graded by `accuracy_reward` (math-verify), as the
paper recipes are.

A 135M-parameter model barely follows the answer format on its own: measured on SmolLM2-135M-Instruct (docs/real-model.md),
sampling at temperature 0.7 with the plain prompt gave 2 boxed answers and none right in 12 one- and two-operation
problems; with `one_shot=True` (one solved example before the problem, as a user / assistant exchange in the chat) 18
of 32 one-operation problems were boxed and 4 right. The built-in task (`builtin:word-problems`, `TASK`) is therefore
one-operation problems with the one-shot example; the other templates stay available (`max_steps`).

Splits: every problem text is assigned to "train" or "test" by a fixed hash (about 1 in 10 is held out), so the
splits never share a problem, whatever the seeds or sizes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset

from ..rewards.math_data import MATH_PROMPT_TEMPLATE, format_prompt

SPLITS = ("train", "test")
ONE_SHOT_PROBLEM = "Tom has 7 apples. He buys 5 more. How many apples does Tom have now?"  # no name of NAMES: no overlap
ONE_SHOT_SOLUTION = "Tom starts with 7 apples and buys 5 more, so he has 7 + 5 = 12 apples. The answer is \\boxed{12}."
TASK = {"max_steps": 1, "one_shot": True}  # builtin:word-problems: what the built-in real model can start to learn
HELD_OUT_FRACTION_DENOMINATOR = 10

NAMES = (
    ("Maya", "She"), ("Liam", "He"), ("Sofia", "She"), ("Noah", "He"), ("Aisha", "She"), ("Kenji", "He"),
    ("Elena", "She"), ("Omar", "He"), ("Priya", "She"), ("Lucas", "He"), ("Zoe", "She"), ("Mateo", "He"),
)
THINGS = (  # (plural, container)
    ("marbles", "bags"), ("apples", "baskets"), ("pencils", "boxes"), ("stickers", "packs"), ("cookies", "trays"),
    ("books", "shelves"), ("stamps", "albums"), ("eggs", "cartons"), ("cards", "decks"), ("shells", "buckets"),
)


@dataclass(frozen=True)
class WordProblem:
    text: str
    answer: int
    solution: str  # the worked steps, ending with the boxed answer
    steps: int  # operations needed
    template: str


def _story(rng: random.Random) -> dict:
    name, pronoun = rng.choice(NAMES)
    things, container = rng.choice(THINGS)
    return {"name": name, "pron": pronoun, "things": things, "container": container}


def _finish(steps: list[str], answer: int) -> str:
    return " ".join(steps) + f" The answer is \\boxed{{{answer}}}."


def _add(rng, s):
    a, b = rng.randint(5, 60), rng.randint(3, 40)
    text = f"{s['name']} has {a} {s['things']}. {s['pron']} finds {b} more. How many {s['things']} does {s['name']} have now?"
    return text, a + b, [f"{a} + {b} = {a + b}."]


def _subtract(rng, s):
    a = rng.randint(20, 90)
    b = rng.randint(3, a - 5)
    text = (f"{s['name']} had {a} {s['things']} and gave {b} of them to a friend. How many {s['things']} does "
            f"{s['name']} have left?")
    return text, a - b, [f"{a} - {b} = {a - b}."]


def _multiply(rng, s):
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    text = (f"{s['name']} buys {a} {s['container']} of {s['things']}. Each of the {s['container']} holds {b} "
            f"{s['things']}. How many {s['things']} does {s['name']} buy in all?")
    return text, a * b, [f"{a} × {b} = {a * b}."]


def _divide(rng, s):
    each, friends = rng.randint(2, 12), rng.randint(2, 8)
    total = each * friends
    text = (f"{s['name']} shares {total} {s['things']} equally among {friends} friends. How many {s['things']} "
            "does each friend get?")
    return text, each, [f"{total} ÷ {friends} = {each}."]


def _add_product(rng, s):
    a, b, c = rng.randint(3, 30), rng.randint(2, 6), rng.randint(3, 10)
    text = (f"{s['name']} has {a} {s['things']}. {s['pron']} buys {b} {s['container']} with {c} {s['things']} in "
            f"each. How many {s['things']} does {s['name']} have now?")
    return text, a + b * c, [f"{b} × {c} = {b * c} {s['things']} in the {s['container']}.", f"{a} + {b * c} = {a + b * c}."]


def _subtract_twice(rng, s):
    a = rng.randint(40, 120)
    b = rng.randint(5, a // 2)
    c = rng.randint(3, a - b - 2)
    text = (f"A shop had {a} {s['things']}. It sold {b} in the morning and {c} in the afternoon. How many "
            f"{s['things']} does the shop have left?")
    return text, a - b - c, [f"{a} - {b} = {a - b}.", f"{a - b} - {c} = {a - b - c}."]


def _wage(rng, s):
    rate, b, c = rng.randint(4, 15), rng.randint(2, 8), rng.randint(2, 8)
    text = (f"{s['name']} earns {rate} dollars per hour. {s['pron']} works {b} hours on Monday and {c} hours on "
            f"Tuesday. How many dollars does {s['name']} earn on the two days?")
    return text, rate * (b + c), [f"{b} + {c} = {b + c} hours.", f"{b + c} × {rate} = {rate * (b + c)} dollars."]


def _share_then_eat(rng, s):
    each, bags, eaten = rng.randint(4, 12), rng.randint(2, 6), 0
    eaten = rng.randint(1, each - 1)
    total = each * bags
    text = (f"{s['name']} bakes {total} cookies and puts them into {bags} bags with the same number of cookies in "
            f"each. {s['pron']} eats {eaten} cookies from one bag. How many cookies are left in that bag?")
    return text, each - eaten, [f"{total} ÷ {bags} = {each} cookies in each bag.", f"{each} - {eaten} = {each - eaten}."]


def _pages_left(rng, s):
    per_day, days, last = rng.randint(5, 20), rng.randint(2, 6), rng.randint(3, 15)
    read = per_day * days + last
    total = read + rng.randint(5, 60)
    text = (f"{s['name']} reads {per_day} pages a day for {days} days, then {last} pages on the next day. The book "
            f"has {total} pages. How many pages are left to read?")
    steps = [f"{per_day} × {days} = {per_day * days} pages.", f"{per_day * days} + {last} = {read} pages read.",
             f"{total} - {read} = {total - read}."]
    return text, total - read, steps


def _ribbon(rng, s):
    pieces, length, used = rng.randint(2, 8), rng.randint(2, 9), 0
    used = rng.randint(1, pieces - 1)
    total = pieces * length
    text = (f"A ribbon is {total} meters long. {s['name']} cuts it into {pieces} pieces of equal length and uses "
            f"{used} of the pieces. How many meters of ribbon does {s['name']} use?")
    return text, length * used, [f"{total} ÷ {pieces} = {length} meters per piece.", f"{used} × {length} = {used * length}."]


def _trip(rng, s):
    speed, hours, extra = rng.randint(20, 80), rng.randint(2, 5), rng.randint(5, 40)
    text = (f"A train travels {speed} kilometers per hour for {hours} hours, then {extra} kilometers more. How many "
            "kilometers does it travel in total?")
    return text, speed * hours + extra, [f"{speed} × {hours} = {speed * hours}.", f"{speed * hours} + {extra} = {speed * hours + extra}."]


def _savings(rng, s):
    start, weekly, weeks, spent = rng.randint(5, 40), rng.randint(3, 12), rng.randint(2, 6), 0
    spent = rng.randint(2, start + weekly * weeks - 1)
    saved = start + weekly * weeks
    text = (f"{s['name']} has {start} dollars and saves {weekly} dollars every week for {weeks} weeks. Then "
            f"{s['pron'].lower()} spends {spent} dollars on a gift. How many dollars does {s['name']} have now?")
    steps = [f"{weekly} × {weeks} = {weekly * weeks} dollars saved.", f"{start} + {weekly * weeks} = {saved}.",
             f"{saved} - {spent} = {saved - spent}."]
    return text, saved - spent, steps


# name -> (operations, template)
TEMPLATES: dict[str, tuple[int, Callable]] = {
    "add": (1, _add),
    "subtract": (1, _subtract),
    "multiply": (1, _multiply),
    "divide": (1, _divide),
    "add_product": (2, _add_product),
    "subtract_twice": (2, _subtract_twice),
    "wage": (2, _wage),
    "share_then_eat": (2, _share_then_eat),
    "ribbon": (2, _ribbon),
    "trip": (2, _trip),
    "pages_left": (3, _pages_left),
    "savings": (3, _savings),
}


def make_word_problem(rng: random.Random, template: str | None = None) -> WordProblem:
    """One problem: from `template` (a name of `TEMPLATES`) or a uniformly drawn one."""
    name = template if template is not None else rng.choice(sorted(TEMPLATES))
    if name not in TEMPLATES:
        raise ValueError(f"template {name!r} is unknown; templates: {', '.join(sorted(TEMPLATES))}.")
    steps_needed, fn = TEMPLATES[name]
    text, answer, steps = fn(rng, _story(rng))
    return WordProblem(text=text, answer=answer, solution=_finish(steps, answer), steps=steps_needed, template=name)


def problem_split(text: str) -> str:
    """``"test"`` for the held-out problems (about 1 in 10), ``"train"`` for the rest. Fixed, seed-independent."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % HELD_OUT_FRACTION_DENOMINATOR == 0 else "train"


def make_word_problem_dataset(
    num_examples: int,
    seed: int = 0,
    split: str = "train",
    with_target: bool = False,
    max_steps: int = 3,
    template: str = MATH_PROMPT_TEMPLATE,
    system_prompt: str | None = None,
    conversational: bool = True,
    one_shot: bool = False,
) -> Dataset:
    """Word problems of one split, deterministic for its arguments.

    Columns: ``prompt`` (chat messages asking for step-by-step reasoning and a ``\\boxed{}`` answer, or text with
    ``conversational=False``), ``solution`` (the answer, e.g. ``"27"``), ``problem`` (the story), ``steps``
    (operations needed, 1..3), ``template``, and with ``with_target=True`` ``completion``: the worked solution, whose
    last box is the answer (LUFFY's off-policy traces). ``max_steps`` leaves out templates with more operations.
    ``one_shot=True`` puts one solved example (``ONE_SHOT_PROBLEM`` / ``ONE_SHOT_SOLUTION``, in the same template) before
    the problem, as a user turn and an assistant turn (chat prompts only).
    """
    if one_shot and not conversational:
        raise ValueError("one_shot=True needs conversational=True (the example is a user / assistant exchange).")
    example = format_prompt(ONE_SHOT_PROBLEM, template) + [{"role": "assistant", "content": ONE_SHOT_SOLUTION}]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    names = sorted(n for n, (ops, _) in TEMPLATES.items() if ops <= max_steps)
    if not names:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    rng = random.Random(f"soup_trl.word_problems/{seed}/{split}/{max_steps}")
    rows: dict[str, list] = {"prompt": [], "solution": [], "problem": [], "steps": [], "template": []}
    if with_target:
        rows["completion"] = []
    while len(rows["prompt"]) < num_examples:
        problem = make_word_problem(rng, rng.choice(names))
        if problem_split(problem.text) != split:
            continue
        prompt = format_prompt(problem.text, template, system_prompt, conversational)
        if one_shot:  # after the system message, if any
            prompt = prompt[:-1] + example + prompt[-1:]
        rows["prompt"].append(prompt)
        rows["solution"].append(str(problem.answer))
        rows["problem"].append(problem.text)
        rows["steps"].append(problem.steps)
        rows["template"].append(problem.template)
        if with_target:
            rows["completion"].append(problem.solution)
    return Dataset.from_dict(rows)

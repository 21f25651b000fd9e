"""Math datasets (`soup_trl.rewards.math_data`): training data reads gold answers as grading does, and GSM8K in its
own format."""

import json

from datasets import Dataset

from soup_trl.rewards import accuracy_reward
from soup_trl.rewards.math_data import load_gsm8k, prepare_math_dataset

from .test_accuracy import boxed


def test_training_data_reads_gold_as_grading_does():
    rows = Dataset.from_list(
        [
            {"problem": "p1", "answer": ["$1$", "$2$"]},
            {"problem": "p2", "answer": ["$\\frac{4}{3}$"]},
            {"problem": "p3", "answer": ["27.0"]},
        ]
    )
    solutions = prepare_math_dataset(rows, solution_field="answer")["solution"]
    assert solutions == ["$1$, $2$", "$\\frac{4}{3}$", "27.0"]  # not "['$1$', '$2$']"
    completions = [boxed("1, 2"), boxed(r"\frac43"), boxed("27")]
    assert accuracy_reward(completions, solutions) == [1.0, 1.0, 1.0]


def test_gsm8k_from_a_local_file_in_its_format(tmp_path):
    rows = [
        {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
        {"question": "A shop sells 1,200 pens.", "answer": "It sells 1200 pens.\n#### 1,200"},
    ]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_gsm8k(path=str(path))
    assert data["solution"] == ["72", "1200"]
    assert data[0]["prompt"][0]["content"].startswith("Natalia sold clips")
    assert accuracy_reward(completions=["So \\boxed{72}.", "\\boxed{1200}"], solution=data["solution"]) == [1.0, 1.0]

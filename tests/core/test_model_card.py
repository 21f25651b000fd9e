"""The model card (written with every checkpoint and on push_to_hub) names SOUP, links the paper and records the run."""

import pytest
from datasets import Dataset

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.core.model_card import describe_local_base_model


def write_card(tiny_model_dir, tmp_path, hub_base_model=None, **settings):
    args = SOUPConfig(
        output_dir=str(tmp_path),
        soup_recipe="recipes/tiny_arithmetic.yaml",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,  # the tiny model's context is 64 tokens
        report_to="none",
        use_cpu=True,
        bf16=False,
        **settings,
    )
    prompts = Dataset.from_dict({"prompt": ["1+1="] * 8})
    trainer = SOUPTrainer(tiny_model_dir, lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=prompts)
    if hub_base_model:
        trainer.model.config._name_or_path = hub_base_model
    trainer.create_model_card(model_name="tiny-soup")
    return (tmp_path / "README.md").read_text()


def test_model_card_records_soup(tiny_model_dir, tmp_path):
    card = write_card(tiny_model_dir, tmp_path, soup_behavior_steps=4, soup_truncation="entropy", soup_entropy_top_k=16)
    assert "https://huggingface.co/papers/2601.21476" in card
    assert "Single-sample Mix-policy" in card  # the paper's title, from the trainer's _paper
    assert card.lower().count("trained with soup") == 1
    assert "Recipe: `recipes/tiny_arithmetic.yaml`" in card
    assert "| `soup_behavior_steps` | `4` |" in card
    assert "| `soup_truncation` | `entropy` |" in card
    assert "| `soup_entropy_top_k` | `16` |" in card
    assert "| `epsilon_high` | `0.28` |" in card
    assert "soup_prefix_ratio" not in card and "soup_prefix_budget" not in card
    assert "soup" in card.split("---")[1]  # tag in the card metadata


@pytest.mark.parametrize(
    ("settings", "listed", "absent"),
    [
        ({"soup_truncation": "ratio"}, ["soup_prefix_ratio"], ["soup_entropy_top_k", "soup_prefix_budget"]),
        ({"soup_truncation": "prefix_budget"}, ["soup_prefix_budget"], ["soup_entropy_top_k", "soup_prefix_ratio"]),
        ({"soup_behavior_steps": 1}, [], ["soup_truncation", "soup_prefix_ratio", "soup_entropy_top_k"]),
        ({"soup_truncation": "drift"}, ["soup_prefix_ratio", "soup_drift_lenience"], ["soup_history", "soup_refresh"]),
        ({"soup_behavior_steps": 1, "soup_behavior_source": "history"},
         ["soup_behavior_source", "soup_history_max_age", "soup_history_pool", "soup_prefix_ratio"], ["soup_refresh"]),
        ({"soup_refresh_drift": 0.01}, ["soup_refresh_drift", "soup_refresh_min_steps"], ["soup_history"]),
        ({"soup_prefix_loss": "minpro"}, ["soup_prefix_loss"], ["soup_history"]),
        ({"soup_behavior_steps": 1, "soup_prefix_loss": "mask"}, [], ["soup_prefix_loss", "out of the loss"]),
    ],
)
def test_card_lists_only_the_settings_that_apply(tiny_model_dir, tmp_path, settings, listed, absent):
    card = write_card(tiny_model_dir, tmp_path, **settings)
    assert all(f"`{name}`" in card for name in listed)
    assert not any(name in card for name in absent)


def test_local_base_model_is_named_by_its_path(tiny_model_dir, tmp_path):
    card = write_card(tiny_model_dir, tmp_path)
    assert "None" not in card.split("## Training procedure")[0]
    assert f"a local model (`{tiny_model_dir}`)" in card
    assert f'pipeline("text-generation", model="{tmp_path}"' in card


def test_hub_base_model_keeps_trls_link(tiny_model_dir, tmp_path):
    card = write_card(tiny_model_dir, tmp_path, hub_base_model="Qwen/Qwen2.5-Math-7B")
    assert "fine-tuned version of [Qwen/Qwen2.5-Math-7B](https://huggingface.co/Qwen/Qwen2.5-Math-7B)" in card
    assert "base_model: Qwen/Qwen2.5-Math-7B" in card


def test_describe_local_base_model_on_text():
    card = ("This model is a fine-tuned version of [None](https://huggingface.co/None).\n"
            'generator = pipeline("text-generation", model="None", device_map="auto")')
    assert describe_local_base_model(card, "/models/base", "outputs/run") == (
        "This model is a fine-tuned version of a local model (`/models/base`).\n"
        'generator = pipeline("text-generation", model="outputs/run", device_map="auto")'
    )

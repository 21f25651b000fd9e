"""Model-card metadata every trainer of the package shares: the method's paper, and a local base model named by path.

One convention for paper metadata: a method module defines `PAPER = Paper(...)` and its trainer sets
`paper = PAPER`; `MethodTrainer` hands it to TRL's model card as `_paper`.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_BASE_MODEL = "This model is a fine-tuned version of [None](https://huggingface.co/None)"


@dataclass(frozen=True)
class Paper:
    """A method's paper, as TRL's model card cites it."""

    title: str
    arxiv_id: str
    citation: str  # BibTeX

    def as_trl(self) -> dict[str, str]:
        """The `_paper` dict of TRL's trainers (`title`, `id`, `citation`)."""
        return {"title": self.title, "id": self.arxiv_id, "citation": self.citation}


def describe_local_base_model(card: str, base_model_path: str | None, model_location: str) -> str:
    """Fix the base card of a model trained from a local directory.

    TRL's template links the base model on the Hub and loads the result with `pipeline(model=<hub id>)`; with a local
    base model and no Hub id both read "None". Name the local path instead, and load from `model_location`.
    """
    if base_model_path:
        card = card.replace(LOCAL_BASE_MODEL, f"This model is a fine-tuned version of a local model (`{base_model_path}`)")
    return card.replace('model="None"', f'model="{model_location}"')

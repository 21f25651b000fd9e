"""M2PO's paper, for the model card of a model it trained."""

from __future__ import annotations

import textwrap

from ..core.model_card import Paper

PAPER = Paper(
    title="Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on LLMs?",
    arxiv_id="2510.01161",
    citation=textwrap.dedent(
        """\
        @article{zheng2025prosperity,
            title        = {{Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on LLMs?}},
            author       = {Haizhong Zheng and Jiawei Zhao and Beidi Chen},
            year         = 2025,
            eprint       = {arXiv:2510.01161},
        }"""
    ),
)

"""LUFFY's paper, for the model card of a model it trained."""

from __future__ import annotations

import textwrap

from ..core.model_card import Paper

PAPER = Paper(
    title="Learning to Reason under Off-Policy Guidance",
    arxiv_id="2504.14945",
    citation=textwrap.dedent(
        """\
        @article{yan2025luffy,
            title        = {{Learning to Reason under Off-Policy Guidance}},
            author       = {Jianhao Yan and Yafu Li and Zican Hu and Zhi Wang and Ganqu Cui and Xiaoye Qu and Yu Cheng and Yue Zhang},
            year         = 2025,
            eprint       = {arXiv:2504.14945},
        }"""
    ),
)

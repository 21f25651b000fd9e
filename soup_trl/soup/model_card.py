"""The SOUP section of a trained model's card: the method, the paper and the soup_* settings of the run."""

from __future__ import annotations

import textwrap

from ..core.model_card import Paper

PAPER = Paper(
    title="SOUP: Token-level Single-sample Mix-policy Reinforcement Learning for Large Language Models",
    arxiv_id="2601.21476",
    citation=textwrap.dedent(
        """\
        @article{yang2026soup,
            title        = {{SOUP: Token-level Single-sample Mix-policy Reinforcement Learning for Large Language Models}},
            author       = {Lei Yang and Wei Bi and Chenxi Sun and Renren Jin and Deyi Xiong},
            year         = 2026,
            eprint       = {arXiv:2601.21476},
        }"""
    ),
)
DAPO_SETTINGS = ("loss_type", "epsilon", "epsilon_high", "beta", "num_generations", "max_completion_length",
                 "learning_rate", "temperature")
# The truncation field each built-in strategy reads; a registered strategy's own fields are not known here.
STRATEGY_SETTINGS = {"ratio": ("soup_prefix_ratio",), "entropy": ("soup_entropy_top_k",),
                     "prefix_budget": ("soup_prefix_budget",), "drift": ("soup_prefix_ratio", "soup_drift_lenience")}
HISTORY_SETTINGS = ("soup_behavior_source", "soup_history_max_epochs", "soup_history_max_age", "soup_history_pool")
REFRESH_SETTINGS = ("soup_refresh_drift", "soup_refresh_min_steps")
# What the loss did with the prefix tokens, by `soup_prefix_loss` other than the paper's: the card's sentence
PREFIX_LOSS_TEXT = {
    "mask": "Instead of token-level ratios on the prefix tokens, the loss left them out: they were context only, and "
    "only the continuations were trained (`soup_prefix_loss='mask'`, PrefixRL's choice).",
    "minpro": "On top of the token-level ratios, every token's loss was weighed by the smallest token ratio before it "
    "in its row (`soup_prefix_loss='minpro'`, MinPRO).",
}


def card_settings(args) -> tuple[str, ...]:
    """The SOUP and DAPO fields that shaped this run: with T = 1 and fresh samples no truncation field applies."""
    history = getattr(args, "soup_behavior_source", "fresh") == "history"
    if args.soup_behavior_steps == 1 and not history:
        return ("soup_behavior_steps", *DAPO_SETTINGS)
    strategy = STRATEGY_SETTINGS.get(args.soup_truncation, ())
    extra = (HISTORY_SETTINGS if history else ()) + (
        REFRESH_SETTINGS if getattr(args, "soup_refresh_drift", None) is not None else ()
    )
    return ("soup_behavior_steps", "soup_truncation", *strategy, "soup_prefix_loss", *extra, *DAPO_SETTINGS)


def soup_card_section(args) -> str:
    """Markdown with the run's SOUP settings (the base card already names SOUP and links the paper)."""
    if getattr(args, "soup_behavior_source", "fresh") == "history":
        how = ("Prompts trained on before took their off-policy prefixes from the rollouts of their last training steps "
               f"(`{args.soup_truncation}` truncation), weighted against the policies that sampled them; the others were "
               f"sampled every {args.soup_behavior_steps} step(s) as in SOUP.")
    elif args.soup_behavior_steps == 1:
        how = ("`soup_behavior_steps=1`: every step trains on fresh samples of the current policy, which is on-policy "
               "DAPO (TRL's GRPOTrainer unchanged).")
    else:
        how = (f"Every {args.soup_behavior_steps} optimizer steps the policy sampled completions for the whole cycle; "
               f"later steps kept a prefix of each sample (`{args.soup_truncation}` truncation) as off-policy context "
               "and continued it with the current policy, with token-level importance ratios.")
    prefix_loss = getattr(args, "soup_prefix_loss", "token_ratio")
    if prefix_loss != "token_ratio" and "soup_prefix_loss" in card_settings(args):
        how += " " + PREFIX_LOSS_TEXT[prefix_loss]
    lines = ["", "## SOUP settings", "", how, ""]
    if getattr(args, "recipe", None):
        lines += [f"Recipe: `{args.recipe}`", ""]
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| `{name}` | `{getattr(args, name)}` |" for name in card_settings(args)]
    return "\n".join(lines) + "\n"

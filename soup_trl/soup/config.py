"""SOUPConfig: GRPOConfig plus the SOUP fields and the paper's DAPO defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import MethodConfig
from .prefix_loss import get_prefix_loss
from .truncation import LEGACY_PARAMETER, get_truncation_strategy

# The settings of the built-in truncation strategies, and a strategy that reads each (for start-up warnings)
READ_BY = {
    "soup_prefix_ratio": "ratio",
    "soup_entropy_top_k": "entropy",
    "soup_prefix_budget": "prefix_budget",
    "soup_drift_lenience": "drift",
}
TRUNCATION_FIELDS = tuple(READ_BY)


@dataclass
class SOUPConfig(MethodConfig):
    r"""
    Configuration for [`SOUPTrainer`]: every field of `GRPOConfig`, plus the `soup_*` fields below.

    Every `soup_behavior_steps` (T) optimizer steps the current policy (the cycle's behavior policy) samples full
    completions for T steps' worth of prompts. Step 1 trains on them exactly as GRPO would. For steps 2..T each
    completion is cut to a prefix by `soup_truncation`, the current policy writes the continuation, the spliced
    sequence is rewarded, and the loss uses token-level importance ratios: prefix tokens against the behavior
    policy, continuation tokens against the policy that wrote them.

    Defaults follow the paper's DAPO setting: `loss_type="dapo"`, `epsilon=0.2` and `beta=0` are GRPOConfig's own
    defaults; `epsilon_high` is re-defaulted to the paper's 0.28 (GRPOConfig's default is `epsilon`). The fields every
    method shares (`console`, `compact_generation`, `recipe`, `dynamic_sampling`) are `MethodConfig`'s.
    T is implemented with `steps_per_generation = T * gradient_accumulation_steps`, so leave
    `steps_per_generation` and `generation_batch_size` unset. With T = 1 they are TRL's own:
    `steps_per_generation = k * gradient_accumulation_steps` is DAPO with mini-batch updates, one rollout batch for k
    optimizer steps with ratios against the policy that sampled it (the paper's control in Section 5.2; the
    `*_dapo_minibatch` recipes).
    """

    soup_behavior_steps: int = field(
        default=8,
        metadata={
            "help": "T: number of optimizer steps one behavior sampling serves. 1 means plain on-policy DAPO "
            "(identical to GRPOTrainer)."
        },
    )
    soup_truncation: str = field(
        default="ratio",
        metadata={
            "help": "Where behavior completions are cut: 'ratio' keeps the first round(len * soup_prefix_ratio) "
            "tokens; 'entropy' cuts at a position drawn from the soup_entropy_top_k highest-entropy positions; "
            "'prefix_budget' samples only soup_prefix_budget behavior tokens for steps 2..T and keeps them all; "
            "'drift' is the ratio cut shortened, when a step is scored, to the tokens the current policy still accepts "
            "(soup_drift_lenience). "
            "Other strategies can be registered with soup_trl.register_truncation and chosen by name, or as "
            "'my_module:name' (the module is imported first, so a recipe or the command line can name it)."
        },
    )
    soup_prefix_ratio: float = field(
        default=0.5,
        metadata={"help": "Fraction of a behavior completion kept as off-policy prefix ('ratio' truncation), in [0, 1)."},
    )
    soup_entropy_top_k: int = field(
        default=32,
        metadata={"help": "k for 'entropy' truncation: the cut is drawn uniformly among the k highest-entropy positions."},
    )

    soup_prefix_budget: float = field(
        default=0.25,
        metadata={
            "help": "Behavior token budget for 'prefix_budget' truncation: the behavior policy samples only this many "
            "tokens for steps 2..T. Below 1: a fraction of max_completion_length; from 1 on: a number of tokens."
        },
    )
    soup_drift_lenience: float = field(
        default=0.5,
        metadata={
            "help": "For 'drift' truncation, in (0, 1]: a behavior token stays in the prefix while the current policy "
            "accepts it, with probability min(1, p_current / (lenience * p_behavior)); 1 is speculative decoding's "
            "test, lower is more lenient. The prefix ends at the first rejection, at most soup_prefix_ratio of the "
            "completion."
        },
    )
    soup_refresh_drift: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive refresh (None: off, a fixed T). When a step's mean |log ratio| between the current and "
            "the behavior policy on prefix tokens exceeds this value, the rest of the cycle gets new behavior samples "
            "from the current policy (their first step trains on them whole, as a cycle's first step does): a behavior "
            "sample serves between soup_refresh_min_steps and soup_behavior_steps steps. Each refresh is logged "
            "(soup/refresh, and its reason in the log)."
        },
    )
    soup_refresh_min_steps: int = field(
        default=2,
        metadata={"help": "With soup_refresh_drift: the fewest steps a behavior sample serves before it is refreshed."},
    )
    soup_prefix_loss: str = field(
        default="token_ratio",
        metadata={
            "help": "What the loss does with the off-policy prefix tokens. 'token_ratio' (the paper): they are trained "
            "with token-level ratios against the behavior policy. 'mask' (PrefixRL, Prefix Sampling): they stay in the "
            "context but leave the loss and its DAPO token count; only the continuation trains. 'minpro' (MinPRO, "
            "arXiv 2601.22718): every token's loss term is weighed by the smallest token ratio among the tokens before "
            "it (detached; 1 for the first), so a continuation counts as much as the current policy still accepts the "
            "prefix before it. See docs/method.md, 'Prefix loss'."
        },
    )
    soup_log_cut_tokens: bool = field(
        default=True,
        metadata={
            "help": "With soup_behavior_steps > 1, append the tokens at the cycle's cuts (each spliced row's first "
            "resampled behavior token) to OUTPUT_DIR/soup_cut_tokens.jsonl, one line per cycle; `soup-trl plot` "
            "draws their frequencies (the paper's Figure 3)."
        },
    )

    soup_behavior_source: str = field(
        default="fresh",
        metadata={
            "help": "Where behavior completions come from. 'fresh': the current policy samples them at the start of "
            "every cycle (the paper). 'history': a prompt trained on before (a complete group, young enough: "
            "soup_history_max_epochs, soup_history_max_age) takes its prefixes from the rollouts of its last training "
            "step, "
            "stored with the log-probs that step's loss used; only prompts without usable history are sampled, and "
            "every step of the cycle, the first included, cuts and continues the stored rollouts. Works with "
            "soup_behavior_steps=1 too (see docs/history.md)."
        },
    )
    soup_history_max_epochs: float | None = field(
        default=1.0,
        metadata={
            "help": "With soup_behavior_source='history': a prompt's stored rollouts are used only while their oldest "
            "token was sampled at most this many epochs of the training data ago (in optimizer steps: this times the "
            "steps of one epoch); older groups are sampled afresh and leave the store (None: no limit). A prompt "
            "comes back once an epoch, at a random place in it, so 1.0 serves about half of the returns and 2.0 all "
            "of them. A prefix cut from a spliced rollout keeps its old tokens, so without a limit they never refresh."
        },
    )
    soup_history_max_age: int | None = field(
        default=None,
        metadata={
            "help": "With soup_behavior_source='history': the same limit in optimizer steps (None: none); with both "
            "set, the tighter one applies."
        },
    )
    soup_history_dir: str | None = field(
        default=None,
        metadata={
            "help": "With soup_behavior_source='history': a folder on each machine's local disk (or /dev/shm) where "
            "the store keeps its tokens, one copy per machine that every training process of it maps (None: a "
            "folder in the system's temporary directory, removed when the run ends)."
        },
    )

    soup_history_pool: int = field(
        default=1,
        metadata={
            "help": "With soup_behavior_source='history': rollouts kept per slot of a prompt's group, from its last "
            "visits (earlier policies). Above 1 each served row draws one of them (those young enough), so a group "
            "mixes prefixes of several past policies, every token weighted against "
            "the policy that sampled it. Memory grows with it."
        },
    )

    # DAPO defaults used by the paper
    epsilon_high: float | None = field(
        default=0.28,
        metadata={"help": "Upper clipping bound (clip-higher). The paper uses 0.28."},
    )

    def _field_errors(self) -> list[str]:
        errors = []
        if not isinstance(self.soup_behavior_steps, int) or self.soup_behavior_steps < 1:
            errors.append(f"soup_behavior_steps must be an integer >= 1, got {self.soup_behavior_steps!r}.")
        try:
            errors += get_truncation_strategy(self.soup_truncation).setting_errors(self)
        except ValueError as err:
            errors.append(str(err))
        try:
            get_prefix_loss(self.soup_prefix_loss)
        except ValueError as err:
            errors.append(str(err))
        if not 0.0 <= self.soup_prefix_ratio < 1.0:
            errors.append(f"soup_prefix_ratio must be in [0, 1), got {self.soup_prefix_ratio!r}.")
        if not self.soup_prefix_budget > 0 or (self.soup_prefix_budget >= 1 and self.soup_prefix_budget % 1):
            errors.append(
                f"soup_prefix_budget must be a fraction in (0, 1) or a whole number of tokens >= 1, got "
                f"{self.soup_prefix_budget!r}."
            )
        if self.soup_refresh_drift is not None and not self.soup_refresh_drift >= 0:
            errors.append(f"soup_refresh_drift must be None (off) or >= 0, got {self.soup_refresh_drift!r}.")
        if self.soup_refresh_drift is not None and self.soup_behavior_source == "history":
            errors.append(
                "soup_refresh_drift refreshes fresh behavior samples; with soup_behavior_source='history' the rows "
                "served from the store are bounded by soup_history_max_age instead. Set one of the two."
            )
        if self.soup_refresh_drift is not None and isinstance(self.soup_behavior_steps, int) and self.soup_behavior_steps < 2:
            errors.append(
                "soup_refresh_drift refreshes behavior samples within a cycle: it needs soup_behavior_steps >= 2 (the "
                f"most steps a sample may serve), got soup_behavior_steps={self.soup_behavior_steps!r}."
            )
        if not isinstance(self.soup_refresh_min_steps, int) or self.soup_refresh_min_steps < 1:
            errors.append(f"soup_refresh_min_steps must be an integer >= 1, got {self.soup_refresh_min_steps!r}.")
        if not 0.0 < self.soup_drift_lenience <= 1.0:
            errors.append(f"soup_drift_lenience must be in (0, 1], got {self.soup_drift_lenience!r}.")
        if not isinstance(self.soup_entropy_top_k, int) or self.soup_entropy_top_k < 1:
            errors.append(f"soup_entropy_top_k must be an integer >= 1, got {self.soup_entropy_top_k!r}.")
        if self.soup_behavior_source not in ("fresh", "history"):
            errors.append(f"soup_behavior_source must be 'fresh' or 'history', got {self.soup_behavior_source!r}.")
        epochs = self.soup_history_max_epochs
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int | float) or not epochs > 0):
            errors.append(f"soup_history_max_epochs must be a number > 0 or None (no limit), got {epochs!r}.")
        if self.soup_history_max_age is not None and (
            not isinstance(self.soup_history_max_age, int) or self.soup_history_max_age < 0
        ):
            errors.append(
                f"soup_history_max_age must be an integer >= 0 or None (no limit), got {self.soup_history_max_age!r}."
            )
        if not isinstance(self.soup_history_pool, int) or self.soup_history_pool < 1:
            errors.append(f"soup_history_pool must be an integer >= 1, got {self.soup_history_pool!r}.")
        return errors + super()._field_errors()

    def _inert_fields(self) -> list[str]:
        messages = super()._inert_fields()
        set_fields = [name for name in TRUNCATION_FIELDS if self._is_set(name)]
        if not self.soup_uses_cycles:
            set_fields += [
                name for name in ("soup_truncation", "soup_log_cut_tokens", "soup_prefix_loss") if self._is_set(name)
            ]
            messages += [
                f"{name} is set but does nothing with soup_behavior_steps=1 and soup_behavior_source='fresh' "
                "(on-policy DAPO: nothing is cut). Set soup_behavior_steps > 1 or soup_behavior_source='history'."
                for name in set_fields
            ]
        else:
            strategy = get_truncation_strategy(self.soup_truncation)
            if LEGACY_PARAMETER not in strategy.parameters:  # a first-release strategy may read any field
                messages += [
                    f"{name} is set but soup_truncation={self.soup_truncation!r} does not read it (it reads "
                    f"{', '.join(strategy.parameters) or 'no setting'}); choose a strategy that does, e.g. "
                    f"soup_truncation={READ_BY[name]!r}."
                    for name in set_fields
                    if name.removeprefix("soup_") not in strategy.parameters
                ]
        if self.soup_behavior_source != "history":
            messages += [
                f"{name} is set but does nothing without soup_behavior_source='history'."
                for name in ("soup_history_max_age", "soup_history_max_epochs", "soup_history_pool", "soup_history_dir")
                if self._is_set(name)
            ]
        if self.soup_refresh_drift is None and self._is_set("soup_refresh_min_steps"):
            messages.append("soup_refresh_min_steps is set but does nothing without soup_refresh_drift (adaptive refresh).")
        return messages

    @property
    def soup_uses_cycles(self) -> bool:
        """Whether training goes through SOUP's cycle schedule (T > 1, or history-seeded prefixes at any T)."""
        return self.soup_behavior_steps > 1 or self.soup_behavior_source == "history"

    def _before_grpo_post_init(self) -> None:
        if self.soup_uses_cycles:
            self._check_cycle_compatible()
            # One dataloader batch holds the prompts of a whole cycle; GRPOTrainer derives generation_batch_size.
            self.steps_per_generation = self.soup_behavior_steps * self.gradient_accumulation_steps

    def _derived_errors(self) -> list[str]:
        if self.soup_uses_cycles and self.max_completion_length < 2:
            return [
                f"max_completion_length must be >= 2 with soup_behavior_steps > 1 or soup_behavior_source='history' "
                f"(a prefix must leave room for a continuation), got {self.max_completion_length}."
            ]
        return []

    def _check_cycle_compatible(self):
        t = self.soup_behavior_steps
        setting = f"soup_behavior_steps={t}" if t > 1 else "soup_behavior_source='history'"
        cycle_steps = t * self.gradient_accumulation_steps
        if self.steps_per_generation == cycle_steps:
            self.generation_batch_size = None  # derived again by GRPOConfig (a config being re-initialised)
        elif self.steps_per_generation is not None or self.generation_batch_size is not None:
            raise ValueError(
                f"steps_per_generation / generation_batch_size are set by SOUP (steps_per_generation = "
                f"soup_behavior_steps * gradient_accumulation_steps). Leave them unset with {setting}; "
                "use per_device_train_batch_size and gradient_accumulation_steps to size a step."
            )
        if self.num_iterations != 1:
            raise ValueError(
                f"num_iterations={self.num_iterations} is not supported with {setting}: SOUP trains "
                "once on each spliced batch. Set num_iterations=1, or soup_behavior_steps=1 and "
                "soup_behavior_source='fresh' for plain GRPO."
            )
        error = self.group_size_error(
            self.per_device_train_batch_size * self.gradient_accumulation_steps,
            "per_device_train_batch_size * gradient_accumulation_steps",
            f"every process scores whole groups at every step with {setting}",
        )
        if error:
            raise ValueError(error)
        if self.use_transformers_continuous_batching:
            raise ValueError(
                f"use_transformers_continuous_batching is not supported with {setting}: continuations "
                "need a per-row token budget. Use the default transformers generate path or vLLM."
            )

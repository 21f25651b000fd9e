"""The hypothesis profiles of the property tests, in one place for the whole suite (docs/reliability.md).

The quick suite runs a fixed, derandomized set of examples (`EXAMPLES` per property). For a longer, randomized fuzz
of every property test (hypothesis marks them `hypothesis`):
`SOUP_HYPOTHESIS_PROFILE=fuzz python -m pytest -m hypothesis` (20 times as many examples).

A property test takes its example count from here: `@settings(max_examples=examples("splice"))`. Importing this
module loads the profile, before the decorators of the importing module run.
"""

import os

from hypothesis import HealthCheck, settings

#: Examples per property in the quick suite (about 15 s for all of them on one core).
EXAMPLES = {"truncation": 100, "entropy": 100, "splice": 150, "step_major_order": 200, "m2po": 100, "pass_at_k": 200}
settings.register_profile(
    "quick",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("SOUP_HYPOTHESIS_PROFILE", "quick")
settings.load_profile(PROFILE)


def examples(name: str) -> int:
    return EXAMPLES[name] * (20 if PROFILE == "fuzz" else 1)

"""Train with SOUP (or its on-policy DAPO twin, soup_behavior_steps=1) from a checkout.

    accelerate launch recipes/soup_dapo.py                                   # offline CPU demo (tiny_arithmetic.yaml)
    accelerate launch recipes/soup_dapo.py --config recipes/qwen2.5_math_7b_soup_ratio.yaml

The script itself is `soup_trl.scripts.train`; this file only launches it.
"""

from soup_trl.scripts.train import main, parse_args

if __name__ == "__main__":
    main(*parse_args())

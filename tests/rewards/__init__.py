"""Tests of soup_trl/rewards/: test_<module>.py for soup_trl/rewards/<module>.py."""

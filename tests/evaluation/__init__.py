"""Tests of soup_trl/evaluation/: test_<module>.py for soup_trl/evaluation/<module>.py."""

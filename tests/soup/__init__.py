"""Tests of soup_trl/soup/: test_<module>.py for soup_trl/soup/<module>.py."""

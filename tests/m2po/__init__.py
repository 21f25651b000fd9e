"""Tests of soup_trl/m2po/: test_<module>.py for soup_trl/m2po/<module>.py."""

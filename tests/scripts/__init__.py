"""Tests of soup_trl/scripts/: test_<module>.py for soup_trl/scripts/<module>.py."""

"""Tests of soup_trl/toy/: test_<module>.py for soup_trl/toy/<module>.py."""

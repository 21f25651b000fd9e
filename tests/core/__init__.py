"""Tests of soup_trl/core/: test_<module>.py for soup_trl/core/<module>.py."""

"""Tests of soup_trl/luffy/: test_<module>.py for soup_trl/luffy/<module>.py."""

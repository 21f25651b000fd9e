"""The test suite: tests/<room>/test_<module>.py mirrors soup_trl/<room>/<module>.py; tests/integration/ holds the runs
across modules (docs/testing.md). A package, so that test files of the same name in different folders do not clash."""

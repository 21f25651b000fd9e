"""Tests of benchmarks/: test_<script>.py for benchmarks/<script>.py and the modules of benchmarks/comparison/ it runs.
The scripts are imported as they run, with benchmarks/ on sys.path (conftest.py)."""

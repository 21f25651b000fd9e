"""The benchmarks are scripts, run as `python benchmarks/X.py`: Python puts the script's folder, benchmarks/, first on
sys.path, and that is how they import each other and the comparison's modules (`import comparison.reports`); they are
not a package of the project. The tests here import them the same way, with benchmarks/ on sys.path, put there once
for the folder before its test modules are imported.
"""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

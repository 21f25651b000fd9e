"""The README's offline snippet, copied verbatim into a file, trains on CPU with a non-zero reward."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent.parent / "README.md"
MARKER = "<!-- offline-snippet -->"


def offline_snippet() -> str:
    text = README.read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    match = re.match(r"\s*```python\n(.*?)```", after, flags=re.S)
    assert match, f"no python block after {MARKER}"
    return match.group(1)


def test_snippet_is_marked_and_complete():
    code = offline_snippet()
    compile(code, "README snippet", "exec")
    assert "use_cpu=True" in code and "bf16=False" in code
    assert "trainer.train()" in code


@pytest.mark.slow
def test_offline_snippet_trains_with_a_nonzero_reward(tmp_path, fresh_tiny_cache):
    script = tmp_path / "snippet.py"
    script.write_text(offline_snippet())
    env = {**os.environ, "SOUP_TRL_CACHE": str(fresh_tiny_cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1200)
    output = (result.stdout + result.stderr).replace("\r", "\n")
    assert result.returncode == 0, output[-3000:]
    rewards = [float(x) for x in re.findall(r"^step \d+/40 \| .*?reward ([0-9.e-]+)", output, flags=re.M)]
    assert len(rewards) == 4, output[-3000:]
    assert sum(rewards) > 0
    lines = [line for line in output.splitlines() if line.startswith("step ")]
    assert all(len(line) < 400 for line in lines)
    assert not re.search(r"\w+Warning:", output), output[-3000:]  # no Python warning on the way

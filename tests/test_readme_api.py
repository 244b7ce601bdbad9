"""The README's Python API example runs as it stands (its first ``python`` code block)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_api_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python code block in the Python API section"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path):
    # From a folder that looks like the repository root (its specs/), so runs/ lands in tmp_path.
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    script = tmp_path / "example.py"
    script.write_text(readme_api_example())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "torch.Size([4, 10])"
    assert re.fullmatch(r"validation accuracy 0\.\d{3}, test accuracy [01]\.\d{3}", lines[-2])
    run_dir = tmp_path / "runs" / "api-example"
    for name in ("spec.toml", "genotype.json", "summary.json", "eval/results.json"):
        assert (run_dir / name).is_file(), name

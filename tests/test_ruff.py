"""The tree is clean under ruff's rule set (ruff.toml: pyflakes, pycodestyle, isort, bugbear, pyupgrade) and
formatted; skipped where ruff is not installed (pip install ruff)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install ruff)")
@pytest.mark.parametrize("command", [["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]])
def test_ruff_clean(command):
    proc = subprocess.run([RUFF, *command], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

"""CI runs exactly what the README tells a new user to run."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The lines of the README's first code block: the commands a new user copies."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no code block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "pytest" not in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = readme_commands()[1]
    ci = ROOT / ".ci" / "run"
    assert test_command in [line.strip() for line in ci.read_text(encoding="utf-8").splitlines()]
    assert os.access(ci, os.X_OK), ".ci/run must be executable"

"""The README's first two commands are the contract with new users: keep them true and in CI."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)[:2]


def test_first_command_runs_the_default_fit():
    assert _commands()[0].strip().endswith("python -m lit_dpo.fit")


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _commands()[1].strip()
    assert "python -m pytest" in test_command and "torch==2.13.0" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()

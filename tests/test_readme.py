"""The README cannot rot: its commands are CI's, and its example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    install, test = blocks("sh")[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.strip() in ci.splitlines()
    assert "pytest" in test and "ruff check" in test and "mypy" in test
    assert "runtime demo" in install


def test_the_quickstart_runs(tmp_path: Path) -> None:
    # A fresh venv is CI's job; here the README's program runs in this interpreter.
    journal = tmp_path / "quickstart.db"
    for run in (1, 2):
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(journal)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert f"had answered {3 * (run - 1)} question(s)" in out
        assert "confirmed in the replica" in out
        assert "error -> handler of ResearchAgent/ada raised ValueError: an empty question" in out


def test_the_demo_runs(tmp_path: Path) -> None:
    # README command one, in this interpreter: serve, crash, recover, inspect, replay.
    out = subprocess.run(
        [sys.executable, "-m", "runtime", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "SIGKILLed" in out and "answer recorded after recovery" in out
    # The answer arrived token by token through the stream endpoint, across the crash, the
    # attempt that started over marked, every token once.
    assert "llm, attempt 2 starts over: Agents survive crashes: a summary of 3 sources." in out
    assert "and 1 marker(s) that an attempt started over" in out
    assert out.count("(journaled once: never called again)") == 3
    assert "search tool calls for 'How do agents survive crashes?': 1" in out
    assert "no divergence" in out


def test_the_readme_example_runs(tmp_path: Path) -> None:
    (python,) = blocks("python")
    out = subprocess.run(
        [sys.executable, "-c", python],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out.strip() == "12"

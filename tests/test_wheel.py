"""An installed Stele works without the source tree: the wheel carries everything the demo needs.

Built as a user's ``pip install`` would build it, installed into a fresh
virtual environment outside the checkout, and run in an empty directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_runs_from_an_installed_wheel_in_an_empty_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = dist.glob("stele-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "runtime/interfaces/demo_agents.py" in names
    console = "runtime/interfaces/console/"
    shipped = {name.removeprefix(console) for name in names if name.startswith(console)}
    for part in ("static/console.js", "static/console.css", "templates/base.html", "templates/actor.html"):
        assert part in shipped, sorted(shipped)
    assert {p.name for p in (ROOT / console / "templates").glob("*.html")} <= {
        name.removeprefix("templates/") for name in shipped
    }
    assert all(f"{package}/py.typed" in names for package in ("actors", "errors", "runtime", "storage"))
    assert not [name for name in names if name.startswith(("tests/", "examples/", "benchmarks/"))]

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=900)

    empty = tmp_path / "empty"
    empty.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    demo = subprocess.run(
        [str(python), "-m", "runtime", "demo"],
        check=False,
        cwd=empty,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "no divergence" in demo.stdout, demo.stdout
    calls = re.findall(r"search tool calls for '[^']*': (\d+)", demo.stdout)
    assert calls == ["1", "1", "1"], demo.stdout  # the crash re-ran no journaled tool call
    # Where the journal went: the empty directory, not the source tree.
    assert (empty / "stele-demo.db").exists()
    # The console's templates and static files load from the installed package.
    ui = subprocess.Popen(
        [str(python), "-m", "runtime", "ui", "--db", "stele-demo.db", "--http", "127.0.0.1:0"],
        cwd=empty,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        assert line.startswith("listening on "), line
        base = line.split()[-1]
        for path, expected in (("/ui/", "ResearchAgent/ada"), ("/ui/static/console.js", "textContent")):
            with urllib.request.urlopen(base + path, timeout=30) as answer:
                assert expected in answer.read().decode()
    finally:
        ui.terminate()
        ui.communicate(timeout=60)

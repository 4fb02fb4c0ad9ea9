"""docs/own-data.md word for word: every command of the page runs as written (from a folder that
holds the repository's recipes/), and the data steps print exactly what the page shows.

Slow (a 400-iteration training run, about 4 minutes on 2 CPU cores): `pytest -m slow`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "own-data.md"
EXACT = ("retina data make-shapes", "retina data convert", "retina data split", "retina data check")


def _steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, the lines the page shows after it) of every `$ ` line in its console blocks."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line.rstrip())
    return steps


def test_the_page_has_the_whole_walk():
    commands = [command for command, _ in _steps(PAGE.read_text())]
    for start in ("retina data make-shapes", "retina data convert", "retina data split", "retina train",
                  "retina eval", "retina report", "retina predict"):
        assert any(c.startswith(start) for c in commands), start
    assert "```yaml\n# Your data" in PAGE.read_text()


@pytest.mark.slow
def test_every_command_of_the_page_runs_as_written(tmp_path):
    text = PAGE.read_text()
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    recipe = re.search(r"```yaml\n(# Your data.*?)```", text, flags=re.S).group(1)
    (tmp_path / "my-recipe.yaml").write_text(recipe)
    env = {**os.environ, "COLUMNS": "100", "RETINA_CACHE": str(tmp_path / "cache"), "TERM": "dumb"}
    for command, shown in _steps(text):
        args = shlex.split(command)
        assert args[0] == "retina"
        done = subprocess.run(
            [sys.executable, "-m", "retinacli", *args[1:]], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=1200,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        printed = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
        if command.startswith(EXACT):
            assert printed == shown, command
    run = tmp_path / "output" / "my-run"
    for name in ("model_best.pth", "model_final.pth", "report.html", "eval_test/diagnostics.json",
                 "eval_model_best/confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert len(list((tmp_path / "my-predictions").glob("*.png"))) == 4

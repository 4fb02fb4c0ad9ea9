"""Documentation stays true: every recipe key and every command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from retinacli.cli import app
from retinacli.recipe.reference import BEGIN, END, iter_keys, render_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _command_paths(command, prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for name, sub in getattr(command, "commands", {}).items():
        path = f"{prefix}{name}"
        found.append((path, sub))
        found.extend(_command_paths(sub, f"{path} "))
    return found


def test_every_recipe_key_is_documented_and_the_table_is_current():
    text = (DOCS / "recipe.md").read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == render_table(), "run: python -m retinacli.recipe.reference"
    for key in iter_keys():
        assert f"`{key.path}`" in text, key.path
        assert key.description, f"{key.path} has no description in the schema"


def test_every_command_has_help_and_a_docs_section():
    text = (DOCS / "cli.md").read_text()
    commands = _command_paths(typer.main.get_command(app))
    assert commands, "the CLI has no commands"
    for path, command in commands:
        assert command.help or command.short_help, f"retina {path} has no help text"
        assert re.search(rf"^## `retina {re.escape(path)}`", text, flags=re.M), f"retina {path} is undocumented"


def test_every_picture_the_docs_show_is_a_committed_png():
    from PIL import Image

    shown = []
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            shown.append(DOCS / target)
    assert shown, "the docs show no picture"
    for path in shown:
        assert path.is_file(), path
        with Image.open(path) as picture:
            picture.load()
            assert picture.format == "PNG" and min(picture.size) >= 200, path
        assert path.stat().st_size < 200_000, f"{path} is too large for the repository"

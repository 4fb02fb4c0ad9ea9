"""The `retina` command as a user runs it: help, version, inspect-config and lr-plot."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from retinacli import __version__
from retinacli.recipe import Recipe, load_recipe
from tests.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
SHAPES = str(REPO / "recipes" / "shapes.yaml")


def test_help_lists_every_command_with_a_description(capsys, monkeypatch):
    result = run_cli(["--help"], capsys, monkeypatch)
    assert result.exit_code == 0
    for command in ("inspect-config", "lr-plot"):
        assert command in result.stdout


def test_short_help_works_on_commands(capsys, monkeypatch):
    result = run_cli(["inspect-config", "-h"], capsys, monkeypatch)
    assert result.exit_code == 0 and "--diff" in result.stdout


def test_version(capsys, monkeypatch):
    result = run_cli(["--version"], capsys, monkeypatch)
    assert result.exit_code == 0 and __version__ in result.stdout


def test_missing_argument_is_a_usage_error(capsys, monkeypatch):
    result = run_cli(["inspect-config"], capsys, monkeypatch)
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_missing_recipe_file_names_it(capsys, monkeypatch):
    result = run_cli(["inspect-config", "nope.yaml"], capsys, monkeypatch)
    assert result.exit_code == 2 and "nope.yaml: file not found" in result.stderr


def test_inspect_config_output_loads_back_to_the_same_recipe(tmp_path, capsys, monkeypatch):
    result = run_cli(["inspect-config", SHAPES, "--set", "solver.base_lr=0.005"], capsys, monkeypatch)
    assert result.exit_code == 0
    path = tmp_path / "resolved.yaml"
    path.write_text(result.stdout)
    assert load_recipe(path) == load_recipe(SHAPES, ["solver.base_lr=0.005"])


def test_inspect_config_json_and_diff(capsys, monkeypatch):
    result = run_cli(["inspect-config", SHAPES, "--json"], capsys, monkeypatch)
    assert Recipe.model_validate(json.loads(result.stdout)) == load_recipe(SHAPES)
    result = run_cli(["inspect-config", SHAPES, "--diff"], capsys, monkeypatch)
    diff = yaml.safe_load(result.stdout)
    assert diff["model"]["head"] == {"num_classes": 3, "num_convs": 2}
    assert "pixel_mean" not in diff["model"]


def test_lr_plot_json_gives_every_iteration(capsys, monkeypatch):
    args = ["lr-plot", SHAPES, "--json", "--set", "solver.scheduler=WarmupMultiStepLR",
            "--set", "solver.base_lr=0.1", "--set", "solver.max_iter=8", "--set", "solver.steps=[6]",
            "--set", "solver.warmup_iters=4", "--set", "solver.warmup_factor=0.5"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0
    values = json.loads(result.stdout)
    assert [v["iteration"] for v in values] == list(range(8))
    # linear warmup: factor = 0.5 * (1 - i/4) + i/4 for i < 4; then 0.1; x0.1 from step 6
    expected = [0.05, 0.0625, 0.075, 0.0875, 0.1, 0.1, 0.01, 0.01]
    assert [round(v["lr"], 12) for v in values] == expected


def test_lr_plot_table_and_png(tmp_path, capsys, monkeypatch):
    out = tmp_path / "lr.png"
    result = run_cli(["lr-plot", str(REPO / "recipes" / "coco.yaml"), "--out", str(out)], capsys, monkeypatch)
    assert result.exit_code == 0
    for text in ("warmup end", "step 1", "60000", "step 2", "80000", "0.0001"):
        assert text in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_shows_bracketed_defaults_as_written(capsys, monkeypatch):
    # Rich markup would swallow "[default: ...]" unless escaped.
    result = run_cli(["eval", "--help"], capsys, monkeypatch)
    assert "[default: 12]" in result.stdout and "[default: the recipe's]" in result.stdout


def test_control_characters_in_an_error_are_shown_escaped(tmp_path, capsys, monkeypatch):
    """A file name from a stranger's data cannot drive the terminal: ESC, BEL and a right-to-left
    override reach the screen as visible escapes."""
    hostile = tmp_path / "recipe\x1b[2J\x07\u202e.yaml"
    result = run_cli(["inspect-config", str(hostile)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr and "\u202e" not in result.stderr
    assert "recipe\\x1b[2J\\x07\\u202e.yaml" in result.stderr.replace("\n", "")

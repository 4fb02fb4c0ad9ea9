"""`retina train` never replaces what the user has: an output folder holding the user's own
files is refused before anything is written, `--resume` on a folder that was never a run touches
nothing, the recipe named on the command line is never written to, and a failed start does not
block the corrected command. Each test builds the folder and compares it byte for byte after."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from retinacli.commands.train import train, train_from_recipe
from retinacli.errors import CheckpointError, UsageError
from retinacli.files import OUTPUT_MARKER
from retinacli.recipe import dump_recipe
from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe


def _users_files(folder: Path) -> None:
    """What a user may keep in a folder they name by mistake: a picture and an evaluation."""
    (folder / "eval" / "0").mkdir(parents=True)
    (folder / "results.png").write_bytes(b"\x89PNG my own picture")
    (folder / "eval" / "0" / "metrics.json").write_text('{"mine": true}\n')


def _cli_args(tmp_path: Path, *extra: str) -> list[str]:
    args = ["train", str(REPO / "recipes" / "shapes.yaml")]
    for override in tiny_overrides(tmp_path, "solver.max_iter=1", "solver.checkpoint_period=1"):
        args += ["--set", override]
    return [*args, *extra]


def test_a_folder_holding_the_users_files_is_refused_and_untouched(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    _users_files(out)
    before = snapshot(tmp_path)

    result = run_cli(_cli_args(tmp_path), capsys, monkeypatch)

    assert result.exit_code == 2
    assert "holds files retinacli did not write (eval, results.png)" in result.stderr
    assert "Traceback" not in result.output
    assert changed_outside(before, tmp_path) == []


def test_resume_on_a_folder_that_was_never_a_run_touches_nothing(tmp_path, capsys, monkeypatch):
    """A hand-written config.yaml and log.txt do not make a run: --resume says so, and the
    recipe file it was given (that very config.yaml) keeps its bytes."""
    out = tmp_path / "run"
    out.mkdir()
    config = out / "config.yaml"
    shutil.copy(REPO / "recipes" / "shapes.yaml", config)
    (out / "log.txt").write_text("my notes\n")
    before = snapshot(tmp_path)

    plain = run_cli(_cli_args(tmp_path), capsys, monkeypatch)
    resumed = run_cli(
        ["train", str(config), "--output-dir", str(out), "--resume"], capsys, monkeypatch
    )

    assert plain.exit_code == 2 and "retina train writes only into an empty folder or its own run" in plain.stderr
    assert resumed.exit_code == 2
    assert "--resume: it was never a `retina train` run, and nothing in it was touched" in resumed.stderr
    assert changed_outside(before, tmp_path) == []


def test_an_output_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    target = tmp_path / "run"
    target.write_text("not a folder\n")
    before = snapshot(tmp_path)

    result = run_cli(_cli_args(tmp_path), capsys, monkeypatch)

    assert result.exit_code == 2
    assert f"{target}: is a file, not a folder" in result.stderr
    assert changed_outside(before, tmp_path) == []


def test_another_commands_output_is_not_a_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text('{"format": "retinacli-checkpoint", "command": "eval"}')
    (out / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match="holds the output of `retina eval`, not a training run"):
        train_from_recipe(tiny_recipe(tmp_path))


def test_resuming_with_the_runs_own_config_never_rewrites_it(tmp_path, one_thread):
    run = tmp_path / "run"
    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=2", "solver.checkpoint_period=1"))
    config = run / "config.yaml"
    inode, text = config.stat().st_ino, config.read_text()

    # The printed resume command names the run's own config.yaml: it resumes without writing it.
    result = train(config, [], output_dir=run, resume=True)
    assert result.iterations_run == 0  # already at the end
    assert config.stat().st_ino == inode and config.read_text() == text

    # An override would change the recipe, so the file named on the command line would be
    # rewritten: refused before anything happens.
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="the recipe named on the command line is never written to"):
        train(config, ["solver.max_iter=3"], output_dir=run, resume=True)
    assert changed_outside(before, tmp_path) == []


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path):
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(CheckpointError, match="model.weights"):
        train_from_recipe(tiny_recipe(tmp_path, f"model.weights={missing}", "solver.max_iter=1"))

    result = train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=1"))

    assert result.iterations_run == 1
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "model.weights" in log and "failed before training began: starting a new run" in log


def test_a_pointer_naming_a_file_outside_the_run_is_refused(tmp_path, one_thread):
    run = tmp_path / "run"
    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=1", "solver.checkpoint_period=1"))
    outside = tmp_path / "elsewhere.pth"
    shutil.copy(run / "model_final.pth", outside)
    (run / "last_checkpoint").write_text("../elsewhere.pth")
    before = snapshot(tmp_path)

    with pytest.raises(CheckpointError, match="which is not a checkpoint of this folder"):
        train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=2"), resume=True)

    assert changed_outside(before, tmp_path, "run/.retina-train.lock", "run/log.txt") == []


def test_a_run_written_before_the_marker_is_still_a_run(tmp_path, one_thread):
    run = tmp_path / "run"
    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=1", "solver.checkpoint_period=1"))
    os.remove(run / OUTPUT_MARKER)

    with pytest.raises(UsageError, match="already holds a run"):
        train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=2"))
    result = train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=2"), resume=True)

    assert result.iterations_run == 1
    assert (run / OUTPUT_MARKER).is_file()
    assert dump_recipe(tiny_recipe(tmp_path, "solver.max_iter=2")) == (run / "config.yaml").read_text()

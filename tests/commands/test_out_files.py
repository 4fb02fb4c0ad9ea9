"""Every `--out FILE` refuses an existing file without `--overwrite` and leaves it byte for byte
as it was; with `--overwrite` it is replaced by a real PNG."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot
from tests.training.tiny import REPO

SHAPES = str(REPO / "recipes" / "shapes.yaml")


@pytest.mark.parametrize(
    "command",
    [["lr-plot", SHAPES], ["anchors", SHAPES], ["anchors", "--sizes", "32..512", "--scales", "3"]],
    ids=["lr-plot", "anchors-recipe", "anchors-flags"],
)
def test_out_refuses_an_existing_file_without_overwrite(tmp_path, capsys, monkeypatch, command):
    target = tmp_path / "mine.png"
    target.write_bytes(b"the user's own picture")
    before = snapshot(tmp_path)

    refused = run_cli([*command, "--out", str(target)], capsys, monkeypatch)

    assert refused.exit_code == 2
    assert f"{target}: already exists; pass --overwrite to replace it, or choose another --out" in refused.stderr
    assert "Traceback" not in refused.output
    assert changed_outside(before, tmp_path) == []

    replaced = run_cli([*command, "--out", str(target), "--overwrite"], capsys, monkeypatch)

    assert replaced.exit_code == 0, replaced.output
    with Image.open(target) as picture:
        assert picture.format == "PNG" and picture.width > 100


def test_out_that_is_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    result = run_cli(["lr-plot", SHAPES, "--out", str(tmp_path), "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 2 and "is a folder; --out names the file to write" in result.stderr

"""`retina predict`: pictures and predictions.json for a folder; unreadable files skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli.errors import UsageError
from retinacli.predict.images import draw_detections, find_images
from tests.cli_helpers import run_cli

EXIF_ORIENTATION = 274


@pytest.fixture
def image_folder(tmp_path: Path, raccoon_dir: Path) -> Path:
    """raccoon-1.jpg, a grayscale PNG, a JPEG rotated by EXIF, one in a subfolder, a broken
    .jpg and a text file."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(raccoon_dir / "images" / "raccoon-1.jpg", folder / "raccoon-1.jpg")
    Image.new("L", (120, 90), 100).save(folder / "gray.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90: a 160x100 file shows as 100x160
    Image.new("RGB", (160, 100), (10, 200, 30)).save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (100, 130), (200, 30, 30)).save(folder / "sub" / "another.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_on_a_folder(tiny_raccoon_model, image_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["predict", str(tiny_raccoon_model), str(image_folder), "--output-dir", str(out)]
    result = run_cli([*args, "--score-thresh", "0"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr  # the warning list

    data = json.loads((out / "predictions.json").read_text())
    names = [Path(entry["file"]).relative_to(image_folder).as_posix() for entry in data["images"]]
    assert names == ["gray.png", "raccoon-1.jpg", "rotated.jpg", "sub/another.png"]
    assert [s["file"] for s in data["skipped"]] == [str(image_folder / "broken.jpg")]
    assert "cannot decode" in data["skipped"][0]["reason"]
    assert data["classes"] == ["raccoon"] and data["score_thresh"] == 0.0

    sizes = {Path(e["file"]).name: (e["width"], e["height"]) for e in data["images"]}
    assert sizes["rotated.jpg"] == (100, 160)  # after EXIF orientation
    assert sizes["gray.png"] == (120, 90)
    for entry in data["images"]:
        picture = out / entry["picture"]
        with Image.open(picture) as opened:
            assert opened.size == (entry["width"], entry["height"]) and opened.mode == "RGB"
        assert entry["detections"], entry["file"]  # threshold 0: an untrained model detects
        for det in entry["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= entry["width"] and 0 <= y1 < y2 <= entry["height"]
            assert det["class_id"] == 0 and det["category_id"] == 1
            assert det["class_name"] == "raccoon" and 0.0 < det["score"] <= 1.0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".retinacli-output.json",  # the folder is marked as predict's output
        "gray.png",
        "predictions.json",
        "raccoon-1.jpg",
        "rotated.jpg",
        "sub/another.png",
    ]


def test_nothing_readable_is_an_error(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    args = ["predict", str(tiny_raccoon_model), str(bad), "--output-dir", str(out)]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2
    assert "none of the 1 inputs could be read" in result.stderr
    assert json.loads((out / "predictions.json").read_text())["skipped"][0]["file"] == str(bad)


def test_missing_input_is_a_usage_error_before_loading(tmp_path, capsys, monkeypatch):
    # the checkpoint does not exist either: the input is checked first
    args = ["predict", str(tmp_path / "m.pth"), str(tmp_path / "nope.jpg")]
    result = run_cli([*args, "--output-dir", str(tmp_path / "o")], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "nope.jpg: no such file or folder" in result.stderr


def test_output_folder_may_not_overwrite_inputs(image_folder):
    with pytest.raises(UsageError, match="overwrite this input image"):
        find_images([image_folder], out_dir=image_folder)


def test_same_names_from_two_folders_get_distinct_pictures(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "x.png")
    found = find_images([tmp_path / "a", tmp_path / "b", tmp_path / "a"], out_dir=tmp_path / "o")
    assert [f.path for f in found] == [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    assert [f.picture.name for f in found] == ["x.png", "x-2.png"]


def test_draw_detections_outlines_the_box_in_the_class_colour():
    black = np.zeros((60, 80, 3), dtype=np.uint8)
    det = {"box": [10.0, 20.0, 50.0, 55.0], "score": 0.75, "class_id": 1, "class_name": "dog"}
    picture = np.asarray(draw_detections(black, [det]))
    assert picture.shape == (60, 80, 3)
    assert tuple(picture[40, 10]) == (60, 180, 75)  # left edge, palette colour of class 1
    assert tuple(picture[40, 30]) == (0, 0, 0)  # inside stays untouched
    assert picture[0:20, 10:40].any()  # the label, above the box


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], 0.0),  # the model file's own recipe value
        (["--set", "model.test.score_thresh=0.3"], 0.3),
        (["--set", "model.test.score_thresh=0.3", "--score-thresh", "0.2"], 0.2),
    ],
)
def test_score_thresh_overrides_only_when_given(
    tiny_raccoon_model, raccoon_dir, tmp_path, flags, expected, capsys, monkeypatch
):
    out = tmp_path / "out"
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    result = run_cli(["predict", str(tiny_raccoon_model), str(image), "--output-dir", str(out), *flags],
                     capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "predictions.json").read_text())
    assert data["score_thresh"] == expected
    assert all(d["score"] > expected for e in data["images"] for d in e["detections"])


def test_out_of_range_score_thresh_is_a_recipe_error(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    args = ["predict", str(tiny_raccoon_model), str(image), "--output-dir", str(tmp_path / "o")]
    result = run_cli([*args, "--score-thresh", "1.0"], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "model.test.score_thresh (from --score-thresh 1) Input should be less than 1" in message


def test_a_second_run_never_overwrites_the_first(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["predict", str(tiny_raccoon_model), str(raccoon_dir / "images" / "raccoon-1.jpg"), "--output-dir", str(out)]
    assert run_cli(args, capsys, monkeypatch).exit_code == 0
    before = (out / "predictions.json").read_bytes()
    again = run_cli([*args, "--score-thresh", "0.5"], capsys, monkeypatch)
    assert again.exit_code == 2 and "holds an earlier output of `retina predict`" in again.stderr
    assert "--overwrite" in again.stderr
    assert (out / "predictions.json").read_bytes() == before
    replaced = run_cli([*args, "--score-thresh", "0.5", "--overwrite"], capsys, monkeypatch)
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "predictions.json").read_text())["score_thresh"] == 0.5

"""`retina anchors` as a user runs it: table, JSON, PNG, coverage, suggestions and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
RACCOON = str(REPO / "recipes" / "raccoon.yaml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_json_hand_computed(capsys, monkeypatch) -> None:
    # Size 16, ratios 1 and 4: (-8, -8, 8, 8) and (w = sqrt(256 / 4) = 8, h = 32) (-4, -16, 4, 16).
    # 30x50 pads to 32x64: stride 8 -> 4x8 positions, 16 -> 2x4, 32 -> 1x2, 64 and 128 -> 1x1;
    # 2 anchors each: 64 + 16 + 4 + 2 + 2 = 88 in total.
    args = [
        "anchors",
        "--sizes",
        "16",
        "--ratios",
        "1,4",
        "--strides",
        "8,16,32,64,128",
        "--image-size",
        "30x50",
        "--json",
    ]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_anchors"] == 88
    p3, p4 = data["levels"][:2]
    assert p3 == {
        "name": "p3",
        "stride": 8,
        "sizes": [16.0],
        "aspect_ratios": [1.0, 4.0],
        "cell_anchors": [[-8.0, -8.0, 8.0, 8.0], [-4.0, -16.0, 4.0, 16.0]],
        "feature_size": [4, 8],
        "num_anchors": 64,
    }
    assert (p4["name"], p4["feature_size"], p4["num_anchors"]) == ("p4", [2, 4], 16)


def test_default_table_shows_detectron2_numbers(capsys, monkeypatch) -> None:
    result = run_cli(["anchors"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    out = result.stdout
    # p3 sizes 32, 32 * 2^(1/3), 32 * 2^(2/3), unrounded anchors shown to 0.01 px.
    assert "p3: stride 8, sizes 32, 40.32, 50.80, aspect ratios 0.5, 1, 2" in out
    assert "45.25 x 22.63" in out and "-22.63, -11.31, 22.63, 11.31" in out
    assert "9 per location x 100x168 = 151200" in out
    assert "p7: stride 128" in out and "7x11" in out
    assert "201600" in out  # total for 800x1333 (see test_anchor_layout)


def test_recipe_form_uses_its_test_size(capsys, monkeypatch) -> None:
    # raccoon's test resize: short 320, max 533 -> 320x533, padded 320x544.
    result = run_cli(["anchors", RACCOON, "--json"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["image_size"] == [320, 533] and data["padded_size"] == [320, 544]
    assert [lv["feature_size"] for lv in data["levels"]] == [
        [40, 68],
        [20, 34],
        [10, 17],
        [5, 9],
        [3, 5],
    ]
    result = run_cli(
        [
            "anchors",
            RACCOON,
            "--set",
            "model.anchors.offset=0.5",
            "--image-size",
            "64x64",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["levels"][0]["feature_size"] == [8, 8]


def test_png_is_written_atomically(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "pics" / "anchors.png"
    result = run_cli(["anchors", "--image-size", "320x480", "--out", str(out)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["anchors.png"]  # no temporary left
    picture = tmp_path / "photo.png"
    Image.fromarray(np.full((100, 150, 3), 200, dtype=np.uint8)).save(picture)
    drawn = tmp_path / "over.png"
    result = run_cli(["anchors", "--image", str(picture), "--out", str(drawn)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    # 100x150 test-resized with short 800 / max 1333 -> 800x1200.
    assert "800x1200 input" in result.stdout and drawn.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "32..500"], "model.anchors.sizes (from --sizes 32..500) '32..500': a range doubles per level"),
        (["--image-size", "800by1333"], "--image-size 800by1333: expected HEIGHTxWIDTH"),
        (["--ratios", "0.5,-1"], "model.anchors.aspect_ratios (from --aspect-ratios 0.5,-1) aspect ratios must be positive"),
        (["--strides", "8,24"], "--strides 8,24: the FPN builds levels whose strides double"),
        (["--strides", "8,32"], "--strides 8,32: the FPN builds levels whose strides double"),
        (["--offset", "1.5"], "model.anchors.offset (from --offset 1.5) Input should be less than 1"),
        (["--set", "model.anchors.offset=2"], "model.anchors.offset (from --set model.anchors.offset=2) Input should be less than 1"),
        (["--coverage"], "--coverage/--suggest: needs a RECIPE"),
        (["--image", "x.png"], "--image: the picture is drawn under the anchors in --out"),
        (["--out", "anchors.jpg"], "--out anchors.jpg: the picture is a PNG file"),
        (
            [RACCOON, "--coverage", "--image-size", "64x64"],
            "coverage uses each training image's own test size",
        ),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(args, message, capsys, monkeypatch) -> None:
    result = run_cli(["anchors", *args], capsys, monkeypatch)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output


def _tiny_dataset(tmp_path: Path) -> Path:
    """Two 64x96 images with boxes of known best IoU, and a recipe pointing at them."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((64, 96, 3), dtype=np.uint8)).save(images / name)
    # Levels p5 (stride 32), p6, p7 (the top block), one 16x16 anchor each. p5 centres: x 0, 32,
    # 64 and y 0, 32; p6: (0, 0), (64, 0); p7: (0, 0). (24, 24, 40, 40) and (56, 24, 72, 40) are
    # p5 anchors (IoU 1). (36, 20, 52, 36) best meets (24, 24, 40, 40): x 36..40 = 4 px,
    # y 24..36 = 12 px, 48 / (256 + 256 - 48) = 0.1034 (low quality). (10, 10, 20, 20) meets no
    # anchor: (-8, -8, 8, 8) ends at 8 -> IoU 0.
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 64, "width": 96},
            {"id": 2, "file_name": "b.png", "height": 64, "width": 96},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [24, 24, 16, 16],
                "area": 256,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [56, 24, 16, 16],
                "area": 256,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 2,
                "bbox": [36, 20, 16, 16],
                "area": 256,
                "iscrowd": 0,
            },
            {
                "id": 4,
                "image_id": 2,
                "category_id": 2,
                "bbox": [10, 10, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "model:\n"
        "  backbone: {out_features: [res5]}\n"
        "  fpn: {in_features: [res5]}\n"
        "  anchors: {sizes: [[16]], aspect_ratios: [[1.0]]}\n"
        "data:\n"
        f"  train: {{dataset: {{kind: coco, annotations: {tmp_path / 'train.json'}, images: {images}}}}}\n"
        "  test: {resize: {short_sizes: [64], max_size: 96}}\n"
    )
    return recipe


def test_coverage_on_known_boxes(tmp_path, capsys, monkeypatch) -> None:
    recipe = _tiny_dataset(tmp_path)
    histogram = tmp_path / "report" / "coverage.png"
    result = run_cli(
        ["anchors", str(recipe), "--coverage", "--out", str(histogram), "--json"], capsys, monkeypatch
    )
    assert result.exit_code == 0, result.output
    coverage = json.loads(result.stdout)["coverage"]
    assert coverage["overall"]["boxes"] == 4
    assert (
        coverage["overall"]["positive"],
        coverage["overall"]["low_quality"],
        coverage["overall"]["none"],
    ) == (2, 1, 1)
    assert coverage["by_class"]["cat"]["positive_share"] == 1.0
    assert coverage["by_class"]["dog"]["none_share"] == 0.5
    assert coverage["by_size"]["small"]["boxes"] == 4
    assert (
        coverage["worst"][0]["box"] == [10.0, 10.0, 20.0, 20.0]
        and coverage["worst"][0]["best_iou"] == 0.0
    )
    assert coverage["worst"][1]["best_iou"] == pytest.approx(48 / 464, abs=1e-6)
    assert histogram.read_bytes().startswith(PNG_MAGIC) and histogram.stat().st_size > 5_000
    table = run_cli(["anchors", str(recipe), "--coverage"], capsys, monkeypatch)
    assert table.exit_code == 0, table.output
    assert "2 (50.0%)" in table.stdout and "class dog" in table.stdout
    assert "a.png" not in table.stdout.split("worst boxes")[0]


def test_suggest_never_reports_lower_coverage(tmp_path, capsys, monkeypatch) -> None:
    recipe = _tiny_dataset(tmp_path)
    result = run_cli(["anchors", str(recipe), "--suggest", "--json"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    suggestion = json.loads(result.stdout)["suggestion"]
    before, after = suggestion["before"], suggestion["after"]
    assert (after["positive"], -after["none"]) >= (before["positive"], -before["none"])
    # Structure kept: p5..p7, one size each, one shared ratio.
    assert len(suggestion["sizes"]) == 3 and all(len(level) == 1 for level in suggestion["sizes"])
    assert len(suggestion["aspect_ratios"][0]) == 1
    text = run_cli(["anchors", str(recipe), "--suggest"], capsys, monkeypatch)
    assert text.exit_code == 0 and "model:\n  anchors:\n    sizes: [[" in text.stdout


def test_coverage_on_raccoon(shared_dir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RETINA_DATASETS", str(shared_dir / "data"))
    result = run_cli(
        ["anchors", RACCOON, "--coverage", "--json", "--worst", "1"], capsys, monkeypatch
    )
    assert result.exit_code == 0, result.output
    coverage = json.loads(result.stdout)["coverage"]
    assert coverage["images"] == 157 and coverage["overall"]["boxes"] == 170
    assert coverage["overall"]["positive"] == 170  # every raccoon box has an anchor at IoU >= 0.5
    assert (
        coverage["by_size"]["medium"]["boxes"] == 13
        and coverage["by_size"]["large"]["boxes"] == 157
    )
    assert coverage["worst"][0]["best_iou"] == pytest.approx(0.6607, abs=1e-4)

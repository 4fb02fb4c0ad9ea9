"""`retina data check | show | make-shapes` as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from tests.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def raccoon_set(shared_dir: Path) -> list[str]:
    return ["--set", f"data.train.dataset={{kind: coco, annotations: '{shared_dir}/data/raccoon/train.json', images: '{shared_dir}/data/raccoon/images'}}",
            "--set", f"data.test.dataset={{kind: coco, annotations: '{shared_dir}/data/raccoon/val.json', images: '{shared_dir}/data/raccoon/images'}}"]


def test_check_summarises_raccoon(shared_dir, capsys, monkeypatch):
    result = run_cli(["data", "check", str(REPO / "recipes" / "raccoon.yaml"), *raccoon_set(shared_dir)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "157 (0 without boxes)" in result.stdout and "39 (0 without boxes)" in result.stdout
    assert "class raccoon" in result.stdout and "0 errors, 0 fixed" in result.stdout


def test_check_fails_with_the_problems_named(tmp_path, capsys, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "missing.png", "width": 40, "height": 30}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
                        {"id": 8, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    dataset = f"{{kind: coco, annotations: '{tmp_path}/bad.json', images: '{tmp_path}'}}"
    result = run_cli(["data", "check", str(REPO / "recipes" / "raccoon.yaml"), "--split", "train",
                      "--set", f"data.train.dataset={dataset}"], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "missing.png" in result.stdout and "image id 2" in result.stdout
    assert "annotation id 8" in result.stdout or "annotation 8" in result.stdout
    assert "must be fixed before training" in result.stderr


def test_show_writes_pictures(shared_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "show"
    result = run_cli(["data", "show", str(REPO / "recipes" / "raccoon.yaml"), *raccoon_set(shared_dir),
                      "--output-dir", str(out), "--num-images", "2", "--augmented"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 2 and all(Image.open(p).size[0] > 0 for p in pictures)


def test_show_draws_the_box_aware_augmentations(shared_dir, tmp_path, capsys, monkeypatch):
    import numpy as np

    def show(out: Path, *sets: str) -> list[Path]:
        args = [a for s in sets for a in ("--set", s)]
        result = run_cli(["data", "show", str(REPO / "recipes" / "raccoon.yaml"), *raccoon_set(shared_dir), *args,
                          "--output-dir", str(out), "--num-images", "2", "--augmented"], capsys, monkeypatch)
        assert result.exit_code == 0, result.output
        return sorted(out.glob("*.png"))

    plain = show(tmp_path / "plain")
    mosaic = show(tmp_path / "mosaic", "data.train.augment.mosaic=1.0", "data.train.augment.color.prob=1.0")
    # the same training samples (names and sizes), but four photos in one and new colours
    assert [p.name for p in plain] == [p.name for p in mosaic]
    for a, b in zip(plain, mosaic, strict=True):
        assert Image.open(a).size == Image.open(b).size
        assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_make_shapes_writes_both_splits(tmp_path, capsys, monkeypatch):
    result = run_cli(["data", "make-shapes", "--output-dir", str(tmp_path / "s"), "--num-images", "4", "--seed", "1"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "s" / "train.json").read_text())
    test = json.loads((tmp_path / "s" / "test.json").read_text())
    assert len(train["images"]) == 4 and len(test["images"]) == 1
    assert [c["name"] for c in train["categories"]] == ["circle", "square", "triangle"]
    assert all((tmp_path / "s" / image["file_name"]).exists() for image in train["images"])


def test_check_takes_a_coco_json_and_finds_its_images(shared_dir, tmp_path, capsys, monkeypatch):
    raccoon = shared_dir / "data" / "raccoon"
    result = run_cli(["data", "check", str(raccoon / "val.json")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert re.search(rf"image folder +│ {raccoon / 'images'} ", result.stdout)  # images/ next to the json
    assert "39 (0 without boxes)" in result.stdout and "0 errors, 0 fixed" in result.stdout

    (tmp_path / "val.json").write_text((raccoon / "val.json").read_text())
    result = run_cli(["data", "check", str(tmp_path / "val.json")], capsys, monkeypatch)
    assert result.exit_code == 2 and "image file not found" in result.stdout  # looked in tmp_path
    result = run_cli(["data", "check", str(tmp_path), "--images", str(raccoon / "images")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output


def test_check_refuses_recipe_flags_with_a_json_and_an_empty_folder(shared_dir, tmp_path, capsys, monkeypatch):
    val = str(shared_dir / "data" / "raccoon" / "val.json")
    result = run_cli(["data", "check", val, "--split", "train"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--split: only for a recipe" in result.stderr
    result = run_cli(["data", "check", val, "--set", "seed=1"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--set: only for a recipe" in result.stderr
    result = run_cli(["data", "check", str(REPO / "recipes" / "raccoon.yaml"), "--images", "x"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--images: only for a COCO json or folder" in result.stderr
    result = run_cli(["data", "check", str(tmp_path)], capsys, monkeypatch)
    assert result.exit_code == 2 and "no .json file in the folder" in result.stderr


def test_make_shapes_as_voc_converts_back_to_the_same_dataset(tmp_path, capsys, monkeypatch):
    """The VOC writer is the exact inverse of the VOC reader: same pixels, same boxes."""
    import numpy as np
    from PIL import Image

    assert run_cli(["data", "make-shapes", "--output-dir", str(tmp_path / "coco"), "--num-images", "4"], capsys, monkeypatch).exit_code == 0
    result = run_cli(["data", "make-shapes", "--output-dir", str(tmp_path / "voc"), "--num-images", "4", "--format", "voc"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "train: 4 images" in result.stdout and (tmp_path / "voc" / "ImageSets" / "Main" / "test.txt").is_file()
    converted = run_cli(
        ["data", "convert", str(tmp_path / "voc"), "--from", "voc", "--output-dir", str(tmp_path / "back")], capsys, monkeypatch
    )
    assert converted.exit_code == 0, converted.output
    for split in ("train", "test"):
        original = json.loads((tmp_path / "coco" / f"{split}.json").read_text())
        back = json.loads((tmp_path / "back" / f"{split}.json").read_text())
        assert [c["name"] for c in back["categories"]] == ["circle", "square", "triangle"]
        names = {c["id"]: c["name"] for c in back["categories"]}
        assert len(back["images"]) == len(original["images"])
        for before, after in zip(original["images"], sorted(back["images"], key=lambda i: i["file_name"]), strict=True):
            pixels = [
                np.asarray(Image.open(root / image["file_name"]))
                for root, image in ((tmp_path / "coco", before), (tmp_path / "back" / "images" / split, after))
            ]
            assert np.array_equal(*pixels)
            boxes = lambda data, image_id: sorted(  # noqa: E731
                (a["bbox"], a["category_id"]) for a in data["annotations"] if a["image_id"] == image_id
            )
            assert [(b, names[c]) for b, c in boxes(back, after["id"])] == [
                (b, ["circle", "square", "triangle"][c - 1]) for b, c in boxes(original, before["id"])
            ]

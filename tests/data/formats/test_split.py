"""`retina data split`: by image, disjoint, exact sizes, rare classes in every split, the same
split for the same seed; refusals of bad fractions and existing outputs."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from retinacli.commands.split import split
from retinacli.data.formats.split import assign_splits, split_sizes
from retinacli.errors import DatasetError, UsageError
from tests.cli_helpers import run_cli


def write_json_dataset(
    path: Path, image_classes: list[list[int]], *, names: tuple[str, ...]
) -> Path:
    """A COCO json: image i+1 has one 10x10 box per class in image_classes[i] (class ids 1..K)."""
    images, annotations = [], []
    for i, classes in enumerate(image_classes, start=1):
        images.append({"id": i, "file_name": f"sub/img{i}.jpg", "width": 64, "height": 48})
        for category_id in classes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": category_id,
                    "bbox": [1, 1, 10, 10],
                    "area": 100,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "info": {"description": "test"},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
        )
    )
    return path


def _dataset(tmp_path: Path) -> Path:
    """100 images: 'common' in 80 of them, 'rare' in 2, 'three' in 3, 15 without boxes."""
    image_classes: list[list[int]] = [[1] for _ in range(80)]
    image_classes[3].append(2)
    image_classes[40].append(2)
    image_classes += [[3], [3, 1], [3]] + [[] for _ in range(15)] + [[1, 1]] * 2
    return write_json_dataset(
        tmp_path / "all.json", image_classes, names=("common", "rare", "three")
    )


def test_sizes_are_exact_and_the_rest_goes_to_train() -> None:
    assert split_sizes(100, {"train": 0.7, "val": 0.2, "test": 0.1}) == {
        "train": 70,
        "val": 20,
        "test": 10,
    }
    assert split_sizes(7, {"train": 0.75, "val": 0.25}) == {"train": 5, "val": 2}  # 1.75 -> 2
    assert split_sizes(10, {"train": 0.75, "val": 0.25}) == {"train": 7, "val": 3}  # 2.5 -> 3


def test_assignment_is_deterministic_disjoint_and_spreads_rare_classes() -> None:
    image_classes = {i: frozenset({0}) for i in range(40)}
    image_classes.update({100: frozenset({1}), 101: frozenset({1, 0})})  # a class of 2 images
    image_classes.update({200: frozenset({2}), 201: frozenset({2}), 202: frozenset({2})})  # of 3
    image_classes.update({300 + i: frozenset() for i in range(10)})  # no boxes
    sizes = split_sizes(len(image_classes), {"train": 0.7, "val": 0.2, "test": 0.1})
    first = assign_splits(image_classes, sizes=sizes, seed=3)
    assert first == assign_splits(image_classes, sizes=sizes, seed=3)
    assert first != assign_splits(image_classes, sizes=sizes, seed=4)
    assert set(first) == set(image_classes)  # every image, each once
    assert Counter(first.values()) == Counter(sizes)
    assert {first[100], first[101]} == {"train", "val"}  # 2 images: train, then val
    assert {first[i] for i in (200, 201, 202)} == {"train", "val", "test"}
    empty = Counter(first[300 + i] for i in range(10))
    assert empty == {"train": 7, "val": 2, "test": 1}  # spread like any class


def test_split_writes_disjoint_jsons_with_the_same_categories(tmp_path: Path) -> None:
    source = _dataset(tmp_path)
    result = split(source, output_dir=tmp_path / "out", val=0.2, test=0.1, seed=0)
    original = json.loads(source.read_text())
    written = {
        name: json.loads((tmp_path / "out" / f"{name}.json").read_text())
        for name in ("train", "val", "test")
    }
    ids = {name: {i["id"] for i in data["images"]} for name, data in written.items()}
    assert [len(ids[n]) for n in ("train", "val", "test")] == [70, 20, 10]
    assert ids["train"] | ids["val"] | ids["test"] == {i["id"] for i in original["images"]}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    for data in written.values():
        assert data["categories"] == original["categories"] and data["info"] == original["info"]
        assert all(a["image_id"] in {i["id"] for i in data["images"]} for a in data["annotations"])
        by_id = {i["id"]: i for i in original["images"]}
        assert all(i == by_id[i["id"]] for i in data["images"])  # file_name, size, id unchanged
    assert sum(len(d["annotations"]) for d in written.values()) == len(original["annotations"])

    counts = {s.name: s for s in result.splits}
    assert (
        counts["val"].boxes_per_class["rare"] == 1 and counts["train"].boxes_per_class["rare"] == 1
    )
    assert all(counts[n].boxes_per_class["three"] == 1 for n in ("train", "val", "test"))
    assert sum(s.num_images_without_boxes for s in result.splits) == 15
    assert counts["val"].num_images_without_boxes == 3  # 0.2 x 15
    assert result.class_names == ("common", "rare", "three")


def test_split_cli_prints_boxes_per_class_and_refuses_to_overwrite(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    source = _dataset(tmp_path)
    out = tmp_path / "out"
    args = ["data", "split", str(source), "--val", "0.2", "--seed", "5", "--output-dir", str(out)]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert re.search(r"│ train\.json │ 80 +│ 12 +│", result.stdout)
    assert re.search(r"│ val\.json +│ 20 +│ 3 +│", result.stdout)
    assert re.search(r"│ rare +│ 1 +│ 1 +│", result.stdout)
    assert "use the images folder of all.json" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["train.json", "val.json"]
    first = (out / "val.json").read_text()

    again = run_cli(args, capsys, monkeypatch)
    assert again.exit_code == 2
    assert (
        "train.json: already exists; pass --overwrite to replace it" in again.stderr
        and "--overwrite" in again.stderr
    )
    again = run_cli([*args, "--overwrite"], capsys, monkeypatch)
    assert again.exit_code == 0 and (out / "val.json").read_text() == first  # same seed, same split


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--val", "0"], r"--val 0: val.json would be empty"),
        (["--val", "1"], r"--val 1: a fraction of the images, from 0 to below 1"),
        (["--val", "-0.1"], r"--val -0.1: a fraction"),
        (["--val", "nan"], r"--val nan: a fraction"),
        (
            ["--val", "0.5", "--test", "0.5"],
            r"--val 0.5 --test 0.5: together 1, which leaves no image",
        ),
        (["--val", "0.2", "--test", "1.5"], r"--test 1.5: a fraction"),
    ],
)
def test_bad_fractions_exit_2(tmp_path: Path, flags, message, capsys, monkeypatch) -> None:
    source = _dataset(tmp_path)
    result = run_cli(
        ["data", "split", str(source), "--output-dir", str(tmp_path / "out"), *flags],
        capsys,
        monkeypatch,
    )
    assert result.exit_code == 2 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


def test_too_few_images_bad_json_and_the_input_itself_are_refused(tmp_path: Path) -> None:
    tiny = write_json_dataset(tmp_path / "tiny.json", [[1], [1]], names=("a",))
    with pytest.raises(
        DatasetError, match=r"2 images are too few to split into 2 train, 0 val, 0 test: val, test"
    ):
        split(tiny, output_dir=tmp_path / "out", val=0.2, test=0.1)
    bad = write_json_dataset(tmp_path / "bad.json", [[1], [2]], names=("a",))  # category 2 unknown
    with pytest.raises(DatasetError, match=r"category_id 2.*\nfix the json first"):
        split(bad, output_dir=tmp_path / "out", val=0.5)
    source = write_json_dataset(tmp_path / "d" / "train.json", [[1]] * 10, names=("a",))
    with pytest.raises(UsageError, match="train.json: is the json being split"):
        split(source, output_dir=tmp_path / "d", val=0.2, overwrite=True)


def test_raccoon_split(raccoon_dir: Path, tmp_path: Path) -> None:
    result = split(raccoon_dir / "train.json", output_dir=tmp_path, val=0.2, seed=0)
    assert [(s.name, s.num_images) for s in result.splits] == [("train", 126), ("val", 31)]
    assert sum(s.num_boxes for s in result.splits) == 170

"""The Python API's Detector and Result: the same detections as `retina predict`, every input
kind, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli import Detector, Result
from retinacli.commands.predict import predict
from retinacli.errors import RecipeError, UsageError


@pytest.fixture(scope="module")
def model_file(finished_run: Path) -> Path:
    return finished_run / "model_final.pth"


@pytest.fixture(scope="module")
def images(finished_run: Path) -> list[Path]:
    found = sorted((finished_run.parent / "cache").rglob("*.png"))
    assert len(found) >= 3, found
    return found[:3]


@pytest.fixture(scope="module")
def detector(model_file: Path) -> Detector:
    return Detector.load(model_file, device="cpu")


def test_results_equal_retina_predicts(detector: Detector, model_file: Path, images: list[Path], tmp_path: Path) -> None:
    predict(model_file, images, output_dir=tmp_path / "predicted", device="cpu")
    expected = json.loads((tmp_path / "predicted" / "predictions.json").read_text())["images"]
    results = detector.predict(images)
    assert [r.path for r in results] == images
    assert sum(len(r) for r in results) > 0, "the tiny model kept no detection: nothing is compared"
    for result, entry in zip(results, expected, strict=True):
        ours = result.to_dict()
        assert (ours["width"], ours["height"]) == (entry["width"], entry["height"])
        assert [(d["class_id"], d["category_id"], d["class_name"]) for d in ours["detections"]] == [
            (d["class_id"], d["category_id"], d["class_name"]) for d in entry["detections"]
        ]
        np.testing.assert_allclose([d["box"] for d in ours["detections"]], [d["box"] for d in entry["detections"]], atol=1e-4)
        np.testing.assert_allclose([d["score"] for d in ours["detections"]], [d["score"] for d in entry["detections"]], atol=1e-6)


def test_every_input_kind_gives_the_same_detections(detector: Detector, images: list[Path]) -> None:
    path = images[0]
    pil = Image.open(path).convert("RGB")
    rgb = np.asarray(pil)
    from_path, from_pil, from_array = detector.predict([path, pil, rgb])
    one = detector.predict(str(path))  # one image, not in a list
    assert len(one) == 1
    for other in (from_pil, from_array, one[0]):
        np.testing.assert_array_equal(other.boxes, from_path.boxes)
        np.testing.assert_array_equal(other.scores, from_path.scores)
        np.testing.assert_array_equal(other.labels, from_path.labels)
    assert from_path.path == path and from_array.path is None
    assert from_array.image_size == (rgb.shape[0], rgb.shape[1])


def test_a_folder_is_walked_in_sorted_order(detector: Detector, images: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["b.png", "a.png", "sub/c.png"]):
        (folder / name).write_bytes(images[i].read_bytes())
    results = detector.predict(folder)
    assert [r.path for r in results] == [folder / "a.png", folder / "b.png", folder / "sub" / "c.png"]


def test_images_run_in_batches_keep_their_order(model_file: Path, images: list[Path]) -> None:
    # Images of one size pad alike, so a batch gives each exactly what it gets alone; the order
    # of the results is the order of the inputs.
    single = Detector.load(model_file, device="cpu", images_per_batch=1)
    alone = single.predict(images)
    batched = Detector.load(model_file, device="cpu").predict([images[0], images[1], images[0]], images_per_batch=3)
    for got, expected in zip(batched, [alone[0], alone[1], alone[0]], strict=True):
        assert got.path == expected.path
        if got.image_size == alone[0].image_size == alone[1].image_size:
            np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3)
    np.testing.assert_array_equal(batched[0].boxes, batched[2].boxes)


def test_result_conversions(detector: Detector, images: list[Path]) -> None:
    result = max(detector.predict(images), key=len)
    assert isinstance(result, Result) and len(result) > 0
    assert result.boxes.shape == (len(result), 4) and result.boxes.dtype == np.float32
    assert np.all(np.diff(result.scores) <= 0), "best first"
    coco = result.to_coco(image_id=7)
    assert len(coco) == len(result)
    x, y, w, h = coco[0]["bbox"]
    np.testing.assert_allclose([x, y, x + w, y + h], result.boxes[0], atol=1e-4)
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == result.category_ids[int(result.labels[0])]
    picture = result.plot()
    assert picture.size == (result.image_size[1], result.image_size[0]) and picture.mode == "RGB"
    original = np.asarray(Image.open(result.path).convert("RGB"))
    assert np.any(np.asarray(picture) != original), "no box drawn"
    supervision = pytest.importorskip("supervision", reason="supervision (the `supervision` extra) is not installed")
    converted = result.to_supervision()
    assert isinstance(converted, supervision.Detections)
    np.testing.assert_array_equal(converted.xyxy, result.boxes)
    np.testing.assert_array_equal(converted.confidence, result.scores)
    assert list(converted.data["class_name"]) == result.names


def test_score_thresh_and_overrides_change_the_recipe(model_file: Path, images: list[Path]) -> None:
    low = Detector.load(model_file, device="cpu")
    high = Detector.load(model_file, device="cpu", score_thresh=0.5, overrides={"model.test.detections_per_image": 3})
    assert high.score_thresh == 0.5 and high.recipe is not None
    assert high.recipe.model.test.detections_per_image == 3
    kept = [r for r in low.predict(images)]
    for mine, theirs in zip(high.predict(images), kept, strict=True):
        assert np.all(mine.scores > 0.5) and len(mine) <= min(3, len(theirs))
    strings = Detector.load(model_file, device="cpu", overrides=["model.test.detections_per_image=2"])
    assert strings.recipe is not None and strings.recipe.model.test.detections_per_image == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((8, 8), dtype=np.uint8), "shape (8, 8)"),
        (np.zeros((8, 8, 3), dtype=np.float32), "dtype float32"),
        (np.zeros((8, 8, 4), dtype=np.uint8), "(H, W, 3) uint8"),
        (12, "is a int"),
    ],
)
def test_a_bad_input_is_named(detector: Detector, bad: object, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        detector.predict([bad])  # type: ignore[list-item]


def test_missing_file_and_bad_override(detector: Detector, model_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        detector.predict(tmp_path / "nope.png")
    with pytest.raises(RecipeError, match="no_such_key"):
        Detector.load(model_file, overrides={"model.no_such_key": 1})
    with pytest.raises(UsageError, match="not one string"):
        Detector.load(model_file, overrides="model.test.score_thresh=0.2")  # type: ignore[arg-type]


def test_evaluate_is_retina_eval(detector: Detector, finished_run: Path, tmp_path: Path) -> None:
    result = detector.evaluate(output_dir=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result.metrics["AP"] == written["AP"]
    assert result.output_dir == tmp_path / "eval"


def test_detectron2_weights_load_through_the_importer(golden_dir: Path, images: list[Path], tmp_path: Path) -> None:
    from retinacli.commands.import_detectron2 import import_detectron2

    d2 = Detector.load(
        golden_dir / "model_final.pth",
        detectron2_config=golden_dir / "config.yaml",
        class_names=["circle", "square", "triangle"],
        device="cpu",
    )
    assert d2.class_names == ("circle", "square", "triangle") and d2.input_format == "BGR"
    imported = import_detectron2(golden_dir / "config.yaml", golden_dir / "model_final.pth", tmp_path / "d2")
    assert imported.model_path is not None
    by_hand = Detector.load(imported.model_path, device="cpu")
    for a, b in zip(d2.predict(images), by_hand.predict(images), strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_an_exported_file_predicts_as_its_model_file(detector: Detector, model_file: Path, images: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime (the `onnx` extra) is not installed")
    exported = detector.export(tmp_path / "model.onnx", verify=False)  # compared below
    onnx = Detector.load(exported.path)
    assert onnx.exported and onnx.recipe is None and onnx.class_names == detector.class_names
    for ours, theirs in zip(onnx.predict(images), detector.predict(images), strict=True):
        top = min(len(ours), len(theirs), 10)
        np.testing.assert_allclose(ours.boxes[:top], theirs.boxes[:top], atol=1e-2)
        np.testing.assert_allclose(ours.scores[:top], theirs.scores[:top], atol=1e-4)
    with pytest.raises(UsageError, match="device"):
        Detector.load(exported.path, device="cpu")
    with pytest.raises(UsageError, match="below the threshold"):
        Detector.load(exported.path, score_thresh=0.0)
    with pytest.raises(UsageError, match="exported file already"):
        onnx.export(tmp_path / "again.onnx")

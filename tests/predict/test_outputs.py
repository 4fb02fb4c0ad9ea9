"""`retina predict` beyond pictures: COCO and YOLO outputs, batches, exported files, videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retinacli.export.parity import BOX_TOLERANCE
from tests.cli_helpers import run_cli


@pytest.fixture
def val_images(tmp_path: Path, raccoon_dir: Path, raccoon_subset: Path) -> Path:
    """The three images of the val subset, in a folder of their own."""
    folder = tmp_path / "val"
    folder.mkdir()
    for image in json.loads(raccoon_subset.read_text())["images"]:
        shutil.copy(raccoon_dir / "images" / image["file_name"], folder / image["file_name"])
    return folder


def _predict(args, capsys, monkeypatch):
    result = run_cli(["predict", *map(str, args)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    return result


def test_coco_and_yolo_outputs_say_what_predictions_json_says(
    tiny_raccoon_model, val_images, raccoon_subset, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    _predict(
        [tiny_raccoon_model, val_images, "--output-dir", out, "--format", "json", "--format", "coco",
         "--format", "yolo", "--annotations", raccoon_subset],
        capsys, monkeypatch,
    )
    entries = json.loads((out / "predictions.json").read_text())["images"]
    ids = {img["file_name"]: img["id"] for img in json.loads(raccoon_subset.read_text())["images"]}
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert len(coco) == sum(len(e["detections"]) for e in entries) > 0
    expected = [
        (ids[Path(e["file"]).name], d["category_id"], [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]], d["score"])
        for e in entries
        for d in e["detections"]
    ]
    assert [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in coco] == expected
    for entry in entries:
        lines = (out / "labels" / Path(entry["picture"]).with_suffix(".txt")).read_text().splitlines()
        assert len(lines) == len(entry["detections"])
        for line, det in zip(lines, entry["detections"], strict=True):
            label, cx, cy, w, h, score = line.split()
            x1, y1, x2, y2 = det["box"]
            assert int(label) == det["class_id"] and float(score) == pytest.approx(det["score"], abs=1e-6)
            assert float(cx) * entry["width"] == pytest.approx((x1 + x2) / 2, abs=1e-3)
            assert float(h) * entry["height"] == pytest.approx(y2 - y1, abs=1e-3)
    # the results score against the annotations with pycocotools as retina eval's do
    from retinacli.evaluation.coco_eval import coco_box_metrics, coco_ground_truth

    assert coco_box_metrics(coco_ground_truth(raccoon_subset), coco)["AP50"] is not None


def test_coco_needs_annotations_that_list_the_images(tiny_raccoon_model, val_images, raccoon_dir, tmp_path, capsys, monkeypatch):
    args = ["predict", str(tiny_raccoon_model), str(val_images), "--output-dir", str(tmp_path / "o"), "--format", "coco"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2 and "--format coco needs --annotations" in result.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "elsewhere.jpg"}], "annotations": [], "categories": []}))
    result = run_cli([*args, "--annotations", str(other)], capsys, monkeypatch)
    assert result.exit_code == 2 and "3 image(s) are not in it" in result.stderr


def test_batches_of_same_size_images_give_the_same_detections(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "same"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(raccoon_dir / "images" / "raccoon-1.jpg", folder / name)
    one, two = tmp_path / "one", tmp_path / "two"
    _predict([tiny_raccoon_model, folder, "--output-dir", one], capsys, monkeypatch)
    _predict([tiny_raccoon_model, folder, "--output-dir", two, "--images-per-batch", "2", "--set", "data.num_workers=1"], capsys, monkeypatch)
    first = json.loads((one / "predictions.json").read_text())["images"]
    second = json.loads((two / "predictions.json").read_text())["images"]
    assert [e["file"] for e in first] == [e["file"] for e in second]
    for a, b in zip(first, second, strict=True):
        assert len(a["detections"]) == len(b["detections"]) > 0
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert da["class_id"] == db["class_id"] and da["score"] == pytest.approx(db["score"], abs=1e-5)
            # The project's parity tolerance for boxes: a batch of 2 runs other convolution
            # kernels than a batch of 1 (float32 rounding, 1.2e-3 px seen at 1 thread on a thin
            # box whose height comes from exp(dh)); padding effects would be whole pixels.
            assert np.allclose(da["box"], db["box"], atol=BOX_TOLERANCE, rtol=0)


def test_an_exported_file_predicts_what_the_model_file_predicts(
    tiny_raccoon_model, tiny_raccoon_onnx, val_images, tmp_path, capsys, monkeypatch
):
    onnx_file = tiny_raccoon_onnx
    from_model, from_onnx = tmp_path / "pth", tmp_path / "onnx"
    _predict([tiny_raccoon_model, val_images, "--output-dir", from_model], capsys, monkeypatch)
    _predict([onnx_file, val_images, "--output-dir", from_onnx], capsys, monkeypatch)
    a = json.loads((from_model / "predictions.json").read_text())
    b = json.loads((from_onnx / "predictions.json").read_text())
    assert a["classes"] == b["classes"] and a["score_thresh"] == b["score_thresh"] == 0.0
    for ea, eb in zip(a["images"], b["images"], strict=True):
        assert (ea["file"], ea["width"], ea["height"]) == (eb["file"], eb["width"], eb["height"])
        assert len(ea["detections"]) == len(eb["detections"])
        for da, db in zip(ea["detections"], eb["detections"], strict=True):
            assert da["class_id"] == db["class_id"] and abs(da["score"] - db["score"]) <= 1e-4
            assert max(abs(x - y) for x, y in zip(da["box"], db["box"], strict=True)) <= 0.01
    refused = run_cli(["predict", str(onnx_file), str(val_images), "--output-dir", str(tmp_path / "x"), "--device", "cpu"], capsys, monkeypatch)
    assert refused.exit_code == 2 and "--device apply to model files only" in refused.stderr


def test_a_raised_score_thresh_on_an_exported_file_gives_the_model_files_detections_at_it(
    tiny_raccoon_model, tiny_raccoon_onnx, val_images, tmp_path, capsys, monkeypatch
):
    # The file's own threshold is 0; --score-thresh t filters its detections after the fact,
    # which is exact (ExportedDetector.with_score_thresh): the same list as the model file run
    # with t, within the export's tolerances. t sits in a gap of the scores, so that no score
    # lies within the export's score tolerance of it.
    from retinacli.export.parity import SCORE_TOLERANCE

    everything = tmp_path / "all"
    _predict([tiny_raccoon_model, val_images, "--output-dir", everything], capsys, monkeypatch)
    scores = sorted(d["score"] for e in json.loads((everything / "predictions.json").read_text())["images"] for d in e["detections"])
    middle = len(scores) // 2
    low, high = next((a, b) for a, b in zip(scores[middle:], scores[middle + 1 :], strict=False) if b - a > 4 * SCORE_TOLERANCE)
    thresh = f"{(low + high) / 2:.6f}"
    from_model, from_onnx = tmp_path / "pth", tmp_path / "onnx"
    _predict([tiny_raccoon_model, val_images, "--output-dir", from_model, "--score-thresh", thresh], capsys, monkeypatch)
    _predict([tiny_raccoon_onnx, val_images, "--output-dir", from_onnx, "--score-thresh", thresh], capsys, monkeypatch)
    a = json.loads((from_model / "predictions.json").read_text())
    b = json.loads((from_onnx / "predictions.json").read_text())
    assert a["score_thresh"] == b["score_thresh"] == float(thresh)
    kept = 0
    for ea, eb in zip(a["images"], b["images"], strict=True):
        assert len(ea["detections"]) == len(eb["detections"])
        for da, db in zip(ea["detections"], eb["detections"], strict=True):
            assert da["class_id"] == db["class_id"] and abs(da["score"] - db["score"]) <= SCORE_TOLERANCE
            assert max(abs(x - y) for x, y in zip(da["box"], db["box"], strict=True)) <= BOX_TOLERANCE
            assert db["score"] > float(thresh)
            kept += 1
    assert 0 < kept < len(scores)  # the threshold removed some detections and kept others


def _write_clip(path: Path, frames: int = 8, size: tuple[int, int] = (144, 176)) -> None:
    import av

    height, width = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.full((height, width, 3), 40, dtype=np.uint8)
            rgb[30:90, 10 + 8 * i : 70 + 8 * i] = (230, 200, 30)  # a square moving right
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_video_gets_an_annotated_copy_and_per_frame_detections(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    import av

    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    out = tmp_path / "out"
    result = _predict([tiny_raccoon_model, clip, "--output-dir", out, "--images-per-batch", "3"], capsys, monkeypatch)
    data = json.loads((out / "clip.json").read_text())
    total = sum(len(f["detections"]) for f in data["frames"])
    assert f"8 frames, {total} detections" in result.stdout and total > 8
    assert [f["frame"] for f in data["frames"]] == list(range(8))
    assert (data["width"], data["height"], data["fps"]) == (176, 144, 10.0)
    assert all(0 < len(f["detections"]) <= 20 for f in data["frames"])
    assert data["frames"][1]["time"] == pytest.approx(0.1)
    with av.open(str(out / "clip.mp4")) as annotated:
        decoded = [frame.to_ndarray(format="rgb24") for frame in annotated.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (144, 176, 3)
    again = run_cli(["predict", str(tiny_raccoon_model), str(clip), "--output-dir", str(out)], capsys, monkeypatch)
    assert again.exit_code == 2 and "holds an earlier output of `retina predict`" in again.stderr


def test_an_unknown_format_is_refused_by_the_option_itself(tmp_path, capsys, monkeypatch):
    # the choices are checked while the flags are parsed: nothing is read or written
    out = tmp_path / "out"
    result = run_cli(["predict", str(tmp_path / "none.pth"), str(tmp_path), "--format", "json", "--format", "xml",
                      "--output-dir", str(out)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "'xml' is not one of 'json', 'coco', 'yolo'" in result.output
    assert not out.exists()


def test_overwrite_help_says_what_it_replaces(capsys, monkeypatch):
    for command, words in (("predict", "Replace an earlier `retina predict` output in --output-dir."),
                           ("eval", "Replace an earlier `retina eval` output in --output-dir."),
                           ("export", "Replace the --out file if it exists.")):
        result = run_cli([command, "--help"], capsys, monkeypatch)
        assert result.exit_code == 0
        assert words in " ".join(result.output.split()), command

"""INT8 and OpenVINO exports of a trained model, end to end (slow: trains a small shapes model
for about 4 minutes on 2 CPU cores).

- INT8 (onnxruntime and OpenVINO), calibrated on the training split, keeps the test split's AP
  within the default --max-ap-drop (1 % relative), and `retina eval` of the file measures what
  the export recorded;
- a broken calibration (one black image) loses more than that and is refused: exit 1, a message
  that says what to do, no file;
- every fp32 format (`.pth`, `.onnx`, OpenVINO `.xml`) predicts the same detections: same
  classes, scores within 1e-4, boxes within 0.01 px of the resized image (scaled back to the
  original image's pixels), and the same AP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from retinacli.export.parity import BOX_TOLERANCE, SCORE_TOLERANCE
from tests.snapshots import snapshot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.train.dataset.num_images=256",
    "data.train.dataset.image_size=[128,160]",
    "data.train.resize.short_sizes=[128]",
    "data.train.resize.max_size=160",
    "data.test.dataset.num_images=32",
    "data.test.dataset.image_size=[128,160]",
    "data.test.resize.short_sizes=[144]",
    "data.test.resize.max_size=180",
    "data.num_workers=0",
    "model.fpn.out_channels=32",
    "model.head.num_convs=1",
    "solver.max_iter=300",
    "solver.warmup_iters=20",
    "solver.checkpoint_period=1000",
    "eval_period=0",
]


def _retina(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retinacli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model file, env, train split (json, images), test split (json, images)) of a small
    shapes model trained for 300 iterations (test AP about 19)."""
    root = tmp_path_factory.mktemp("int8_trained")
    env = {**os.environ, "RETINA_CACHE": str(root / "cache"), "COLUMNS": "200"}
    args = ["train", str(REPO / "recipes" / "shapes.yaml"), "--output-dir", str(root / "run")]
    for item in SMALL:
        args += ["--set", item]
    done = _retina(args, env, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    splits = {}
    for split in ("train", "test"):
        (json_file,) = (root / "cache").rglob(f"{split}.json")
        splits[split] = (json_file, json_file.parent)
    return root / "run" / "model_final.pth", env, splits["train"], splits["test"]


def _ap(path: Path, test, env, out: Path) -> float:
    done = _retina(["eval", str(path), "--dataset", str(test[0]), "--images", str(test[1]), "--output-dir", str(out)], env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())["AP"]


@pytest.mark.parametrize(("file_format", "suffix"), [("onnx", ".onnx"), ("openvino", ".xml")])
def test_int8_keeps_the_ap_of_a_trained_model(file_format, suffix, trained, tmp_path):
    model, env, train, test = trained
    out = tmp_path / f"model.int8{suffix}"
    done = _retina(
        ["export", str(model), "--format", file_format, "--int8", "--out", str(out),
         "--dataset", str(train[0]), "--images", str(train[1]),
         "--check-dataset", str(test[0]), "--check-images", str(test[1])],
        env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "calibrated on 32 images" in done.stdout
    int8_ap = _ap(out, test, env, tmp_path / "eval_int8")
    float_ap = _ap(model, test, env, tmp_path / "eval_float")
    assert float_ap > 10  # trained: the check below means something
    assert int8_ap >= 0.99 * float_ap, (float_ap, int8_ap)


@pytest.mark.parametrize(("file_format", "suffix"), [("onnx", ".onnx"), ("openvino", ".xml")])
def test_a_black_calibration_image_is_refused_with_no_file(file_format, suffix, trained, tmp_path):
    model, env, _, test = trained
    black = tmp_path / "black"
    black.mkdir()
    Image.new("RGB", (160, 128), (0, 0, 0)).save(black / "black.png")
    categories = json.loads(test[0].read_text())["categories"]
    (black / "black.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "black.png", "width": 160, "height": 128}],
        "annotations": [],
        "categories": categories,
    }))
    before = snapshot(tmp_path)
    out = tmp_path / f"model.int8{suffix}"
    done = _retina(
        ["export", str(model), "--format", file_format, "--int8", "--out", str(out),
         "--dataset", str(black / "black.json"), "--images", str(black), "--calibration-images", "1",
         "--check-dataset", str(test[0]), "--check-images", str(test[1])],
        env,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    message = " ".join(done.stderr.split())
    assert f"{out}: not written: the INT8 file loses" in message
    assert "more than --max-ap-drop 0.01" in message and "--calibration-images" in message
    assert "Traceback" not in done.stderr
    assert snapshot(tmp_path) == before  # no file, no temporary, nothing else touched


def _match(reference: list[dict], other: list[dict], scale: float) -> list[str]:
    """Greedy one-to-one match (same class, score within SCORE_TOLERANCE, box within the
    tolerance scaled to original pixels); the problems found."""
    problems = [] if len(reference) == len(other) else [f"{len(reference)} vs {len(other)} detections"]
    free = list(other)
    for det in sorted(reference, key=lambda d: -d["score"]):
        candidates = [
            o for o in free
            if o["class_id"] == det["class_id"] and abs(o["score"] - det["score"]) <= SCORE_TOLERANCE
            and max(abs(a - b) for a, b in zip(o["box"], det["box"], strict=True)) <= BOX_TOLERANCE * scale
        ]
        if not candidates:
            problems.append(f"no match for {det}")
            continue
        free.remove(candidates[0])
    return problems


def test_every_fp32_format_predicts_the_model_files_detections(trained, tmp_path):
    model, env, _, test = trained
    exports = {}
    for file_format, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        exports[file_format] = tmp_path / f"model{suffix}"
        done = _retina(["export", str(model), "--format", file_format, "--out", str(exports[file_format])], env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    images = sorted(test[1].rglob("*.png"))[:6]
    predictions = {}
    for name, path in {"pth": model, **exports}.items():
        out = tmp_path / f"pred_{name}"
        done = _retina(["predict", str(path), *map(str, images), "--output-dir", str(out)], env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        predictions[name] = json.loads((out / "predictions.json").read_text())["images"]
    shorts = 144  # data.test.resize.short_sizes above; images are 128x160, so the scale is 128/144 <= 1
    total = 0
    for name in exports:
        for ref, other in zip(predictions["pth"], predictions[name], strict=True):
            scale = min(ref["width"], ref["height"]) / shorts
            assert _match(ref["detections"], other["detections"], scale) == [], (name, ref["file"])
            total += len(ref["detections"])
    assert total > 0
    aps = {name: _ap(path, test, env, tmp_path / f"eval_{name}") for name, path in {"pth": model, **exports}.items()}
    assert aps["onnx"] == pytest.approx(aps["pth"], abs=0.01) and aps["openvino"] == pytest.approx(aps["pth"], abs=0.01)

"""`retina export`: ONNX and TorchScript files that compute what the model computes, on a model
made by the tests and on the imported detectron2 golden model (against detectron2's own
results); mismatches and a missing runtime are clear errors."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from retinacli.commands.export import export
from retinacli.commands.import_detectron2 import import_detectron2
from retinacli.data.augment.resize_flip import resize_image, resized_hw
from retinacli.data.images import read_image
from retinacli.errors import ExportError, UsageError
from retinacli.export import parity as parity_module
from retinacli.export.runtime import open_exported
from tests.cli_helpers import run_cli

LOW_THRESH = "model.test.score_thresh=0.01"  # an untrained model's scores are about 0.01


def test_onnx_export_from_the_cli_checks_itself(tiny_raccoon_model, tiny_raccoon_onnx, capsys, monkeypatch):
    out = tiny_raccoon_onnx
    exported = open_exported(out)
    meta = exported.metadata
    assert meta.class_names == ("raccoon",) and meta.class_dataset_ids == (1,) and meta.input_format == "BGR"
    assert (meta.score_thresh, meta.network_only, meta.detections_per_image) == (0.0, False, 20)
    again = run_cli(["export", str(tiny_raccoon_model), "--out", str(out)], capsys, monkeypatch)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_exported_detections_equal_the_models_on_images_of_any_size(tiny_raccoon_model, tiny_raccoon_onnx, raccoon_dir):
    from retinacli.commands.model_files import load_detector

    model = load_detector(tiny_raccoon_model).model
    images = []
    for name, (h, w) in (("raccoon-1.jpg", (160, 200)), ("raccoon-2.jpg", (257, 131)), ("raccoon-3.jpg", (320, 480))):
        pixels = read_image(raccoon_dir / "images" / name, input_format="BGR")
        images.append(torch.from_numpy(np.ascontiguousarray(resize_image(pixels, height=h, width=w).transpose(2, 0, 1))))
    checked = parity_module.compare(model, open_exported(tiny_raccoon_onnx), images)
    assert checked.ok, checked.problems
    assert checked.detections > 20  # NMS, top-k and the cap of 20 per image all at work
    assert checked.max_box_difference <= 0.01 and checked.max_score_difference <= 1e-4


def test_torchscript_export(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.ts"
    result = run_cli(["export", str(tiny_raccoon_model), "--format", "torchscript", "--out", str(out), "--set", LOW_THRESH], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (torchscript, whole detector" in result.stdout and "detections equal" in result.stdout
    assert open_exported(out, trust_code=True).runtime == "torchscript"


@pytest.mark.slow
def test_network_only_export(tiny_raccoon_model, tmp_path):
    raw = export(tiny_raccoon_model, out=tmp_path / "raw.onnx", network_only=True)
    assert raw.parity is not None and raw.parity.ok
    outputs = open_exported(raw.path).run(np.zeros((3, 160, 192), dtype=np.uint8))
    levels = raw.metadata.num_levels
    assert len(outputs) == 3 * levels  # logits, deltas and anchors per level
    assert outputs[0].shape[-1] == 1 and outputs[levels].shape[-1] == 4 and outputs[2 * levels].shape[-1] == 4


def test_golden_detectron2_model_exported_gives_detectron2s_detections(golden_dir, tmp_path):
    imported = import_detectron2(golden_dir / "config.yaml", golden_dir / "model_final.pth", tmp_path / "golden")
    result = export(imported.model_path, out=tmp_path / "golden.onnx")
    assert result.parity is not None and result.parity.ok
    exported = open_exported(result.path)
    meta = exported.metadata
    annotations = json.loads((golden_dir / "annotations.json").read_text())
    expected = defaultdict(list)
    for r in json.loads((golden_dir / "expected" / "coco_results.json").read_text()):
        expected[r["image_id"]].append(r)
    max_box = max_score = 0.0
    for image in annotations["images"]:
        pixels = read_image(golden_dir / "images" / image["file_name"], input_format=meta.input_format)
        h, w = pixels.shape[:2]
        new_h, new_w = resized_hw(height=h, width=w, short_size=meta.short_size, max_size=meta.max_size)
        resized = resize_image(pixels, height=new_h, width=new_w)
        (dets,) = exported.detect([torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))], [(h, w)])
        ours = expected[image["id"]]
        assert len(dets.scores) == len(ours), image["file_name"]
        for box, score, label, theirs in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist(), ours, strict=True):
            x, y, bw, bh = theirs["bbox"]
            max_box = max(max_box, *(abs(a - b) for a, b in zip(box, (x, y, x + bw, y + bh), strict=True)))
            max_score = max(max_score, abs(score - theirs["score"]))
            assert meta.class_dataset_ids[label] == theirs["category_id"]
    assert max_box <= 0.01 and max_score <= 1e-4, (max_box, max_score)


def test_a_file_that_computes_something_else_is_refused(tiny_raccoon_model, tmp_path, monkeypatch):
    real_run = parity_module.ExportedDetector.run

    def shifted(self, image):
        boxes, scores, classes = real_run(self, image)
        return [boxes + 0.5, scores, classes]  # half a pixel off

    monkeypatch.setattr(parity_module.ExportedDetector, "run", shifted)
    with pytest.raises(ExportError) as caught:
        export(tiny_raccoon_model, export_format="torchscript", out=tmp_path / "bad.ts", overrides=[LOW_THRESH])
    message = str(caught.value)
    assert "does not compute what" in message and "a box differs by 0.5000 px" in message
    assert (tmp_path / "bad.ts").is_file()  # kept for inspection


def test_onnx_files_need_onnxruntime(tiny_raccoon_onnx, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UsageError, match=r"onnxruntime is not installed; install it with pip install onnxruntime"):
        open_exported(tiny_raccoon_onnx)


def test_old_opsets_are_refused(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    result = run_cli(["export", str(tiny_raccoon_model), "--out", str(tmp_path / "m.onnx"), "--opset", "11"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--opset 11" in result.stderr


def test_out_follows_the_output_file_rule(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    from tests.snapshots import changed_outside, snapshot

    mine = tmp_path / "mine.ts"
    mine.write_bytes(b"the user's file")
    folder = tmp_path / "folder.ts"
    folder.mkdir()
    before = snapshot(tmp_path)
    args = ["export", str(tiny_raccoon_model), "--format", "torchscript", "--no-verify"]
    refused = run_cli([*args, "--out", str(mine)], capsys, monkeypatch)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert f"{mine}: already exists; pass --overwrite to replace it, or choose another --out" in " ".join(refused.stderr.split())
    for extra in ([], ["--overwrite"]):
        result = run_cli([*args, "--out", str(folder), *extra], capsys, monkeypatch)
        assert result.exit_code == 2 and f"{folder}: is a folder; --out names the file to write" in result.stderr
    assert changed_outside(before, tmp_path) == []
    replaced = run_cli([*args, "--out", str(mine), "--overwrite"], capsys, monkeypatch)
    assert replaced.exit_code == 0, replaced.output
    assert open_exported(mine, trust_code=True).runtime == "torchscript"


def test_a_torchscript_file_is_opened_only_when_trusted(tmp_path, monkeypatch):
    # open_exported refuses before torch sees the file; the file need not even be a real one.
    loads: list[str] = []
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loads.append(args[0]))
    with pytest.raises(UsageError, match=r"model\.ts: refused to load a TorchScript file: TorchScript files are programs"):
        open_exported(tmp_path / "model.ts")
    assert loads == []

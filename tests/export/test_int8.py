"""`retina export --int8` and `--format openvino`: the quantized and OpenVINO files, their
metadata, the AP check's figures as `retina eval` reproduces them, and the refusals.

The tiny raccoon model is untrained, so these tests check mechanics, not accuracy: what the
check records equals what `retina eval` measures on the same files, a float AP of 0 refuses the
file, a refused file leaves nothing behind. Accuracy on a trained model (INT8 within
--max-ap-drop, a broken calibration refused) is tests/export/test_int8_trained.py (slow)."""

from __future__ import annotations

import json

import onnx
import pytest

from retinacli.errors import UsageError
from retinacli.export.quantize import HEAD_OUTPUTS, float_node_names, network_node_names
from retinacli.export.runtime import open_exported
from tests.cli_helpers import run_cli
from tests.snapshots import snapshot


def _images(raccoon_dir):
    return str(raccoon_dir / "images")


def _eval_ap(path, raccoon_subset, raccoon_dir, out, capsys, monkeypatch) -> float:
    result = run_cli(
        ["eval", str(path), "--dataset", str(raccoon_subset), "--images", _images(raccoon_dir), "--output-dir", str(out)],
        capsys, monkeypatch,
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())["AP"]


@pytest.mark.parametrize("file_format", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])
def test_int8_file_records_what_eval_measures(file_format, request, tiny_raccoon_onnx, tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch):
    suffix = ".onnx" if file_format == "onnx" else ".xml"
    out = tmp_path / f"m.int8{suffix}"
    args = ["export", str(tiny_raccoon_model), "--format", file_format, "--int8", "--out", str(out),
            "--dataset", str(raccoon_subset), "--images", _images(raccoon_dir), "--calibration-images", "2", "--force"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "calibrated on 2 images of" in result.stdout and "AP" in result.stdout
    meta = open_exported(out).metadata
    record = meta.quantization
    assert meta.precision == "int8" and record is not None
    assert record["runtime"] == ("onnxruntime" if file_format == "onnx" else "openvino")
    assert (record["calibration_images"], record["check_images"]) == (2, 3)
    assert record["calibration_source"] == str(raccoon_subset) == record["check_source"]
    # the figures recorded are the ones `retina eval` measures on the same images
    int8_ap = _eval_ap(out, raccoon_subset, raccoon_dir, tmp_path / "eval_int8", capsys, monkeypatch)
    assert int8_ap == pytest.approx(record["int8_ap"], abs=1e-6)
    float_ap = _eval_ap(tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path / "eval_pth", capsys, monkeypatch)
    assert float_ap == pytest.approx(record["float_ap"], abs=0.01)
    assert record["float_ap"] > 0  # the untrained model (score_thresh 0) still finds something: the drop is defined
    assert record["relative_ap_drop"] == pytest.approx((record["float_ap"] - record["int8_ap"]) / record["float_ap"])
    fp32 = tiny_raccoon_onnx if file_format == "onnx" else request.getfixturevalue("tiny_raccoon_ir")
    size = sum(p.stat().st_size for p in (out, out.with_suffix(".bin")) if p.exists())
    fp32_size = sum(p.stat().st_size for p in (fp32, fp32.with_suffix(".bin")) if p.exists())
    assert size < 0.4 * fp32_size  # int8 weights: a quarter of the bytes, plus scales


def test_int8_onnx_quantizes_the_network_and_leaves_the_postprocessing_float(tiny_raccoon_onnx, tmp_path):
    from retinacli.export.quantize import quantize_onnx

    float_model = onnx.load(str(tiny_raccoon_onnx))
    network = set(network_node_names(float_model))
    floats = set(float_node_names(float_model))
    ops = {node.name: node.op_type for node in float_model.graph.node}
    assert {ops[name] for name in network} >= {"Conv", "Add", "Relu"}
    assert {"NonMaxSuppression", "TopK", "Sigmoid"} <= {ops[name] for name in floats}
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (3, 160, 213), dtype=np.uint8)
    target = tmp_path / "q.onnx"
    quantize_onnx(tiny_raccoon_onnx, target, [image])
    quantized = onnx.load(str(target))
    consumers: dict[str, list] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {node.name: node for node in quantized.graph.node}
    for name in floats:  # every float node is still there, and none of its inputs is quantized
        node = by_name[name]
        producers = [n for n in quantized.graph.node if set(n.output) & set(node.input)]
        assert all(p.op_type != "DequantizeLinear" for p in producers), name
    quantized_convs = [n for n in quantized.graph.node if n.op_type == "Conv" and any(
        p.op_type == "DequantizeLinear" for p in quantized.graph.node if set(p.output) & set(n.input))]
    assert len(quantized_convs) == sum(1 for n in network if ops[n] == "Conv")
    # keep_float leaves a scope out; a scope that names no module is a usage error
    kept = network_node_names(float_model, keep_float=("head",))
    assert kept and all(not n.startswith("node_head") for n in kept) and len(kept) < len(network)
    outputs = set(network) - set(network_node_names(float_model, keep_float=HEAD_OUTPUTS))
    assert {ops[name] for name in outputs} == {"Conv"} and len(outputs) == 2 * 5  # cls_score, bbox_pred on 5 levels
    with pytest.raises(UsageError, match="--keep-float head.nope: no module"):
        network_node_names(float_model, keep_float=("head.nope",))


@pytest.mark.slow  # about 17 s: a whole INT8 export
def test_an_int8_file_whose_float_model_finds_nothing_is_refused_and_not_written(tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch):
    # a check set whose only boxes are 2-pixel squares in a corner: no detection overlaps them, AP 0
    data = json.loads(raccoon_subset.read_text())
    for annotation in data["annotations"]:
        annotation["bbox"], annotation["area"] = [0, 0, 2, 2], 4
    check = tmp_path / "corner.json"
    check.write_text(json.dumps(data))
    before = snapshot(tmp_path)
    out = tmp_path / "m.int8.onnx"
    args = ["export", str(tiny_raccoon_model), "--int8", "--out", str(out), "--dataset", str(raccoon_subset),
            "--images", _images(raccoon_dir), "--calibration-images", "1",
            "--check-dataset", str(check), "--check-images", _images(raccoon_dir)]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 1, result.output
    assert "not written" in result.stderr and "AP 0" in result.stderr and "--check-dataset" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before  # no file, no temporary left


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "torchscript", "--int8"], "not TorchScript"),
        (["--int8", "--network-only"], "without --network-only"),
        (["--dataset", "x.json", "--images", "."], "go with --int8"),
        (["--int8", "--calibration-images", "0"], "calibration-images"),
        (["--int8", "--max-ap-drop", "2"], "--max-ap-drop"),
        (["--format", "openvino", "--out", "model.onnx"], "NAME.xml"),
        (["--keep-float", "head.cls_score"], "goes with --int8"),
    ],
)
def test_int8_and_openvino_usage_errors(extra, message, tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(["export", str(tiny_raccoon_model), *extra], capsys, monkeypatch)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_raccoon_ir(tiny_raccoon_model, tmp_path_factory):
    """`retina export --format openvino` of the tiny raccoon model: (the .xml, the command's output)."""
    import sys

    from retinacli.cli import main

    out = tmp_path_factory.mktemp("ir") / "m.xml"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr(sys, "argv", ["retina", "export", str(tiny_raccoon_model), "--format", "openvino", "--out", str(out)])
        patch.setenv("COLUMNS", "200")
        main()
    assert exit_info.value.code in (0, None)
    return out


def test_openvino_ir_is_two_files_checked_against_the_model(tiny_raccoon_ir, tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch):
    exported = open_exported(tiny_raccoon_ir)
    assert exported.runtime == "openvino" and exported.metadata.class_names == ("raccoon",)
    assert exported.metadata.precision == "fp32" and tiny_raccoon_ir.with_suffix(".bin").stat().st_size > 1e6
    ap_xml = _eval_ap(tiny_raccoon_ir, raccoon_subset, raccoon_dir, tmp_path / "e1", capsys, monkeypatch)
    ap_pth = _eval_ap(tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path / "e2", capsys, monkeypatch)
    assert ap_xml == pytest.approx(ap_pth, abs=0.01)


def test_openvino_export_does_not_replace_an_existing_bin(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.xml"
    out.with_suffix(".bin").write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    result = run_cli(["export", str(tiny_raccoon_model), "--format", "openvino", "--out", str(out)], capsys, monkeypatch)
    assert result.exit_code == 2 and "--overwrite" in result.stderr and "m.bin" in result.stderr
    assert snapshot(tmp_path) == before


def test_an_ir_without_its_weights_is_a_clear_error(tiny_raccoon_ir, raccoon_dir, tmp_path, capsys, monkeypatch):
    lonely = tmp_path / "m.xml"
    lonely.write_bytes(tiny_raccoon_ir.read_bytes())
    images = tmp_path / "images"
    images.mkdir()
    first = sorted((raccoon_dir / "images").iterdir())[0]
    (images / first.name).write_bytes(first.read_bytes())
    result = run_cli(["predict", str(lonely), str(images), "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 2 and "m.bin are not beside it" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # about 30 s: a whole OpenVINO INT8 export
def test_openvino_and_nncf_send_no_telemetry_and_write_nothing_at_home(tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path):
    # Left alone, OpenVINO's converter and NNCF write a client id into ~/intel and send usage
    # events; retinacli imports them with their telemetry off. A process of its own, so that no
    # earlier import of openvino in this one decides the outcome.
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "m.int8.xml"
    args = ["export", str(tiny_raccoon_model), "--format", "openvino", "--int8", "--out", str(out), "--dataset", str(raccoon_subset),
            "--images", _images(raccoon_dir), "--calibration-images", "1", "--force"]
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV")}
    done = subprocess.run([sys.executable, "-m", "retinacli", *args], env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert out.exists() and list(home.iterdir()) == []

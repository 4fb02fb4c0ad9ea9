"""`retina benchmark`: the measures a user reads, consistent with what they measure."""

from __future__ import annotations

import json

import pytest
import torch

from retinacli.benchmarking import count_parameters, flops_per_image, time_calls
from retinacli.build import build_model
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # --threads sets torch's, for the whole process
    yield
    torch.set_num_threads(threads)


def test_json_has_every_measure(tmp_path, capsys, monkeypatch):
    args = ["benchmark", str(REPO / "recipes" / "shapes.yaml"), "--image-size", "160x192", "--images-per-batch", "2", "--no-onnx", "--threads", "1", "--json"]
    for override in tiny_overrides(tmp_path):
        args += ["--set", override]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    model = build_model(tiny_recipe(tmp_path).model)
    assert data["parameters"] == count_parameters(model)
    assert data["image_size"] == [160, 192] and data["images_per_batch"] == 2 and data["threads"] == 1
    assert data["flops_per_image"] > 1e8
    assert data["inference_images_per_second"] == 2 / data["inference"]["median"]
    assert data["training_images_per_second"] == 2 / data["training"]["median"]
    assert data["inference"]["repeats"] >= 3 and data["training"]["warmup"] == 3
    assert data["onnx"] is None and "--no-onnx" in data["onnx_note"]
    assert data["training_memory"]["peak_bytes"] > 0 and data["inference_memory"]["kind"] == "cpu rss"


def test_flops_grow_with_the_image_area(tmp_path):
    model = build_model(tiny_recipe(tmp_path).model)
    small = flops_per_image(model, torch.zeros(3, 128, 160, dtype=torch.uint8))
    large = flops_per_image(model, torch.zeros(3, 256, 320, dtype=torch.uint8))
    assert 3.8 < large / small < 4.2  # convolutions dominate, and they scale with the area


def test_timing_runs_at_least_the_minimum_repeats_after_the_warm_up():
    calls = []
    timing = time_calls(lambda: calls.append(1), device=torch.device("cpu"), warmup=2, min_repeats=3, min_seconds=0.0)
    assert len(calls) == 5 and timing.repeats == 3 and timing.warmup == 2 and timing.median >= 0


def test_amp_needs_cuda_and_sizes_are_checked(capsys, monkeypatch):
    recipe = str(REPO / "recipes" / "shapes.yaml")
    result = run_cli(["benchmark", recipe, "--amp", "--device", "cpu"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--amp: mixed precision runs on CUDA only" in result.stderr
    result = run_cli(["benchmark", recipe, "--image-size", "480"], capsys, monkeypatch)
    assert result.exit_code == 2 and "write it as HEIGHTxWIDTH" in result.stderr


FORMATS = ["pytorch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
ROW_FIELDS = {
    "format", "file_bytes", "ap", "latency_median_s", "latency_p90_s", "repeats", "warmup",
    "images_per_second", "peak_memory_bytes", "memory_kind", "peak_fraction",
}


@pytest.mark.slow  # about 35 s: every deploy format exported and timed
def test_formats_json_has_every_field_for_every_format(tiny_raccoon_model, raccoon_subset, raccoon_dir, capsys, monkeypatch):
    args = ["benchmark", str(tiny_raccoon_model), "--formats", ",".join(FORMATS), "--image-size", "160x213",
            "--dataset", str(raccoon_subset), "--images", str(raccoon_dir / "images"), "--calibration-images", "2",
            "--threads", "1", "--json"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["image_size"] == [160, 213] and data["threads"] == 1 and data["dataset"] == str(raccoon_subset)
    assert data["calibration"].startswith("2 images of data.train.dataset (") and "raccoon" in data["calibration"]
    kernels = data["peak_kernels"]
    assert set(kernels) == {"matmul 2048", "conv 1x1 2048", "conv 3x3 256x64x64"}
    assert data["peak_flops_per_second"] == max(kernels.values()) > 1e9
    rows = {row["format"]: row for row in data["formats"]}
    assert list(rows) == FORMATS
    for name, row in rows.items():
        assert set(row) == ROW_FIELDS, name
        assert row["file_bytes"] > 0 and row["peak_memory_bytes"] > 0 and row["memory_kind"] == "cpu rss added"
        assert 0 < row["latency_median_s"] <= row["latency_p90_s"] and row["repeats"] >= 10
        assert row["images_per_second"] == pytest.approx(1 / row["latency_median_s"])
        assert row["peak_fraction"] == pytest.approx(data["flops_per_image"] / row["latency_median_s"] / data["peak_flops_per_second"])
        assert row["ap"] is not None and 0 <= row["ap"] <= 100
    # the float files compute the model's detections: the same AP; INT8 files are a quarter of the bytes
    assert rows["onnx"]["ap"] == pytest.approx(rows["pytorch"]["ap"], abs=0.01)
    assert rows["openvino"]["ap"] == pytest.approx(rows["pytorch"]["ap"], abs=0.01)
    assert rows["onnx-int8"]["file_bytes"] < 0.4 * rows["onnx"]["file_bytes"]
    assert rows["openvino-int8"]["file_bytes"] < 0.4 * rows["openvino"]["file_bytes"]


def test_formats_table_and_unknown_formats(tiny_raccoon_model, capsys, monkeypatch):
    result = run_cli(["benchmark", str(tiny_raccoon_model), "--formats", "pytorch,tflite"], capsys, monkeypatch)
    assert result.exit_code == 2 and "tflite" in result.stderr and "pytorch,onnx,onnx-int8" in result.stderr
    result = run_cli(["benchmark", str(tiny_raccoon_model), "--formats", "pytorch", "--image-size", "160x213", "--threads", "1"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    table = " ".join(result.stdout.split())
    assert "pytorch" in table and "GFLOPs per image" in table and "matmul 2048" in table and "of peak" in table

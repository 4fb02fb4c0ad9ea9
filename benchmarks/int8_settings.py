"""INT8 quantization settings compared on one trained model: COCO AP on a check set and time per
image over the float file's, for each setting tried for issue 22 (docs/engine.md "INT8").

The float ONNX file is `retina export MODEL` of the model; calibration takes `--calibration N`
images of the training split as `retina export --int8` does. Each setting is one argument of
`quantize_onnx` / `quantize_openvino` changed, the others at their defaults. AP and time come
from `evaluation.ap_check.check_ap` (the export's own check), run twice per file (the first run
warms the runtime up; the second is reported).

Usage: python benchmarks/int8_settings.py FLOAT.onnx --train JSON IMAGES --check JSON IMAGES
           [--calibration 32] [--threads 2] [--only onnxruntime|openvino]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from retinacli.build import DatasetFiles, build_given_dataset
from retinacli.data.calibration import calibration_images
from retinacli.evaluation.ap_check import ApCheck, check_ap
from retinacli.evaluation.classes import ClassInfo
from retinacli.export import quantize
from retinacli.export.formats import write_deploy_file
from retinacli.export.runtime import import_openvino, open_exported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_onnx", type=Path)
    parser.add_argument("--train", nargs=2, type=Path, required=True, metavar=("JSON", "IMAGES"))
    parser.add_argument("--check", nargs=2, type=Path, required=True, metavar=("JSON", "IMAGES"))
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["onnxruntime", "openvino"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = build_given_dataset(DatasetFiles(*args.train))
    check = build_given_dataset(DatasetFiles(*args.check))
    meta = open_exported(args.float_onnx).metadata
    classes = ClassInfo(meta.class_names, meta.class_dataset_ids)

    def measure(path: Path) -> ApCheck:
        detector = open_exported(path, threads=args.threads)
        kwargs = dict(classes=classes, short_size=meta.short_size, max_size=meta.max_size, input_format=meta.input_format, source=path)
        check_ap(detector, check, **kwargs)  # warm-up
        return check_ap(detector, check, **kwargs)

    calib = calibration_images(train, args.calibration, input_format=meta.input_format, short_size=meta.short_size, max_size=meta.max_size, min_side=129)
    height, width = min(a.shape[1] for a in calib), min(a.shape[2] for a in calib)
    cropped = [np.ascontiguousarray(a[:, :height, :width]) for a in calib]
    head_outputs = quantize.QuantizationSettings(keep_float=("head.cls_score", "head.bbox_pred"))

    def write(fmt: str, name: str, images=calib, settings=quantize.QuantizationSettings()) -> Path:
        target = tmp / (name + (".onnx" if fmt.startswith("onnx") else ".xml"))
        write_deploy_file(args.float_onnx, target, deploy_format=fmt, metadata=meta, calibration=images, settings=settings)
        return target

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base = measure(args.float_onnx)
        print(f"float ONNX: AP {base.ap:.2f} on {base.images} images, {1e3 * base.seconds / base.images:.1f} ms/image")
        rows: list[tuple[str, Callable[[], Path], ApCheck]] = []
        if args.only in (None, "onnxruntime"):
            rows += [
                ("onnxruntime: network, per-channel, min-max (default)", lambda: write("onnx-int8", "default"), base),
                ("onnxruntime: calibration images cropped to one size", lambda: write("onnx-int8", "cropped", cropped), base),
                ("onnxruntime: per-tensor weights", lambda: _with_kwargs("onnxruntime.quantization", "quantize_static", per_channel=False)(lambda: write("onnx-int8", "tensor")), base),
                ("onnxruntime: 7-bit weights (reduce_range)", lambda: _with_kwargs("onnxruntime.quantization", "quantize_static", reduce_range=True)(lambda: write("onnx-int8", "reduce")), base),
                ("onnxruntime: head's output convolutions float", lambda: write("onnx-int8", "head", settings=head_outputs), base),
                ("onnxruntime: convolutions only", lambda: _conv_only(lambda: write("onnx-int8", "conv")), base),
            ]
        if args.only in (None, "openvino"):
            fp32_ir = write("openvino", "fp32")
            ov_base = measure(fp32_ir)
            print(f"float OpenVINO: AP {ov_base.ap:.2f}, {1e3 * ov_base.seconds / ov_base.images:.1f} ms/image")
            import_openvino()
            import nncf

            rows += [
                ("NNCF: performance preset (default)", lambda: write("openvino-int8", "performance"), ov_base),
                ("NNCF: mixed preset (asymmetric activations)", lambda: _with_kwargs("nncf", "quantize", preset=nncf.QuantizationPreset.MIXED)(lambda: write("openvino-int8", "mixed")), ov_base),
                ("NNCF: head's output convolutions float", lambda: write("openvino-int8", "ov_head", settings=head_outputs), ov_base),
                ("NNCF: full bias correction", lambda: _with_kwargs("nncf", "quantize", fast_bias_correction=False)(lambda: write("openvino-int8", "bias")), ov_base),
            ]
        for name, make, reference in rows:
            result = measure(make())
            drop = 100 * (reference.ap - result.ap) / reference.ap if reference.ap > 0 else 0.0
            print(f"{name:<54} AP {result.ap:6.2f}  drop {drop:+6.2f} %  {1e3 * result.seconds / result.images:6.1f} ms/image  "
                  f"{result.seconds / reference.seconds:.2f}x float", flush=True)


def _with_kwargs(module_name: str, function: str, **forced):
    """Run `make` with `module_name.function` called with `forced` keyword arguments."""

    def run(make: Callable[[], Path]) -> Path:
        module = sys.modules[module_name] if module_name in sys.modules else __import__(module_name, fromlist=[function])
        real = getattr(module, function)
        setattr(module, function, lambda *a, **k: real(*a, **{**k, **forced}))
        try:
            return make()
        finally:
            setattr(module, function, real)

    return run


def _conv_only(make: Callable[[], Path]) -> Path:
    with _patched(quantize, "ONNX_QUANTIZED_OPS", ("Conv",)):
        return make()


@contextlib.contextmanager
def _patched(module, name: str, value) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


if __name__ == "__main__":
    main()

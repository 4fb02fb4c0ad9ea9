"""Deploy formats of R50-FPN on one 480x640 image on the CPU, side by side in one process:
torchvision's eager RetinaNet (the peer), retinacli eager as `retina eval` runs it, the fp32
ONNX file in onnxruntime (unfolded, as exported before INT8 existed, and with BatchNorm folded,
as `retina export` writes it), the fp32 OpenVINO IR, and the INT8 variants tried for issue 22:
onnxruntime QDQ of the network (what `retina export --int8` writes), onnxruntime QDQ of the
convolutions only, the same QDQ file read by OpenVINO, and NNCF's quantization of the IR (what
`retina export --format openvino --int8` writes). Optionally torch.compile (inductor) of the
eager model, with and without inductor's freezing.

The models are those of `engine_vs_torchvision.py` (ResNet-50-FPN, BatchNorm, 80 classes, random
weights copied into torchvision's model, the classification bias set so that 2% of the scores
pass the 0.05 threshold). INT8 files are calibrated on `--calibration` noise images (speed only:
their AP is measured on trained models, docs/engine.md "INT8"). Medians of `--repeats` calls
after 2 warm-up calls, variants interleaved. Ratios against onnxruntime fp32 (today's export)
and torchvision eager. Also prints FLOPs per image over each latency against the best dense
fp32 kernel measured in the same run (`retinacli.benchmarking.fp32_peak`).

Usage: python benchmarks/deploy_formats.py [--threads 2] [--repeats 7] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_vs_torchvision import HEIGHT, WIDTH  # noqa: E402
from inference_vs_torchvision import export_metadata, inference_pair, interleaved_medians  # noqa: E402

from retinacli.benchmarking import flops_per_image, fp32_peak, nominal_fp32_peak  # noqa: E402
from retinacli.engine.fuse import fold_batch_norms, prepare_for_inference  # noqa: E402
from retinacli.export import quantize  # noqa: E402
from retinacli.export.exporters import export_model  # noqa: E402
from retinacli.export.formats import write_deploy_file  # noqa: E402
from retinacli.export.runtime import open_exported, openvino_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=4, help="noise images to calibrate INT8 on")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (needs a C++ compiler)")
    parser.add_argument("--only", nargs="+", help="time only the variants whose names contain one of these words (and the two references)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, theirs, image = inference_pair(80)
    prepared = prepare_for_inference(copy.deepcopy(ours))
    folded = copy.deepcopy(ours)
    fold_batch_norms(folded)
    metadata = export_metadata(ours, 80)
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randint(0, 256, (3, HEIGHT, WIDTH), generator=gen, dtype=torch.uint8).numpy() for _ in range(args.calibration)]
    array = image.numpy()
    size = [(HEIGHT, WIDTH)]
    tv_image = [image.float() / 255]
    variants: dict[str, Callable[[], object]] = {
        "torchvision eager": lambda: theirs(tv_image),
        "retinacli eager (as retina eval)": lambda: prepared([image]),
    }
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        export_model(ours, tmp / "plain.onnx", export_format="onnx", metadata=metadata, example=image)
        export_model(folded, tmp / "folded.onnx", export_format="onnx", metadata=metadata, example=image)
        variants["onnxruntime fp32"] = _run(open_exported(tmp / "plain.onnx", threads=args.threads), array, size)
        variants["onnxruntime fp32, BN folded"] = _run(open_exported(tmp / "folded.onnx", threads=args.threads), array, size)
        seconds = {}
        start = time.perf_counter()
        write_deploy_file(tmp / "folded.onnx", tmp / "int8.onnx", deploy_format="onnx-int8", metadata=metadata, calibration=calibration)
        seconds["onnxruntime quantize_static"] = time.perf_counter() - start
        variants["onnxruntime INT8 QDQ, network"] = _run(open_exported(tmp / "int8.onnx", threads=args.threads), array, size)
        outputs_float = quantize.QuantizationSettings(keep_float=quantize.HEAD_OUTPUTS)
        write_deploy_file(tmp / "folded.onnx", tmp / "int8h.onnx", deploy_format="onnx-int8", metadata=metadata, calibration=calibration, settings=outputs_float)
        variants["onnxruntime INT8 QDQ, head outputs float"] = _run(open_exported(tmp / "int8h.onnx", threads=args.threads), array, size)
        saved = quantize.ONNX_QUANTIZED_OPS
        quantize.ONNX_QUANTIZED_OPS = ("Conv",)
        write_deploy_file(tmp / "folded.onnx", tmp / "conv.onnx", deploy_format="onnx-int8", metadata=metadata, calibration=calibration)
        quantize.ONNX_QUANTIZED_OPS = saved
        variants["onnxruntime INT8 QDQ, Conv only"] = _run(open_exported(tmp / "conv.onnx", threads=args.threads), array, size)
        write_deploy_file(tmp / "folded.onnx", tmp / "fp32.xml", deploy_format="openvino", metadata=metadata)
        variants["OpenVINO fp32"] = _run(open_exported(tmp / "fp32.xml", threads=args.threads), array, size)
        start = time.perf_counter()
        write_deploy_file(tmp / "folded.onnx", tmp / "int8.xml", deploy_format="openvino-int8", metadata=metadata, calibration=calibration)
        seconds["NNCF quantize"] = time.perf_counter() - start
        variants["OpenVINO INT8 NNCF"] = _run(open_exported(tmp / "int8.xml", threads=args.threads), array, size)
        from retinacli.export.runtime import import_openvino

        core = import_openvino().Core()
        qdq = core.compile_model(core.read_model(str(tmp / "int8.onnx")), "CPU", openvino_config(args.threads))
        variants["OpenVINO reading the QDQ .onnx"] = lambda: qdq(array)
        if args.compile:
            for name, freezing in (("torch.compile (inductor)", False), ("torch.compile, freezing", True)):
                import torch._inductor.config as inductor_config

                inductor_config.freezing = freezing
                compiled = prepare_for_inference(copy.deepcopy(ours))
                compiled.backbone = torch.compile(compiled.backbone)
                compiled.head = torch.compile(compiled.head)
                start = time.perf_counter()
                with torch.inference_mode():
                    compiled([image])
                seconds[name + " first call"] = time.perf_counter() - start
                variants[name] = lambda compiled=compiled: compiled([image])
        if args.only:
            keep = {"torchvision eager", "onnxruntime fp32"}
            variants = {k: v for k, v in variants.items() if k in keep or any(word in k for word in args.only)}
        times = interleaved_medians(variants, args.repeats, warmup=2)
    flops = flops_per_image(copy.deepcopy(ours), image)
    peak = fp32_peak()
    nominal = nominal_fp32_peak(args.threads)
    base, peer = times["onnxruntime fp32"], times["torchvision eager"]
    print(f"torch {torch.__version__}; one {HEIGHT}x{WIDTH} image, R50-FPN, 80 classes, {args.threads} threads; "
          f"median of {args.repeats} after 2 warm-up calls, interleaved")
    print(f"FLOPs per image: {flops / 1e9:.1f} G; fp32 kernels: "
          + ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in peak.kernels.items())
          + " GFLOP/s" + (f"; nominal {nominal / 1e9:.0f}" if nominal else ""))
    print(f"{'variant':<36} {'ms':>8} {'vs ORT fp32':>12} {'vs tv':>7} {'of peak':>8}")
    for name, value in times.items():
        share = flops / value / peak.flops_per_second
        print(f"{name:<36} {value * 1e3:8.1f} {value / base:12.2f} {value / peer:7.2f} {share:8.2f}")
    for name, value in seconds.items():
        print(f"{name}: {value:.1f} s")


def _run(detector, array: np.ndarray, size: list[tuple[int, int]]) -> Callable[[], object]:
    tensor = torch.from_numpy(array)
    return lambda: detector.detect([tensor], size)


if __name__ == "__main__":
    main()

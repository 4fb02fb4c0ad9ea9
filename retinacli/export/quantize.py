"""INT8 post-training quantization of an exported detector's network.

Only the network is quantized: the convolutions of the backbone, the FPN and the head, and the
element-wise operations between them (residual and top-down additions, max pooling, the FPN's
upsampling), chosen by the module scope the ONNX exporter records on every node
(`pkg.torch.onnx.name_scopes`: "backbone..." or "head..."). The input's normalisation and
padding, the anchors, the sigmoid, top-k, box decoding and NMS stay in float32: they are cheap,
and coordinates or scores quantized to 256 levels would move boxes and reorder detections.

Two runtimes, each with its own tool:
- onnxruntime (`quantize_onnx`): `onnxruntime.quantization.quantize_static` in the QDQ format
  (QuantizeLinear/DequantizeLinear pairs, which onnxruntime fuses into integer kernels when it
  loads the file), weights int8 per output channel (symmetric), activations uint8 (asymmetric),
  calibrated with `calibration_method` over the calibration images.
- OpenVINO (`quantize_openvino`): NNCF's post-training quantization of the IR (`nncf.quantize`),
  its default "performance" preset (symmetric weights per channel, symmetric activations), the
  postprocessing excluded with an `IgnoredScope` of the same float nodes.

Which settings were tried and what each gave on this project's CPU is in docs/engine.md
("INT8").

Calibration images are what the file takes: (3, H, W) uint8 in the model's channel order,
resized as the file's test resize says (`calibration_images`).
"""

from __future__ import annotations

import ast
import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retinacli.errors import UsageError

QUANTIZED_SCOPES = ("backbone", "head")
"""Top-level module scopes whose nodes are quantized (module docstring)."""
HEAD_OUTPUTS = ("head.cls_score", "head.bbox_pred")
"""The head's last convolutions, whose outputs are the logits and the box deltas: the scopes to
keep float (`--keep-float`) when onnxruntime's INT8 loses too much AP (docs/engine.md "INT8")."""
ONNX_QUANTIZED_OPS = ("Conv", "Add", "MaxPool", "Resize", "Relu")
CalibrationMethod = Literal["minmax"]


@dataclass(frozen=True)
class QuantizationSettings:
    """How a file is quantized (module docstring).

    calibration_method: how activation ranges are taken from the calibration images: "minmax",
        the observed range (onnxruntime; NNCF uses its own range estimators). onnxruntime's
        histogram methods (percentile, entropy) cannot calibrate this graph: they stack each
        tensor over the calibration images, and the postprocessing's tensors differ in length
        from one image to the next (docs/engine.md "INT8").
    keep_float: module scopes (as in the model: "head.cls_score") whose nodes stay float; a
        scope that names no module of the network is a UsageError.
    """

    calibration_method: CalibrationMethod = "minmax"
    keep_float: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "keep_float": list(self.keep_float)}


@dataclass(frozen=True)
class QuantizationRecord:
    """What the INT8 file records about itself (`ExportMetadata.quantization`): the runtime and
    settings, the calibration images (how many, from where), and what the export's check
    measured: COCO AP (0-100) of the float file and the INT8 file on the check set, the relative
    drop, and the INT8 file's seconds per image over the float file's on those images."""

    runtime: str
    settings: dict[str, Any]
    calibration_images: int
    calibration_source: str
    check_source: str
    check_images: int
    float_ap: float
    int8_ap: float
    relative_ap_drop: float
    speed_ratio: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def network_node_names(model: Any, *, keep_float: Sequence[str] = ()) -> list[str]:
    """Names of the nodes of an ONNX `model` (ModelProto) that belong to the network: their
    innermost module scope starts with one of QUANTIZED_SCOPES and with none of `keep_float`."""
    names = []
    used: set[str] = set()
    for node in model.graph.node:
        scopes = _name_scopes(node)
        inside = [s for s in scopes if s.split(".")[0] in QUANTIZED_SCOPES]
        if not inside:
            continue
        kept = {k for k in keep_float for s in inside if s == k or s.startswith(k + ".")}
        if kept:
            used |= kept
            continue
        names.append(node.name)
    unknown = [k for k in keep_float if k not in used]
    if unknown:
        raise UsageError(
            f"--keep-float {','.join(unknown)}: no module of the network is called that; name modules as the model "
            f"does, e.g. {','.join(HEAD_OUTPUTS)} (the head's last convolutions) or backbone.body.conv1"
        )
    return names


def _name_scopes(node: Any) -> list[str]:
    for entry in node.metadata_props:
        if entry.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(entry.value)
            except (ValueError, SyntaxError):
                return []
            return [str(s) for s in value] if isinstance(value, list) else []
    return []


def quantize_onnx(
    float_file: Path,
    target: Path,
    calibration: Sequence[np.ndarray],
    *,
    settings: QuantizationSettings = QuantizationSettings(),
) -> None:
    """Write the INT8 version of the exported ONNX file `float_file` to `target` (module
    docstring); `calibration` holds (3, H, W) uint8 images. The metadata is copied as it is;
    the caller records the quantization in it.

    Raises:
        UsageError: onnxruntime is missing, or the file has no node recorded as the network's.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        raise UsageError('onnxruntime and onnx are needed for an INT8 ONNX export (pip install -e ".[onnx]")') from None
    model = onnx.load(str(float_file))
    nodes = network_node_names(model, keep_float=settings.keep_float)
    if not nodes:
        raise UsageError(f"{float_file}: no node of the file is recorded as the network's; export it again with retina export")

    class Reader(CalibrationDataReader):  # onnxruntime's interface: inputs, then None
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.items, None)
            return None if image is None else {"image": np.ascontiguousarray(image, dtype=np.uint8)}

    with tempfile.TemporaryDirectory(prefix="retinacli-quantize-") as folder, _quiet_root_warnings():
        staged = Path(folder) / "int8.onnx"
        quantize_static(
            str(float_file),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(ONNX_QUANTIZED_OPS),
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,  # settings.calibration_method, the only one
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
        )
        os.replace(staged, target)


def float_node_names(model: Any, *, keep_float: Sequence[str] = ()) -> list[str]:
    """Names of the nodes of an ONNX `model` that stay float: every node not in
    `network_node_names`."""
    network = set(network_node_names(model, keep_float=keep_float))
    return [node.name for node in model.graph.node if node.name not in network]


def quantize_openvino(model: Any, calibration: Sequence[np.ndarray], *, float_nodes: Sequence[str]) -> Any:
    """The INT8 version of an `openvino.Model` converted from an exported ONNX file (module
    docstring), calibrated on `calibration`. `float_nodes`: the ONNX file's nodes that stay
    float (`float_node_names`); OpenVINO's converter names each operation after its ONNX node.

    Raises:
        UsageError: nncf is missing.
    """
    from retinacli.export.runtime import import_openvino

    import_openvino()  # first: NNCF's telemetry goes with OpenVINO's
    try:
        import nncf
    except ImportError:
        raise UsageError('nncf is needed for an INT8 OpenVINO export (pip install -e ".[openvino]")') from None
    names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    ignored = sorted(names.intersection(float_nodes))
    dataset = nncf.Dataset(list(calibration), lambda image: np.ascontiguousarray(image, dtype=np.uint8))
    with _quiet_nncf(nncf):
        return nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
        )


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """onnxruntime's quantizer logs advice ("consider pre-processing") on the root logger; the
    graph it is given is already shape-inferred and optimised by the exporter."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _quiet_nncf(nncf: Any) -> Iterator[None]:
    """NNCF logs every operation it leaves unquantized and draws its own progress bars; a command
    shows its own progress instead."""
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
            yield
    finally:
        logger.setLevel(level)

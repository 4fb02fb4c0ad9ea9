"""The deploy formats, each written from one float ONNX export: the fp32 ONNX file itself, an
INT8 ONNX file (onnxruntime's quantization), an OpenVINO IR in fp32 or INT8 (NNCF), and the
metadata each carries. `retina export` writes one of them and checks it; `retina benchmark
--formats` writes several into a temporary folder and measures them side by side.

Every writer takes the float ONNX file made by `exporters.export_model` (from the model with its
BatchNorms folded) and the metadata of the file to write; calibration images are (3, H, W)
uint8, as the file takes them (`retinacli.data.calibration.calibration_images`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from retinacli.errors import UsageError
from retinacli.export.exporters import METADATA_KEY, ExportMetadata
from retinacli.export.quantize import (
    QuantizationSettings,
    float_node_names,
    quantize_onnx,
    quantize_openvino,
)
from retinacli.export.runtime import is_openvino
from retinacli.files import atomic_write

DeployFormat = Literal["onnx", "onnx-int8", "openvino", "openvino-int8"]
DEPLOY_FORMATS: tuple[DeployFormat, ...] = ("onnx", "onnx-int8", "openvino", "openvino-int8")
INT8_RUNTIMES = {"onnx-int8": "onnxruntime", "openvino-int8": "openvino"}


def is_int8(deploy_format: str) -> bool:
    return deploy_format in INT8_RUNTIMES


def suffix_of(deploy_format: str) -> str:
    """The file suffix of a deploy format: `.onnx` or `.xml` (an IR's .bin goes beside it)."""
    return ".xml" if deploy_format.startswith("openvino") else ".onnx"


def write_deploy_file(
    float_onnx: Path,
    target: Path,
    *,
    deploy_format: DeployFormat,
    metadata: ExportMetadata,
    calibration: Sequence[np.ndarray] = (),
    settings: QuantizationSettings = QuantizationSettings(),
) -> Path:
    """Write `float_onnx` as `deploy_format` to `target` (suffix `suffix_of`) with `metadata`
    (for an INT8 format its precision is set to "int8"); INT8 formats are calibrated on
    `calibration`. Returns `target`.

    Raises:
        UsageError: the runtime or quantization tool of the format is not installed; an INT8
            format without calibration images.
    """
    if is_int8(deploy_format):
        if not calibration:
            raise UsageError(f"{deploy_format}: an INT8 file needs calibration images")
        metadata = replace(metadata, precision="int8")
    if deploy_format == "onnx":
        return restamp(float_onnx, target, metadata)
    if deploy_format == "onnx-int8":
        quantize_onnx(float_onnx, target, calibration, settings=settings)
        return restamp(target, target, metadata)
    from retinacli.export.openvino import convert_onnx, write_ir

    model = convert_onnx(float_onnx)
    if deploy_format == "openvino-int8":
        import onnx

        floats = float_node_names(onnx.load(str(float_onnx)), keep_float=settings.keep_float)
        model = quantize_openvino(model, calibration, float_nodes=floats)
    return write_ir(model, target, metadata)


def restamp(source: Path, target: Path, metadata: ExportMetadata) -> Path:
    """Write the exported file `source` (ONNX or an IR's .xml) to `target` with `metadata` in
    place of the metadata it holds; `target` may be `source`. Returns `target`."""
    if is_openvino(source):
        from retinacli.export.openvino import write_ir
        from retinacli.export.runtime import import_openvino

        return write_ir(import_openvino().Core().read_model(str(source)), target, metadata)
    import onnx

    proto = onnx.load(str(source))
    entries = [entry for entry in proto.metadata_props if entry.key == METADATA_KEY]
    entry = entries[0] if entries else proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata.to_json())
    with atomic_write(target) as handle:
        handle.write(proto.SerializeToString())
    return target

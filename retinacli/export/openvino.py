"""Writing an OpenVINO IR: the exported ONNX graph read by OpenVINO's own converter
(`openvino.convert_model`), the metadata in the IR's rt_info entry "retinacli", weights kept in
float32 (OpenVINO's default, `compress_to_fp16`, would store them in fp16).

An IR is two files, `NAME.xml` (the graph) and `NAME.bin` (the weights). Both are written into
a temporary folder beside the target and moved into place: an earlier `.xml` of the same name
(replaced with `--overwrite`) is removed first, then the `.bin` moved, then the `.xml`, so an
`.xml` never stands beside weights that are not its own, and a failed write leaves no new file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from retinacli.export.exporters import ExportMetadata
from retinacli.export.runtime import OPENVINO_METADATA, import_openvino


def weights_path(xml: Path) -> Path:
    """The `.bin` that goes with an IR's `.xml`."""
    return xml.with_suffix(".bin")


def convert_onnx(onnx_file: Path) -> Any:
    """The `openvino.Model` of an exported ONNX file (its dynamic height and width kept)."""
    openvino = import_openvino()
    return openvino.convert_model(str(onnx_file))


def write_ir(model: Any, target: Path, metadata: ExportMetadata) -> Path:
    """Write `model` (an `openvino.Model`) with `metadata` as the IR `target` (.xml) and its
    `.bin` (module docstring); returns `target`."""
    openvino = import_openvino()
    model.set_rt_info(json.dumps(metadata.to_json()), OPENVINO_METADATA)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=target.parent))
    try:
        staged = folder / "model.xml"
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        target.unlink(missing_ok=True)
        os.replace(weights_path(staged), weights_path(target))
        os.replace(staged, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return target

"""Writing the exportable graph (`graph.py`) as an ONNX or a TorchScript file.

- ONNX: `torch.export` with dynamic height and width, then `torch.onnx.export` (the dynamo
  exporter, opset 18 by default). The `class_nms` op becomes one `NonMaxSuppression` node with a
  class axis (each candidate scores -1 in the other classes, below the node's score threshold),
  so the file needs nothing but onnxruntime. The metadata (`ExportMetadata`) is the model's
  `metadata_props` entry "retinacli".
- TorchScript: `torch.jit.trace` of the graph with torchvision's NMS in a scripted loop over the
  classes; the metadata is the extra file "retinacli.json". Loading it needs torch and
  torchvision (for `torchvision::nms`), not retinacli.

Both files are written atomically.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from retinacli.engine.detector import RetinaNet
from retinacli.export.graph import DeployableRetinaNet, NetworkOnly
from retinacli.files import atomic_write

ExportFormat = Literal["onnx", "torchscript"]
METADATA_KEY = "retinacli"
TORCHSCRIPT_METADATA = "retinacli.json"
DEFAULT_OPSET = 18
# torch.export needs every pyramid level to be at least 2 x 2: inputs of at least 129 pixels a
# side (P7 has stride 128); the recipe's test resize gives far more.
MIN_SIDE = 129
MAX_SIDE = 8192


@dataclass(frozen=True)
class ExportMetadata:
    """What a deployed file needs to be used as the model file was: its classes (names and
    dataset ids), channel order, the test resize its inputs need, the thresholds baked in,
    whether it is network-only (then `num_levels` logits, deltas and anchors come out).

    precision: "fp32", or "int8" for a quantized file, whose `quantization` records how it was
    made and what it measured (`export.quantize.QuantizationRecord.to_json`: runtime, settings,
    calibration images, fp32 and INT8 AP on the check set, the speed ratio); None for fp32.
    """

    class_names: tuple[str, ...]
    class_dataset_ids: tuple[int, ...]
    input_format: str
    short_size: int
    max_size: int
    score_thresh: float
    nms_thresh: float
    detections_per_image: int
    network_only: bool
    num_levels: int
    source: str
    retinacli_version: str
    precision: str = "fp32"
    quantization: dict[str, Any] | None = None

    @classmethod
    def of_model(
        cls,
        model: RetinaNet,
        *,
        class_names: Sequence[str],
        class_dataset_ids: Sequence[int],
        input_format: str,
        short_size: int,
        max_size: int,
        network_only: bool,
        source: str,
        retinacli_version: str,
    ) -> ExportMetadata:
        """The metadata of `model` exported: its thresholds, detections per image and pyramid
        levels read from the model itself, everything else as given (the one place it is
        assembled: `retina export`, and `retina benchmark`'s ONNX timing)."""
        return cls(
            class_names=tuple(str(name) for name in class_names),
            class_dataset_ids=tuple(int(i) for i in class_dataset_ids),
            input_format=input_format,
            short_size=short_size,
            max_size=max_size,
            score_thresh=model.score_thresh,
            nms_thresh=model.nms_thresh,
            detections_per_image=model.detections_per_image,
            network_only=network_only,
            num_levels=model.anchor_generator.num_levels,
            source=source,
            retinacli_version=retinacli_version,
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "class_names": list(self.class_names), "class_dataset_ids": list(self.class_dataset_ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportMetadata:
        return cls(
            **{
                **data,
                "class_names": tuple(data["class_names"]),
                "class_dataset_ids": tuple(int(i) for i in data["class_dataset_ids"]),
            }
        )


def output_names(metadata: ExportMetadata) -> list[str]:
    """The graph's outputs: boxes, scores, classes; or per level logits, deltas, anchors."""
    if not metadata.network_only:
        return ["boxes", "scores", "classes"]
    levels = range(metadata.num_levels)
    return [f"logits_{i}" for i in levels] + [f"deltas_{i}" for i in levels] + [f"anchors_{i}" for i in levels]


def export_model(
    model: RetinaNet,
    path: Path | str,
    *,
    export_format: ExportFormat,
    metadata: ExportMetadata,
    example: Tensor,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write `model` (eval mode, CPU) as `export_format` to `path`; `example` is one (3, H, W)
    uint8 input used for tracing (any size >= MIN_SIDE)."""
    model = model.eval()
    if export_format == "onnx":
        data = _onnx_bytes(model, metadata=metadata, example=example, opset=opset)
    else:
        data = _torchscript_bytes(model, metadata=metadata, example=example)
    target = Path(path)
    with atomic_write(target) as handle:
        handle.write(data)
    return target


def _graph(model: RetinaNet, metadata: ExportMetadata, *, scripted_nms: bool) -> torch.nn.Module:
    graph = NetworkOnly(model) if metadata.network_only else DeployableRetinaNet(model, scripted_nms=scripted_nms)
    return graph.eval()


def _onnx_bytes(model: RetinaNet, *, metadata: ExportMetadata, example: Tensor, opset: int) -> bytes:
    import onnx
    from torch.export import Dim

    graph = _graph(model, metadata, scripted_nms=False)
    height, width = Dim("height", min=MIN_SIDE, max=MAX_SIDE), Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    with torch.no_grad(), _quiet():
        program = torch.export.export(graph, (example,), dynamic_shapes={"image": {1: height, 2: width}})
        onnx_program = torch.onnx.export(
            program,
            (example,),
            input_names=["image"],
            output_names=output_names(metadata),
            opset_version=opset,
            dynamo=True,
            custom_translation_table={torch.ops.retinacli.class_nms.default: _class_nms_onnx},
            verbose=False,
        )
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata.to_json())
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _class_nms_onnx(boxes: Any, scores: Any, classes: Any, iou_threshold: float, num_classes: int) -> Any:
    """`class_nms` in ONNX: one NonMaxSuppression over a (1, K, C) score tensor in which each
    candidate has its score in its own class and -1 in the others, below the node's score
    threshold of -0.5 (every real candidate scores above the model's threshold, >= 0)."""
    from onnxscript import opset18 as op

    class_ids = op.Range(op.Constant(value_int=0), op.Constant(value_int=num_classes), op.Constant(value_int=1))
    own = op.Equal(op.Unsqueeze(class_ids, [1]), op.Unsqueeze(classes, [0]))  # (K, C)
    per_class = op.Where(own, op.Unsqueeze(scores, [0]), op.Constant(value_float=-1.0))  # (K, C)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),  # (1, C, 4); x/y order does not change an IoU
        op.Unsqueeze(per_class, [0]),  # (1, K, C)
        op.Constant(value_ints=[2**31 - 1]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[-0.5]),
    )  # (D, 3): batch, class, box
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])


def _torchscript_bytes(model: RetinaNet, *, metadata: ExportMetadata, example: Tensor) -> bytes:
    graph = _graph(model, metadata, scripted_nms=True)
    buffer = io.BytesIO()
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata.to_json())})
    return buffer.getvalue()


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about tracing details; a command shows its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield

"""Running an exported file: onnxruntime for `.onnx` (fp32 or INT8), OpenVINO for an IR (`.xml`
with its `.bin` beside it, fp32 or INT8), torch.jit for TorchScript.

`open_exported(path)` reads the file's metadata (`ExportMetadata`) and returns an
`ExportedDetector` whose `run(image)` takes one (3, H, W) uint8 image, resized as the metadata's
test resize says, and returns the graph's outputs as numpy arrays: boxes (D, 4), scores (D,),
classes (D,) in that input's pixels, or per level logits, deltas and anchors for a
network-only file.

A TorchScript file is a program, not data: `torch.jit.load` runs code stored in the file (a
module's `__setstate__` runs while it loads, and it can map any file the user can write with
`torch.from_file(..., shared=True)` and overwrite its bytes). `open_exported` therefore refuses
TorchScript unless the caller says the file is trusted (`trust_code=True`: `retina predict
--trust-code`, or `retina export` checking the file it has just written), before torch sees the
file. An ONNX file is data that onnxruntime interprets (retinacli uses no custom operators), so
it is opened as model files are. An OpenVINO IR is data too: an XML graph of OpenVINO's own
operations and a file of weights (OpenVINO runs code only from extensions a program loads
explicitly, and retinacli loads none).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from retinacli.engine.structures import Detections
from retinacli.errors import CheckpointError, UsageError
from retinacli.export.exporters import METADATA_KEY, TORCHSCRIPT_METADATA, ExportMetadata

ONNX_SUFFIXES = frozenset({".onnx"})
TORCHSCRIPT_SUFFIXES = frozenset({".ts", ".torchscript"})
OPENVINO_SUFFIXES = frozenset({".xml"})
MAX_IR_BYTES = 4 << 30  # an IR's .xml or .bin; R101-FPN fp32 weights are about 0.2 GiB
EXPORTED_SUFFIXES = ONNX_SUFFIXES | TORCHSCRIPT_SUFFIXES | OPENVINO_SUFFIXES
ONNX_MISSING = (
    "onnxruntime is not installed; install it with pip install onnxruntime "
    '(or pip install -e ".[onnx]" in a checkout) to run .onnx files'
)
OPENVINO_MISSING = (
    "openvino is not installed; install it with pip install openvino "
    '(or pip install -e ".[openvino]" in a checkout) to run OpenVINO .xml files'
)
OPENVINO_METADATA = [METADATA_KEY]
"""Where an OpenVINO IR keeps the metadata: its rt_info entry "retinacli" (a JSON string)."""


def import_openvino() -> Any:
    """The `openvino` module, imported without its telemetry; a UsageError saying how to
    install it when it is missing.

    OpenVINO's converter and NNCF send usage events to Google Analytics unless the user opted
    out, and write a client id into ~/intel on first use. retinacli never phones home and writes
    nothing outside its outputs: with `openvino_telemetry` unimportable (None in
    `sys.modules`), both fall back to their own no-op stubs. Call this before importing
    `openvino` or `nncf` anywhere."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    try:
        import openvino
    except ImportError:
        raise UsageError(OPENVINO_MISSING) from None
    return openvino


def is_exported(path: Path | str) -> bool:
    """Whether `path` names an exported file (by its suffix) rather than a model file."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


def is_openvino(path: Path | str) -> bool:
    """Whether `path` names an OpenVINO IR (its .xml, by the suffix)."""
    return Path(path).suffix.lower() in OPENVINO_SUFFIXES


def is_torchscript(path: Path | str) -> bool:
    """Whether `path` names a TorchScript file (by its suffix)."""
    return Path(path).suffix.lower() in TORCHSCRIPT_SUFFIXES


def refuse_untrusted_code(path: Path | str, *, trust_code: bool, command: str = "predict") -> None:
    """Raise UsageError for a TorchScript file unless `trust_code`: loading one runs the code
    stored in it (module docstring). Nothing is read from the file."""
    if trust_code or not is_torchscript(path):
        return
    raise UsageError(
        f"{path}: refused to load a TorchScript file: TorchScript files are programs, and loading "
        "or running one runs whatever code it holds, with your permissions (it can read, write or "
        f"replace your files); if you made it or trust who did, run `retina {command}` again with "
        "--trust-code; otherwise ask for the .onnx export, which is data"
    )


@dataclass
class ExportedDetector:
    """An exported file ready to run (module docstring); `runtime` is "onnxruntime", "openvino"
    or "torchscript"."""

    path: Path
    metadata: ExportMetadata
    runtime: str
    _session: Any
    min_score: float | None = None
    """A score threshold raised above the file's own (`with_score_thresh`); None: the file's."""

    @property
    def score_thresh(self) -> float:
        return self.metadata.score_thresh if self.min_score is None else self.min_score

    def with_score_thresh(self, score_thresh: float) -> ExportedDetector:
        """This file keeping only detections scoring strictly above `score_thresh`, which must
        be at least the threshold built into the file.

        Exactly what the model file gives with that threshold (postprocess.py: a box above the
        higher threshold is among the per-level top-k, survives NMS and the per-image cap at the
        built-in threshold exactly when it does at the higher one, since only higher-scoring
        boxes can displace it), up to the export's float tolerance at the threshold itself. A
        lower threshold cannot be had from the file: the boxes below its own are gone.

        Raises:
            ValueError: `score_thresh` is below the file's threshold.
        """
        if score_thresh < self.metadata.score_thresh:
            raise ValueError(
                f"with_score_thresh: {score_thresh} is below the file's own {self.metadata.score_thresh}"
            )
        return replace(self, min_score=float(score_thresh))

    def detect(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """Detections of each resized (3, h, w) uint8 image in the pixels of its original
        (H, W), as `RetinaNet` in eval mode gives them: boxes scaled by H / h and W / w (factors
        in float64, applied in float32), clipped to the original image, empty ones dropped.

        Raises:
            UsageError: a network-only file (it has no detections to give).
        """
        if self.metadata.network_only:
            raise UsageError(
                f"{self.path}: a network-only export (logits, deltas, anchors) has no detections; "
                "export the whole detector (without --network-only) to predict with it"
            )
        found = []
        for image, (height, width) in zip(images, original_sizes, strict=True):
            boxes, scores, classes = self.run(image.cpu().numpy())
            in_h, in_w = int(image.shape[1]), int(image.shape[2])
            scale = np.array([width / in_w, height / in_h] * 2, dtype=np.float64).astype(np.float32)
            limit = np.array([width, height] * 2, dtype=np.float32)
            boxes = np.minimum(np.maximum(boxes * scale, 0), limit)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if self.min_score is not None:
                keep &= scores > np.float32(self.min_score)
            found.append(
                Detections(
                    boxes=torch.from_numpy(np.ascontiguousarray(boxes[keep])),
                    scores=torch.from_numpy(np.ascontiguousarray(scores[keep])),
                    labels=torch.from_numpy(np.ascontiguousarray(classes[keep]).astype(np.int64)),
                )
            )
        return found

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for one (3, H, W) uint8 image (module docstring)."""
        chw = np.ascontiguousarray(image, dtype=np.uint8)
        if self.runtime == "onnxruntime":
            return list(self._session.run(None, {"image": chw}))
        if self.runtime == "openvino":
            result = self._session.infer({0: chw})
            return [np.array(result[output]) for output in self._session.model_outputs]
        with torch.inference_mode():
            outputs = self._session(torch.from_numpy(chw))
        return [t.numpy() for t in outputs]


def open_exported(path: Path | str, *, threads: int | None = None, trust_code: bool = False) -> ExportedDetector:
    """Load an exported file and its metadata.

    threads: onnxruntime's intra-op threads or OpenVINO's inference threads (None: the
        runtime's default).
    trust_code: allow a TorchScript file, whose loading runs code (module docstring); without
        it a TorchScript file is refused before it is opened.

    Raises:
        UsageError: a TorchScript file without `trust_code`; onnxruntime (openvino) is missing
            for an .onnx (.xml) file.
        CheckpointError: the file is missing, unreadable or not a retinacli export.
    """
    file = Path(path)
    refuse_untrusted_code(file, trust_code=trust_code)
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found; pass a file written by retina export")
    if file.suffix.lower() in ONNX_SUFFIXES:
        return _open_onnx(file, threads=threads)
    if is_openvino(file):
        return _open_openvino(file, threads=threads)
    return _open_torchscript(file)


def _open_onnx(file: Path, *, threads: int | None) -> ExportedDetector:
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"{file}: {ONNX_MISSING}") from None
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(file), options, providers=_providers(onnxruntime))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise CheckpointError(f"{file}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); export it again") from None
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise CheckpointError(f"{file}: an ONNX file without retinacli's metadata; export it with retina export")
    return ExportedDetector(file, _metadata(file, props[METADATA_KEY]), "onnxruntime", session)


@dataclass
class _OpenVinoRequest:
    """A compiled OpenVINO model's infer request and its outputs, in the graph's order."""

    request: Any
    model_outputs: list[Any]

    def infer(self, inputs: dict[int, np.ndarray]) -> Any:
        return self.request.infer(inputs)


def openvino_config(threads: int | None) -> dict[str, Any]:
    """The CPU plugin's settings: latency (one image at a time), float32 wherever the IR is
    float (on CPUs with bf16 or fp16 units OpenVINO would otherwise lower the precision of the
    float layers), and `threads` inference threads (None: OpenVINO's default)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _open_openvino(file: Path, *, threads: int | None) -> ExportedDetector:
    try:
        openvino = import_openvino()
    except UsageError:
        raise UsageError(f"{file}: {OPENVINO_MISSING}") from None
    weights = file.with_suffix(".bin")
    if not weights.is_file():
        raise CheckpointError(
            f"{file}: its weights {weights.name} are not beside it; an OpenVINO IR is the .xml and the "
            ".bin of the same name, in one folder"
        )
    for part in (file, weights):
        if part.stat().st_size > MAX_IR_BYTES:
            raise CheckpointError(f"{part}: larger than {MAX_IR_BYTES >> 30} GiB, more than any RetinaNet IR; not read")
    # Only OpenVINO's IR reader: `Core.read_model` picks a reader by the file's contents, and the
    # others (TensorFlow, PaddlePaddle, ...) are no business of an .xml.
    from openvino.frontend import FrontEndManager

    core = openvino.Core()
    try:
        reader = FrontEndManager().load_by_framework("ir")
        if not reader.supported(str(file)):
            raise CheckpointError(f"{file}: not an OpenVINO IR; pass the .xml written by retina export --format openvino")
        model = reader.convert(reader.load(str(file)))
    except CheckpointError:
        raise
    except Exception as exc:  # OpenVINO raises its own exception types for bad files
        raise CheckpointError(f"{file}: OpenVINO cannot read it ({str(exc).splitlines()[0]}); export it again") from None
    if not model.has_rt_info(OPENVINO_METADATA):
        raise CheckpointError(f"{file}: an OpenVINO IR without retinacli's metadata; export it with retina export")
    value = model.get_rt_info(OPENVINO_METADATA)  # an OVAny: str() of it is its class name
    text = value.astype(str) if hasattr(value, "astype") else str(value)
    metadata = _metadata(file, text)
    try:
        compiled = core.compile_model(model, "CPU", openvino_config(threads))
    except Exception as exc:
        raise CheckpointError(f"{file}: OpenVINO cannot compile it for this CPU ({str(exc).splitlines()[0]})") from None
    session = _OpenVinoRequest(compiled.create_infer_request(), list(compiled.outputs))
    return ExportedDetector(file, metadata, "openvino", session)


def _providers(onnxruntime: Any) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _open_torchscript(file: Path) -> ExportedDetector:
    import torchvision  # noqa: F401 - registers torchvision::nms for the scripted NMS

    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch.jit raises RuntimeError and others for bad files
        raise CheckpointError(f"{file}: not a TorchScript file torch can load ({str(exc).splitlines()[0]})") from None
    if not extra[TORCHSCRIPT_METADATA]:
        raise CheckpointError(f"{file}: a TorchScript file without retinacli's metadata; export it with retina export")
    return ExportedDetector(file, _metadata(file, extra[TORCHSCRIPT_METADATA]), "torchscript", module.eval())


def _metadata(file: Path, text: str | bytes) -> ExportMetadata:
    try:
        return ExportMetadata.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{file}: its retinacli metadata is damaged ({exc}); export it again") from None

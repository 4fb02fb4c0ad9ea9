"""`retina export MODEL`: the detector as one ONNX file, OpenVINO IR or TorchScript file, checked
against the PyTorch model before the command succeeds; with `int8`, quantized
(`export.quantize`) and checked by its COCO AP against the float file on a dataset.

The graph is exported from the model with its BatchNorms folded into the convolutions
(`engine.fuse.fold_batch_norms`, as `retina eval` runs it): one convolution per layer, which
the runtimes run faster and which quantizes as one layer. The parity check compares the file
with the unfolded model.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from retinacli import __version__
from retinacli.build import DatasetFiles, build_given_dataset, build_test_dataset, inference_resize
from retinacli.commands.model_files import LoadedDetector, load_detector
from retinacli.data.augment.resize_flip import resize_for_inference, to_chw_tensor
from retinacli.data.calibration import calibration_images as calibration_images_of
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import read_image, rgb_to_input_format
from retinacli.data.shapes import ShapesSpec, generate_shapes_image
from retinacli.engine.fuse import fold_batch_norms
from retinacli.errors import ExportError, RetinaError, UsageError
from retinacli.evaluation.ap_check import ApCheck, check_ap
from retinacli.evaluation.classes import ClassInfo, match_classes
from retinacli.export.exporters import (
    DEFAULT_OPSET,
    MIN_SIDE,
    ExportMetadata,
    export_model,
)
from retinacli.export.formats import (
    INT8_RUNTIMES,
    DeployFormat,
    restamp,
    suffix_of,
    write_deploy_file,
)
from retinacli.export.parity import Parity, compare
from retinacli.export.quantize import HEAD_OUTPUTS, QuantizationRecord, QuantizationSettings
from retinacli.export.runtime import ExportedDetector, open_exported
from retinacli.files import prepare_output_file
from retinacli.recipe import Override

FileFormat = Literal["onnx", "openvino", "torchscript"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".ts"}
CHECK_IMAGES = 4
DEFAULT_CALIBRATION_IMAGES = 32
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """The file written (an IR's .xml), its metadata, the parity check (None with
    `verify=False`, and for INT8 files, which are checked by AP instead), where the check's
    images came from, the seconds the export took, and for INT8 the quantization record."""

    path: Path
    metadata: ExportMetadata
    parity: Parity | None
    check_images: str
    seconds: float
    quantization: QuantizationRecord | None = None
    kept_despite: str | None = None
    """With `force`: why the INT8 file would have been refused."""

    @property
    def files(self) -> list[Path]:
        """Every file written: an OpenVINO IR is its .xml and .bin."""
        return [self.path, self.path.with_suffix(".bin")] if self.path.suffix == ".xml" else [self.path]


def default_output(model_path: Path, export_format: FileFormat, *, int8: bool) -> Path:
    """Beside the model file: `<stem>.onnx`, `<stem>.xml` (+ .bin) or `<stem>.ts`, with
    `.int8` before the suffix for an INT8 file."""
    return model_path.with_name(model_path.stem + (".int8" if int8 else "") + SUFFIXES[export_format])


def export(
    model_path: Path,
    *,
    export_format: FileFormat = "onnx",
    out: Path | None = None,
    opset: int = DEFAULT_OPSET,
    network_only: bool = False,
    verify: bool = True,
    overrides: Sequence[str | Override] = (),
    overwrite: bool = False,
    int8: bool = False,
    calibration: DatasetFiles | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    check: DatasetFiles | None = None,
    max_ap_drop: float = 0.01,
    force: bool = False,
    keep_float: Sequence[str] = (),
    threads: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the model file at `model_path` (default output: `default_output`) and, with
    `verify`, run the file on a few images and compare with the PyTorch model.

    With `int8` (ONNX or OpenVINO): quantize the network (`export.quantize`), calibrated on
    `calibration_images` images spread evenly over `calibration` (default: the recipe's
    data.train.dataset), then run the float file and the INT8 file over every image of `check`
    (default: the calibration dataset) and compare their COCO AP. A relative drop
    ``(AP_float - AP_int8) / AP_float`` above `max_ap_drop`, or a float AP of 0 (nothing to
    compare), refuses the file: nothing is written, unless `force`. The INT8 file's metadata
    records the calibration, the settings and the figures (`QuantizationRecord`); `keep_float`
    names modules of the network left float (`QuantizationSettings.keep_float`); `threads`
    is the runtimes' thread count for the check.

    Raises:
        UsageError: the output exists (without `overwrite`; a folder or other non-file is refused
            even with it), a bad opset, INT8 with TorchScript or --network-only, no dataset to
            calibrate on, a missing runtime.
        DatasetError: a calibration or check dataset cannot be read or does not fit the classes.
        ExportError: the exported file's results differ from the model's (the file is kept, so
            that it can be inspected, and the message says where it is); the INT8 file loses
            more AP than allowed (no file is kept).
    """
    say = progress or (lambda _: None)
    settings = QuantizationSettings(keep_float=tuple(keep_float))
    if export_format == "onnx" and opset < 18:
        raise UsageError(f"--opset {opset}: the ONNX exporter writes opset 18 or newer; pass --opset 18 or more")
    if int8:
        _check_int8_arguments(export_format, network_only, calibration_images, max_ap_drop)
    elif settings.keep_float:
        raise UsageError("--keep-float chooses what INT8 leaves float; it goes with --int8")
    elif calibration is not None or check is not None:
        raise UsageError("--dataset/--images and --check-dataset/--check-images go with --int8")
    target = out if out is not None else default_output(model_path, export_format, int8=int8)
    if export_format == "openvino" and target.suffix.lower() != ".xml":
        raise UsageError(f"--out {target}: an OpenVINO IR is an .xml file (with its .bin beside it); name it NAME.xml")
    prepare_output_file(target, overwrite=overwrite, flag="--out")
    if export_format == "openvino":
        prepare_output_file(target.with_suffix(".bin"), overwrite=overwrite, flag="--out (its .bin)")
    loaded = load_detector(model_path, overrides)
    model = loaded.model.eval()
    short_size, max_size = inference_resize(loaded.recipe.data.test)
    metadata = ExportMetadata.of_model(
        model,
        class_names=loaded.classes.names,
        class_dataset_ids=loaded.classes.dataset_ids,
        input_format=loaded.recipe.model.input_format,
        short_size=short_size,
        max_size=max_size,
        network_only=network_only,
        source=str(model_path),
        retinacli_version=__version__,
    )
    images, source = check_images(loaded, short_size=short_size, max_size=max_size)
    if int8:
        calibration_set, calibration_name = _calibration_dataset(loaded, calibration)
        check_set, check_name = (
            (calibration_set, calibration_name) if check is None else (build_given_dataset(check, flags=("--check-dataset", "--check-images")), str(check.annotations))
        )
        for dataset in {id(calibration_set): calibration_set, id(check_set): check_set}.values():
            match_classes(ClassInfo(metadata.class_names, metadata.class_dataset_ids), dataset, model_path=model_path)
    folded = copy.deepcopy(model)
    fold_batch_norms(folded)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retinacli-export-") as folder:
        scratch = Path(folder)
        say("exporting")
        if export_format == "torchscript":
            float_file = export_model(folded, target, export_format="torchscript", metadata=metadata, example=images[0])
            float_onnx = None
        else:
            in_place = export_format == "onnx" and not int8
            float_onnx = export_model(
                folded, target if in_place else scratch / "float.onnx", export_format="onnx", metadata=metadata, example=images[0], opset=opset
            )
            float_file = float_onnx
            if export_format == "openvino":
                ir = scratch / "float.xml" if int8 else target
                float_file = write_deploy_file(float_onnx, ir, deploy_format="openvino", metadata=metadata)
        seconds = time.perf_counter() - start
        parity = None
        if verify or int8:
            say("checking the file against the model")
            # the file this command has just written from the model file: its code is our own
            parity = compare(model, open_exported(float_file, trust_code=True), images)
            if not parity.ok:
                kept = "" if int8 else " the file is kept for inspection: do not deploy it, and"
                raise ExportError(
                    f"{target}: the exported file does not compute what {model_path} computes "
                    f"({len(parity.problems)} differences; first: {parity.problems[0]}; largest box "
                    f"difference {parity.max_box_difference:.4g} px, score {parity.max_score_difference:.3g});"
                    f"{kept} report this with the model file"
                )
        if not int8 or float_onnx is None:
            return ExportResult(target, metadata, parity, source, seconds)
        return _export_int8(
            float_onnx,
            float_file,
            target,
            deploy_format="onnx-int8" if export_format == "onnx" else "openvino-int8",
            metadata=metadata,
            calibration_set=calibration_set,
            calibration_name=calibration_name,
            calibration_images=calibration_images,
            check_set=check_set,
            check_name=check_name,
            max_ap_drop=max_ap_drop,
            force=force,
            settings=settings,
            threads=threads,
            start=start,
            parity=parity,
            source=source,
            say=say,
        )


def _check_int8_arguments(export_format: str, network_only: bool, calibration_images: int, max_ap_drop: float) -> None:
    if export_format == "torchscript":
        raise UsageError("--int8: INT8 files are made for onnxruntime (--format onnx) and OpenVINO (--format openvino), not TorchScript")
    if network_only:
        raise UsageError("--int8 quantizes the whole detector and checks its AP; export without --network-only")
    if not 1 <= calibration_images <= 10000:
        raise UsageError(f"--calibration-images {calibration_images}: pass a number from 1 to 10000")
    if not 0.0 <= max_ap_drop <= 1.0:
        raise UsageError(f"--max-ap-drop {max_ap_drop:g}: a relative drop, from 0 to 1 (0.01: 1 %)")


def _calibration_dataset(loaded: LoadedDetector, given: DatasetFiles | None) -> tuple[DetectionDataset, str]:
    """The calibration dataset: the one given, else the recipe's data.train.dataset."""
    if given is not None:
        return build_given_dataset(given), str(given.annotations)
    train = loaded.recipe.data.train.dataset
    if train is None:
        raise UsageError("--int8 needs images to calibrate on: pass --dataset JSON --images DIR (its training split is best)")
    try:
        dataset = build_test_dataset(train, key="data.train.dataset")
    except RetinaError as exc:
        raise UsageError(
            f"--int8: the recipe's training set cannot be read to calibrate on ({exc}); pass --dataset JSON --images DIR"
        ) from None
    return dataset, f"data.train.dataset ({dataset.annotations})"


def _ap(detector: ExportedDetector, dataset: DetectionDataset) -> ApCheck:
    meta = detector.metadata
    return check_ap(
        detector,
        dataset,
        classes=ClassInfo(meta.class_names, meta.class_dataset_ids),
        short_size=meta.short_size,
        max_size=meta.max_size,
        input_format=meta.input_format,
        source=detector.path,
    )


def _export_int8(
    float_onnx: Path,
    float_file: Path,
    target: Path,
    *,
    deploy_format: DeployFormat,
    metadata: ExportMetadata,
    calibration_set: DetectionDataset,
    calibration_name: str,
    calibration_images: int,
    check_set: DetectionDataset,
    check_name: str,
    max_ap_drop: float,
    force: bool,
    settings: QuantizationSettings,
    threads: int | None,
    start: float,
    parity: Parity | None,
    source: str,
    say: Progress,
) -> ExportResult:
    """Quantize, check by AP and write the INT8 file (`export`'s docstring). `float_onnx` is
    the float ONNX export, `float_file` the float file of the target's format (the same file
    for ONNX, its IR for OpenVINO)."""
    say(f"reading {calibration_images} calibration images")
    arrays = calibration_images_of(
        calibration_set,
        calibration_images,
        input_format=metadata.input_format,
        short_size=metadata.short_size,
        max_size=metadata.max_size,
        min_side=MIN_SIDE,
    )
    say(f"quantizing on {len(arrays)} images")
    int8_file = write_deploy_file(
        float_onnx,
        float_onnx.with_name("int8" + suffix_of(deploy_format)),
        deploy_format=deploy_format,
        metadata=metadata,
        calibration=arrays,
        settings=settings,
    )
    seconds = time.perf_counter() - start
    say(f"checking the float file's AP on {len(check_set)} images")
    float_check = _ap(open_exported(float_file, threads=threads), check_set)
    say(f"checking the INT8 file's AP on {len(check_set)} images")
    int8_check = _ap(open_exported(int8_file, threads=threads), check_set)
    float_ap, int8_ap = float_check.ap, int8_check.ap
    drop = (float_ap - int8_ap) / float_ap if float_ap > 0 else 0.0
    record = QuantizationRecord(
        runtime=INT8_RUNTIMES[deploy_format],
        settings=settings.to_json(),
        calibration_images=len(arrays),
        calibration_source=calibration_name,
        check_source=check_name,
        check_images=len(check_set),
        float_ap=float_ap,
        int8_ap=int8_ap,
        relative_ap_drop=drop,
        speed_ratio=int8_check.seconds / float_check.seconds if float_check.seconds > 0 else 1.0,
    )
    problem = None
    if float_ap <= 0:
        problem = (
            f"the float file scores AP 0 on the check set ({check_name}), so the check cannot tell whether "
            "INT8 lost accuracy; check on a dataset the model detects (--check-dataset/--check-images)"
        )
    elif drop > max_ap_drop:
        other = ""
        if deploy_format == "onnx-int8":
            if not settings.keep_float:
                other = f"keep the head's last convolutions float (--keep-float {','.join(HEAD_OUTPUTS)}: slower), "
            other += "try --format openvino (its quantizer kept the AP where onnxruntime's did not: docs/engine.md), "
        problem = (
            f"the INT8 file loses {100 * drop:.2f} % of the AP ({float_ap:.2f} -> {int8_ap:.2f} on {check_name}), "
            f"more than --max-ap-drop {max_ap_drop:g} ({100 * max_ap_drop:g} %); calibrate on more or more typical "
            f"images (--calibration-images, --dataset: the training split), {other}or keep the float file"
        )
    if problem is not None and not force:
        raise ExportError(f"{target}: not written: {problem} (--force keeps the file anyway)")
    final = replace(metadata, precision="int8", quantization=record.to_json())
    restamp(int8_file, target, final)
    return ExportResult(target, final, parity, source, seconds, quantization=record, kept_despite=problem)


def check_images(loaded: LoadedDetector, *, short_size: int, max_size: int) -> tuple[list[torch.Tensor], str]:
    """Up to CHECK_IMAGES images of the recipe's test set (when its files are reachable), else
    generated shapes, plus one generated image of odd size; resized as the test resize says,
    (3, H, W) uint8 in the model's channel order."""
    fmt = loaded.recipe.model.input_format
    pictures: list[np.ndarray] = []  # (H, W, 3) uint8 in the model's channel order
    source = "2 generated images"
    dataset = loaded.recipe.data.test.dataset
    if dataset is not None:
        try:
            test_set = build_test_dataset(dataset, key="data.test.dataset")
            for record in test_set.records[:CHECK_IMAGES]:
                pictures.append(read_image(record.file_name, input_format=fmt, image_id=record.image_id))
            source = f"{len(pictures)} images of data.test.dataset ({test_set.annotations}) and 1 generated image"
        except RetinaError:
            pictures = []
    spec = ShapesSpec(image_size=(200, 333))
    for index in range(1 if pictures else 2):  # generated images are RGB
        rgb = generate_shapes_image(seed=0, split="export", index=index, spec=spec).image
        pictures.append(rgb_to_input_format(rgb, input_format=fmt))
    # the test resize, each side at least the exported graph's smallest input
    tensors = [
        to_chw_tensor(resize_for_inference(picture, short_size=short_size, max_size=max_size, min_side=MIN_SIDE))
        for picture in pictures
    ]
    return tensors, source

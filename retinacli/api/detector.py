"""`Detector`: a model file, checkpoint, detectron2 model or exported file, ready to predict,
evaluate and export from Python.

Every method is a thin call of what the command line runs (`retina predict`, `retina eval`,
`retina export`, `retina import-detectron2`), so the results are the same.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retinacli.api.results import Result
from retinacli.build import DatasetFiles, inference_resize
from retinacli.commands.evaluate import EvalResult, evaluate
from retinacli.commands.export import ExportResult, export
from retinacli.commands.import_detectron2 import import_detectron2
from retinacli.commands.model_files import load_detector
from retinacli.data.images import InputFormat, pil_to_rgb, read_image
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import UsageError
from retinacli.evaluation.detectors import ImageDetector, TorchDetector
from retinacli.evaluation.diagnostics import DiagnosticsOptions
from retinacli.export.runtime import is_exported, open_exported, refuse_untrusted_code
from retinacli.predict.images import detect_images, list_image_files
from retinacli.recipe import Override, Recipe, key_override

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray
"""What `Detector.predict` takes: an image file or a folder of images (path), a PIL image, or
an (H, W, 3) uint8 numpy array in RGB order (an OpenCV frame is BGR: pass `frame[:, :, ::-1]`)."""


def overrides_of(values: Mapping[str, Any] | Sequence[str] | None, *, where: str) -> list[str | Override]:
    """Recipe overrides from {"dotted.key": value} (any YAML-able Python value) or from
    `--set`-style "key=value" strings; `where` names them in errors."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        found: list[str | Override] = []
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)  # JSON is YAML
            found.append(key_override(str(key), text, origin=f"{where}[{key!r}]"))
        return found
    if isinstance(values, str):
        raise UsageError(f"{where}: pass a dict {{'key': value}} or a list of 'key=value' strings, not one string")
    return list(values)


class Detector:
    """A RetinaNet ready to run on images: `Detector.load(path)`, then `predict`.

    Attributes:
        path: the model file (for detectron2 weights: the model file they were imported into)
            or the exported file.
        class_names: the class of each label index, in the model's order.
        category_ids: the dataset category id of each class.
        recipe: the model file's recipe (None for an exported file).
        score_thresh: detections at or below this score are dropped.
    """

    def __init__(
        self,
        detector: ImageDetector,
        *,
        path: Path,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        input_format: InputFormat,
        resize: tuple[int, int],
        images_per_batch: int,
        recipe: Recipe | None,
        overrides: Sequence[str | Override] = (),
        trust_code: bool = False,
        keep: Any = None,
    ) -> None:
        self._detector = detector
        self.path = path
        self.class_names = tuple(class_names)
        self.category_ids = tuple(int(i) for i in category_ids)
        self.input_format: InputFormat = input_format
        self.short_size, self.max_size = resize
        self.images_per_batch = images_per_batch
        self.recipe = recipe
        self._overrides = list(overrides)
        self._trust_code = trust_code
        self._keep = keep  # a temporary folder the model file lives in, removed with the detector

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        score_thresh: float | None = None,
        device: str | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        images_per_batch: int | None = None,
        detectron2_config: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] | None = None,
        trust_code: bool = False,
    ) -> Detector:
        """The detector of a model file or training checkpoint (`model_final.pth`,
        `model_best.pth`, `checkpoints/...`), of detectron2 weights (`.pth`/`.pkl`, with the
        `detectron2_config` they were trained with and optionally their `class_names`; imported
        as `retina import-detectron2` does, into a temporary folder), or of an exported `.onnx`/`.xml` file (a TorchScript `.ts` only
        with `trust_code`: it is a program).

        `score_thresh`, `device` ("auto", "cpu", "cuda", "cuda:1"; default the recipe's) and
        `images_per_batch` stand for the recipe keys `model.test.score_thresh`, `device` and
        `data.test.images_per_batch`; `overrides` changes any other key of the stored recipe
        ({"model.test.topk_candidates": 500}). An exported file has its resize and device built
        in: `overrides` and `device` are refused, and `score_thresh` may only raise its threshold.

        Raises:
            CheckpointError: not a model file (or weights that do not fit the config).
            RecipeError: an override the recipe does not accept.
            UsageError: an option that does not apply to the file.
        """
        source = Path(path)
        refuse_untrusted_code(source, trust_code=trust_code, command="Detector.load")
        flags = overrides_of(overrides, where="overrides")
        if is_exported(source):
            given = [name for name, value in (("overrides", flags), ("device", device)) if value]
            if given:
                raise UsageError(
                    f"{source}: an exported file has its resize, thresholds and device built in; "
                    f"{' and '.join(given)} apply to model files only (export again to change them)"
                )
            exported = open_exported(source, trust_code=trust_code)
            if score_thresh is not None:
                try:
                    exported = exported.with_score_thresh(score_thresh)
                except ValueError:
                    raise UsageError(
                        f"{source}: score_thresh {score_thresh:g} is below the threshold built into this exported "
                        f"file ({exported.metadata.score_thresh:g}); pass {exported.metadata.score_thresh:g} or more, "
                        "or load the model file itself"
                    ) from None
            meta = exported.metadata
            return cls(
                exported,
                path=source,
                class_names=meta.class_names,
                category_ids=meta.class_dataset_ids,
                input_format=meta.input_format,
                resize=(meta.short_size, meta.max_size),
                images_per_batch=images_per_batch or 1,
                recipe=None,
                trust_code=trust_code,
            )
        keep = None
        if class_names is not None and detectron2_config is None:
            raise UsageError(f"{source}: class_names apply to detectron2 weights (with detectron2_config) only")
        if detectron2_config is not None:
            keep = tempfile.TemporaryDirectory(prefix="retinacli-detectron2-")
            imported = import_detectron2(detectron2_config, source, Path(keep.name) / "imported", class_names=class_names)
            assert imported.model_path is not None  # weights were given
            source = imported.model_path
        for key, value in (
            ("model.test.score_thresh", score_thresh),
            ("device", device),
            ("data.test.images_per_batch", images_per_batch),
        ):
            if value is not None:
                flags.append(key_override(key, str(value), origin=f"{key.rsplit('.', 1)[-1]}={value!r}"))
        loaded = load_detector(source, flags)
        recipe = loaded.recipe
        model = prepare_for_inference(loaded.model).to(resolve_device(recipe.device, source="device"))
        return cls(
            TorchDetector(model),
            path=source,
            class_names=loaded.classes.names,
            category_ids=loaded.classes.dataset_ids,
            input_format=recipe.model.input_format,
            resize=inference_resize(recipe.data.test),
            images_per_batch=recipe.data.test.images_per_batch,
            recipe=recipe,
            overrides=flags,
            keep=keep,
        )

    @property
    def score_thresh(self) -> float:
        return self._detector.score_thresh

    @property
    def exported(self) -> bool:
        """Whether this is an exported file (no recipe; runs on the CPU)."""
        return self.recipe is None

    def __repr__(self) -> str:
        return (
            f"Detector({str(self.path)!r}, classes={list(self.class_names)}, score_thresh={self.score_thresh:g}, "
            f"resize={self.short_size}/{self.max_size}, input_format={self.input_format!r})"
        )

    # ------------------------------------------------------------------------------ predict

    def predict(
        self, images: ImageLike | Iterable[ImageLike], *, images_per_batch: int | None = None
    ) -> list[Result]:
        """The detections of each image, in order: `images` is one image or a list of them
        (`ImageLike`: a file, a folder, whose images are taken recursively in sorted order, a
        PIL image, an RGB uint8 (H, W, 3) array). Images are read as `retina predict` reads them
        (EXIF orientation applied, any mode converted to RGB), resized with the model's test
        resize and run `images_per_batch` at a time (default the recipe's
        `data.test.images_per_batch`, 1 for an exported file).

        Raises:
            UsageError: an input that is not an image, a missing file or folder, an array of
                another shape or type.
            DatasetError: an image file that cannot be decoded.
        """
        items = [images] if _is_one_image(images) else list(images)  # type: ignore[arg-type]
        sources: list[Path | np.ndarray] = []
        for position, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                sources += [path for path, _ in list_image_files([Path(item)])]
            elif isinstance(item, Image.Image):
                sources.append(pil_to_rgb(item))
            elif isinstance(item, np.ndarray):
                sources.append(_checked_array(item, position))
            else:
                raise UsageError(
                    f"predict: input {position} is a {type(item).__name__}; pass image paths, folders, PIL images "
                    "or (H, W, 3) uint8 RGB numpy arrays"
                )
        per_batch = max(1, images_per_batch or self.images_per_batch)
        results: list[Result] = []
        for start in range(0, len(sources), per_batch):
            chunk = sources[start : start + per_batch]
            pixels = [read_image(s, input_format="RGB") if isinstance(s, Path) else s for s in chunk]
            found = detect_images(
                self._detector,
                pixels,
                input_format=self.input_format,
                short_size=self.short_size,
                max_size=self.max_size,
                images_per_batch=per_batch,
            )
            for source, rgb, detections in zip(chunk, pixels, found, strict=True):
                results.append(
                    Result.of(
                        detections,
                        class_names=self.class_names,
                        category_ids=self.category_ids,
                        image_size=(int(rgb.shape[0]), int(rgb.shape[1])),
                        path=source if isinstance(source, Path) else None,
                        rgb=None if isinstance(source, Path) else rgb,  # a file is read again to plot
                    )
                )
        return results

    __call__ = predict

    # ------------------------------------------------------------------------------ evaluate, export

    def evaluate(
        self,
        dataset: str | os.PathLike[str] | None = None,
        images: str | os.PathLike[str] | None = None,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        diagnostics: bool = False,
        bootstrap: int = 0,
    ) -> EvalResult:
        """COCO AP of this detector on a COCO json and its image folder (default: the recipe's
        data.test.dataset), as `retina eval` computes it; coco_results.json and metrics.json (and
        the diagnostics, when asked) go to `output_dir` (default `eval_<model>_<dataset>` beside
        the model file). `bootstrap` > 0: 95 % intervals of AP and AP50 from that many
        resamplings of the images (`.metrics["AP_ci"]`). Returns `EvalResult`
        (`.metrics["AP"]`, `.output_dir`)."""
        return evaluate(
            self.path,
            dataset=Path(dataset) if dataset is not None else None,
            images=Path(images) if images is not None else None,
            overrides=self._overrides,
            output_dir=Path(output_dir) if output_dir is not None else None,
            overwrite=overwrite,
            diagnostics=DiagnosticsOptions() if diagnostics else None,
            trust_code=self._trust_code,
            bootstrap=bootstrap,
        )

    def export(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        export_format: str = "onnx",
        int8: bool = False,
        calibration: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        overwrite: bool = False,
        verify: bool = True,
    ) -> ExportResult:
        """Export the model file as `retina export` does ("onnx", "openvino" or "torchscript";
        `int8` with `calibration` = (COCO json, image folder), default the recipe's training set);
        the file goes to `out` (default beside the model file). Returns `ExportResult` (`.path`)."""
        if self.exported:
            raise UsageError(f"{self.path}: is an exported file already; load the model file to export it again")
        return export(
            self.path,
            export_format=export_format,  # type: ignore[arg-type]  # checked by export
            out=Path(out) if out is not None else None,
            overrides=self._overrides,
            overwrite=overwrite,
            int8=int8,
            calibration=DatasetFiles(Path(calibration[0]), Path(calibration[1])) if calibration else None,
            verify=verify,
        )


def _is_one_image(value: object) -> bool:
    return isinstance(value, (str, os.PathLike, Image.Image)) or (isinstance(value, np.ndarray) and value.ndim == 3)


def _checked_array(array: np.ndarray, position: int) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UsageError(
            f"predict: array {position} has shape {tuple(array.shape)} and dtype {array.dtype}; pass (H, W, 3) uint8 "
            "pixels in RGB order (a grayscale or RGBA array: convert it with PIL first)"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise UsageError(f"predict: array {position} is empty ({tuple(array.shape)})")
    return array

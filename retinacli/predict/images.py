"""`retina predict`: detections on loose image files, drawn on the pictures and listed in JSON.

Inputs are files or folders. Folders are walked recursively, in sorted order of the relative
path (folder by folder), taking files whose suffix Pillow knows (hidden files and folders are
skipped); files named explicitly are always tried. Each image is read as training and evaluation read it (EXIF orientation applied, any
Pillow mode converted, the model's channel order), resized with the recipe's test resize and run
alone (1 image per batch, as detectron2's predictor).

One bad input never costs the others: an image that cannot be read (not an image, truncated,
a decompression bomb), resized or run through the model (an exported graph that refuses its
size) is skipped and named with the reason (in the return value and in predictions.json), and
the others go on.

Outputs in `out_dir`: one picture per image (same relative name as in its folder, checked to
stay inside `out_dir` by `files.output_file`; JPEG inputs stay JPEG, everything else becomes PNG) with boxes, class names and scores drawn, and
`predictions.json`:

    {"model": str, "score_thresh": float, "classes": [name, ...],
     "images": [{"file": str, "picture": str, "width": int, "height": int,
                 "detections": [{"box": [x1, y1, x2, y2], "score": float,
                                 "class_id": int, "category_id": int, "class_name": str}]}],
     "skipped": [{"file": str, "reason": str}]}

Boxes are XYXY in original-image pixels (after EXIF orientation); class_id is the model's
contiguous class index, category_id the dataset id it stands for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from retinacli.data.augment.resize_flip import resize_for_inference, to_chw_tensor
from retinacli.data.images import InputFormat, input_format_to_rgb, read_image, rgb_to_input_format
from retinacli.engine.structures import Detections
from retinacli.errors import RetinaError, UsageError
from retinacli.evaluation.detectors import ImageDetector
from retinacli.files import atomic_write, output_file
from retinacli.predict.formats import (
    PREDICTIONS_NAME,
    PredictionFormat,
    write_formats,
)

_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on: its path and the picture name under the output folder."""

    path: Path
    picture: Path


@dataclass
class PredictReport:
    """What `predict_images` did: per-image entries as in predictions.json, the skipped files,
    the JSON path, the time spent (reading and drawing included), the score threshold, and
    every file written per format."""

    images: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    json_path: Path
    seconds: float
    num_detections: int = field(default=0)
    score_thresh: float = field(default=0.0)
    written: dict[str, Path] = field(default_factory=dict)


def image_suffixes() -> frozenset[str]:
    """Lower-case file suffixes Pillow can open (".jpg", ".png", ...)."""
    Image.init()
    return frozenset(
        s.lower() for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    )


def find_images(inputs: Sequence[Path | str], *, out_dir: Path | str) -> list[ImageInput]:
    """Expand files and folders into the images to run, in order, each file once.

    Raises:
        UsageError: an input does not exist, nothing was found, a picture would overwrite an
            input image (an output folder that is an input folder), or a picture's name would
            leave `out_dir` (`files.output_file`).
    """
    suffixes = image_suffixes()
    found = list_image_files(inputs)
    out = Path(out_dir)
    seen: set[Path] = set()
    taken: set[Path] = set()
    images: list[ImageInput] = []
    for path, relative in found:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        picture = _unique(output_file(out, _picture_name(relative)), taken)
        images.append(ImageInput(path=path, picture=picture))
    if not images:
        raise UsageError(
            f"{', '.join(str(p) for p in inputs)}: no image files found (looked for "
            f"{', '.join(sorted(s for s in suffixes if s in ('.jpg', '.png', '.bmp', '.webp')))}, ...)"
        )
    clashes = [i.path for i in images if i.picture.resolve() in seen]
    if clashes:
        raise UsageError(
            f"{clashes[0]}: the output picture would overwrite this input image; choose an "
            "--output-dir that holds no input image"
        )
    return images


def list_image_files(inputs: Sequence[Path | str]) -> list[tuple[Path, Path]]:
    """(path, path relative to the folder it was found in) of each image of `inputs`, in order:
    a folder's images (by suffix, hidden entries skipped) walked recursively in sorted order, a
    file as given. Duplicates are kept.

    Raises:
        UsageError: an input does not exist.
    """
    suffixes = image_suffixes()
    found: list[tuple[Path, Path]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            inside = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                        inside.append((Path(root) / name).relative_to(path))
            found.extend((path / relative, relative) for relative in sorted(inside, key=_sort_key))
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            raise UsageError(f"{path}: no such file or folder; pass image files or folders")
    return found


def _sort_key(relative: Path) -> tuple[str, ...]:
    # folder by folder, so "a/z.png" comes before "a0.png" as in a file browser's tree
    return relative.parts


def _picture_name(relative: Path) -> Path:
    suffix = relative.suffix.lower()
    return (
        relative if suffix in _JPEG_SUFFIXES or suffix == ".png" else relative.with_suffix(".png")
    )


def _unique(candidate: Path, taken: set[Path]) -> Path:
    path, n = candidate, 2
    while path in taken:
        path = candidate.with_name(f"{candidate.stem}-{n}{candidate.suffix}")
        n += 1
    taken.add(path)
    return path


@dataclass(frozen=True)
class _Loaded:
    """One image as the loader gives it: resized (3, h, w) uint8 in the model's order and the
    original pixels (H, W, 3) RGB for drawing; or the reason it could not be read."""

    index: int
    resized: Tensor | None = None
    rgb: np.ndarray | None = None
    error: str | None = None


class _ImageFiles(torch.utils.data.Dataset):
    """Reads and resizes image files (in loader worker processes when there are any)."""

    def __init__(self, images: Sequence[ImageInput], *, input_format: InputFormat, short_size: int, max_size: int) -> None:
        self.images = list(images)
        self.input_format: InputFormat = input_format
        self.short_size, self.max_size = short_size, max_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> _Loaded:
        item = self.images[index]
        # Any failure of one file (Pillow's many exception types, a resize that cannot take its
        # shape, memory for a huge image) is that file's problem, named and skipped.
        try:
            pixels = read_image(item.path, input_format=self.input_format)
            resized = resize_for_inference(pixels, short_size=self.short_size, max_size=self.max_size)
            rgb = input_format_to_rgb(pixels, input_format=self.input_format)
            return _Loaded(index, to_chw_tensor(resized), rgb)
        except Exception as exc:
            return _Loaded(index, error=_reason(exc, item.path))


def predict_images(
    detector: ImageDetector,
    images: Sequence[ImageInput],
    *,
    out_dir: Path | str,
    class_names: Sequence[str],
    class_dataset_ids: Sequence[int],
    input_format: InputFormat,
    short_size: int,
    max_size: int,
    images_per_batch: int = 1,
    num_workers: int = 0,
    model_name: str = "",
    formats: Sequence[PredictionFormat] = ("json",),
    coco_image_ids: Mapping[Path, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PredictReport:
    """Run `detector` on the images, `images_per_batch` at a time, read and resized by
    `num_workers` loader processes; draw and list the detections.

    The detector's own `score_thresh` decides what is kept. Unreadable images are skipped.
    formats: besides the pictures, "json" writes predictions.json, "coco" a COCO results list
    (`coco_image_ids` maps each image file to its id), "yolo" one txt file per image
    (`prediction_formats`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _ImageFiles(images, input_format=input_format, short_size=short_size, max_size=max_size)
    loader = torch.utils.data.DataLoader(
        files, batch_size=images_per_batch, num_workers=num_workers, collate_fn=list, shuffle=False
    )
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    num_detections = 0
    done = 0
    start = time.perf_counter()
    for batch in loader:
        readable = [item for item in batch if item.error is None]
        for item in batch:
            if item.error is not None:
                skipped.append({"file": str(images[item.index].path), "reason": item.error})
        for item, dets in _detect_each(detector, readable):
            if isinstance(dets, str):
                skipped.append({"file": str(images[item.index].path), "reason": dets})
                continue
            entry = _record(dets, item, images[item.index], out=out, class_names=class_names, class_dataset_ids=class_dataset_ids)
            num_detections += len(entry["detections"])
            entries.append(entry)
        done += len(batch)
        if progress is not None:
            progress(done, len(images))
    seconds = time.perf_counter() - start
    written = write_formats(
        entries,
        out=out,
        formats=formats,
        header={"model": model_name, "score_thresh": detector.score_thresh, "classes": list(class_names)},
        skipped=skipped,
        coco_image_ids=coco_image_ids,
    )
    return PredictReport(
        images=entries,
        skipped=skipped,
        json_path=written.get("json", out / PREDICTIONS_NAME),
        seconds=seconds,
        num_detections=num_detections,
        score_thresh=detector.score_thresh,
        written=written,
    )


def detect_images(
    detector: ImageDetector,
    images: Sequence[np.ndarray],
    *,
    input_format: InputFormat,
    short_size: int,
    max_size: int,
    images_per_batch: int = 1,
) -> list[Detections]:
    """The detections of in-memory (H, W, 3) uint8 RGB images, `images_per_batch` at a time,
    resized and converted as `predict_images` does for files; boxes in each image's pixels.

    Unlike `predict_images`, nothing is skipped: an image the detector cannot take raises.
    """
    found: list[Detections] = []
    for start in range(0, len(images), max(images_per_batch, 1)):
        batch = images[start : start + max(images_per_batch, 1)]
        resized = [
            to_chw_tensor(
                resize_for_inference(
                    rgb_to_input_format(rgb, input_format=input_format), short_size=short_size, max_size=max_size
                )
            )
            for rgb in batch
        ]
        found += detector.detect(resized, [(int(rgb.shape[0]), int(rgb.shape[1])) for rgb in batch])
    return found


def _detect_each(detector: ImageDetector, batch: Sequence[_Loaded]) -> list[tuple[_Loaded, Detections | str]]:
    """The detections of each loaded image of `batch`, or the reason the detector failed on it.

    The batch runs at once; when that fails, each image runs alone, so that one image the model
    cannot take (an exported graph refusing its size, memory for a huge one) is named and
    skipped while the others keep their results. retinacli's own errors (a network-only file)
    are the command's, not an image's, and are raised.
    """
    if not batch:
        return []

    def run(items: Sequence[_Loaded]) -> list[Detections]:
        sizes = [(item.rgb.shape[0], item.rgb.shape[1]) for item in items]  # type: ignore[union-attr]
        return detector.detect([item.resized for item in items], sizes)  # type: ignore[misc]

    try:
        return list(zip(batch, run(batch), strict=True))
    except RetinaError:
        raise
    except Exception as exc:
        if len(batch) == 1:
            return [(batch[0], f"the model could not run on it ({_first_line(exc)})")]
    return [pair for item in batch for pair in _detect_each(detector, [item])]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _record(
    dets: Detections,
    item: _Loaded,
    image: ImageInput,
    *,
    out: Path,
    class_names: Sequence[str],
    class_dataset_ids: Sequence[int],
) -> dict[str, Any]:
    """The predictions.json entry of one image; its picture is written on the way."""
    assert item.rgb is not None
    height, width = item.rgb.shape[:2]
    detections = detection_dicts(dets, class_names=class_names, class_dataset_ids=class_dataset_ids)
    picture = draw_detections(item.rgb, detections)
    with atomic_write(image.picture) as handle:
        if image.picture.suffix.lower() in _JPEG_SUFFIXES:
            picture.save(handle, format="JPEG", quality=95)
        else:
            picture.save(handle, format="PNG")
    return {
        "file": str(image.path),
        "picture": image.picture.relative_to(out).as_posix(),
        "width": width,
        "height": height,
        "detections": detections,
    }


def detection_dicts(
    dets: Detections, *, class_names: Sequence[str], class_dataset_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """One dict per detection: box (XYXY, original pixels), score, class_id, category_id, class_name."""
    return [
        {
            "box": box,
            "score": score,
            "class_id": label,
            "category_id": int(class_dataset_ids[label]),
            "class_name": class_names[label],
        }
        for box, score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist(), strict=True)
    ]


def draw_detections(rgb: np.ndarray, detections: Sequence[dict[str, Any]]) -> Image.Image:
    """An RGB picture of `rgb` ((H, W, 3) uint8) with each detection's box and
    "<class_name> <score>" drawn (the data package's `draw_boxes`), lowest score first so the
    best boxes end on top."""
    from retinacli.data.visualize import draw_boxes

    ordered = sorted(detections, key=lambda d: d["score"])
    names: dict[int, str] = {d["class_id"]: d["class_name"] for d in ordered}
    class_names = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
    return draw_boxes(
        rgb,
        boxes=np.array([d["box"] for d in ordered], dtype=np.float64).reshape(-1, 4),
        labels=np.array([d["class_id"] for d in ordered], dtype=np.int64),
        scores=np.array([d["score"] for d in ordered], dtype=np.float64),
        class_names=class_names,
    )


def _reason(exc: BaseException, path: Path) -> str:
    if not isinstance(exc, RetinaError):
        return f"cannot read or resize it ({_first_line(exc)})"
    text = str(exc)
    prefix = f"{path}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    # the data package's advice is about jsons; here the file is simply skipped
    return text.split("; ", 1)[0]

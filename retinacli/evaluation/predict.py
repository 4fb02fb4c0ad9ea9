"""`retina predict`: detections on loose image files, drawn on the pictures and listed in JSON.

Inputs are files or folders. Folders are walked recursively, in sorted order of the relative
path (folder by folder), taking files whose suffix Pillow knows (hidden files and folders are
skipped); files named explicitly are always tried. Each image is read as training and evaluation read it (EXIF orientation applied, any
Pillow mode converted, the model's channel order), resized with the recipe's test resize and run
alone (1 image per batch, as detectron2's predictor).

An image that cannot be read is skipped and reported (in the return value and in
predictions.json); the others go on.

Outputs in `out_dir`: one picture per image (same relative name as in its folder; JPEG inputs
stay JPEG, everything else becomes PNG) with boxes, class names and scores drawn, and
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retinacli.data.images import InputFormat, read_image
from retinacli.data.transforms import resize_image, resized_hw
from retinacli.engine.detector import RetinaNet
from retinacli.errors import DatasetError, UsageError
from retinacli.evaluation.inference import model_device
from retinacli.files import atomic_write, write_json

PREDICTIONS_NAME = "predictions.json"
_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on: its path and the picture name under the output folder."""

    path: Path
    picture: Path


@dataclass
class PredictReport:
    """What `predict_images` did: per-image entries as in predictions.json, the skipped files,
    the JSON path, the time spent (reading and drawing included) and the score threshold."""

    images: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    json_path: Path
    seconds: float
    num_detections: int = field(default=0)
    score_thresh: float = field(default=0.0)


def image_suffixes() -> frozenset[str]:
    """Lower-case file suffixes Pillow can open (".jpg", ".png", ...)."""
    Image.init()
    return frozenset(
        s.lower() for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    )


def find_images(inputs: Sequence[Path | str], *, out_dir: Path | str) -> list[ImageInput]:
    """Expand files and folders into the images to run, in order, each file once.

    Raises:
        UsageError: an input does not exist, nothing was found, or a picture would overwrite an
            input image (an output folder that is an input folder).
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
    out = Path(out_dir)
    seen: set[Path] = set()
    taken: set[Path] = set()
    images: list[ImageInput] = []
    for path, relative in found:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        picture = _unique(out / _picture_name(relative), taken)
        images.append(ImageInput(path=path, picture=picture))
    if not images:
        raise UsageError(
            f"{', '.join(str(p) for p in inputs)}: no image files found (looked for "
            f"{', '.join(sorted(s for s in suffixes if s in ('.jpg', '.png', '.bmp', '.webp')))}, ...)"
        )
    clashes = [i.path for i in images if i.picture.resolve() in seen]
    if clashes:
        raise UsageError(
            f"{clashes[0]}: the output picture would overwrite this input image; choose an --out "
            "folder that holds no input image"
        )
    return images


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


def predict_images(
    model: RetinaNet,
    images: Sequence[ImageInput],
    *,
    out_dir: Path | str,
    class_names: Sequence[str],
    class_dataset_ids: Sequence[int],
    input_format: InputFormat,
    short_size: int,
    max_size: int,
    model_name: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> PredictReport:
    """Run `model` (on its device, in eval mode) on each image; draw and list the detections.

    The model's own `score_thresh` decides what is kept. Unreadable images are skipped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = model_device(model)
    was_training = model.training
    model.eval()
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    num_detections = 0
    start = time.perf_counter()
    try:
        for n, item in enumerate(images):
            try:
                pixels = read_image(item.path, input_format=input_format)
            except (DatasetError, Image.DecompressionBombError) as exc:
                skipped.append({"file": str(item.path), "reason": _reason(exc, item.path)})
            else:
                entry = _predict_one(
                    model,
                    pixels,
                    item,
                    out=out,
                    device=device,
                    class_names=class_names,
                    class_dataset_ids=class_dataset_ids,
                    input_format=input_format,
                    short_size=short_size,
                    max_size=max_size,
                )
                num_detections += len(entry["detections"])
                entries.append(entry)
            if progress is not None:
                progress(n + 1, len(images))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    json_path = write_json(
        out / PREDICTIONS_NAME,
        {
            "model": model_name,
            "score_thresh": model.score_thresh,
            "classes": list(class_names),
            "images": entries,
            "skipped": skipped,
        },
    )
    return PredictReport(
        images=entries,
        skipped=skipped,
        json_path=json_path,
        seconds=seconds,
        num_detections=num_detections,
        score_thresh=model.score_thresh,
    )


def _predict_one(
    model: RetinaNet,
    pixels: np.ndarray,
    item: ImageInput,
    *,
    out: Path,
    device: torch.device,
    class_names: Sequence[str],
    class_dataset_ids: Sequence[int],
    input_format: InputFormat,
    short_size: int,
    max_size: int,
) -> dict[str, Any]:
    height, width = pixels.shape[:2]
    new_h, new_w = resized_hw(height=height, width=width, short_size=short_size, max_size=max_size)
    resized = resize_image(pixels, height=new_h, width=new_w)
    tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(device)
    with torch.inference_mode():
        (dets,) = model([tensor], original_sizes=[(height, width)])
    boxes, scores, labels = (
        dets.boxes.cpu().tolist(),
        dets.scores.cpu().tolist(),
        dets.labels.cpu().tolist(),
    )
    detections = [
        {
            "box": box,
            "score": score,
            "class_id": label,
            "category_id": int(class_dataset_ids[label]),
            "class_name": class_names[label],
        }
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]
    rgb = pixels[:, :, ::-1] if input_format == "BGR" else pixels
    picture = draw_detections(np.ascontiguousarray(rgb), detections)
    with atomic_write(item.picture) as handle:
        if item.picture.suffix.lower() in _JPEG_SUFFIXES:
            picture.save(handle, format="JPEG", quality=95)
        else:
            picture.save(handle, format="PNG")
    return {
        "file": str(item.path),
        "picture": item.picture.relative_to(out).as_posix(),
        "width": width,
        "height": height,
        "detections": detections,
    }


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
    text = str(exc)
    prefix = f"{path}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    # the data package's advice is about jsons; here the file is simply skipped
    return text.split("; ", 1)[0]

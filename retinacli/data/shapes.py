"""The built-in synthetic dataset: filled shapes on textured, noisy backgrounds.

Every image is a pure function of (seed, split, index, spec): its random generator is seeded from
those alone, so the same seed gives identical pixels and boxes in any process, with any number of
workers, and the "train" and "test" splits of one seed never share an image. Classes differ by
shape only (colours are random), edges are crisp (no antialiasing), objects are 12..120 px by
default, several per image, overlapping a little (IoU <= max_overlap, and a later object covers
at most half of an earlier object's box).

`make_shapes` writes PNG files and a COCO json that every tool reads like any other dataset;
`ensure_shapes` does that once into a cache folder, atomically (written under a temporary name,
then renamed), so a half-written dataset is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from retinacli.files import output_file

ShapeName = Literal["circle", "square", "triangle", "diamond", "cross"]
SHAPE_NAMES: tuple[ShapeName, ...] = ("circle", "square", "triangle", "diamond", "cross")
DEFAULT_CLASSES: tuple[ShapeName, ...] = ("circle", "square", "triangle")

# Bumped whenever the drawing changes, so caches made by an older generator are not reused.
GENERATOR_VERSION = 1

# An object may cover at most this fraction of an earlier object's box, so none is hidden.
_MAX_COVERED = 0.5
_PLACEMENT_TRIES = 50
# Minimum RGB distance between an object's colour and the background under it.
_MIN_CONTRAST = 120.0


@dataclass(frozen=True, kw_only=True)
class ShapesSpec:
    """How the images look. Sizes are in pixels, ranges are inclusive [min, max].

    image_size: range of each image side (width and height are drawn independently).
    object_size: range of an object's side (its box is about object_size square).
    objects_per_image: range of the object count; 0 allows images without boxes.
    classes: the shapes, in category order (category id i + 1 is classes[i]).
    max_overlap: largest IoU allowed between two objects' boxes.
    noise_std: standard deviation of the per-pixel Gaussian noise, in 0..255 units.
    """

    image_size: tuple[int, int] = (192, 256)
    object_size: tuple[int, int] = (12, 120)
    objects_per_image: tuple[int, int] = (0, 6)
    classes: tuple[ShapeName, ...] = DEFAULT_CLASSES
    max_overlap: float = 0.3
    noise_std: float = 6.0

    def __post_init__(self) -> None:
        for name in ("image_size", "object_size", "objects_per_image"):
            low, high = getattr(self, name)
            if low > high or low < 0:
                raise ValueError(f"ShapesSpec.{name} must be [min, max] with 0 <= min <= max")
            object.__setattr__(self, name, (int(low), int(high)))
        if self.image_size[0] < 16 or self.object_size[0] < 4:
            raise ValueError("ShapesSpec: images need sides >= 16 px and objects >= 4 px")
        unknown = [c for c in self.classes if c not in SHAPE_NAMES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(
                f"ShapesSpec.classes must be distinct names from {SHAPE_NAMES}, got {self.classes}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True)
class ShapesSample:
    """One generated image: (H, W, 3) uint8 RGB, boxes (G, 4) float32 XYXY (tight, in pixel
    edges), labels (G,) int64 contiguous indices into `ShapesSpec.classes`."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ShapesSplit:
    """Where a written split lies: `annotations` (the COCO json) and `images` (the folder its
    file_names are relative to), the same two paths a COCO dataset in a recipe names."""

    annotations: Path
    images: Path
    num_images: int


def generate_shapes_image(*, seed: int, split: str, index: int, spec: ShapesSpec) -> ShapesSample:
    """Draw image `index` of `split` for `seed`; the same arguments always give the same sample."""
    rng = np.random.default_rng([seed, _split_code(split), index])
    height = int(rng.integers(spec.image_size[0], spec.image_size[1] + 1))
    width = int(rng.integers(spec.image_size[0], spec.image_size[1] + 1))
    canvas = _background(rng, height=height, width=width)

    count = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    layer = Image.fromarray(canvas)
    for _ in range(count):
        placed = _place(rng, boxes, height=height, width=width, spec=spec)
        if placed is None:
            continue
        label = int(rng.integers(len(spec.classes)))
        mask = Image.new("L", (width, height), 0)
        _draw_shape(ImageDraw.Draw(mask), spec.classes[label], placed)
        tight = mask.getbbox()  # (x1, y1, x2, y2), x2/y2 exclusive: XYXY in pixel edges
        if tight is None:
            continue
        x1, y1, x2, y2 = placed
        under = np.asarray(layer)[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
        colour = _contrasting_colour(rng, under)
        layer.paste(colour, mask=mask)
        boxes.append(tight)
        labels.append(label)

    image = np.asarray(layer).astype(np.float32)
    image += rng.normal(0.0, spec.noise_std, size=image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return ShapesSample(
        image=pixels,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
    )


def make_shapes(
    out_dir: Path | str,
    *,
    num_images: int,
    seed: int,
    split: str = "train",
    spec: ShapesSpec | None = None,
) -> ShapesSplit:
    """Write `num_images` images of `split` as PNG plus a COCO json.

    Layout: `out_dir/<split>.json`, `out_dir/<split>/000000.png`, ...; image ids are index + 1,
    file_names are relative to `out_dir`. Files already there are overwritten: the caller
    decides whether the folder may be written (`retina data make-shapes` asks
    `files.prepare_output_dir`); each file is checked to land inside `out_dir`.
    """
    if num_images < 0:
        raise ValueError(f"make_shapes: num_images must be >= 0, got {num_images}")
    spec = spec or ShapesSpec()
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        sample = generate_shapes_image(seed=seed, split=split, index=index, spec=spec)
        file_name = f"{split}/{index:06d}.png"
        Image.fromarray(sample.image).save(output_file(out, file_name), compress_level=1)
        height, width = sample.image.shape[:2]
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for box, label in zip(sample.boxes.tolist(), sample.labels.tolist(), strict=True):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "retinacli synthetic shapes",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "split": split,
            "spec": _spec_json(spec),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(spec.classes)],
    }
    json_path = output_file(out, f"{split}.json")
    json_path.write_text(json.dumps(coco))
    return ShapesSplit(annotations=json_path, images=out, num_images=num_images)


def make_shapes_voc(
    out_dir: Path | str,
    *,
    splits: Sequence[tuple[str, int]],
    seed: int,
    spec: ShapesSpec | None = None,
) -> dict[str, int]:
    """Write the same images and boxes as `make_shapes` as a Pascal VOC folder: `Annotations/
    <split>_<index>.xml`, `JPEGImages/<split>_<index>.png` and `ImageSets/Main/<split>.txt` for
    each (split, number of images). Returns the number of images per split."""
    from retinacli.data.formats.voc import voc_xml

    spec = spec or ShapesSpec()
    out = Path(out_dir)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = {}
    for split, num_images in splits:
        ids = []
        for index in range(num_images):
            sample = generate_shapes_image(seed=seed, split=split, index=index, spec=spec)
            image_id = f"{split}_{index:06d}"
            Image.fromarray(sample.image).save(output_file(out, f"JPEGImages/{image_id}.png"), compress_level=1)
            height, width = sample.image.shape[:2]
            objects = [
                (spec.classes[label], tuple(box), False)
                for box, label in zip(sample.boxes.tolist(), sample.labels.tolist(), strict=True)
            ]
            xml = voc_xml(filename=f"{image_id}.png", width=width, height=height, objects=objects)
            output_file(out, f"Annotations/{image_id}.xml").write_text(xml, encoding="utf-8")
            ids.append(image_id)
        output_file(out, f"ImageSets/Main/{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        written[split] = num_images
    return written


def ensure_shapes(
    cache_dir: Path | str,
    *,
    num_images: int,
    seed: int,
    split: str = "train",
    spec: ShapesSpec | None = None,
) -> ShapesSplit:
    """The split written by `make_shapes`, generated once under `cache_dir` and reused.

    The folder name encodes every argument and the generator version. A new dataset is written
    into a temporary folder beside it and renamed into place, so concurrent callers and
    interrupted runs never see a partial dataset.
    """
    spec = spec or ShapesSpec()
    key = json.dumps(
        {"v": GENERATOR_VERSION, "n": num_images, "seed": seed, "split": split, **_spec_json(spec)},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(cache_dir)
    final = cache / f"shapes-{split}-n{num_images}-seed{seed}-{digest}"
    if not (final / f"{split}.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
        try:
            make_shapes(staging, num_images=num_images, seed=seed, split=split, spec=spec)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / f"{split}.json").is_file():
                    raise
                # another process finished the same dataset first; theirs is identical
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ShapesSplit(annotations=final / f"{split}.json", images=final, num_images=num_images)


def _split_code(split: str) -> int:
    """A stable integer per split name, so each split has its own random stream."""
    return zlib.crc32(split.encode("utf-8"))


def _spec_json(spec: ShapesSpec) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}


def _background(rng: np.random.Generator, *, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a base colour, a linear gradient and a few low-frequency waves."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height)[..., None]
    image = base + ramp * rng.uniform(-50, 50, size=3).astype(np.float32)
    for _ in range(3):
        frequency = rng.uniform(0.02, 0.12)
        direction = rng.uniform(0, 2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(frequency * (np.cos(direction) * xs + np.sin(direction) * ys) + phase)
        image += wave[..., None] * rng.uniform(-18, 18, size=3).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _place(
    rng: np.random.Generator,
    boxes: list[tuple[int, int, int, int]],
    *,
    height: int,
    width: int,
    spec: ShapesSpec,
) -> tuple[int, int, int, int] | None:
    """A square (x1, y1, x2, y2) for the next object, overlapping earlier ones only a little."""
    largest = min(spec.object_size[1], height, width)
    smallest = min(spec.object_size[0], largest)
    for _ in range(_PLACEMENT_TRIES):
        side = int(rng.integers(smallest, largest + 1))
        x1 = int(rng.integers(0, width - side + 1))
        y1 = int(rng.integers(0, height - side + 1))
        candidate = (x1, y1, x1 + side, y1 + side)
        if all(_overlap_ok(candidate, other, spec.max_overlap) for other in boxes):
            return candidate
    return None


def _overlap_ok(new: tuple[int, ...], old: tuple[int, ...], max_iou: float) -> bool:
    iw = min(new[2], old[2]) - max(new[0], old[0])
    ih = min(new[3], old[3]) - max(new[1], old[1])
    if iw <= 0 or ih <= 0:
        return True
    inter = iw * ih
    area_new = (new[2] - new[0]) * (new[3] - new[1])
    area_old = (old[2] - old[0]) * (old[3] - old[1])
    iou = inter / (area_new + area_old - inter)
    return iou <= max_iou and inter <= _MAX_COVERED * area_old


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int]) -> None:
    """Fill `shape` inside the pixel box [x1, x2) x [y1, y2) with 255 (PIL coordinates are
    inclusive, hence the -1)."""
    x1, y1, x2, y2 = box[0], box[1], box[2] - 1, box[3] - 1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=255)
    elif shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=255)
    elif shape == "cross":
        arm = max(1.0, (x2 - x1) / 6)
        draw.rectangle((cx - arm, y1, cx + arm, y2), fill=255)
        draw.rectangle((x1, cy - arm, x2, cy + arm), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPE_NAMES}")


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least `_MIN_CONTRAST` away (RGB distance) from `under`."""
    colour = rng.integers(0, 256, size=3)
    for _ in range(20):
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = rng.integers(0, 256, size=3)
    else:
        colour = np.where(under < 128, 255, 0)  # the far corner of the colour cube
    return int(colour[0]), int(colour[1]), int(colour[2])

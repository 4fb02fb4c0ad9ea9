"""Drawing images with their ground-truth boxes, for `retina data show`."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from retinacli.data.augment.box import BoxAugment
from retinacli.data.augment.resize_flip import Augmentation
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import read_image
from retinacli.data.loader import MappedDataset, Sample, TrainBatchSampler
from retinacli.files import atomic_write, output_file

# Distinct, readable colours; class i uses PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


DROPPED_COLOUR = (160, 160, 160)


@functools.lru_cache(maxsize=1)
def label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def draw_boxes(
    image: np.ndarray,
    *,
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
    title: str | None = None,
    dropped: np.ndarray | None = None,
) -> Image.Image:
    """Draw XYXY boxes with their class names (and scores) on an image.

    Args:
        image: (H, W, 3) uint8 RGB. boxes: (G, 4) XYXY in its pixels. labels: (G,) contiguous
            class indices. scores: optional (G,) in [0, 1], shown after the name.
        title: optional text in the top-left corner.
        dropped: optional (D, 4) XYXY boxes drawn in thin grey without a label: what is left of
            the boxes the augmentation's drop rule removed.

    Returns:
        A new RGB PIL image; `image` is not modified.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if dropped is not None:
        for box in np.asarray(dropped, dtype=np.float64).reshape(-1, 4).tolist():
            draw.rectangle(box, outline=DROPPED_COLOUR, width=1)
    for g, (box, label) in enumerate(zip(boxes.tolist(), np.asarray(labels).tolist(), strict=True)):
        colour = PALETTE[int(label) % len(PALETTE)]
        draw.rectangle(box, outline=colour, width=2)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(label)
        text = name if scores is None else f"{name} {float(scores[g]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left, bottom - top
        # the label sits above the box, or inside it when the box touches the top edge
        x, y = box[0], box[1] - text_h - 3
        if y < 0:
            y = box[1]
        draw.rectangle((x, y, x + text_w + 3, y + text_h + 3), fill=colour)
        draw.text((x + 1 - left, y + 1 - top), text, fill=(0, 0, 0), font=font)
    if title:
        left, top, right, bottom = draw.textbbox((2, 2), title, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((2, 2), title, fill=(255, 255, 255), font=font)
    return canvas


def show_dataset(
    *,
    dataset: DetectionDataset,
    out_dir: Path | str,
    num_images: int = 16,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    box_augment: BoxAugment | None = None,
) -> list[Path]:
    """Write `num_images` images with their boxes as PNG files into `out_dir`.

    Without `augmentation`: the first images in image id order, as stored. With it: the first
    samples of the training stream for `seed`, augmented exactly as training will see them
    (same images, short sides and flips, and with `box_augment` the same box-aware
    augmentations): the title names the augmentations that happened and the boxes they dropped,
    whose remains are drawn in grey.

    Returns:
        The written files, `<k>_image<id>.png`, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = min(num_images, len(dataset))
    written = []
    if augmentation is None:
        for k, record in enumerate(dataset.records[:count]):
            image = read_image(
                record.file_name,
                input_format="RGB",
                image_id=record.image_id,
                expected_hw=(record.height, record.width),
            )
            title = f"image {record.image_id}  {record.width}x{record.height}"
            canvas = draw_boxes(
                image,
                boxes=record.boxes,
                labels=record.labels,
                class_names=dataset.class_names,
                title=title,
            )
            written.append(_save(canvas, out, k, record.image_id))
        return written

    mapped = MappedDataset(
        records=dataset.records, augmentation=augmentation, input_format="RGB", seed=seed,
        box_augment=box_augment,
    )
    sampler = TrainBatchSampler(
        image_sizes=[(r.height, r.width) for r in dataset.records],
        images_per_batch=1,
        seed=seed,
        aspect_ratio_grouping=False,
    )
    for k, (key,) in enumerate(itertools.islice(iter(sampler), count)):
        sample = mapped[key]
        image = sample.image.permute(1, 2, 0).numpy()
        canvas = draw_boxes(
            image,
            boxes=sample.targets.boxes.numpy(),
            labels=sample.targets.labels.numpy(),
            class_names=dataset.class_names,
            title=sample_title(sample),
            dropped=None if sample.dropped is None else sample.dropped.numpy(),
        )
        written.append(_save(canvas, out, k, sample.image_id))
    return written


def sample_title(sample: Sample) -> str:
    """`image 7  640x480 -> 320x240  crop+mosaic+color  (2 boxes dropped)`: the image, its size
    as stored and as trained, and the box-aware augmentations that happened to it."""
    h0, w0 = sample.original_size
    _, h, w = sample.image.shape
    title = f"image {sample.image_id}  {w0}x{h0} -> {w}x{h}"
    if sample.applied:
        title += "  " + "+".join(sample.applied)
    if sample.boxes_dropped:
        title += f"  ({sample.boxes_dropped} {'box' if sample.boxes_dropped == 1 else 'boxes'} dropped)"
    return title


def _save(canvas: Image.Image, out: Path, k: int, image_id: int) -> Path:
    path = output_file(out, f"{k:03d}_image{image_id}.png")  # checked to land inside `out`
    with atomic_write(path) as handle:
        canvas.save(handle, format="PNG")
    return path

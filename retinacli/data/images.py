"""Reading images from disk the way detectron2's `read_image` does.

An image is returned as an (H, W, 3) uint8 numpy array in the channel order the model takes
("BGR" for detectron2/MSRA weights, "RGB" for torchvision weights), with the EXIF orientation
already applied, so H and W are the size a viewer shows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from retinacli.errors import DatasetError
from retinacli.files import PathOutsideRoot, contained_path

InputFormat = Literal["BGR", "RGB"]

# EXIF tag 274 (Orientation). Values 5..8 rotate by 90 or 270 degrees, which swaps W and H.
_EXIF_ORIENTATION = 274
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

# PIL modes holding more than 8 bits per sample. PIL's convert("RGB") saturates them at 255,
# which turns a 16-bit image white; we scale them down instead (see `_to_rgb`).
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def data_path(root: Path | str, name: str | os.PathLike[str]) -> Path:
    """`root / name` for a file name read from data (a json's file_name, a VOC <filename>, a
    file found while listing a folder), refused unless it stays inside `root` once resolved.

    `files.contained_path`, with a link that loops or a name the system cannot resolve (too
    long, ...) refused the same way instead of raising RuntimeError/OSError: every refusal is
    one PathOutsideRoot (a ValueError) whose `reason` reads `<reason> <root>`. Nothing is
    opened; only the path's parts are looked up (lstat/readlink).
    """
    try:
        return contained_path(root, name)
    except PathOutsideRoot:
        raise
    except (RuntimeError, OSError, ValueError) as exc:  # a symlink loop: RuntimeError before 3.13
        why = "a link that loops" if "loop" in str(exc).lower() else "a name that cannot be resolved"
        raise PathOutsideRoot(os.fspath(name), Path(root), f"{why}, found in") from None


def _where(path: Path | str, image_id: int | None) -> str:
    return f"{path} (image id {image_id})" if image_id is not None else str(path)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> "RGB". Alpha is dropped (not composited), as PIL and detectron2 do."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        # 16-bit grayscale: keep the top 8 bits (65535 -> 255) rather than saturating.
        wide = np.asarray(image, dtype=np.int64)
        gray = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def read_image(
    path: Path | str,
    *,
    input_format: InputFormat,
    image_id: int | None = None,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode one image file into the model's channel order.

    Args:
        path: the image file.
        input_format: "BGR" or "RGB": the channel order of the result.
        image_id: only used to name the image in error messages.
        expected_hw: (height, width) the dataset records for this image, after EXIF orientation.
            When given, a file of another size is an error (detectron2's `check_image_size`).

    Returns:
        (H, W, 3) uint8, C-contiguous, in `input_format` order.

    Raises:
        DatasetError: the file is missing or cannot be decoded, or its size is not `expected_hw`.
    """
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
    where = _where(path, image_id)
    with _open(path, where=where, action="decode") as opened:
        array = pil_to_rgb(opened)
    if expected_hw is not None:
        _check_size(where, actual_hw=(array.shape[0], array.shape[1]), expected_hw=expected_hw)
    if input_format == "BGR":
        array = array[:, :, ::-1]
    # np.asarray of a PIL image is read-only; torch.from_numpy wants a writable array.
    return np.array(array, order="C")


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB pixels, EXIF orientation applied and any mode converted
    as `read_image` does (alpha dropped, 16-bit gray scaled down); read-only (np.asarray)."""
    return np.asarray(_to_rgb(ImageOps.exif_transpose(image)), dtype=np.uint8)


def rgb_to_input_format(rgb: np.ndarray, *, input_format: InputFormat) -> np.ndarray:
    """(H, W, 3) RGB pixels (a decoded video frame, a generated image) in the model's channel
    order, C-contiguous: what `read_image` gives for a file."""
    return np.ascontiguousarray(rgb[:, :, ::-1] if input_format == "BGR" else rgb)


def input_format_to_rgb(pixels: np.ndarray, *, input_format: InputFormat) -> np.ndarray:
    """(H, W, 3) pixels in the model's channel order as RGB (for drawing), C-contiguous."""
    return np.ascontiguousarray(pixels[:, :, ::-1] if input_format == "BGR" else pixels)


def read_image_size(path: Path | str, *, image_id: int | None = None) -> tuple[int, int]:
    """(height, width) of an image file after EXIF orientation, reading headers only.

    No pixel data is decoded, so this is fast enough to check every image of a dataset. A file
    whose header is valid but whose pixel data is truncated is not detected here.

    Raises:
        DatasetError: the file is missing or is not an image PIL can open.
    """
    with _open(path, where=_where(path, image_id), action="open") as opened:
        width, height = opened.size
        orientation = _header_orientation(opened)
    if orientation in _SWAPS_SIDES:
        return width, height
    return height, width


@contextlib.contextmanager
def _open(path: Path | str, *, where: str, action: str) -> Iterator[Image.Image]:
    """Image.open, with every failure inside the block turned into one DatasetError."""
    try:
        with Image.open(path) as opened:
            yield opened
    except FileNotFoundError:
        raise DatasetError(
            f"{where}: image file not found; check the image folder and the json's file_name"
        ) from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses images of more than 2 x Image.MAX_IMAGE_PIXELS pixels before decoding
        # them: a small file can declare a size whose pixels would not fit in memory.
        raise DatasetError(
            f"{where}: refused to {action} the image: {str(exc).rstrip('.')}; a file this small rarely holds that "
            "many pixels (a decompression bomb?): replace the file or remove the image from the json"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
        # data, and occasionally ValueError/SyntaxError for malformed headers.
        raise DatasetError(
            f"{where}: cannot {action} the image ({exc}); replace the file or remove the image "
            "from the json"
        ) from None


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation found in the already-parsed header; 1 (upright) if none.

    PNG's `getexif()` decodes the whole file when the eXIf chunk is not in the header, so for PNG
    only the header's EXIF is read (an eXIf chunk after the pixel data is not seen).
    """
    if image.format == "PNG":
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = image.getexif()
    value = exif.get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _check_size(where: str, *, actual_hw: tuple[int, int], expected_hw: tuple[int, int]) -> None:
    if tuple(actual_hw) != tuple(expected_hw):
        raise DatasetError(
            size_mismatch_message(where, actual_hw=actual_hw, expected_hw=expected_hw)
        )


def size_mismatch_message(
    where: str, *, actual_hw: tuple[int, int], expected_hw: tuple[int, int]
) -> str:
    """The one wording of "file size differs from the json", shared with `checks`."""
    return (
        f"{where}: the file is {actual_hw[1]}x{actual_hw[0]} (WxH, after EXIF orientation) but "
        f"the json records {expected_hw[1]}x{expected_hw[0]}; fix width/height in the json or "
        "replace the file"
    )

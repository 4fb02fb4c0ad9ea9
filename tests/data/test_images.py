from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli.data.images import read_image, read_image_size
from retinacli.errors import DatasetError


def _pattern(h: int = 6, w: int = 10) -> np.ndarray:
    """(h, w, 3) uint8 with distinct values in every pixel and channel."""
    return (np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3) % 251).astype(np.uint8)


def _save_with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes())


def test_channel_order(tmp_path: Path) -> None:
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    as_rgb = read_image(tmp_path / "a.png", input_format="RGB")
    as_bgr = read_image(tmp_path / "a.png", input_format="BGR")
    assert as_rgb.dtype == np.uint8 and as_rgb.shape == (6, 10, 3)
    np.testing.assert_array_equal(as_rgb, rgb)
    np.testing.assert_array_equal(as_bgr, rgb[:, :, ::-1])
    assert as_bgr.flags.c_contiguous


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),  # rotated 180 degrees
        (6, lambda a: np.rot90(a, k=-1)),  # displayed rotated 90 degrees clockwise
        (8, lambda a: np.rot90(a, k=1)),  # displayed rotated 90 degrees counter-clockwise
    ],
)
def test_exif_orientation_applied(tmp_path: Path, orientation: int, expected) -> None:
    stored = _pattern(6, 10)
    path = tmp_path / "o.png"
    _save_with_orientation(path, stored, orientation)
    image = read_image(path, input_format="RGB")
    np.testing.assert_array_equal(image, expected(stored))
    assert read_image_size(path) == image.shape[:2]


def test_exif_orientation_in_jpeg_header(tmp_path: Path) -> None:
    path = tmp_path / "o.jpg"
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(_pattern(6, 10)).save(path, exif=exif.tobytes())
    assert read_image_size(path) == (10, 6)
    assert read_image(path, input_format="RGB").shape == (10, 6, 3)


def test_modes_converted_to_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 50], [100, 255]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "l.png", input_format="RGB"), np.repeat(gray[:, :, None], 3, 2)
    )

    palette = Image.fromarray(gray, mode="L").convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png", input_format="RGB"), np.repeat(gray[:, :, None], 3, 2)
    )

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    # alpha is dropped, not composited (PIL's and detectron2's behaviour)
    np.testing.assert_array_equal(
        read_image(tmp_path / "rgba.png", input_format="BGR")[0, 0], [30, 20, 10]
    )

    Image.fromarray(np.stack([gray, gray], -1), mode="LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png", input_format="RGB")[1, 0].tolist() == [100, 100, 100]

    Image.new("CMYK", (3, 2), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")
    cmyk = read_image(tmp_path / "cmyk.tif", input_format="RGB")
    assert cmyk.shape == (2, 3, 3) and cmyk.dtype == np.uint8
    assert cmyk[0, 0].tolist() == [255, 255, 255]  # no ink is white


def test_16_bit_scaled_not_saturated(tmp_path: Path) -> None:
    wide = np.array([[0, 256 * 100], [256 * 200 + 255, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    image = read_image(tmp_path / "w.png", input_format="RGB")
    # top 8 bits: 0 -> 0, 25600 -> 100, 51455 -> 200, 65535 -> 255
    np.testing.assert_array_equal(image[..., 0], [[0, 100], [200, 255]])


def test_size_mismatch_names_file_and_id(tmp_path: Path) -> None:
    Image.fromarray(_pattern(6, 10)).save(tmp_path / "a.png")
    with pytest.raises(DatasetError) as info:
        read_image(tmp_path / "a.png", input_format="BGR", image_id=7, expected_hw=(6, 11))
    message = str(info.value)
    assert str(tmp_path / "a.png") in message and "image id 7" in message
    assert "10x6" in message and "11x6" in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing\.png \(image id 3\): image file not found"):
        read_image(tmp_path / "missing.png", input_format="RGB", image_id=3)
    with pytest.raises(DatasetError, match=r"missing\.png \(image id 3\): image file not found"):
        read_image_size(tmp_path / "missing.png", image_id=3)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"junk\.jpg \(image id 4\): cannot"):
        read_image(tmp_path / "junk.jpg", input_format="RGB", image_id=4)
    with pytest.raises(DatasetError, match=r"junk\.jpg \(image id 4\): cannot"):
        read_image_size(tmp_path / "junk.jpg", image_id=4)


def test_truncated_file_fails_on_decode(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(_pattern(64, 64)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:200])
    assert read_image_size(cut) == (64, 64)  # the header is intact
    with pytest.raises(DatasetError, match=r"cut\.png \(image id 9\): cannot decode"):
        read_image(cut, input_format="RGB", image_id=9)


def test_raccoon_grayscale_image(raccoon_dir: Path) -> None:
    path = raccoon_dir / "images" / "raccoon-150.jpg"
    assert Image.open(path).mode == "L"
    image = read_image(path, input_format="BGR")
    assert image.shape[2] == 3
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert read_image_size(path) == image.shape[:2]

"""Fixtures of the data tests. `shared_dir` and `golden_dir` come from tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from retinacli.data.shapes import ShapesSpec, make_shapes
from tests.data.datasets import load_coco


@pytest.fixture(scope="session")
def raccoon_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "raccoon"


WriteCoco = Callable[..., Path]


@pytest.fixture
def write_coco(tmp_path: Path) -> WriteCoco:
    """A factory writing a small COCO dataset under tmp_path and returning the json path.

    `images` are COCO image entries; a PNG of the recorded width x height (mid-gray) is written
    for each, unless the entry's id is in `skip_files`. `file_sizes` maps an image id to the
    (width, height) the file really gets. Images go to tmp_path/"images".
    """

    def write(
        *,
        images: list[dict[str, Any]],
        annotations: list[dict[str, Any]],
        categories: list[dict[str, Any]] | None = None,
        skip_files: tuple[int, ...] = (),
        file_sizes: dict[int, tuple[int, int]] | None = None,
        name: str = "train.json",
    ) -> Path:
        root = tmp_path / "images"
        root.mkdir(exist_ok=True)
        for img in images:
            if img["id"] in skip_files:
                continue
            w, h = (file_sizes or {}).get(img["id"], (img["width"], img["height"]))
            pixels = np.full((h, w, 3), 128, dtype=np.uint8)
            Image.fromarray(pixels).save(root / img["file_name"])
        cats = categories if categories is not None else [{"id": 1, "name": "thing"}]
        path = tmp_path / name
        path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": cats})
        )
        return path

    return write


def image_entry(image_id: int, *, width: int = 64, height: int = 48) -> dict[str, Any]:
    return {"id": image_id, "file_name": f"img{image_id}.png", "width": width, "height": height}


def box_entry(
    ann_id: int, image_id: int, bbox: list[float], *, category_id: int = 1, iscrowd: int = 0
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": float(bbox[2] * bbox[3]) if len(bbox) == 4 else 0.0,
        "iscrowd": iscrowd,
    }


@pytest.fixture
def entries() -> Any:
    """`entries.image(...)`, `entries.box(...)`: COCO entry builders for `write_coco`."""

    class Entries:
        image = staticmethod(image_entry)
        box = staticmethod(box_entry)

    return Entries


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory):
    """12 small generated shapes images (40x72, 1 to 3 objects) as a DetectionDataset."""
    root = tmp_path_factory.mktemp("shapes")
    spec = ShapesSpec(image_size=(40, 72), object_size=(8, 24), objects_per_image=(1, 3))
    split = make_shapes(root, num_images=12, seed=0, split="train", spec=spec)
    return load_coco(annotations=split.annotations, images=split.images, filter_empty=False)

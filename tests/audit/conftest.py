"""The hand-made dataset of `handmade` on disk: flat-colour PNGs and its json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from retinacli.build import DatasetFiles, build_given_dataset
from tests.audit.handmade import COCO


@pytest.fixture
def dataset(tmp_path: Path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for img in COCO["images"]:
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(images / img["file_name"])
    annotations = tmp_path / "data.json"
    annotations.write_text(json.dumps(COCO))
    return build_given_dataset(DatasetFiles(annotations, images))

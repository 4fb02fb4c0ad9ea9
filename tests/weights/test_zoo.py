"""The zoo table (retinacli/weights/zoo.json): the names, the facts, their sources, its checks."""

from __future__ import annotations

import re

import pytest

from retinacli.weights.zoo import (
    ZOO_PREFIX,
    UnknownZooName,
    find_entry,
    parse_entry,
    zoo_name,
    zoo_table,
)

NAMES = [
    "detectron2/retinanet_R_50_FPN_1x",
    "detectron2/retinanet_R_50_FPN_3x",
    "detectron2/retinanet_R_101_FPN_3x",
    "torchvision/resnet18",
    "torchvision/resnet34",
    "torchvision/resnet50",
    "torchvision/resnet101",
]
DETECTRON2_MEAN = [103.53, 116.28, 123.675]
TORCHVISION_MEAN = [123.675, 116.28, 103.53]
TORCHVISION_STD = [58.395, 57.12, 57.375]


def test_the_packaged_table_has_the_names_and_the_published_numbers():
    table = {entry.name: entry for entry in zoo_table()}
    assert list(table) == NAMES
    assert [table[n].ap for n in NAMES[:3]] == [37.4, 38.7, 40.4]
    assert table["torchvision/resnet50"].url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert table["detectron2/retinanet_R_50_FPN_1x"].url == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/retinanet_R_50_FPN_1x/190397773/model_final_bfca0b.pkl"
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_fact_has_a_source_and_every_hash_agrees_with_the_file_name(name):
    entry = find_entry(name)
    for fact in ("url", "sha256", "settings"):
        assert entry.provenance.get(fact), f"{name}: no source for {fact}"
    if entry.size_bytes is None:
        assert entry.max_bytes and entry.provenance.get("max_bytes"), name
    if entry.source == "torchvision":
        # torchvision's file names carry the first 8 hex digits of the file's sha256.
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", entry.url)[1]
        assert entry.sha256_prefix == prefix and entry.sha256.startswith(prefix) and entry.file_name.endswith(f"-{prefix}.pth")
        assert entry.settings["model.input_format"] == "RGB"
        assert entry.settings["model.pixel_mean"] == TORCHVISION_MEAN and entry.settings["model.pixel_std"] == TORCHVISION_STD
        assert entry.settings["model.backbone.stride_in_1x1"] is False and entry.kind == "backbone"
    else:  # detectron2 publishes no checksum: nothing is claimed
        assert entry.sha256 is None and entry.sha256_prefix is None and entry.verification == "none"
        assert entry.settings["model.input_format"] == "BGR" and entry.settings["model.pixel_mean"] == DETECTRON2_MEAN
        assert entry.settings["model.pixel_std"] == [1.0, 1.0, 1.0] and entry.settings["model.backbone.stride_in_1x1"] is True
        assert entry.kind == "detector" and entry.file_name.endswith(".pkl")  # read by the restricted unpickler
    assert entry.settings["model.backbone.depth"] == entry.depth
    assert entry.settings["model.backbone.res2_out_channels"] == (64 if entry.depth in (18, 34) else 256)


def test_zoo_names_and_unknown_names():
    assert zoo_name(f"{ZOO_PREFIX}torchvision/resnet50") == "torchvision/resnet50"
    assert zoo_name("pretrained/R-50.pkl") is None and zoo_name(None) is None
    with pytest.raises(UnknownZooName) as caught:
        find_entry("torchvision/resnet05")
    assert caught.value.suggestion == "torchvision/resnet50"
    assert caught.value.hint().startswith("did you mean 'torchvision/resnet50'? known names: detectron2/")


GOOD = {
    "name": "x/y", "source": "s", "architecture": "a", "kind": "backbone", "depth": 18, "trained_on": "t",
    "url": "https://host/y.pth", "file_name": "y.pth", "size_bytes": 10,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file_name": "../y.pth"}, "file_name must be a plain file name"),
        ({"file_name": "sub/y.pth"}, "file_name must be a plain file name"),
        ({"url": "file:///etc/passwd"}, "url must be an http"),
        ({"size_bytes": None}, "needs size_bytes or max_bytes"),
        ({"sha256": "ABC"}, "sha256 must be lower-case hex of 64 digits"),
        ({"sha256": "0" * 64, "sha256_prefix": "1"}, "does not start with sha256_prefix"),
        ({"settings": {"model.head.num_classes": 3}}, "settings may hold only"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_a_malformed_entry_is_refused(change, message):
    parse_entry(GOOD)
    with pytest.raises(ValueError, match=message):
        parse_entry({**GOOD, **change})

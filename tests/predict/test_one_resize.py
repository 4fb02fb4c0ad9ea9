"""The five callers of the test resize give the model the same input for the same picture:
`retina predict` on an image file, a video frame, `retina export`'s check images, the evaluation
loader and `retina anchors --image` all go through `resize_for_inference` / `to_chw_tensor`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from retinacli.commands.anchors import _read_resized
from retinacli.commands.export import check_images
from retinacli.data.checks import prepare_coco
from retinacli.engine.structures import Detections
from retinacli.evaluation.inference import infer_dataset
from retinacli.predict.images import ImageInput, predict_images
from retinacli.predict.video import frame_tensor
from retinacli.recipe.schema import CocoDataset

SHORT, MAX = 160, 1333
# 123x201 (HxW) -> short side 160: 160 x int(201 * 160 / 123 + 0.5) = 160x261, above export's
# smallest input (129 a side), so export's min_side changes nothing here.
HEIGHT, WIDTH, RESIZED = 123, 201, (160, 261)


def _nothing() -> Detections:
    return Detections(boxes=torch.zeros((0, 4)), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64))


class _Recorder(torch.nn.Module):
    """A detector that keeps the images it is given and finds nothing (as a model and as an
    `ImageDetector`)."""

    score_thresh = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        self.seen += [image.clone() for image in images]
        return [_nothing() for _ in images]

    def detect(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        return self.forward(images, original_sizes)


def _picture(tmp_path: Path) -> tuple[Path, Path]:
    """A random PNG and a COCO json listing it (no box)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.random.default_rng(3).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "a.png")
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": [],
        "categories": [{"id": 1, "name": "thing"}],
    }))
    return annotations, folder


def test_every_caller_gives_the_model_the_same_tensor(tmp_path: Path) -> None:
    annotations, folder = _picture(tmp_path)
    path = folder / "a.png"
    rgb = np.asarray(Image.open(path).convert("RGB"))

    predicted = _Recorder()
    predict_images(
        predicted, [ImageInput(path=path, picture=tmp_path / "out" / "a.png")], out_dir=tmp_path / "out",
        class_names=["thing"], class_dataset_ids=[1], input_format="BGR", short_size=SHORT, max_size=MAX,
    )
    (from_predict,) = predicted.seen

    from_video = frame_tensor(rgb, input_format="BGR", short_size=SHORT, max_size=MAX)

    dataset = CocoDataset(annotations=str(annotations), images=str(folder))
    loaded = SimpleNamespace(recipe=SimpleNamespace(
        model=SimpleNamespace(input_format="BGR"), data=SimpleNamespace(test=SimpleNamespace(dataset=dataset))
    ))
    tensors, source = check_images(loaded, short_size=SHORT, max_size=MAX)  # type: ignore[arg-type]
    assert source.startswith("1 images of data.test.dataset")
    from_export = tensors[0]

    evaluated = _Recorder()
    test_set, _ = prepare_coco(annotations=annotations, images=folder, filter_empty=False, fix_bad_boxes=False)
    run = infer_dataset(evaluated, test_set, short_size=SHORT, max_size=MAX, input_format="BGR")  # type: ignore[arg-type]
    assert [item.image_id for item in run.images] == [1] and run.is_main
    (from_eval,) = evaluated.seen

    from_anchors = _read_resized(path, (SHORT, MAX))  # RGB (H, W, 3), for drawing

    assert tuple(from_predict.shape) == (3, *RESIZED) and from_predict.dtype == torch.uint8
    for other in (from_video, from_export, from_eval):
        torch.testing.assert_close(other, from_predict, rtol=0, atol=0)
    # anchors draws RGB: the same pixels, the channels in the other order
    torch.testing.assert_close(torch.from_numpy(from_anchors).permute(2, 0, 1).flip(0), from_predict, rtol=0, atol=0)


def test_export_check_images_keep_the_smallest_exportable_side(tmp_path: Path) -> None:
    # no test set: two generated 200x333 images; short side 64 would give 64x107, raised to the
    # exported graph's 129-pixel minimum on each side
    loaded = SimpleNamespace(recipe=SimpleNamespace(
        model=SimpleNamespace(input_format="RGB"), data=SimpleNamespace(test=SimpleNamespace(dataset=None))
    ))
    tensors, source = check_images(loaded, short_size=64, max_size=1333)  # type: ignore[arg-type]
    assert source == "2 generated images"
    assert [tuple(t.shape) for t in tensors] == [(3, 129, 129), (3, 129, 129)]

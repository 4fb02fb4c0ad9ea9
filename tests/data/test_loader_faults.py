"""Loading failures while training: a data-loader worker that dies, an image that becomes
unreadable, a decompression bomb. Each is an error naming the file and image id, never a worker
traceback and never a hang."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import pytest
import torch.utils.data
from PIL import Image

from retinacli.data import loader as loader_module
from retinacli.data.augment.resize_flip import Augmentation
from retinacli.data.images import read_image
from retinacli.data.loader import build_train_loader, is_worker_death
from retinacli.data.shapes import ShapesSpec, make_shapes
from retinacli.errors import DatasetError, TrainingError
from tests.data.datasets import load_coco

AUG = Augmentation(short_sizes=(40,), max_size=72, flip="none")


@pytest.fixture
def shapes(tmp_path):
    spec = ShapesSpec(image_size=(40, 72), object_size=(8, 24), objects_per_image=(1, 2))
    split = make_shapes(tmp_path / "shapes", num_images=6, seed=0, split="train", spec=spec)
    return load_coco(annotations=split.annotations, images=split.images, filter_empty=False)


def _stream(dataset, *, workers: int):
    return iter(
        build_train_loader(
            dataset=dataset, augmentation=AUG, input_format="RGB", images_per_batch=2, seed=0,
            num_workers=workers, aspect_ratio_grouping=False,
        )
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_worker_killed_mid_batch_is_named_with_its_images(shapes, monkeypatch):
    victim = shapes.records[0]
    real_read = loader_module.read_image

    def read_or_die(path, **kwargs):
        # in the worker process only (the loader forks it after this patch): die as the OOM
        # killer would kill it, while it reads this image
        if torch.utils.data.get_worker_info() is not None and path == victim.file_name:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_read(path, **kwargs)

    monkeypatch.setattr(loader_module, "read_image", read_or_die)
    stream = _stream(shapes, workers=1)
    # torch reports the death from its SIGCHLD handler: inside next() as a TrainingError, or, if
    # it lands between two calls, as torch's RuntimeError, which the training loop words the
    # same way through worker_died()
    with pytest.raises((TrainingError, RuntimeError)) as info:
        for _ in range(len(shapes.records)):  # one pass holds every image once
            next(stream)
    error = info.value
    if not isinstance(error, TrainingError):
        assert is_worker_death(error), error
    message = str(error) if isinstance(error, TrainingError) else stream.worker_died(error)
    assert message.startswith("a data loader worker died while batches were loading (pid ")
    assert " killed by SIGKILL; torch: " in message
    assert "the batch awaited next, of iteration " in message and "lower data.num_workers" in message
    named = [r for r in shapes.records if f"{r.file_name} (image id {r.image_id})" in message]
    assert len(named) == 2  # the two images of that batch, each with its id
    del stream


def test_an_image_that_becomes_unreadable_names_file_id_and_iteration(shapes):
    stream = _stream(shapes, workers=1)
    first = next(stream)
    for record in shapes.records:  # every file is damaged now, so the next batch fails
        with open(record.file_name, "r+b") as handle:
            handle.truncate(40)
    with pytest.raises(DatasetError) as info:
        for _ in range(4):  # batches the worker prefetched before the damage may still come
            next(stream)
    message = str(info.value)
    assert "cannot decode the image" in message and "(image id " in message
    assert "(in the batch of iteration " in message
    assert "Traceback" not in message and "DataLoader worker" not in message
    assert any(r.file_name in message for r in shapes.records)
    assert len(first) == 2
    del stream


def test_a_decompression_bomb_is_refused_with_file_and_id(shapes, monkeypatch):
    record = shapes.records[0]
    # Pillow refuses more than twice MAX_IMAGE_PIXELS; these images have 40 x 72 pixels at least
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError) as info:
        read_image(record.file_name, input_format="RGB", image_id=record.image_id)
    message = str(info.value)
    assert message.startswith(f"{record.file_name} (image id {record.image_id}): refused to decode")
    assert f"Image size ({record.width * record.height} pixels) exceeds limit of 2000 pixels" in message
    assert "(a decompression bomb?)" in message
    # and while training, through a worker, the same clear error (the limit is inherited)
    stream = _stream(shapes, workers=1)
    with pytest.raises(DatasetError, match=r"refused to decode the image.*in the batch of iteration 0"):
        next(stream)
    del stream


def test_a_stream_of_good_images_is_unchanged_by_the_fault_handling(shapes):
    plain = list(itertools.islice(_stream(shapes, workers=0), 3))
    with_workers = list(itertools.islice(_stream(shapes, workers=1), 3))
    assert [b.image_ids for b in plain] == [b.image_ids for b in with_workers]


def test_an_unreadable_image_during_evaluation_is_its_dataset_error(shapes):
    from retinacli.data.loader import build_test_loader
    from retinacli.evaluation.inference import run_inference
    from tests.training.tiny import tiny_recipe

    damaged = shapes.records[1]
    with open(damaged.file_name, "r+b") as handle:
        handle.truncate(40)
    loader = build_test_loader(dataset=shapes, augmentation=AUG, input_format="RGB", num_workers=1)
    from retinacli.build import build_model

    model = build_model(tiny_recipe(Path(damaged.file_name).parent).model)
    with pytest.raises(DatasetError) as info:
        run_inference(model, loader)
    message = str(info.value)
    assert message.startswith(f"{damaged.file_name} (image id {damaged.image_id}): cannot decode the image")
    assert "Traceback" not in message and "DataLoader worker" not in message

"""Checkpoint files: atomic writes, weights_only loading, RNG, rotation, pointer and errors."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from retinacli.errors import CheckpointError
from retinacli.files import FORMAT_MARKER, FORMAT_VERSION
from retinacli.training import checkpoints
from retinacli.training.checkpoints import (
    CheckpointManager,
    checkpoints_due,
    load_checkpoint,
    load_model_file,
    save_checkpoint,
)
from retinacli.training.rng import capture_rng_state, restore_rng_state
from retinacli.training.schedules import Schedule, WarmupScheduler

RECIPE = {"solver": {"base_lr": 0.01, "steps": [6, 9], "weights": None}, "seed": 0, "amp": False}


def make_payload(iteration: int) -> dict:
    torch.manual_seed(iteration)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    schedule = Schedule(
        base_lr=0.01,
        scheduler="WarmupMultiStepLR",
        max_iter=20,
        steps=[10],
        gamma=0.1,
        warmup_factor=0.1,
        warmup_iters=2,
        warmup_method="linear",
    )
    scheduler = WarmupScheduler(optimizer, schedule=schedule)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # creates momentum buffers: optimizer state with tensors
    scheduler.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "rng": capture_rng_state(),
        "loss_normalizer": 123.5,
        "recipe": RECIPE,
    }


def test_round_trip_loads_with_weights_only(tmp_path):
    payload = make_payload(7)
    path = save_checkpoint(tmp_path / "ckpt.pth", payload)
    raw = torch.load(path, weights_only=True)  # the contract: plain weights_only works
    assert raw["format"] == FORMAT_MARKER and raw["format_version"] == FORMAT_VERSION
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7
    assert loaded["loss_normalizer"] == 123.5
    assert loaded["recipe"] == RECIPE
    torch.testing.assert_close(
        loaded["model"]["weight"], payload["model"]["weight"], rtol=0, atol=0
    )
    assert loaded["scheduler"] == payload["scheduler"]
    momentum = loaded["optimizer"]["state"][0]["momentum_buffer"]
    torch.testing.assert_close(momentum, payload["optimizer"]["state"][0]["momentum_buffer"])


def test_recipe_must_be_plain_json(tmp_path):
    payload = dict(make_payload(1), recipe={"output_dir": tmp_path})
    with pytest.raises(ValueError, match="recipe.output_dir: PosixPath is not a plain JSON type"):
        save_checkpoint(tmp_path / "x.pth", payload)
    with pytest.raises(ValueError, match=r"missing keys \['rng'\]"):
        save_checkpoint(
            tmp_path / "x.pth", {k: v for k, v in make_payload(1).items() if k != "rng"}
        )
    assert list(tmp_path.iterdir()) == []


def test_crash_before_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model_final.pth"
    save_checkpoint(path, make_payload(4))

    def crash(src, dst):
        raise OSError("simulated power loss before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated power loss"):
        save_checkpoint(path, make_payload(9))
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 4  # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_final.pth"]  # no temp left


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model_final.pth"
    save_checkpoint(path, make_payload(4))
    real_save = torch.save

    def half_write(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_payload(9))
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["iteration"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["model_final.pth"]


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    payload = dict(make_payload(0), rng=capture_rng_state())
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    save_checkpoint(tmp_path / "c.pth", payload)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    assert again == expected


def test_checkpoints_due_follows_detectron2():
    # period 5, max_iter 12: periodic after iterations 4 and 9, final after 11.
    due = {i: checkpoints_due(i, period=5, max_iter=12) for i in range(12)}
    assert {i: d for i, d in due.items() if d} == {4: ["periodic"], 9: ["periodic"], 11: ["final"]}
    assert checkpoints_due(9, period=5, max_iter=10) == ["periodic", "final"]


def make_model_file(iteration: int) -> dict:
    payload = make_payload(iteration)
    return {"format": FORMAT_MARKER, "format_version": FORMAT_VERSION, "model": payload["model"],
            "recipe": payload["recipe"], "iteration": iteration}


def test_manager_rotates_and_points_to_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_checkpoints=2)
    assert manager.find_last() is None
    made = []
    for iteration in range(20):
        saved = manager.step(
            iteration, period=5, max_iter=20, make_payload=lambda i=iteration: make_payload(i),
            make_model_file=lambda i=iteration: make_model_file(i),
        )
        made.extend(p.name for p in saved)
    assert made == [
        "model_0000004.pth",
        "model_0000009.pth",
        "model_0000014.pth",
        "model_0000019.pth",
        "model_final.pth",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint",
        "model_0000014.pth",
        "model_0000019.pth",
        "model_final.pth",
    ]
    # --resume reads the last checkpoint; model_final.pth is a model file: weights, no optimizer.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000019.pth"
    assert manager.find_last() == tmp_path / "model_0000019.pth"
    assert load_checkpoint(manager.find_last())["iteration"] == 19
    final = load_model_file(tmp_path / "model_final.pth")
    assert "optimizer" not in final and "rng" not in final and final["iteration"] == 19
    torch.testing.assert_close(final["model"], load_checkpoint(manager.find_last())["model"], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="model_final.pth: checkpoint lacks optimizer"):
        load_checkpoint(tmp_path / "model_final.pth")


def test_a_final_iteration_off_the_period_is_still_checkpointed(tmp_path):
    manager = CheckpointManager(tmp_path, keep_checkpoints=1)
    names = [p.name for i in range(12) for p in manager.step(
        i, period=5, max_iter=12, make_payload=lambda i=i: make_payload(i), make_model_file=lambda i=i: make_model_file(i))]
    assert names == ["model_0000004.pth", "model_0000009.pth", "model_0000011.pth", "model_final.pth"]
    assert sorted(p.name for p in tmp_path.glob("model_*")) == ["model_0000011.pth", "model_final.pth"]


def test_a_run_folder_of_an_earlier_version_resumes_from_its_full_model_final(tmp_path):
    # Earlier versions wrote the last checkpoint as model_final.pth and pointed at it.
    save_checkpoint(tmp_path / "model_final.pth", make_payload(19))
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    manager = CheckpointManager(tmp_path, keep_checkpoints=1)
    assert manager.find_last() == tmp_path / "model_final.pth"
    assert load_checkpoint(manager.find_last())["iteration"] == 19


def test_prune_never_deletes_the_pointed_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep_checkpoints=1)
    manager.save(make_payload(4))
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")  # e.g. resumed from it
    for iteration in (9, 14):
        save_checkpoint(tmp_path / f"model_{iteration:07d}.pth", make_payload(iteration))
    assert [p.name for p in manager.prune()] == ["model_0000009.pth"]
    assert sorted(p.name for p in tmp_path.glob("model_*")) == [
        "model_0000004.pth",
        "model_0000014.pth",
    ]


def test_crash_before_pointer_update_leaves_pointer_on_whole_file(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_checkpoints=1)
    manager.save(make_payload(4))
    real_replace = os.replace

    def fail_pointer(src, dst):
        if os.fspath(dst).endswith("last_checkpoint"):
            raise OSError("crash before pointer")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_pointer)
    with pytest.raises(OSError, match="crash before pointer"):
        manager.save(make_payload(9))
    monkeypatch.undo()
    # The new checkpoint is complete but not yet named; the pointer still names a whole file
    # and nothing was pruned.
    assert manager.find_last() == tmp_path / "model_0000004.pth"
    assert load_checkpoint(manager.find_last())["iteration"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint",
        "model_0000004.pth",
        "model_0000009.pth",
    ]


def test_find_last_with_dangling_pointer(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(CheckpointError, match="names model_0000099.pth, which does not exist"):
        CheckpointManager(tmp_path, keep_checkpoints=1).find_last()


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_checkpoints: must be an integer >= 1, got 0"):
        CheckpointManager(tmp_path, keep_checkpoints=0)


def test_truncated_checkpoint_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "model_0000004.pth", make_payload(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable PyTorch file: truncated, corrupted")
    assert "use an earlier checkpoint" in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("missing", "no such file; check the path"),
        ("empty", "the file is empty"),
        ("text", "not a readable PyTorch file"),
        ("foreign", "not a retinacli checkpoint or model file (no 'retinacli-checkpoint' marker)"),
        ("newer", "checkpoint format version 99 is not supported"),
        ("incomplete", "checkpoint lacks optimizer, scheduler, iteration, rng"),
        ("pickled_object", "refused to load: it holds Python objects"),
    ],
)
def test_bad_files_raise_checkpoint_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("hello, not a checkpoint")
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    elif content == "newer":
        torch.save({"format": FORMAT_MARKER, "format_version": 99}, path)
    elif content == "incomplete":
        torch.save({"format": FORMAT_MARKER, "format_version": 1, "model": {}}, path)
    elif content == "pickled_object":
        torch.save(
            {"model": {}, "extra": checkpoints.CheckpointManager(tmp_path, keep_checkpoints=1)}, path
        )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_load_newest_valid_skips_damaged_and_missing_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep_checkpoints=5)
    for iteration in (4, 9, 14):
        manager.save(make_payload(iteration))
    assert manager.load_newest_valid()[0] == tmp_path / "model_0000014.pth"
    newest = tmp_path / "model_0000014.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    (tmp_path / "model_0000009.pth").write_bytes(b"")  # empty
    path, state, skipped = manager.load_newest_valid()
    assert path == tmp_path / "model_0000004.pth" and state["iteration"] == 4
    assert [line.split(": ")[0] for line in skipped] == [str(newest), str(tmp_path / "model_0000009.pth")]
    assert "not a readable PyTorch file" in skipped[0] and "the file is empty" in skipped[1]
    assert newest.exists()  # nothing is deleted
    (tmp_path / "model_0000004.pth").write_text("garbage")
    with pytest.raises(CheckpointError, match=r"no checkpoint can be resumed \(.*model_0000014.pth.*model_0000004.pth"):
        manager.load_newest_valid()
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")  # names a file that is gone
    with pytest.raises(CheckpointError, match=r"model_0000099.pth: named by last_checkpoint but missing"):
        manager.load_newest_valid()
    (tmp_path / "last_checkpoint").unlink()
    assert manager.load_newest_valid() is None

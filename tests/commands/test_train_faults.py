"""`retina train` when things go wrong on one machine: a full disk during a checkpoint, a corrupted
last checkpoint, a second run on a live run's folder, a lock left by a dead run, a run that
stopped before its first checkpoint, --auto-resume, an image that becomes unreadable. Each fault
is injected; each test checks the message, and that nothing the user had is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retinacli import files
from retinacli.commands.train import train_from_recipe
from retinacli.errors import DatasetError, StorageError, UsageError
from retinacli.training import loop as loop_module
from retinacli.training.checkpoints import load_checkpoint
from retinacli.training.run_lock import LOCK_NAME
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """model_final.pth of the tiny recipe (6 iterations, checkpoints after 2 and 5), uninterrupted."""
    tmp = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_from_recipe(tiny_recipe(tmp))
    finally:
        torch.set_num_threads(threads)
    return tmp / "run" / "model_final.pth"


class Collect(loop_module.SilentReporter):
    def __init__(self):
        self.messages = []

    def message(self, text):
        self.messages.append(text)


def _last_state(model_final):
    run = Path(model_final).parent
    return load_checkpoint(run / (run / "last_checkpoint").read_text())


def _same_weights(a_path, b_path) -> None:
    # the run's last checkpoint (model_final.pth beside it holds the same weights, no optimizer)
    a, b = _last_state(a_path), _last_state(b_path)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert a["loss_normalizer"] == b["loss_normalizer"]


def _crash_during_step(monkeypatch, step: int) -> None:
    """kill -9 stand-in: the process dies (KeyboardInterrupt, not handled) during `step`."""
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", crash)


class _FullDisk:
    """A file handle with `room` bytes left on its disk: the write past it fails with ENOSPC."""

    def __init__(self, handle, room: int) -> None:
        self._handle = handle
        self._room = room

    def write(self, data) -> int:
        if len(data) > self._room:
            self._handle.write(bytes(data[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def _fill_disk_when_writing(monkeypatch, name: str, room: int = 4096) -> None:
    """Writes of the file `name` (through files.atomic_write) find the disk full after `room` bytes."""
    real_create, real_fdopen = files._create_temp, os.fdopen
    watched = set()

    def create(target):
        fd, tmp = real_create(target)
        if target.name == name:
            watched.add(fd)
        return fd, tmp

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return _FullDisk(handle, room) if fd in watched else handle

    monkeypatch.setattr(files, "_create_temp", create)
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_resume_works(tmp_path, monkeypatch, straight):
    _fill_disk_when_writing(monkeypatch, "model_0000005.pth")
    with pytest.raises(StorageError) as info:
        train_from_recipe(tiny_recipe(tmp_path))
    out = tmp_path / "run"
    message = str(info.value)
    assert message.startswith(f"{out / 'model_0000005.pth'}: no space left on the device while writing it (it needs ")
    assert " MB" in message and "are free there" in message
    assert "Training stopped after iteration 5; last_checkpoint names model_0000002.pth, which is whole" in message
    assert f"Resume with: retina train {out / 'config.yaml'}" in message
    assert info.value.exit_code == 1
    # the previous checkpoint and the pointer are intact, and no half-written file is left
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"
    assert load_checkpoint(out / "model_0000002.pth")["iteration"] == 2
    assert not (out / "model_final.pth").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]

    monkeypatch.undo()
    result = train_from_recipe(tiny_recipe(tmp_path), resume=True)
    assert result.iterations_run == 3
    _same_weights(straight, out / "model_final.pth")


def test_a_full_disk_while_writing_the_model_file_leaves_a_run_that_resume_finishes(tmp_path, monkeypatch, straight):
    _fill_disk_when_writing(monkeypatch, "model_final.pth")
    with pytest.raises(StorageError) as info:
        train_from_recipe(tiny_recipe(tmp_path))
    out = tmp_path / "run"
    assert "last_checkpoint names model_0000005.pth, which is whole" in str(info.value)
    assert not (out / "model_final.pth").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]

    monkeypatch.undo()
    result = train_from_recipe(tiny_recipe(tmp_path), resume=True)
    assert result.iterations_run == 0  # nothing left to train: only the model file is written
    assert result.final_model == out / "model_final.pth"
    expected = torch.load(straight, weights_only=True)["model"]
    written = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert expected.keys() == written.keys()
    assert all(torch.equal(expected[key], written[key]) for key in expected)


def test_a_corrupted_last_checkpoint_is_named_and_the_newest_valid_one_resumed(tmp_path, monkeypatch, straight):
    extra = ("solver.checkpoint_period=2",)  # checkpoints after iterations 1, 3 and 5
    _crash_during_step(monkeypatch, 6)  # during iteration 5, after the checkpoint of 3
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path, *extra))
    monkeypatch.undo()
    out = tmp_path / "run"
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    damaged = out / "model_0000003.pth"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # truncated, as by a crash during a copy

    reporter = Collect()
    result = train_from_recipe(tiny_recipe(tmp_path, *extra), resume=True, reporter=reporter)
    skipped = next(m for m in reporter.messages if m.startswith("cannot resume from"))
    assert skipped.startswith(f"cannot resume from {damaged}: not a readable PyTorch file: truncated")
    assert skipped.endswith(": skipped")
    assert "resuming from the newest valid checkpoint instead, model_0000001.pth" in reporter.messages
    assert any(m.startswith(f"resuming from {out / 'model_0000001.pth'} at iteration 2") for m in reporter.messages)
    assert result.iterations_run == 4
    _same_weights(straight, out / "model_final.pth")  # the checkpoint period changes no weight
    assert load_checkpoint(out / "model_0000003.pth")["iteration"] == 3  # rewritten whole


def test_a_second_run_on_a_live_runs_folder_is_refused_with_its_pid(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from retinacli.training.run_lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError) as info:
            train_from_recipe(tiny_recipe(tmp_path))
        message = str(info.value)
        assert message.startswith(f"{out}: another `retina train` is using this output folder (pid {holder.pid} on ")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file is taken over, saying whose it was
    reporter = Collect()
    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=1"), reporter=reporter)
    assert f"took over the lock of {out}: the run that held it (pid {holder.pid} on " in reporter.messages[0]
    assert reporter.messages[0].endswith(") is gone")
    assert (out / LOCK_NAME).read_text() == ""  # released at the end


def test_a_run_that_stopped_before_its_first_checkpoint_is_named_not_rewritten(tmp_path, monkeypatch):
    _crash_during_step(monkeypatch, 3)  # after the metrics line of iteration 1, before any checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path))
    monkeypatch.undo()
    out = tmp_path / "run"
    first_log = (out / "log.txt").read_text()
    first_metrics = (out / "metrics.jsonl").read_text()
    assert '"iteration": 1' in first_metrics and not (out / "last_checkpoint").exists()

    with pytest.raises(UsageError) as info:
        train_from_recipe(tiny_recipe(tmp_path))
    assert str(info.value).startswith(
        f"{out}: holds a run that stopped before its first checkpoint (config.yaml, metrics.jsonl); "
        "pass --resume to start it again from iteration 0"
    )
    assert (out / "metrics.jsonl").read_text() == first_metrics  # untouched

    reporter = Collect()
    result = train_from_recipe(tiny_recipe(tmp_path), resume=True, reporter=reporter)
    assert result.iterations_run == 6
    assert (
        f"{out} holds a run that stopped before its first checkpoint (config.yaml, metrics.jsonl)"
        ": starting it again from iteration 0; its metrics are kept in metrics.interrupted-1.jsonl"
    ) in reporter.messages
    assert (out / "metrics.interrupted-1.jsonl").read_text() == first_metrics
    assert (out / "log.txt").read_text().startswith(first_log)  # the log goes on


def test_auto_resume_starts_continues_and_refuses_another_recipe(tmp_path, monkeypatch, capsys, straight):
    reporter = Collect()
    _crash_during_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path), resume="auto", reporter=reporter)
    monkeypatch.undo()
    out = tmp_path / "run"
    assert reporter.messages[0] == f"--auto-resume: {out} holds no run yet: starting a new one"

    args = ["train", str(REPO / "recipes" / "shapes.yaml"), "--auto-resume"]
    for override in tiny_overrides(tmp_path, "solver.base_lr=0.5"):
        args += ["--set", override]
    refused = run_cli(args, capsys, monkeypatch)
    assert refused.exit_code == 2
    assert f"{out}: holds a run of another recipe ({out / 'config.yaml'} differs at solver.base_lr)" in refused.stderr
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"

    reporter = Collect()
    result = train_from_recipe(tiny_recipe(tmp_path), resume="auto", reporter=reporter)
    assert f"--auto-resume: {out} holds a run of this recipe: continuing it" in reporter.messages
    assert result.iterations_run == 3
    _same_weights(straight, out / "model_final.pth")


def test_an_image_that_becomes_unreadable_stops_with_a_checkpoint_and_resumes(tmp_path, monkeypatch, straight):
    recipe = tiny_recipe(tmp_path)
    from retinacli.build import build_dataset

    train_set, _ = build_dataset(recipe.data.train.dataset, key="k", filter_empty=True, fix_bad_boxes=True)
    originals = {r.file_name: Path(r.file_name).read_bytes() for r in train_set.records}
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def damage_after_fourth(self, batch):
        out = real_step(self, batch)
        calls["n"] += 1
        if calls["n"] == 4:  # after iteration 3 the disk loses every training image
            for name in originals:
                with open(name, "r+b") as handle:
                    handle.truncate(50)
        return out

    monkeypatch.setattr(loop_module.Trainer, "_step", damage_after_fourth)
    with pytest.raises(DatasetError) as info:
        train_from_recipe(recipe)
    monkeypatch.undo()
    out = tmp_path / "run"
    message = str(info.value)
    assert "cannot decode the image" in message and "(image id " in message
    assert "(in the batch of iteration 4)" in message
    assert f"Training stopped at iteration 4; the checkpoint {out / 'model_0000003.pth'} holds everything before it" in message
    assert "after fixing this, resume with: retina train" in message
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"

    for name, data in originals.items():
        with open(name, "wb") as handle:
            handle.write(data)
    result = train_from_recipe(tiny_recipe(tmp_path), resume=True)
    assert result.iterations_run == 2
    _same_weights(straight, out / "model_final.pth")


def test_a_data_loader_worker_killed_while_training_is_named_and_resume_works(tmp_path, monkeypatch, straight):
    import signal

    import torch.utils.data

    from retinacli.data import loader as loader_module
    from retinacli.errors import TrainingError

    real_read = loader_module.read_image
    reads = {"n": 0}

    def read_or_die(path, **kwargs):
        if torch.utils.data.get_worker_info() is not None:  # in the (forked) worker only
            reads["n"] += 1
            if reads["n"] == 11:  # the batch of iteration 5: iteration 2 and its checkpoint are done
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return real_read(path, **kwargs)

    monkeypatch.setattr(loader_module, "read_image", read_or_die)
    with pytest.raises(TrainingError) as info:
        train_from_recipe(tiny_recipe(tmp_path, "data.num_workers=1"))
    monkeypatch.undo()
    out = tmp_path / "run"
    message = str(info.value)
    assert message.startswith("a data loader worker died while batches were loading (pid ")
    assert " killed by SIGKILL" in message and "(image id " in message and info.value.exit_code == 1
    assert "Training stopped at iteration " in message and "resume with: retina train" in message
    assert (out / "last_checkpoint").read_text() in {"model_0000002.pth", "model_0000003.pth", "model_0000004.pth"}

    result = train_from_recipe(tiny_recipe(tmp_path, "data.num_workers=1"), resume=True)
    assert result.iterations_run < 6
    _same_weights(straight, out / "model_final.pth")  # workers change no batch

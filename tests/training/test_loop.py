"""The training loop as `retina train` runs it: outputs, resume equality, the non-finite guard."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from retinacli.commands.train import train_from_recipe
from retinacli.engine.detector import RetinaNet
from retinacli.errors import TrainingError, UsageError
from retinacli.recipe import load_recipe
from retinacli.training import loop as loop_module
from retinacli.training.checkpoints import load_checkpoint, load_model_file
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_command_writes_every_output(tmp_path, capsys, monkeypatch):
    args = ["train", str(REPO / "recipes" / "shapes.yaml")]
    for override in tiny_overrides(tmp_path, "eval_period=3"):
        args += ["--set", override]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    assert "starting a new run" in result.stdout and "COCO AP after iteration 5" in result.stdout
    # the resolved recipe loads back to the recipe that ran
    assert load_recipe(out / "config.yaml") == tiny_recipe(tmp_path, "eval_period=3")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "loss_cls" in line]
    assert [line["iteration"] for line in train_lines] == [1, 3, 5]
    for line in train_lines:
        for key in ("lr", "loss_cls", "loss_box_reg", "total_loss", "num_pos_anchors", "time", "data_time", "epoch"):
            assert isinstance(line[key], float), (key, line)
        assert line["total_loss"] == pytest.approx(line["loss_cls"] + line["loss_box_reg"], rel=1e-9)
    # epoch = (iteration + 1) x images per batch / training images
    recipe = tiny_recipe(tmp_path, "eval_period=3")
    from retinacli.build import build_dataset

    train_set, _ = build_dataset(recipe.data.train.dataset, key="k", filter_empty=True, fix_bad_boxes=True)
    assert train_lines[-1]["epoch"] == pytest.approx(6 * recipe.data.train.images_per_batch / len(train_set))
    assert any("test/AP" in line for line in lines)  # no data.val: the periodic evaluations use data.test
    log = (out / "log.txt").read_text()
    assert "starting a new run" in log and "no model_best.pth is kept" in log
    assert "test COCO AP after iteration 5" in log and "iter 6/6" in log
    with Image.open(out / "results.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 400
    assert list(out.glob("events.out.tfevents.*"))
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000002.pth", "model_0000005.pth", "model_final.pth"]
    final = load_model_file(out / "model_final.pth")
    assert final["iteration"] == 5 and final["classes"]["names"] == ["circle", "square", "triangle"]
    # A model file: the weights, recipe and classes, nothing for resuming.
    assert not {"optimizer", "scheduler", "rng", "ema"} & set(final)
    last = load_checkpoint(out / "model_0000005.pth")
    for key, value in last["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=0, atol=0, msg=key)
    assert (out / "model_final.pth").stat().st_size < 0.6 * (out / "model_0000005.pth").stat().st_size
    for iteration in ("2", "5"):
        metrics = json.loads((out / "eval" / iteration / "metrics.json").read_text())
        assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category"}
        assert isinstance(json.loads((out / "eval" / iteration / "coco_results.json").read_text()), list)


def test_an_existing_run_is_never_overwritten(tmp_path):
    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=3"))
    before = (tmp_path / "run" / "model_final.pth").read_bytes()
    with pytest.raises(UsageError, match="already holds a run .* pass --resume"):
        train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=3"))
    assert (tmp_path / "run" / "model_final.pth").read_bytes() == before


def test_resume_after_a_crash_gives_the_same_weights(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    straight.mkdir()
    train_from_recipe(tiny_recipe(straight))

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def crash_on_fifth(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # killed during iteration 4, after the checkpoint of iteration 2
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(crashed))
    assert (crashed / "run" / "last_checkpoint").read_text() == "model_0000002.pth"
    monkeypatch.setattr(loop_module.Trainer, "_step", real_step)
    result = train_from_recipe(tiny_recipe(crashed), resume=True)
    assert result.iterations_run == 3

    a = load_model_file(straight / "run" / "model_final.pth")
    b = load_model_file(crashed / "run" / "model_final.pth")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert a["loss_normalizer"] == b["loss_normalizer"]


def test_nonfinite_loss_stops_with_the_message(tmp_path):
    recipe = tiny_recipe(
        tmp_path, "model.head.prior_prob=0.99", "solver.base_lr=1000.0", "solver.optimizer=SGD",
        "solver.warmup_iters=0", "solver.max_iter=30", "solver.checkpoint_period=1", "solver.clip_gradients.enabled=false",
    )
    with pytest.raises(TrainingError) as info:
        train_from_recipe(recipe)
    message = str(info.value)
    assert "Loss became infinite or NaN at iteration=" in message
    assert "loss_cls" in message and "loss_box_reg" in message
    assert "learning rate" in message and "prior_prob" in message
    last = (tmp_path / "run" / "last_checkpoint").read_text()
    assert last in message  # the last good checkpoint is named and left in place
    load_checkpoint(tmp_path / "run" / last)


def test_rollback_lowers_the_learning_rate_and_goes_on(tmp_path):
    recipe = tiny_recipe(
        tmp_path, "model.head.prior_prob=0.99", "solver.base_lr=1000.0", "solver.optimizer=SGD",
        "solver.warmup_iters=0", "solver.max_iter=30", "solver.checkpoint_period=1", "solver.clip_gradients.enabled=false",
        "on_nonfinite=rollback", "max_rollbacks=2", "rollback_lr_factor=0.5",
    )
    with pytest.raises(TrainingError, match="Gave up after 2 rollbacks"):
        train_from_recipe(recipe)


def test_cli_reports_the_nonfinite_stop_without_traceback(tmp_path, capsys, monkeypatch):
    args = ["train", str(REPO / "recipes" / "shapes.yaml")]
    for override in tiny_overrides(
        tmp_path, "model.head.prior_prob=0.99", "solver.base_lr=1000.0", "solver.warmup_iters=0",
        "solver.max_iter=30", "solver.optimizer=SGD", "solver.clip_gradients.enabled=false",
    ):
        args += ["--set", override]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 1
    assert "Loss became infinite or NaN at iteration=" in result.stderr
    assert "Traceback" not in result.output


def test_weights_initialise_but_do_not_resume(tmp_path, golden_dir):
    recipe = tiny_recipe(tmp_path, "solver.max_iter=1", "model.fpn.out_channels=64", "model.head.num_convs=4",
                         f"model.weights={golden_dir / 'model_final.pth'}")
    messages = []

    class Collect(loop_module.SilentReporter):
        def message(self, text):
            messages.append(text)

    train_from_recipe(recipe, reporter=Collect())
    text = "\n".join(messages)
    assert "initialised" in text and "detectron2 weights" in text and "starting a new run" in text
    assert load_model_file(tmp_path / "run" / "model_final.pth")["iteration"] == 0


def test_missing_weights_file_says_where_to_put_it(tmp_path):
    from retinacli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="model.weights: .*nope.pkl not found"):
        train_from_recipe(tiny_recipe(tmp_path, f"model.weights={tmp_path / 'nope.pkl'}"))


def test_dataset_class_count_must_match_the_head(tmp_path):
    from retinacli.errors import RecipeError

    with pytest.raises(RecipeError, match="has 3 classes .* model.head.num_classes is 5"):
        train_from_recipe(tiny_recipe(tmp_path, "model.head.num_classes=5"))


def test_resume_with_nothing_to_resume_starts_fresh(tmp_path):
    messages = []

    class Collect(loop_module.SilentReporter):
        def message(self, text):
            messages.append(text)

    train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=1"), resume=True, reporter=Collect())
    assert any("no checkpoint" in m for m in messages)
    assert Path(tmp_path / "run" / "model_final.pth").exists()


def test_rollback_recovers_from_one_bad_iteration(tmp_path, monkeypatch):
    """A single non-finite loss (iteration 4) rolls back to the checkpoint of iteration 2,
    halves the learning rate and trains on to the end."""
    recipe = tiny_recipe(tmp_path, "on_nonfinite=rollback", "rollback_lr_factor=0.5", "solver.warmup_iters=0")
    real_forward = RetinaNet.forward
    calls = {"n": 0}

    def nan_once(self, images, targets=None, original_sizes=None):
        out = real_forward(self, images, targets, original_sizes)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:  # the 5th training forward: iteration 4
                out["loss_cls"] = out["loss_cls"] * float("nan")
        return out

    monkeypatch.setattr(RetinaNet, "forward", nan_once)
    messages = []

    class Collect(loop_module.SilentReporter):
        def message(self, text):
            messages.append(text)

    result = train_from_recipe(recipe, reporter=Collect())
    assert any("rolled back to iteration 3" in m and "rollback 1 of 3" in m for m in messages), messages
    assert result.final_model is not None
    final = load_model_file(result.final_model)
    assert final["iteration"] == 5
    last = load_checkpoint(result.output_dir / "model_0000005.pth")
    assert last["scheduler"]["base_lrs"][0] == pytest.approx(recipe.solver.base_lr * 0.5)
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())


def _bare_trainer(tmp_path, *, amp_scaler: bool):
    from retinacli.training.checkpoints import CheckpointManager
    from retinacli.training.loop import Trainer
    from retinacli.training.metrics import MetricsWriter
    from retinacli.training.schedules import Schedule, WarmupScheduler

    model = torch.nn.Linear(2, 1)
    model.loss_normalizer = 100.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = Schedule(base_lr=0.1, scheduler="WarmupMultiStepLR", max_iter=10, steps=[], gamma=0.1,
                        warmup_factor=1.0, warmup_iters=0, warmup_method="linear")
    trainer = Trainer(model=model, optimizer=optimizer, scheduler=WarmupScheduler(optimizer, schedule=schedule),
                      make_data=lambda start: iter(()), max_iter=10, device=torch.device("cpu"),
                      checkpoints=CheckpointManager(tmp_path, keep_checkpoints=1), checkpoint_period=5,
                      metrics=MetricsWriter(tmp_path, enabled=False), checkpoint_extra={})
    if amp_scaler:  # what AMP on CUDA gets; the CPU scaler has the same state
        trainer._scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    return trainer


def test_the_amp_loss_scale_is_saved_and_restored(tmp_path):
    trainer = _bare_trainer(tmp_path, amp_scaler=True)
    scaler = trainer._scaler
    param = next(trainer.model.parameters())
    for _ in range(3):  # a few steps move the growth tracker; an inf gradient halves the scale
        trainer.optimizer.zero_grad()
        scaler.scale(trainer.model(torch.ones(1, 2)).sum()).backward()
        scaler.step(trainer.optimizer)
        scaler.update()
    param.grad = torch.full_like(param, float("inf"))
    scaler.step(trainer.optimizer)
    scaler.update()
    saved = trainer.state(3)["grad_scaler"]
    assert saved["scale"] == 512.0 and saved["_growth_tracker"] == 0
    resumed = _bare_trainer(tmp_path, amp_scaler=True)
    resumed.load_state(trainer.state(3))
    assert resumed._scaler.state_dict() == saved
    # Without AMP the entry is empty and loading a checkpoint without it is fine.
    plain = _bare_trainer(tmp_path, amp_scaler=False)
    assert plain.state(0)["grad_scaler"] == {}
    old = {k: v for k, v in trainer.state(3).items() if k != "grad_scaler"}
    assert plain.load_state(old) == 4


def test_several_processes_keep_their_own_buffers(tmp_path, monkeypatch):
    import torch.distributed as dist

    from retinacli.training.distributed import wrap_for_processes

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(free.getsockname()[1]))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        wrapped = wrap_for_processes(torch.nn.BatchNorm1d(2), torch.device("cpu"))
        assert wrapped.broadcast_buffers is False  # detectron2's choice
    finally:
        dist.destroy_process_group()


def test_a_run_stopped_before_its_model_file_writes_it_on_resume(tmp_path):
    result = train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=3"))
    final = result.output_dir / "model_final.pth"
    expected = load_model_file(final)
    final.unlink()  # killed after the last checkpoint, before model_final.pth
    again = train_from_recipe(tiny_recipe(tmp_path, "solver.max_iter=3"), resume=True)
    assert again.iterations_run == 0
    written = load_model_file(final)
    assert written["iteration"] == 2
    for key, value in expected["model"].items():
        torch.testing.assert_close(written["model"][key], value, rtol=0, atol=0, msg=key)

"""Ctrl-C and SIGTERM during training: a checkpoint of the current iteration, the command that
resumes it, the shell's exit code; a second Ctrl-C at once; resuming gives the uninterrupted
run's weights bit for bit.

The signals are real (os.kill of this process) and arrive in the middle of an iteration, from
inside the training step, as a Ctrl-C at the terminal would."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from retinacli.commands.train import train_from_recipe
from retinacli.errors import TrainingInterrupted
from retinacli.training import loop as loop_module
from retinacli.training.checkpoints import load_checkpoint
from retinacli.training.interrupts import StopRequests, exit_code_of
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _last_state(model_final):
    run = Path(model_final).parent
    return load_checkpoint(run / (run / "last_checkpoint").read_text())


def _signal_during_step(monkeypatch, *, step: int, signals: tuple[int, ...]) -> None:
    """Send `signals` to this process during the `step`-th training step (1-based)."""
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def step_and_signal(self, batch):
        calls["n"] += 1
        if calls["n"] == step:
            for number in signals:
                os.kill(os.getpid(), number)
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", step_and_signal)


def _assert_same_weights(a_path, b_path) -> None:
    # the run's last checkpoint (model_final.pth beside it holds the same weights, no optimizer)
    a, b = _last_state(a_path), _last_state(b_path)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert a["loss_normalizer"] == b["loss_normalizer"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_stop_requests_record_the_first_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested == signal.SIGTERM
        # the first signal put the previous handlers back: a second Ctrl-C raises at once
        assert signal.getsignal(signal.SIGINT) is before
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    assert exit_code_of(signal.SIGINT) == 130 and exit_code_of(signal.SIGTERM) == 143


def test_sigint_checkpoints_the_current_iteration_and_resume_matches(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    straight.mkdir()
    train_from_recipe(tiny_recipe(straight))

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    _signal_during_step(monkeypatch, step=2, signals=(signal.SIGINT,))  # during iteration 1
    with pytest.raises(TrainingInterrupted) as info:
        train_from_recipe(tiny_recipe(stopped))
    out = stopped / "run"
    message = str(info.value)
    assert info.value.exit_code == 130
    assert message.startswith("interrupted by SIGINT after iteration 1 (2 of 6 done)")
    assert f"checkpoint {out / 'model_0000001.pth'} written" in message
    assert f"retina train {out / 'config.yaml'} --output-dir {out} --resume" in message
    # the checkpoint period is 3: iteration 1 was checkpointed only because of the interrupt
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert load_checkpoint(out / "model_0000001.pth")["iteration"] == 1
    assert "interrupted by SIGINT after iteration 1" in (out / "log.txt").read_text()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    monkeypatch.undo()
    result = train_from_recipe(tiny_recipe(stopped), resume=True)
    assert result.iterations_run == 4
    _assert_same_weights(straight / "run" / "model_final.pth", out / "model_final.pth")


def test_sigterm_exits_with_143_through_the_cli(tmp_path, capsys, monkeypatch):
    _signal_during_step(monkeypatch, step=1, signals=(signal.SIGTERM,))
    args = ["train", str(REPO / "recipes" / "shapes.yaml")]
    for override in tiny_overrides(tmp_path):
        args += ["--set", override]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 143, result.output
    assert "interrupted by SIGTERM after iteration 0 (1 of 6 done)" in result.stdout
    assert "Resume with:" in result.stdout and "Traceback" not in result.output
    assert (tmp_path / "run" / "last_checkpoint").read_text() == "model_0000000.pth"


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    _signal_during_step(monkeypatch, step=5, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path))
    out = tmp_path / "run"
    # iteration 4 never finished: the periodic checkpoint of iteration 2 is the last, whole
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"
    assert load_checkpoint(out / "model_0000002.pth")["iteration"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]

"""`retina train --time`: an iteration count chosen from a measured speed (exact under a fake
clock), written to config.yaml so that a rerun of it is the same run, and kept by --resume."""

from __future__ import annotations

import json

import pytest
import torch

from retinacli.commands import train as train_module
from retinacli.commands.train import train_from_recipe
from retinacli.errors import RecipeError
from retinacli.recipe import load_recipe
from retinacli.training import loop as loop_module
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """Each reading is `step` seconds after the one before."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


# ----------------------------------------------------------------------------- training with a budget


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory):
    """A run of the tiny recipe with a 20 s budget under a clock that reads 0.25 s more each time."""
    tmp = tmp_path_factory.mktemp("budget")
    patch = pytest.MonkeyPatch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        patch.setattr(train_module, "budget_clock", FakeClock(0.25))
        result = train_from_recipe(tiny_recipe(tmp, "solver.time_budget=20s"))
    finally:
        patch.undo()
        torch.set_num_threads(threads)
    return tmp, result


def test_the_count_is_chosen_from_the_measured_speed(budgeted) -> None:
    tmp, result = budgeted
    out = tmp / "run"
    plan = json.loads((out / "time_budget.json").read_text())
    # Every reading of the fake clock is 0.25 s on: 0.25 s per iteration (15 timed), per
    # checkpoint and per evaluation probe (the 2 test images: 0.25 s for both), and 35 readings
    # (8.75 s) from the start to the end of the measurement. 19 s of the 20 are planned:
    # 8.75 + 0.25 n + 0.25 (one evaluation) + 2 x 0.25 (checkpoints every round(n / 2)) <= 19
    # gives n = 38.
    assert plan["measured"] == {
        "per_iteration": 0.25, "per_evaluation": 0.25, "per_checkpoint": 0.25, "final_evaluation": 0.0, "spent": 8.75,
    }
    assert plan["max_iter"] == 38 and plan["budget_seconds"] == 20.0 and plan["recipe_max_iter"] == 6
    assert result.iterations_run == 38
    config = load_recipe(out / "config.yaml")
    assert config.solver.max_iter == 38 and config.solver.time_budget is None
    assert config.solver.checkpoint_period == 19  # the recipe's 3 of 6, scaled
    assert config.solver.warmup_iters == 13  # the recipe's 2 of 6, scaled
    log = (out / "log.txt").read_text()
    assert "time budget 20s: measured 0.250 s per iteration" in log and "max_iter 38 (the recipe's 6" in log


def test_a_rerun_of_its_config_is_the_same_run(budgeted, tmp_path) -> None:
    tmp, _ = budgeted
    rerun = load_recipe(tmp / "run" / "config.yaml", [f"output_dir={tmp_path / 'rerun'}"])
    result = train_from_recipe(rerun)
    assert result.iterations_run == 38 and not (tmp_path / "rerun" / "time_budget.json").exists()
    a, b = _weights(tmp / "run" / "model_final.pth"), _weights(tmp_path / "rerun" / "model_final.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_its_count_and_measures_nothing(budgeted, tmp_path, monkeypatch) -> None:
    tmp, _ = budgeted
    monkeypatch.setattr(train_module, "budget_clock", FakeClock(0.25))
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def crash(self, batch):  # the 15 measured iterations, then 25 of the run
        calls["n"] += 1
        if calls["n"] == 15 + 25:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(tiny_recipe(tmp_path, "solver.time_budget=20s"))
    monkeypatch.setattr(loop_module.Trainer, "_step", real_step)
    out = tmp_path / "run"
    plan_before = (out / "time_budget.json").read_bytes()
    assert (out / "last_checkpoint").read_text() == "model_0000018.pth"

    # a clock four times slower would choose another count: the run keeps its own
    monkeypatch.setattr(train_module, "budget_clock", FakeClock(1.0))
    result = train_from_recipe(tiny_recipe(tmp_path, "solver.time_budget=20s"), resume=True)
    assert result.iterations_run == 38 - 19
    assert (out / "time_budget.json").read_bytes() == plan_before
    assert "this run's plan is kept (time_budget.json): max_iter 38" in (out / "log.txt").read_text()
    a, b = _weights(tmp / "run" / "model_final.pth"), _weights(out / "model_final.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_budget_too_small_is_a_recipe_error_and_time_is_refused_unparsed(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(train_module, "budget_clock", FakeClock(0.25))
    with pytest.raises(RecipeError, match=r"solver.time_budget: 5s is less than one iteration .* give at least"):
        train_from_recipe(tiny_recipe(tmp_path, "solver.time_budget=5"))
    assert not (tmp_path / "run" / "model_final.pth").exists()

    recipe = REPO / "recipes" / "shapes.yaml"
    args = ["train", str(recipe), *[a for o in tiny_overrides(tmp_path / "cli") for a in ("--set", o)], "--time", "ten minutes"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2
    assert "--time ten minutes" in result.stderr and "is not a duration; write seconds (5400) or 90s, 30m, 2h" in result.stderr
    assert not (tmp_path / "cli" / "run").exists()

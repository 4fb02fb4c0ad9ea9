"""`retina tune`: a tiny study runs its trials, prunes the one that falls behind, continues after
Ctrl-C, and writes a best.yaml that loads; a bad space or a recipe without data.val is refused
before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retinacli.commands import train as train_module
from retinacli.commands.tune import BEST_YAML, TRIALS_CSV, tune
from retinacli.errors import UsageError
from retinacli.recipe import load_recipe
from retinacli.training.tuning import HISTORY_PNG, IMPORTANCE_PNG, TRIALS_JSON
from tests.cli_helpers import run_cli
from tests.training.tiny import REPO, tiny_overrides

pytest.importorskip("optuna")
pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = REPO / "recipes" / "shapes.yaml"


def val_overrides(tmp_path: Path) -> list[str]:
    val = f"{{kind: shapes, split: test, num_images: 2, seed: 5, image_size: [64, 96], cache_dir: '{tmp_path / 'cache'}'}}"
    return [*tiny_overrides(tmp_path), f"data.val.dataset={val}"]


def write_space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


SPACE = "solver.base_lr: {type: float, low: 0.0001, high: 0.01, log: true}\n"


def fake_evaluations(monkeypatch, ap_of_trial: dict[int, float], interrupt: tuple[int, int] | None = None) -> list[str]:
    """Evaluations that score AP `ap_of_trial[n]` for trial n (read from the evaluation's folder,
    trials/trial_NNNN/eval/<iteration>); `interrupt` (trial, k) raises Ctrl-C at its k-th."""
    seen: list[str] = []

    def evaluate(model, dataset, output_dir, **kwargs):
        trial = int(Path(output_dir).parent.parent.name.split("_")[1])
        seen.append(f"{trial}:{Path(output_dir).name}")
        if interrupt is not None and trial == interrupt[0] and sum(s.startswith(f"{trial}:") for s in seen) == interrupt[1]:
            raise KeyboardInterrupt
        ap = ap_of_trial[trial]
        return {"AP": ap, "AP50": ap, "AP75": ap, "APs": None, "APm": None, "APl": ap, "per_category": {}, "notes": [],
                "num_images": 2, "num_detections": 0, "images_per_second": 1.0}

    monkeypatch.setattr(train_module, "_evaluate_into", evaluate)
    return seen


def test_a_study_runs_prunes_continues_after_ctrl_c_and_writes_best_yaml(chromium, tmp_path, monkeypatch) -> None:
    out = tmp_path / "study"
    space = write_space(tmp_path, SPACE)
    overrides = val_overrides(tmp_path)
    # trial 1 is stopped by Ctrl-C during its second evaluation
    fake_evaluations(monkeypatch, {0: 30.0, 1: 50.0}, interrupt=(1, 2))
    with pytest.raises(KeyboardInterrupt):
        tune(RECIPE, space, output_dir=out, overrides=overrides, trials=2)
    first = json.loads((out / TRIALS_JSON).read_text())["trials"]
    assert [(t["number"], t["state"]) for t in first] == [(0, "complete"), (1, "fail"), (2, "waiting")]  # 2: its retry
    assert first[0]["recipe_values"] and first[0]["params"] == {"solver.base_lr": 0.001}  # the recipe as it is
    assert first[0]["evaluations"] == [30.0] * 6  # 6 iterations, eval_period 1 set for the pruner

    # the same command again: the interrupted values first, then a new trial, which falls behind
    fake_evaluations(monkeypatch, {2: 40.0, 3: 5.0})
    result = tune(RECIPE, space, output_dir=out, overrides=overrides, trials=2)
    states = {t["number"]: t["state"] for t in result.trials}
    assert states == {0: "complete", 1: "fail", 2: "complete", 3: "pruned"}
    by_number = {t["number"]: t for t in result.trials}
    assert by_number[2]["params"] == first[1]["params"]
    assert by_number[3]["evaluations"] == [5.0, 5.0]  # pruned at its second evaluation (median of 30 and 40)
    assert by_number[3]["iterations"] == 2
    assert result.best is not None and result.best["number"] == 2 and result.best["value"] == 40.0

    best = load_recipe(out / BEST_YAML)  # a valid recipe: _base_ the tuned one, plus the choice
    assert best.solver.base_lr == pytest.approx(by_number[2]["params"]["solver.base_lr"])
    assert best.model.fpn.out_channels == 32  # the --set keys of the study are in it
    text = (out / BEST_YAML).read_text()
    assert text.startswith("# retina tune: the best of 4 trials (2 complete, 1 pruned, 1 failed)")
    assert "# trial 2: data.val AP 40.00" in text
    assert (out / TRIALS_CSV).read_text().splitlines()[0] == "number,state,value,solver.base_lr,seconds,iterations,folder"
    for name in (HISTORY_PNG, IMPORTANCE_PNG):
        from PIL import Image

        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.size[0] >= 600
    assert (out / "trials" / "trial_0003" / "model_final.pth").is_file()  # a pruned trial keeps its run
    _check_page_in_chromium(chromium, out)


def _check_page_in_chromium(chromium: str, out: Path) -> None:
    """`retina report` of the study: in headless Chromium the pictures load, nothing is fetched,
    and the table and the best trial are the study's."""
    from playwright.sync_api import sync_playwright

    from retinacli.commands.report import report

    result = report(out)
    assert result.status == "tuning study: 4 trials, 2 pictures"
    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(result.path.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            states = page.evaluate("Array.from(document.querySelectorAll('tr.trial')).map(e => e.dataset.state)")
            best = page.evaluate("document.querySelector('#summary p').textContent")
        finally:
            browser.close()
    assert problems == [] and [u for u in requested if not u.startswith(("file:", "data:"))] == []
    assert images == [True, True]
    assert states == ["complete", "fail", "complete", "pruned"]
    assert best.startswith("best: trial 2, data.val AP 40.00")


def test_tuning_without_a_validation_set_is_refused(tmp_path, capsys, monkeypatch) -> None:
    space = write_space(tmp_path, SPACE)
    args = ["tune", str(RECIPE), "--space", str(space), "--output-dir", str(tmp_path / "s"), "--trials", "1"]
    result = run_cli([*args, *[a for o in tiny_overrides(tmp_path) for a in ("--set", o)]], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "has no data.val.dataset; a study chooses by the validation set, never the test set" in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_folder_of_another_study_is_refused(tmp_path, monkeypatch) -> None:
    out = tmp_path / "study"
    overrides = val_overrides(tmp_path)
    fake_evaluations(monkeypatch, {0: 10.0})
    tune(RECIPE, write_space(tmp_path, SPACE), output_dir=out, overrides=overrides, trials=1)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    other = "solver.base_lr: {type: float, low: 0.0001, high: 0.1, log: true}\n"
    with pytest.raises(UsageError, match="holds a study of another space"):
        tune(RECIPE, write_space(tmp_path, other), output_dir=out, overrides=overrides, trials=1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path) -> None:
    """Two `retina tune` processes at once on one journal-file storage: one study, each trial
    once, both workers' trials in it."""
    space = write_space(tmp_path, SPACE)
    storage = f"journal://{tmp_path / 'study.log'}"
    sets = [a for o in val_overrides(tmp_path) for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RETINA_CACHE": str(tmp_path / "cache")}
    # the shapes data is generated once before the workers race to it
    subprocess.run([sys.executable, "-m", "retinacli", "data", "check", str(RECIPE), *sets], env=env, check=True, capture_output=True)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "retinacli", "tune", str(RECIPE), "--space", str(space), "--storage", storage,
             "--study", "shared", "--trials", "2", "--output-dir", str(tmp_path / f"worker{n}"), "--json", *sets],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in (0, 1)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study.log"))))
    assert len(study.trials) == 4 and sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in study.trials)
    folders = [t.user_attrs["folder"] for t in study.trials]
    assert {Path(f).parent.parent.name for f in folders} == {"worker0", "worker1"}
    assert sum(t.user_attrs.get("recipe_values", False) for t in study.trials) == 1


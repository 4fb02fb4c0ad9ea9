"""`retina data audit` as a user runs it: K-fold mode (no image judged by a model trained on it,
resume of a killed audit), model-file mode, the report page of an audit, and refusals that
leave every file as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from retinacli.audit.outputs import FIXED_FLAG
from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot
from tests.training.tiny import REPO, tiny_overrides

SHAPES = str(REPO / "recipes" / "shapes.yaml")


def _tiny_sets(tmp_path: Path, num_images: int = 9) -> list[str]:
    """--set arguments of a tiny recipe training on `num_images` shapes images."""
    overrides = tiny_overrides(tmp_path, "model.test.score_thresh=0.01")
    overrides = [o.replace("num_images: 8", f"num_images: {num_images}") for o in overrides if not o.startswith("output_dir")]
    return [a for o in overrides for a in ("--set", o)]


def _audit_args(tmp_path: Path, out: Path, *extra: str, folds: int = 3) -> list[str]:
    return ["data", "audit", SHAPES, *_tiny_sets(tmp_path), "--folds", str(folds), "--iters", "2", "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def kfold_audit(tmp_path_factory):
    """A finished 3-fold audit of 9 tiny shapes images (2 iterations per fold)."""
    import torch

    from retinacli.cli import main

    tmp = tmp_path_factory.mktemp("kfold")
    out = tmp / "audit"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    argv = sys.argv
    sys.argv = ["retina", *_audit_args(tmp, out), "--pictures", "4"]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return tmp, out


def _ids(path: Path) -> set[int]:
    return {img["id"] for img in json.loads(path.read_text())["images"]}


def test_no_image_is_judged_by_a_model_trained_on_it(kfold_audit) -> None:
    tmp, out = kfold_audit
    dataset = json.loads(next((tmp / "cache").glob("shapes-train-*/train.json")).read_text())
    all_ids = {img["id"] for img in dataset["images"]}
    judged: dict[int, int] = {}
    for k in range(3):
        fold = out / "folds" / f"fold{k}"
        config = yaml.safe_load((fold / "run" / "config.yaml").read_text())
        trained_on = Path(config["data"]["train"]["dataset"]["annotations"])
        assert trained_on == fold / "train.json"
        assert config["data"]["val"]["dataset"] is None and config["data"]["test"]["dataset"] is None
        assert config["solver"]["max_iter"] == 2
        held = _ids(fold / "heldout.json")
        assert held and _ids(trained_on) == all_ids - held  # trained on every other image
        for result in json.loads((fold / "detections.json").read_text()):
            assert result["image_id"] in held  # this fold's model judged only what it never saw
            assert result["image_id"] not in _ids(trained_on)
        for image_id in held:
            assert image_id not in judged
            judged[image_id] = k
    assert set(judged) == all_ids  # every image judged once
    issues = json.loads((out / "issues.json").read_text())["issues"]
    assert issues, "an untrained tiny model leaves labels unconfirmed: spurious issues expected"
    assert [i["score"] for i in issues] == sorted((i["score"] for i in issues), reverse=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "k-fold" and summary["folds"] == 3 and summary["num_images"] == 9
    assert summary["num_issues"] == len(issues) == sum(summary["per_kind"].values())
    pictures = sorted((out / "pictures").iterdir())
    assert len(pictures) == min(4, len(issues))
    with Image.open(pictures[0]) as picture:
        assert picture.format == "JPEG"


def test_resume_with_other_thresholds_rescores_without_training(kfold_audit, capsys, monkeypatch) -> None:
    tmp, out = kfold_audit
    runs = {k: (out / "folds" / f"fold{k}" / "run" / "model_final.pth").stat().st_mtime_ns for k in range(3)}
    before = json.loads((out / "issues.json").read_text())["issues"]
    assert len(list((out / "pictures").iterdir())) == min(4, len(before))
    result = run_cli([*_audit_args(tmp, out), "--resume", "--score-thresh", "0.9", "--pictures", "2"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "folds trained now: none; reused: [0, 1, 2]" in result.stdout
    assert {k: (out / "folds" / f"fold{k}" / "run" / "model_final.pth").stat().st_mtime_ns for k in range(3)} == runs
    after = json.loads((out / "issues.json").read_text())["issues"]
    assert json.loads((out / "summary.json").read_text())["thresholds"]["score_thresh"] == 0.9
    assert len(after) >= len([i for i in before if i["kind"] == "spurious"])  # fewer confident detections
    assert len(list((out / "pictures").iterdir())) == min(2, len(after))  # the earlier pictures are gone


def test_resume_of_another_plan_is_refused_and_changes_nothing(kfold_audit, capsys, monkeypatch) -> None:
    tmp, out = kfold_audit
    before = snapshot(tmp)
    args = _audit_args(tmp, out)
    args[args.index("--iters") + 1] = "3"
    result = run_cli([*args, "--resume"], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "holds an audit of another plan (differing: iters)" in result.stderr
    assert changed_outside(before, tmp) == []
    again = run_cli(_audit_args(tmp, out), capsys, monkeypatch)  # neither --resume nor --overwrite
    assert again.exit_code == 2 and "pass --overwrite to replace it" in again.stderr
    assert changed_outside(before, tmp) == []


def test_a_killed_audit_resumes_with_the_folds_not_done(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "retinacli", *_audit_args(tmp_path, out, folds=3)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "folds" / "fold0" / "detections.json"
    deadline = time.monotonic() + 240
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), process.stderr.read().decode()[-2000:]
    not_done = [k for k in range(3) if not (out / "folds" / f"fold{k}" / "detections.json").exists()]
    assert not_done, "the audit finished before it could be killed"
    assert not (out / "issues.json").exists()
    kept = first.stat().st_mtime_ns, first.read_bytes()

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (first.stat().st_mtime_ns, first.read_bytes()) == kept  # fold 0 was not redone
    assert "reused: [0" in resumed.stdout
    assert all((out / "folds" / f"fold{k}" / "detections.json").exists() for k in range(3))
    assert json.loads((out / "summary.json").read_text())["num_images"] == 9


def test_model_file_mode_with_write_fixed(finished_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    test_set = config["data"]["test"]["dataset"]
    from retinacli.build import dataset_files
    from retinacli.recipe.schema import ShapesDataset

    annotations, images = dataset_files(ShapesDataset(**test_set))
    out, fixed = tmp_path / "audit", tmp_path / "fixed.json"
    before = snapshot(tmp_path)
    result = run_cli(
        ["data", "audit", str(finished_run / "model_final.pth"), "--dataset", str(annotations), "--images", str(images),
         "--output-dir", str(out), "--write-fixed", str(fixed), "--fix-score", "0.0", "--score-thresh", "0.05", "--cleanlab"],
        capsys, monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert changed_outside(before, tmp_path, "audit", "fixed.json") == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "model" and summary["folds"] is None
    issues = json.loads((out / "issues.json").read_text())["issues"]
    source = json.loads(annotations.read_text())
    written = json.loads(fixed.read_text())
    flagged = [a for a in written["annotations"] if FIXED_FLAG in a]
    assert len(flagged) == sum(1 for i in issues if i["kind"] == "missing")
    unflagged = [a for a in written["annotations"] if FIXED_FLAG not in a]
    duplicates = {i["annotation_id"] for i in issues if i["kind"] == "duplicate"}
    assert unflagged == [a for a in source["annotations"] if a["id"] not in duplicates]
    assert written["images"] == source["images"] and written["categories"] == source["categories"]
    assert f"wrote {fixed}" in result.stdout.replace("\n", "")
    cleanlab = json.loads((out / "cleanlab.json").read_text())
    assert sorted(q["image_id"] for q in cleanlab["image_quality"]) == sorted(img["id"] for img in source["images"])

    again = run_cli(
        ["data", "audit", str(finished_run / "model_final.pth"), "--dataset", str(annotations), "--images", str(images),
         "--output-dir", str(tmp_path / "other"), "--write-fixed", str(annotations)],
        capsys, monkeypatch,
    )
    assert again.exit_code == 2
    assert "already exists; pass --overwrite" in again.stderr
    assert json.loads(annotations.read_text()) == source


def test_write_fixed_never_replaces_the_audited_json(finished_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "a.png")
    data = tmp_path / "data.json"
    data.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [], "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}],
    }))
    before = snapshot(tmp_path)
    result = run_cli(
        ["data", "audit", str(finished_run / "model_final.pth"), "--dataset", str(data), "--images", str(images),
         "--output-dir", str(tmp_path / "audit"), "--write-fixed", str(data), "--overwrite"],
        capsys, monkeypatch,
    )
    assert result.exit_code == 2
    assert "is the audited json; name a new file beside it" in result.stderr
    assert changed_outside(before, tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "x.json"], "--dataset and --images go together"),
        (["--folds", "3"], "--folds and --iters train fold models from a recipe"),
        (["--resume", "--overwrite"], "pass one of them"),
        (["--resume"], "holds no audit to resume"),
    ],
)
def test_flags_that_do_not_fit_are_refused(finished_run: Path, tmp_path: Path, capsys, monkeypatch, extra, message) -> None:
    (tmp_path / "audit").mkdir()
    before = snapshot(tmp_path)
    result = run_cli(["data", "audit", str(finished_run / "model_final.pth"), "--output-dir", str(tmp_path / "audit"), *extra], capsys, monkeypatch)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert changed_outside(before, tmp_path) == []


def test_a_folder_of_the_users_files_is_refused(finished_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    result = run_cli(["data", "audit", str(finished_run / "model_final.pth"), "--output-dir", str(tmp_path / "mine"), "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "holds files retinacli did not write (notes.txt)" in result.stderr
    assert changed_outside(before, tmp_path) == []


def test_an_exported_file_refuses_recipe_flags(tmp_path: Path, capsys, monkeypatch) -> None:
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"not read")
    result = run_cli(
        ["data", "audit", str(exported), "--dataset", "d.json", "--images", ".", "--device", "cpu", "--output-dir", str(tmp_path / "a")],
        capsys, monkeypatch,
    )
    assert result.exit_code == 2
    assert "--device apply to recipes and model files only" in result.stderr
    assert not (tmp_path / "a").exists()


def test_a_torchscript_file_is_refused_before_it_is_opened(tmp_path: Path, capsys, monkeypatch) -> None:
    program = tmp_path / "model.ts"
    program.write_bytes(b"not opened")
    result = run_cli(["data", "audit", str(program), "--dataset", "d.json", "--images", ".", "--output-dir", str(tmp_path / "a")], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "--trust-code" in result.stderr
    assert not (tmp_path / "a").exists()


def test_a_hostile_file_name_in_the_audited_json_is_refused(finished_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    images = tmp_path / "images"
    images.mkdir()
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64)).save(secret)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "../secret.png", "width": 64, "height": 64}],
        "annotations": [], "categories": [{"id": 1, "name": "circle"}],
    }))
    before = snapshot(tmp_path)
    result = run_cli(
        ["data", "audit", str(finished_run / "model_final.pth"), "--dataset", str(data), "--images", str(images), "--output-dir", str(tmp_path / "a")],
        capsys, monkeypatch,
    )
    assert result.exit_code == 2
    assert "../secret.png" in result.stderr
    assert changed_outside(before, tmp_path) == []


def test_report_of_an_audit_folder(kfold_audit, tmp_path: Path, capsys, monkeypatch) -> None:
    _, out = kfold_audit
    page = tmp_path / "audit.html"
    result = run_cli(["report", str(out), "--out", str(page)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    issues = json.loads((out / "issues.json").read_text())["issues"]
    assert html.count('<tr class="issue"') == len(issues)
    assert html.count('<figure class="issue"') == len(list((out / "pictures").iterdir()))
    assert "<script" not in html
    assert f"label audit: {len(issues)} issues" in result.stdout


def test_report_of_an_audit_folder_leaves_out_a_picture_linking_outside(kfold_audit, tmp_path: Path, capsys, monkeypatch) -> None:
    import shutil

    _, finished = kfold_audit
    out = tmp_path / "audit"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns("folds"))
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    (out / "pictures" / "0999_missing_1.jpg").symlink_to(secret)
    result = run_cli(["report", str(out), "--out", str(tmp_path / "page.html")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "0999_missing_1.jpg" in result.stdout and "a link to outside the folder" in result.stdout
    assert "#999 missing" not in (tmp_path / "page.html").read_text()

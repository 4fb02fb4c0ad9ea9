"""`retina eval` with a stranger's dataset and folders: names from data escaped in the terminal,
the output rule, pictures only inside the output folder, no pydantic traceback; and the
diagnostics summary names a dominant error only when there is one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot

HOSTILE_NAME = "\x1b[2J[bold]rac\u202ecoon"
SHOWN_NAME = "\\x1b[2J[bold]rac\\u202ecoon"


@pytest.fixture
def unnamed_model(tiny_raccoon_model: Path, tmp_path: Path) -> Path:
    """The tiny raccoon model saved without class names: it takes the dataset's names."""
    from retinacli.commands.model_files import load_detector, save_model_file
    from retinacli.evaluation.classes import ClassInfo

    loaded = load_detector(tiny_raccoon_model)
    return save_model_file(tmp_path / "unnamed.pth", model=loaded.model, recipe=loaded.recipe, classes=ClassInfo.default(1))


def test_class_names_from_the_dataset_reach_the_terminal_escaped(
    unnamed_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch, recwarn
):
    data = json.loads(raccoon_subset.read_text())
    data["categories"] = [{**c, "name": HOSTILE_NAME} for c in data["categories"]]
    dataset = tmp_path / "hostile.json"
    dataset.write_text(json.dumps(data))
    args = ["eval", str(unnamed_model), "--dataset", str(dataset), "--images", str(raccoon_dir / "images")]
    result = run_cli([*args, "--output-dir", str(tmp_path / "out"), "--diagnostics", "--worst", "0"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output
    # the PNGs drew the name escaped: no font warning carries a raw control character
    assert (tmp_path / "out" / "pr_curves.png").is_file()
    assert [str(w.message) for w in recwarn if "\x1b" in str(w.message) or "\u202e" in str(w.message)] == []
    per_category = result.stdout[result.stdout.index("category") :]
    assert SHOWN_NAME in per_category.splitlines()[2]  # the per-category table's row
    assert SHOWN_NAME in result.stdout[result.stdout.index("worst classes") :]  # the diagnostics table
    assert f"categories in ascending id order: 1={SHOWN_NAME}" in " ".join(result.stdout.split())  # the note


def test_an_unset_variable_in_dataset_is_a_usage_error(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    # CocoDataset expands ${VAR}: an unset one raised pydantic's ValidationError out of eval.
    monkeypatch.delenv("RETINA_TEST_UNSET", raising=False)
    args = ["eval", str(tiny_raccoon_model), "--dataset", "${RETINA_TEST_UNSET}/val.json", "--images", str(tmp_path)]
    result = run_cli([*args, "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "--dataset ${RETINA_TEST_UNSET}/val.json: environment variable RETINA_TEST_UNSET is not set" in message
    assert not (tmp_path / "out").exists()


def test_eval_never_writes_into_a_folder_of_the_users(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": true}')
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        result = run_cli(["eval", str(tiny_raccoon_model), "--output-dir", str(out), *extra], capsys, monkeypatch)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "holds files retinacli did not write (metrics.json)" in result.stderr
        assert changed_outside(before, tmp_path) == []


def test_worst_images_are_drawn_only_inside_the_output_folder(
    tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch
):
    # An earlier eval output (someone's run folder) whose worst_images/ is a link to a folder of
    # the user's: --overwrite would have removed and written pictures there. Refused before
    # anything runs; the user's folder unchanged.
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset), "--images", str(raccoon_dir / "images")]
    args += ["--output-dir", str(out), "--diagnostics", "--worst", "1"]
    first = run_cli(args, capsys, monkeypatch)
    assert first.exit_code == 0, first.output
    elsewhere.mkdir()
    (elsewhere / "01_image1.png").write_bytes(b"the user's picture")
    for picture in (out / "worst_images").iterdir():
        picture.unlink()
    (out / "worst_images").rmdir()
    (out / "worst_images").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    result = run_cli([*args, "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{out / 'worst_images'}: leads outside the output folder {out} (a link)" in " ".join(result.stderr.split())
    assert changed_outside(before, tmp_path) == []


# ----------------------------------------------------------------------------- dominant error


def _summary_text(gt_annotations, results) -> str:
    from retinacli.cli.render import diagnostics_summary
    from retinacli.evaluation.coco_eval import evaluate_boxes
    from retinacli.evaluation.diagnostics import diagnose
    from tests.evaluation.test_diagnostics import _gt

    gt = _gt([1, 2], gt_annotations)
    _, evaluator = evaluate_boxes(gt, results)
    content = diagnose(evaluator, class_names=["cat", "dog"]).to_json()
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(diagnostics_summary(content))
    return console.export_text()


def test_no_dominant_error_without_errors():
    annotations = [(1, 1, [10, 10, 50, 50]), (2, 2, [20, 30, 80, 40])]
    results = [{"image_id": i, "category_id": c, "bbox": b, "score": 0.9} for i, c, b in annotations]
    text = _summary_text(annotations, results)
    assert "dominant error: none (no errors above the thresholds)" in text


def test_without_false_positives_only_a_real_gain_is_named():
    # Every detection right, one cat missed: no false positive type is named (their gains are
    # 0.0); the missed objects are, with the gain fixing them would bring.
    annotations = [(1, 1, [10, 10, 50, 50]), (2, 2, [20, 30, 80, 40]), (2, 1, [120, 120, 40, 40])]
    results = [{"image_id": i, "category_id": c, "bbox": b, "score": 0.9} for i, c, b in annotations[:2]]
    text = _summary_text(annotations, results)
    assert "dominant error: missed (fixing it alone would add" in text
    for kind in ("class", "localisation", "both", "duplicate", "background"):
        assert f"dominant error: {kind}" not in text


def test_no_dominant_error_when_no_fix_gains_anything():
    from retinacli.cli.render import _dominant_error

    counts = {"background": 2, "duplicate": 0, "missed": 0}
    assert _dominant_error(counts, {"background": 0.0, "duplicate": 0.0, "missed": 0.0}) == (
        "dominant error: none (fixing no single error type would raise AP50)"
    )
    # a gain for an error that never occurs is no dominant error either
    assert _dominant_error(counts, {"background": 0.0, "duplicate": 3.0, "missed": 0.0}).startswith("dominant error: none")

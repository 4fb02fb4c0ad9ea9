"""`retina eval --bootstrap` and `retina compare`: intervals written and printed, a folder
against itself at exactly 0, a better model found better, and every mismatch refused."""

from __future__ import annotations

import json
from pathlib import Path

from retinacli.evaluation.outputs import write_evaluation
from retinacli.files import file_sha256
from tests.cli_helpers import run_cli
from tests.evaluation.test_bootstrap import synthetic


def test_eval_bootstrap_then_compare_with_itself(tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset), "--images", str(raccoon_dir / "images")]
    result = run_cli([*args, "--output-dir", str(out), "--device", "cpu", "--bootstrap", "200"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == str(raccoon_subset) and metrics["dataset_sha256"] == file_sha256(raccoon_subset)
    assert metrics["bootstrap"]["samples"] == 200
    for name in ("AP", "AP50"):
        low, high = metrics[f"{name}_ci"]
        assert low <= metrics[name] <= high
    assert f"AP {metrics['AP']:.1f}, 95% interval {metrics['AP_ci'][0]:.1f} to" in result.stdout

    same = run_cli(["compare", str(out), str(out), "--samples", "100", "--json"], capsys, monkeypatch)
    assert same.exit_code == 0, same.output
    difference = json.loads(same.stdout)["difference"]["AP"]
    assert difference["estimate"] == 0 and difference["ci"] == [0, 0]


def _eval_folder(folder: Path, data_path: Path, results: list, metrics_extra: dict | None = None) -> Path:
    metrics = {"AP": None, "num_images": len(json.loads(data_path.read_text())["images"]), "dataset": str(data_path), "dataset_sha256": file_sha256(data_path)}
    write_evaluation(folder, results=results, metrics={**metrics, **(metrics_extra or {})})
    return folder


def _pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    data, worse = synthetic(150, seed=4, noise=14.0)
    _, better = synthetic(150, seed=4, noise=2.0)
    data_path = tmp_path / "data.json"
    data_path.write_text(json.dumps(data))
    return data_path, _eval_folder(tmp_path / "a", data_path, worse), _eval_folder(tmp_path / "b", data_path, better)


def test_compare_says_which_is_better_and_by_how_much(tmp_path, capsys, monkeypatch) -> None:
    _, a, b = _pair(tmp_path)
    result = run_cli(["compare", str(a), str(b), "--samples", "300"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "B is better by " in result.stdout and "95% interval" in result.stdout
    assert "the interval excludes 0" in result.stdout
    reverse = run_cli(["compare", str(b), str(a), "--samples", "300", "--json"], capsys, monkeypatch)
    d = json.loads(reverse.stdout)["difference"]["AP"]
    assert d["estimate"] < 0 and d["ci"][1] < 0


def test_compare_refuses_what_does_not_fit(tmp_path, capsys, monkeypatch) -> None:
    data_path, a, b = _pair(tmp_path)
    not_eval = tmp_path / "empty"
    not_eval.mkdir()
    result = run_cli(["compare", str(a), str(not_eval)], capsys, monkeypatch)
    assert result.exit_code == 2 and "not an evaluation folder" in result.stderr

    other = tmp_path / "other.json"
    other.write_text(json.dumps(synthetic(150, seed=9)[0]))
    c = _eval_folder(tmp_path / "c", other, synthetic(150, seed=9)[1])
    result = run_cli(["compare", str(a), str(c)], capsys, monkeypatch)
    assert result.exit_code == 2 and "evaluated different data" in result.stderr

    bad = json.loads((b / "coco_results.json").read_text())
    bad[3]["image_id"] = 99999
    (b / "coco_results.json").write_text(json.dumps(bad))
    result = run_cli(["compare", str(a), str(b)], capsys, monkeypatch)
    assert result.exit_code == 2 and "record 3: image_id 99999 is not an image of the dataset" in result.stderr

    data_path.write_text(data_path.read_text().replace('"c1"', '"changed"'))
    result = run_cli(["compare", str(a), str(a)], capsys, monkeypatch)
    assert result.exit_code == 2 and "sha256" in result.stderr and "the two evaluations must be of the same data" in result.stderr

"""`retina predict` and `retina eval` with a stranger's files: a TorchScript file is code and is
refused unless trusted, bad inputs are skipped and named without losing the good ones, output
folders follow the one output rule, and names from data reach the terminal escaped."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot


class _RewritesAFileWhenLoaded(torch.nn.Module):
    """A TorchScript module whose `__setstate__`, which `torch.jit.load` runs, maps `target`
    with `torch.from_file(shared=True)` and fills it with "Y": loading the file rewrites
    another file of the user's. (`forward` would do the same when run.)"""

    def __init__(self, target: str, size: int) -> None:
        super().__init__()
        self.target = target
        self.size = size
        self.seen = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, int, bool]:
        return (self.target, self.size, self.seen, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, int, bool]) -> None:
        self.target, self.size, self.training = state[0], state[1], state[3]
        mapped = torch.from_file(self.target, shared=True, size=self.size, dtype=torch.uint8)
        mapped.fill_(ord("Y"))
        self.seen = int(mapped.sum())  # used, so the write is not optimised away


def _hostile_torchscript(path: Path, victim: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        torch.jit.script(_RewritesAFileWhenLoaded(str(victim.resolve()), victim.stat().st_size)).save(str(path))
    return path


@pytest.fixture
def jit_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path torch.jit.load is called with during the test (the real load still runs)."""
    calls: list[str] = []
    real = torch.jit.load

    def spy(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", spy)
    return calls


def _image(path: Path, size: tuple[int, int] = (96, 72)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)
    return path


def test_the_hostile_torchscript_file_really_rewrites_a_file_when_loaded(tmp_path):
    # The attack of the tests below is real: plain torch.jit.load of the file rewrites the victim.
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    evil = _hostile_torchscript(tmp_path / "model.ts", victim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(evil))
    assert victim.read_bytes() == b"Y" * len("the user's notes\n")


@pytest.mark.parametrize("name", ["model.ts", "model.torchscript", "MODEL.TS"])
def test_predict_refuses_a_torchscript_file_before_loading_it(name, tmp_path, jit_loads, capsys, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    evil = _hostile_torchscript(tmp_path / name, victim)
    image = _image(tmp_path / "in" / "a.png")
    before = snapshot(tmp_path)
    result = run_cli(["predict", str(evil), str(image), "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert f"{evil}: refused to load a TorchScript file" in message
    assert "TorchScript files are programs" in message and "--trust-code" in message
    assert jit_loads == []  # refused before torch ever saw the file
    assert changed_outside(before, tmp_path) == []  # the victim and everything else as they were


def test_eval_never_loads_a_torchscript_file(tmp_path, jit_loads, capsys, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    evil = _hostile_torchscript(tmp_path / "model.ts", victim)
    before = snapshot(tmp_path)
    result = run_cli(["eval", str(evil), "--dataset", str(tmp_path / "a.json"), "--images", str(tmp_path)], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert f"{evil}: refused to load a TorchScript file" in message and "retina eval` again with --trust-code" in message
    assert jit_loads == []  # refused before torch ever saw the file
    assert changed_outside(before, tmp_path) == []
    # a TorchScript archive renamed .pth is refused by torch.load(weights_only=True), unrun
    disguised = tmp_path / "model.pth"
    shutil.copy(evil, disguised)
    before = snapshot(tmp_path)
    result = run_cli(["eval", str(disguised)], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output and str(disguised) in result.stderr
    assert jit_loads == []
    assert changed_outside(before, tmp_path) == []


def test_with_trust_code_the_file_is_loaded(tmp_path, jit_loads, capsys, monkeypatch):
    # --trust-code is the user's word that the file is theirs: it is loaded (and this one, not
    # being a retinacli export, is then refused for its missing metadata).
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    evil = _hostile_torchscript(tmp_path / "model.ts", victim)
    image = _image(tmp_path / "in" / "a.png")
    result = run_cli(
        ["predict", str(evil), str(image), "--output-dir", str(tmp_path / "out"), "--trust-code"], capsys, monkeypatch
    )
    assert jit_loads == [str(evil)]
    assert result.exit_code == 2 and "without retinacli's metadata" in result.stderr
    assert victim.read_bytes().startswith(b"YYYY")  # what the refusal protects from


@pytest.fixture(scope="module")
def tiny_torchscript(tiny_raccoon_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny raccoon model exported to TorchScript with its score threshold at 0.01."""
    from retinacli.commands.export import export

    out = tmp_path_factory.mktemp("ts") / "tiny.ts"
    export(tiny_raccoon_model, export_format="torchscript", out=out, verify=False,
           overrides=["model.test.score_thresh=0.01"])
    return out


def test_a_trusted_torchscript_export_predicts_and_thresholds_only_go_up(
    tiny_torchscript, raccoon_dir, tmp_path, jit_loads, capsys, monkeypatch
):
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    args = ["predict", str(tiny_torchscript), str(image), "--trust-code"]
    result = run_cli([*args, "--output-dir", str(tmp_path / "o1")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert jit_loads == [str(tiny_torchscript)]
    own = json.loads((tmp_path / "o1" / "predictions.json").read_text())
    assert own["score_thresh"] == 0.01
    scores = sorted(d["score"] for d in own["images"][0]["detections"])
    assert len(scores) > 2
    raised = (scores[len(scores) // 2] + scores[len(scores) // 2 - 1]) / 2
    result = run_cli([*args, "--output-dir", str(tmp_path / "o2"), "--score-thresh", f"{raised:.7f}"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    higher = json.loads((tmp_path / "o2" / "predictions.json").read_text())
    assert higher["score_thresh"] == float(f"{raised:.7f}")
    # the same detections as the file's own, less those at or under the raised threshold
    assert higher["images"][0]["detections"] == [d for d in own["images"][0]["detections"] if d["score"] > float(f"{raised:.7f}")]
    # lowering it cannot be done after the fact: refused, naming both values and the way out
    before = snapshot(tmp_path)
    result = run_cli([*args, "--output-dir", str(tmp_path / "o3"), "--score-thresh", "0.005"], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "--score-thresh 0.005 is below the threshold built into this exported file (0.01)" in message
    assert "--set model.test.score_thresh=0.005" in message
    result = run_cli([*args, "--output-dir", str(tmp_path / "o4"), "--score-thresh", "1.5"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--score-thresh 1.5: a score threshold is in [0, 1)" in result.stderr
    assert changed_outside(before, tmp_path) == []


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture
def mixed_folder(tmp_path: Path, raccoon_dir: Path) -> Path:
    """A good JPEG, the same JPEG cut to a third, a .jpg of garbage, a 20000x20 and a 20x20000 PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = raccoon_dir / "images" / "raccoon-1.jpg"
    shutil.copy(good, folder / "good.jpg")
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 8)
    Image.new("RGB", (20000, 20), (30, 60, 90)).save(folder / "wide.png")
    Image.new("RGB", (20, 20000), (90, 60, 30)).save(folder / "tall.png")
    return folder


def test_bad_images_are_skipped_and_named_and_the_good_ones_kept(tiny_raccoon_model, mixed_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(["predict", str(tiny_raccoon_model), str(mixed_folder), "--output-dir", str(out)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads((out / "predictions.json").read_text())
    # extreme aspect ratios resize to at least one pixel a side and are predicted
    assert sorted(Path(e["file"]).name for e in data["images"]) == ["good.jpg", "tall.png", "wide.png"]
    assert {Path(s["file"]).name: s["reason"] for s in data["skipped"]} == {
        "garbage.jpg": "cannot decode the image (Truncated File Read)",
        "truncated.jpg": "cannot decode the image (image file is truncated (7 bytes not processed))",
    }
    warning = " ".join(result.stderr.split())
    assert "warning: 2 input(s) skipped" in warning
    assert f"skipped {mixed_folder / 'garbage.jpg'}: cannot decode" in warning
    assert f"skipped {mixed_folder / 'truncated.jpg'}: cannot decode" in warning
    assert changed_outside(before, tmp_path, "out") == []


def test_an_image_the_model_cannot_run_on_is_skipped_alone(tiny_raccoon_model, mixed_folder, tmp_path, capsys, monkeypatch):
    # An exported graph or a device can refuse one image (its size, its memory): in a batch with
    # others, the batch is run again image by image and only that one is skipped.
    from retinacli.evaluation import detectors as predict_module

    real = predict_module.TorchDetector.detect

    def refuses_wide_images(self, images, original_sizes):
        if any(w > 10 * h for h, w in original_sizes):
            raise RuntimeError("the graph cannot take this shape\nmore lines")
        return real(self, images, original_sizes)

    monkeypatch.setattr(predict_module.TorchDetector, "detect", refuses_wide_images)
    out = tmp_path / "out"
    args = ["predict", str(tiny_raccoon_model), str(mixed_folder), "--output-dir", str(out), "--images-per-batch", "3"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(e["file"]).name for e in data["images"]) == ["good.jpg", "tall.png"]
    reasons = {Path(s["file"]).name: s["reason"] for s in data["skipped"]}
    assert reasons["wide.png"] == "the model could not run on it (RuntimeError: the graph cannot take this shape)"
    assert "Traceback" not in result.output


def test_a_broken_video_is_skipped_and_the_other_inputs_kept(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    from tests.predict.test_outputs import _write_clip

    clip, broken = tmp_path / "clip.mp4", tmp_path / "broken.mp4"
    _write_clip(clip, frames=3)
    broken.write_bytes(clip.read_bytes()[:200])  # the container's header and little else
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    out = tmp_path / "out"
    args = ["predict", str(tiny_raccoon_model), str(broken), str(image), str(clip), "--output-dir", str(out)]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert json.loads((out / "clip.json").read_text())["frames"]
    assert [Path(e["file"]).name for e in json.loads((out / "predictions.json").read_text())["images"]] == ["raccoon-1.jpg"]
    assert f"skipped {broken}:" in " ".join(result.stderr.split())
    assert not (out / "broken.mp4").exists() and not (out / "broken.json").exists()


def test_nothing_readable_at_all_is_exit_2_with_the_list(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nothing")
    result = run_cli(["predict", str(tiny_raccoon_model), str(bad), "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "none of the 1 inputs could be read" in result.stderr
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["skipped"][0]["file"] == str(bad)


# ----------------------------------------------------------------------------- output folders


def test_predict_never_writes_into_a_folder_of_the_users(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "raccoon-1.jpg").write_bytes(b"my own picture")  # the name predict would write
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        result = run_cli(["predict", str(tiny_raccoon_model), str(image), "--output-dir", str(out), *extra], capsys, monkeypatch)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "holds files retinacli did not write" in result.stderr
        assert changed_outside(before, tmp_path) == []


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_an_output_dir_that_is_a_file_is_a_clean_error(command, tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    target = tmp_path / "results"
    target.write_text("a file of the user's")
    args = ["predict", str(tiny_raccoon_model), str(raccoon_dir / "images" / "raccoon-1.jpg")] if command == "predict" else ["eval", str(tiny_raccoon_model)]
    before = snapshot(tmp_path)
    result = run_cli([*args, "--output-dir", str(target)], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{target}: is a file, not a folder; --output-dir names the folder" in " ".join(result.stderr.split())
    assert changed_outside(before, tmp_path) == []


def test_a_picture_name_cannot_leave_the_output_folder(tiny_raccoon_model, raccoon_dir, tmp_path, capsys, monkeypatch):
    # An earlier predict output whose subfolder was replaced by a link to elsewhere: the picture
    # of in/sub/x.png would go through it. Refused, nothing written outside.
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _image(tmp_path / "in" / "sub" / "x.png")
    first = run_cli(["predict", str(tiny_raccoon_model), str(tmp_path / "in"), "--output-dir", str(out)], capsys, monkeypatch)
    assert first.exit_code == 0, first.output
    shutil.rmtree(out / "sub")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    args = ["predict", str(tiny_raccoon_model), str(tmp_path / "in"), "--output-dir", str(out), "--overwrite"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "a link to outside the folder" in result.stderr
    assert changed_outside(before, tmp_path) == []
    assert list(elsewhere.iterdir()) == []


_ENTITY_IR = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY secret SYSTEM "file://{secret}"><!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<net name="&secret;&b;" version="11"><layers></layers><edges></edges></net>
"""


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (_ENTITY_IR, "without retinacli's metadata"),  # entities are not expanded: no read of the secret
        ("name: not xml at all\n", "not an OpenVINO IR"),
        ('<?xml version="1.0"?><net name="x" version="11"><layers><layer id="0" type="Nope"/></layers></net>', "OpenVINO cannot read it"),
    ],
    ids=["external-entity", "not-xml", "unknown-layer"],
)
def test_a_hostile_openvino_ir_is_refused_without_reading_elsewhere(command, xml, message, tmp_path, capsys, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN\n")
    ir = tmp_path / "model.xml"
    ir.write_text(xml.format(secret=secret))
    (tmp_path / "model.bin").write_bytes(b"")
    image = _image(tmp_path / "in" / "a.png")
    if command == "predict":
        args = ["predict", str(ir), str(image), "--output-dir", str(tmp_path / "out")]
    else:
        dataset = tmp_path / "a.json"
        dataset.write_text(json.dumps({
            "images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 72}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}],
        }))
        args = ["eval", str(ir), "--dataset", str(dataset), "--images", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")]
    before = snapshot(tmp_path)
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert "SECRET-TOKEN" not in result.output
    assert snapshot(tmp_path) == before  # nothing written, nothing changed

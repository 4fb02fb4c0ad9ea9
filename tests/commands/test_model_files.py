"""Model files: written atomically, read back whole, every damage reported with the file name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retinacli.build import build_model
from retinacli.commands.model_files import load_detector, save_model_file
from retinacli.errors import CheckpointError, RecipeError
from retinacli.evaluation.classes import ClassInfo
from retinacli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.backbone.depth=18", "model.backbone.res2_out_channels=64", "model.backbone.norm=BN",
    "model.fpn.out_channels=32", "model.head.num_classes=2", "model.head.num_convs=1",
]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    recipe = load_recipe(None, TINY)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    model.loss_normalizer = 123.0
    path = tmp_path_factory.mktemp("m") / "model.pth"
    save_model_file(path, model=model, recipe=recipe, classes=ClassInfo(("cat", "dog"), (3, 7)))
    return path


def test_round_trip_restores_weights_recipe_and_classes(tiny_file):
    loaded = load_detector(tiny_file)
    saved = torch.load(tiny_file, weights_only=True)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key], rtol=0, atol=0)
    assert loaded.recipe == load_recipe(None, TINY)
    assert loaded.classes == ClassInfo(("cat", "dog"), (3, 7))
    assert loaded.model.loss_normalizer == 123.0 and not loaded.model.training


def test_overrides_change_the_stored_recipe(tiny_file):
    loaded = load_detector(tiny_file, ["model.test.score_thresh=0.4"])
    assert loaded.model.score_thresh == 0.4 and loaded.recipe.model.test.score_thresh == 0.4


def test_architecture_override_that_does_not_fit_is_named(tiny_file):
    with pytest.raises(CheckpointError, match=r"model\.pth: the weights do not fit .*shape differs"):
        load_detector(tiny_file, ["model.fpn.out_channels=16"])


def test_truncated_file_is_reported(tiny_file, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(tiny_file.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_detector(broken)


def test_foreign_file_is_reported(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="other.pth: not a retinacli checkpoint or model file"):
        load_detector(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "retinacli-checkpoint", "x": Path("/")}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        load_detector(path)


def test_a_format_1_file_with_old_key_names_still_loads(tiny_file, tmp_path):
    data = torch.load(tiny_file, weights_only=True)
    clip = data["recipe"]["solver"]["clip_gradients"]
    clip["type"], clip["value"] = clip.pop("clip_type"), clip.pop("clip_value")
    data["format_version"] = 1
    old = tmp_path / "old.pth"
    torch.save(data, old)
    loaded = load_detector(old)
    assert loaded.recipe == load_recipe(None, TINY)


def test_a_format_1_file_with_a_shared_bn_head_gets_per_level_statistics(tmp_path):
    recipe = load_recipe(None, [*TINY, "model.head.norm=BN"])
    model = build_model(recipe.model)
    save_model_file(tmp_path / "new.pth", model=model, recipe=recipe, classes=ClassInfo(("a", "b"), (1, 2)))
    data = torch.load(tmp_path / "new.pth", weights_only=True)
    # What format 1 wrote: one BatchNorm per subnet position, its statistics shared by the levels.
    state = {}
    for key, value in data["model"].items():
        parts = key.split(".")
        if key.startswith("head.") and len(parts) == 5 and parts[3].isdigit():
            if parts[3] == "0":
                state[".".join(parts[:3] + parts[4:])] = value + 1.0 if value.is_floating_point() else value
        else:
            state[key] = value
    data.update(model=state, format_version=1)
    torch.save(data, tmp_path / "old.pth")
    loaded = load_detector(tmp_path / "old.pth").model.state_dict()
    for level in range(5):
        assert torch.equal(loaded[f"head.cls_subnet.1.{level}.running_mean"], state["head.cls_subnet.1.running_mean"])


# ----------------------------------------------------------------------------- hostile model files
# A model file may come from a stranger: its stored recipe must not size anything before it is
# checked against the schema's bounds and against the tensors the file carries.


def _tampered(tiny_file: Path, tmp_path: Path, change) -> Path:
    data = torch.load(tiny_file, weights_only=True)
    change(data)
    path = tmp_path / "tampered.pth"
    torch.save(data, path)
    return path


@pytest.fixture
def no_real_build(monkeypatch):
    """Fail the test if a model is built with real tensors (a build on the meta device is fine)."""
    import retinacli.commands.model_files as model_files

    real_build = model_files.build_model

    def guarded(model_config):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a model was built before the stored recipe was checked")
        return real_build(model_config)

    monkeypatch.setattr(model_files, "build_model", guarded)


def test_a_stored_200000_channel_fpn_is_refused_by_the_bound(tiny_file, tmp_path, no_real_build):
    path = _tampered(tiny_file, tmp_path, lambda d: d["recipe"]["model"]["fpn"].update(out_channels=200_000))
    with pytest.raises(RecipeError, match=r"tampered\.pth \(stored recipe\).*\n  model\.fpn\.out_channels\n.*less than or equal to 4096"):
        load_detector(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["model"]["fpn"].update(out_channels=4096),
         r"model\.fpn\.out_channels is 4096, so backbone\.fpn\.output_convs\.p3\.weight would have 4096 output "
         r"channels, but the file's has 32"),
        (lambda r: r["model"]["head"].update(num_classes=10_000),
         r"model\.head\.num_classes is 10000, so head\.cls_score\.weight would have 90000 output channels "
         r"\(9 anchors x classes\), but the file's has 18"),
        (lambda r: r["model"]["anchors"].update(aspect_ratios=[[0.5, 1.0, 2.0, 4.0]] * 5),
         r"anchors per location .* is 12, so head\.bbox_pred\.weight would have 48 output channels"),
        (lambda r: r["model"]["head"].update(num_convs=32),
         r"model\.head\.num_convs is 32, the file's head\.cls_subnet has 1"),
        (lambda r: r["model"]["backbone"].update(stem_out_channels=4096),
         r"model\.backbone\.stem_out_channels is 4096, so backbone\.body\.conv1\.weight would have 4096"),
        (lambda r: r["model"]["backbone"].update(depth=34),
         r"model\.backbone\.depth 34 has 6 blocks in res4, the file's backbone\.body\.layer3 has 2"),
        (lambda r: r["model"]["fpn"].update(top_block_input="p5"),
         r"shape differs for backbone\.fpn\.top_block\.p6\.weight \(32, 512, 3, 3\) vs \(32, 32, 3, 3\)"),
    ],
    ids=["fpn", "classes", "anchors", "convs", "stem", "depth", "top-block"],
)
def test_a_stored_recipe_that_does_not_fit_its_tensors_is_refused_before_building(
    tiny_file, tmp_path, no_real_build, change, message
):
    path = _tampered(tiny_file, tmp_path, lambda d: change(d["recipe"]))
    with pytest.raises(CheckpointError, match=r"tampered\.pth: the weights do not fit the model: .*" + message):
        load_detector(path)


def test_a_stored_recipe_of_shared_lists_is_refused_before_it_is_copied(tiny_file, tmp_path):
    def bomb(data):
        value: list = ["x"] * 9
        for _ in range(9):  # pickle keeps the sharing: 9**10 values once expanded
            value = [value] * 9
        data["recipe"]["model"]["freeze"] = value

    path = _tampered(tiny_file, tmp_path, bomb)
    with pytest.raises(RecipeError, match=r"tampered\.pth \(stored recipe\): the recipe expands to more than 100000 values"):
        load_detector(path)


def test_a_tampered_model_file_through_predict_is_exit_2_without_traceback(tiny_file, tmp_path, capsys, monkeypatch):
    from tests.cli_helpers import run_cli
    from tests.snapshots import changed_outside, snapshot

    work = tmp_path / "work"
    work.mkdir()
    _tampered(tiny_file, work, lambda d: d["recipe"]["model"]["fpn"].update(out_channels=4096))
    (work / "image.png").write_bytes(b"not read: the model file is refused first")
    before = snapshot(work)
    result = run_cli(["predict", str(work / "tampered.pth"), str(work / "image.png"), "--output-dir", str(work / "out")],
                     capsys, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "tampered.pth: the weights do not fit the model" in result.stderr
    assert "model.fpn.out_channels is 4096" in result.stderr and "has 32" in result.stderr
    assert "Traceback" not in result.output
    assert changed_outside(before, work, "out") == []

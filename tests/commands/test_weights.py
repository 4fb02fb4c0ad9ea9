"""`retina weights list | get`, and training from `model.weights: zoo:NAME`: the file fetched from a
local server (tests/weights_server.py), the recipe keys of the weights filled in, every tensor
loaded. Nothing here touches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import pickle

import pytest
import torch
import torchvision
import yaml

from retinacli.build import build_model
from retinacli.commands import train as train_module
from retinacli.commands.train import train_from_recipe
from retinacli.commands.weights import get_weights, list_weights
from retinacli.errors import UsageError
from retinacli.recipe import load_recipe
from retinacli.weights.names import retinacli_to_detectron2
from retinacli.weights.zoo import find_entry
from tests.cli_helpers import run_cli
from tests.training.tiny import tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION_MEAN = [123.675, 116.28, 103.53]
TORCHVISION_STD = [58.395, 57.12, 57.375]


@pytest.fixture(scope="module")
def resnet18_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    """A torchvision ResNet-18 state dict (random weights) as torch.save writes it, and the dict."""
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


@pytest.fixture
def zoo(zoo_env, resnet18_file):
    """A zoo of one ResNet-18 backbone (`test/resnet18`) served locally."""
    zoo_env.use(zoo_env.entry("test/resnet18", resnet18_file[0]))
    return zoo_env


def test_list_says_what_is_in_the_cache(zoo):
    entry = find_entry("test/resnet18")
    assert [(row.entry.name, row.state) for row in list_weights().rows] == [("test/resnet18", "missing")]
    zoo.cache.mkdir(parents=True)
    (zoo.cache / (entry.file_name + ".partial")).write_bytes(b"x" * 100)
    assert list_weights().rows[0].state == "partial" and list_weights().rows[0].partial_bytes == 100
    # The .partial is continued; its bytes are wrong, so the hash fails and the file is fetched anew.
    (fetched,) = get_weights(["zoo:test/resnet18"])
    assert zoo.server.ranges() == ["bytes=100-", None] and fetched.resumed_from == 0
    listing = list_weights()
    assert listing.rows[0].state == "downloaded" and listing.cache_dir == zoo.cache
    assert listing.mirror == zoo.server.base_url


def test_get_refuses_unknown_names_before_fetching_anything(zoo):
    with pytest.raises(UsageError) as caught:
        get_weights(["test/resnet18", "test/resnet81"])
    assert "no pretrained weights named 'test/resnet81' (did you mean 'test/resnet18'?)" in str(caught.value)
    assert "known names: test/resnet18" in str(caught.value) and zoo.server.requests == []


def test_cli_list_and_get(zoo, capsys, monkeypatch):
    listed = run_cli(["weights", "list"], capsys, monkeypatch)
    assert listed.exit_code == 0
    assert "test/resnet18" in listed.stdout and "ResNet-18 backbone" in listed.stdout
    assert f"cache: {zoo.cache}" in listed.stdout
    got = run_cli(["weights", "get", "test/resnet18"], capsys, monkeypatch)
    assert got.exit_code == 0, got.output
    path = zoo.file(find_entry("test/resnet18"))
    assert got.stdout.splitlines()[-1] == str(path) and path.is_file()
    assert "test/resnet18: downloaded; sha256 and size match the published file" in got.stdout
    again = run_cli(["weights", "get", "test/resnet18"], capsys, monkeypatch)
    assert "test/resnet18: already downloaded" in again.stdout and len(zoo.server.requests) == 1
    as_json = json.loads(run_cli(["weights", "list", "--json"], capsys, monkeypatch).stdout)
    assert as_json["weights"][0]["state"] == "downloaded" and as_json["weights"][0]["path"] == str(path)
    assert as_json["weights"][0]["settings"]["model.input_format"] == "RGB"


def test_cli_get_errors_exit_2_with_what_to_do(zoo, capsys, monkeypatch):
    unknown = run_cli(["weights", "get", "nope"], capsys, monkeypatch)
    assert unknown.exit_code == 2 and "no pretrained weights named 'nope'" in unknown.stderr
    assert "known names: test/resnet18" in unknown.stderr
    zoo.server.missing = True
    missing = run_cli(["weights", "get", "test/resnet18"], capsys, monkeypatch)
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    text = " ".join(missing.stderr.split())  # the error screen wraps long lines
    assert f"{zoo.server.base_url}/models/test-resnet18.pth" in text and "HTTP 404 Not Found" in text
    assert f"put it at {zoo.file(find_entry('test/resnet18'))}" in text


@pytest.mark.filterwarnings("ignore:the model made no detection")  # 2 iterations detect nothing
def test_training_from_a_zoo_backbone_fills_in_its_settings_and_loads_every_tensor(zoo, resnet18_file, monkeypatch, tmp_path):
    _, state = resnet18_file
    loaded = {}
    real_init = train_module.init_from_weights

    def init_and_keep(model, path):
        report = real_init(model, path)
        loaded["report"] = report
        loaded["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return report

    monkeypatch.setattr(train_module, "init_from_weights", init_and_keep)
    messages = []

    class Collect(train_module.SilentReporter):
        def message(self, text):
            messages.append(text)

    recipe = tiny_recipe(tmp_path, "model.weights=zoo:test/resnet18", "solver.max_iter=2")
    assert recipe.model.input_format == "RGB"  # filled in from the zoo entry
    assert recipe.model.pixel_mean == TORCHVISION_MEAN and recipe.model.pixel_std == TORCHVISION_STD
    assert recipe.model.backbone.stride_in_1x1 is False
    result = train_from_recipe(recipe, reporter=Collect())
    assert result.iterations_run == 2
    # Every tensor of the torchvision file but its classifier went into the backbone, unchanged.
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}  # BN: num_batches_tracked too
    assert set(loaded["report"].loaded) == {f"backbone.body.{k}" for k in body}
    assert loaded["report"].skipped_shape == []
    for key, value in body.items():
        torch.testing.assert_close(loaded["state"][f"backbone.body.{key}"], value, rtol=0, atol=0, msg=key)
    path = zoo.file(find_entry("test/resnet18"))
    assert loaded["report"].path == path
    assert any(m.startswith("model.weights zoo:test/resnet18: downloading") for m in messages)
    assert f"model.weights zoo:test/resnet18: downloaded {path}; sha256 and size match the published file" in "\n".join(messages)
    config = yaml.safe_load((result.output_dir / "config.yaml").read_text())["model"]
    assert config["weights"] == "zoo:test/resnet18" and config["input_format"] == "RGB"
    assert config["pixel_mean"] == TORCHVISION_MEAN and config["backbone"]["stride_in_1x1"] is False


R18 = ["model.fpn.out_channels=32", "model.head.num_classes=2", "model.head.num_convs=1"]
D2_SETTINGS = {
    "model.input_format": "BGR",
    "model.pixel_mean": [103.53, 116.28, 123.675],
    "model.pixel_std": [1.0, 1.0, 1.0],
    "model.backbone.depth": 18,
    "model.backbone.res2_out_channels": 64,
    "model.backbone.stride_in_1x1": True,
}


def test_a_detector_from_a_zoo_pickle_loads_every_tensor(zoo_env):
    # A detectron2 model-zoo file in miniature: {"model": {detectron2 name: ndarray}, "__author__"},
    # pickled with protocol 2 as detectron2's are; verified by nothing but its size bound.
    recipe = load_recipe(None, [*R18, "model.backbone.depth=18", "model.backbone.res2_out_channels=64"])
    torch.manual_seed(3)
    source = build_model(recipe.model).state_dict()
    names, unmapped = retinacli_to_detectron2(source)
    assert unmapped == []
    content = pickle.dumps(
        {"model": {k: v.numpy() for k, v in names.items()}, "__author__": "test"}, protocol=2
    )
    entry = zoo_env.entry(
        "test/d2_tiny", content, kind="detector", verification="none", size_bytes=None,
        max_bytes=2 * len(content), settings=D2_SETTINGS, suffix=".pkl",
    )
    zoo_env.use(entry)
    recipe = load_recipe(None, [*R18, "model.weights=zoo:test/d2_tiny"])
    assert recipe.model.input_format == "BGR" and recipe.model.backbone.depth == 18
    torch.manual_seed(0)
    model = build_model(recipe.model)
    messages = []
    summary = train_module._init_weights(model, recipe.model.weights, message=messages.append)
    assert summary.startswith(f"initialised {len(source)} tensors from {zoo_env.file(entry)} (detectron2_zoo weights)")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    digest = hashlib.sha256(content).hexdigest()
    assert messages[-1].endswith(f"not verified: no checksum of this file is published; its sha256 is {digest}")


def test_several_processes_find_the_file_fetched_once_before_they_start(zoo, monkeypatch, tmp_path):
    launched = []
    monkeypatch.setattr(train_module, "launch_local", lambda n, argv: launched.append((n, argv)) or 0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  weights: zoo:test/resnet18\n")
    messages = []
    code = train_module.train_in_processes(recipe, [], num_processes=2, message=messages.append)
    assert code == 0 and launched[0][0] == 2
    assert zoo.file(find_entry("test/resnet18")).is_file() and zoo.server.ranges() == [None]
    assert messages[-1].startswith("model.weights zoo:test/resnet18: downloaded")

"""Weight-file readers (torch files, safe pickles) and backbone name conversions."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision

from retinacli.errors import CheckpointError
from retinacli.training.checkpoints import save_checkpoint
from retinacli.training.rng import capture_rng_state
from retinacli.weights.names import (
    caffe2_resnet_to_detectron2,
    detectron2_to_retinacli,
    retinacli_to_detectron2,
    torchvision_resnet_to_retinacli,
)
from retinacli.weights.readers import read_weights_file


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as the Caffe2-era R-50.pkl files hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # Old numpy named its module numpy.core; GLOBAL opcodes are plain "module\nname\n" text.
    return buffer.getvalue().replace(b"numpy._core.", b"numpy.core.")


def fake_msra_r50() -> dict[str, np.ndarray]:
    """Caffe2 names of the R-50 stem and two res2 blocks, random float32 arrays (small shapes)."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    blobs = {"conv1_w": arr(8, 3, 7, 7), "res_conv1_bn_s": arr(8), "res_conv1_bn_b": arr(8)}
    for block, cin in ((0, 8), (1, 16)):
        for branch, shape in (("2a", (4, cin, 1, 1)), ("2b", (4, 4, 3, 3)), ("2c", (16, 4, 1, 1))):
            blobs[f"res2_{block}_branch{branch}_w"] = arr(*shape)
            blobs[f"res2_{block}_branch{branch}_bn_s"] = arr(shape[0])
            blobs[f"res2_{block}_branch{branch}_bn_b"] = arr(shape[0])
    blobs["res2_0_branch1_w"] = arr(16, 8, 1, 1)
    blobs["res2_0_branch1_bn_s"] = arr(16)
    blobs["res2_0_branch1_bn_b"] = arr(16)
    blobs["fc1000_w"] = arr(10, 16)
    blobs["fc1000_b"] = arr(10)
    blobs["res2_0_branch2a_w_momentum"] = arr(4, 8, 1, 1)
    blobs["some_other_blob"] = arr(1)
    return blobs


EXPECTED_C2 = {
    "conv1_w": "stem.conv1.weight",
    "res_conv1_bn_s": "stem.conv1.norm.weight",
    "res_conv1_bn_b": "stem.conv1.norm.bias",
    "res2_0_branch2a_w": "res2.0.conv1.weight",
    "res2_0_branch2a_bn_s": "res2.0.conv1.norm.weight",
    "res2_0_branch2a_bn_b": "res2.0.conv1.norm.bias",
    "res2_0_branch2b_w": "res2.0.conv2.weight",
    "res2_0_branch2b_bn_s": "res2.0.conv2.norm.weight",
    "res2_0_branch2b_bn_b": "res2.0.conv2.norm.bias",
    "res2_0_branch2c_w": "res2.0.conv3.weight",
    "res2_0_branch2c_bn_s": "res2.0.conv3.norm.weight",
    "res2_0_branch2c_bn_b": "res2.0.conv3.norm.bias",
    "res2_1_branch2a_w": "res2.1.conv1.weight",
    "res2_1_branch2a_bn_s": "res2.1.conv1.norm.weight",
    "res2_1_branch2a_bn_b": "res2.1.conv1.norm.bias",
    "res2_1_branch2b_w": "res2.1.conv2.weight",
    "res2_1_branch2b_bn_s": "res2.1.conv2.norm.weight",
    "res2_1_branch2b_bn_b": "res2.1.conv2.norm.bias",
    "res2_1_branch2c_w": "res2.1.conv3.weight",
    "res2_1_branch2c_bn_s": "res2.1.conv3.norm.weight",
    "res2_1_branch2c_bn_b": "res2.1.conv3.norm.bias",
    "res2_0_branch1_w": "res2.0.shortcut.weight",
    "res2_0_branch1_bn_s": "res2.0.shortcut.norm.weight",
    "res2_0_branch1_bn_b": "res2.0.shortcut.norm.bias",
}
NORMS = ["stem.conv1.norm"] + [
    f"res2.{b}.{c}.norm" for b in (0, 1) for c in ("conv1", "conv2", "conv3")
] + ["res2.0.shortcut.norm"]  # fmt: skip


@pytest.mark.parametrize("style", ["python2", "protocol4", "protocol5"])
def test_msra_r50_pkl_reads_and_converts(tmp_path, style):
    blobs = fake_msra_r50()
    path = tmp_path / "R-50.pkl"
    if style == "python2":
        path.write_bytes(py2_pickle(blobs))
    else:
        path.write_bytes(pickle.dumps(blobs, protocol=4 if style == "protocol4" else 5))
    state, kind = read_weights_file(path)
    assert kind == "caffe2"
    assert sorted(state) == sorted(blobs)
    torch.testing.assert_close(state["conv1_w"], torch.from_numpy(blobs["conv1_w"]), rtol=0, atol=0)

    result = caffe2_resnet_to_detectron2(state)
    prefix = "backbone.bottom_up."
    for c2_name, d2_name in EXPECTED_C2.items():
        assert result.mapped[prefix + d2_name] is state[c2_name]
    assert result.not_mapped == {
        "fc1000_w": "ImageNet classifier, not part of the detection backbone",
        "fc1000_b": "ImageNet classifier, not part of the detection backbone",
        "res2_0_branch2a_w_momentum": "optimizer momentum buffer, not a weight",
        "some_other_blob": "not a Caffe2 ResNet backbone name this converter knows",
    }
    # MSRA BNs have no statistics: filled as a fresh detectron2 FrozenBatchNorm2d holds them.
    filled = [f"{prefix}{n}.{s}" for n in NORMS for s in ("running_mean", "running_var")]
    assert result.filled == filled
    assert set(result.mapped) == {prefix + n for n in EXPECTED_C2.values()} | set(filled)
    var = result.mapped[prefix + "stem.conv1.norm.running_var"]
    torch.testing.assert_close(var, torch.full((8,), 1.0 - 1e-5), rtol=0, atol=0)
    assert torch.count_nonzero(result.mapped[prefix + "res2.1.conv2.norm.running_mean"]) == 0
    # Every converted name is one the engine knows.
    renamed, unknown = detectron2_to_retinacli(result.mapped)
    assert unknown == []
    assert renamed["backbone.body.layer1.0.downsample.1.weight"] is state["res2_0_branch1_bn_s"]


def test_caffe2_statistics_present_are_kept_and_gn_is_not_filled():
    state = {
        "res_conv1_bn_s": torch.ones(2),
        "res_conv1_bn_b": torch.zeros(2),
        "res_conv1_bn_rm": torch.full((2,), 0.5),
        "res_conv1_bn_riv": torch.full((2,), 2.0),
        "res3_2_branch2b_gn_s": torch.ones(2),
        "res3_2_branch2b_gn_b": torch.zeros(2),
    }
    result = caffe2_resnet_to_detectron2(state, prefix="")
    assert sorted(result.mapped) == [
        "res3.2.conv2.norm.bias",
        "res3.2.conv2.norm.weight",
        "stem.conv1.norm.bias",
        "stem.conv1.norm.running_mean",
        "stem.conv1.norm.running_var",
        "stem.conv1.norm.weight",
    ]
    assert result.filled == []
    assert result.mapped["stem.conv1.norm.running_var"] is state["res_conv1_bn_riv"]


def test_torchvision_resnet18_pth_reads_and_converts(tmp_path):
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    state, kind = read_weights_file(path)
    assert kind == "torchvision"

    result = torchvision_resnet_to_retinacli(state)
    # Our body has torchvision's names: every backbone key moves under backbone.body, unchanged.
    prefix = "backbone.body."
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.bn1.weight", "layer2.0.downsample.0.weight",
                "layer4.1.bn2.bias", "layer3.0.downsample.1.running_var", "layer1.0.bn1.num_batches_tracked"):
        assert result.mapped[prefix + key] is state[key]
    assert sorted(result.not_mapped) == ["fc.bias", "fc.weight"]
    assert len(result.mapped) + len(result.not_mapped) == len(state)  # every key accounted for
    assert result.filled == []
    # The same names as detectron2's file would give for this backbone, through the name table.
    d2_names, unknown = retinacli_to_detectron2(result.mapped)
    assert unknown == [] and "backbone.bottom_up.res5.1.conv2.norm.bias" in d2_names


def test_torchvision_unknown_key_is_reported():
    result = torchvision_resnet_to_retinacli({"layer1.0.se.fc1.weight": torch.zeros(1)})
    assert result.mapped == {}
    assert result.not_mapped == {
        "layer1.0.se.fc1.weight": "not a torchvision ResNet backbone name this converter knows"
    }


@pytest.mark.parametrize("target", ["os.system", "builtins.exec"])
def test_pickle_with_a_code_global_is_refused_and_nothing_runs(tmp_path, target):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"

    class Evil:
        def __reduce__(self):
            if target == "os.system":
                return (os.system, (command,))
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": np.zeros(1, np.float32), "x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        read_weights_file(path)
    message = str(info.value)
    # protocol 2 writes builtins as __builtin__ (Python 2's name)
    refused = "posix.system" if target == "os.system" else "__builtin__.exec"
    assert message.startswith(f"{path}: refused to load: the pickle asks for the Python global ")
    assert refused in message
    assert "nothing from the file was executed" in message
    assert not marker.exists()


def test_detectron2_zoo_pkl_and_caffe2_blobs(tmp_path):
    zoo = tmp_path / "model_final_5bd44e.pkl"
    weights = {"backbone.bottom_up.stem.conv1.weight": np.ones((2, 3, 1, 1), np.float32)}
    zoo.write_bytes(pickle.dumps({"model": weights, "__author__": "Detectron2 Model Zoo"}))
    state, kind = read_weights_file(zoo)
    assert kind == "detectron2_zoo"
    assert list(state) == ["backbone.bottom_up.stem.conv1.weight"]
    assert state["backbone.bottom_up.stem.conv1.weight"].dtype == torch.float32

    detectron1 = tmp_path / "model_final.pkl"
    detectron1.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros((1,), np.float64)}}))
    state, kind = read_weights_file(detectron1)
    assert (list(state), kind) == (["conv1_w"], "caffe2")
    assert state["conv1_w"].dtype == torch.float64


def test_native_and_detectron2_torch_files(tmp_path):
    model = torch.nn.Linear(2, 2)
    native = tmp_path / "model_0000009.pth"
    save_checkpoint(
        native,
        {
            "model": model.state_dict(),
            "optimizer": {},
            "scheduler": {},
            "iteration": 9,
            "rng": capture_rng_state(),
            "loss_normalizer": 100.0,
            "recipe": {},
        },
    )
    state, kind = read_weights_file(native)
    assert (sorted(state), kind) == (["bias", "weight"], "retinacli")

    d2 = tmp_path / "d2.pth"
    torch.save({"model": {"backbone.fpn_lateral3.weight": torch.ones(1)}, "iteration": 5}, d2)
    state, kind = read_weights_file(d2)
    assert (list(state), kind) == (["backbone.fpn_lateral3.weight"], "detectron2")


def test_golden_detectron2_weights_read_and_map_strictly(golden_dir):
    state, kind = read_weights_file(golden_dir / "model_final.pth")
    assert kind == "detectron2"
    assert len(state) == 136
    renamed, unknown = detectron2_to_retinacli(state)
    assert unknown == [] and len(renamed) == 136


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pth", None, "no such file"),
        ("foreign.pth", "foreign", "is none of the known weight layouts"),
        ("list.pth", "list", "holds a list, not a dict of weights"),
        ("cut.pkl", "truncated", "not a readable pickle: truncated, corrupted"),
        ("strings.pkl", "strings", "entry 'conv1_w' is a str, not a numeric array"),
        ("objects.pkl", "object_array", "is a ndarray of dtype object, not a numeric array"),
    ],
)
def test_bad_weight_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "foreign":
        torch.save({"encoder.w": torch.zeros(1)}, path)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "truncated":
        path.write_bytes(pickle.dumps(fake_msra_r50(), protocol=4)[:1000])
    elif content == "strings":
        path.write_bytes(pickle.dumps({"conv1_w": "not an array"}))
    elif content == "object_array":
        path.write_bytes(pickle.dumps({"conv1_w": np.array([1, "a"], dtype=object)}))
    with pytest.raises(CheckpointError) as info:
        read_weights_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize("opcode", [b"r", b"j"])  # LONG_BINPUT, LONG_BINGET
def test_a_pickle_naming_a_huge_memo_index_is_refused_before_unpickling(tmp_path, opcode, monkeypatch):
    # Python's C unpickler grows its memo table to the index a PUT names: 0x7fffffff would ask for
    # gigabytes (a 451-byte damaged zoo .pkl took 15 s and several GB before this check).
    path = tmp_path / "w.pkl"
    path.write_bytes(b"\x80\x02}q\x00" + opcode + struct.pack("<I", 0x7FFFFFFF) + b".")
    from retinacli.weights.pickles import NumpyOnlyUnpickler

    loads = []
    real = NumpyOnlyUnpickler.load
    monkeypatch.setattr(NumpyOnlyUnpickler, "load", lambda self: loads.append(1) or real(self))
    with pytest.raises(CheckpointError, match=r"memo index 2147483647 at byte 5, after only 3 opcodes"):
        read_weights_file(path)
    assert loads == []  # refused from the opcodes alone


def test_an_empty_pkl_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable pickle.*the file is empty"):
        read_weights_file(path)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_fifo_named_as_weights_is_refused_without_blocking(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    os.mkfifo(path)  # opening it for reading would wait for a writer forever
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_weights_file(path)

"""Fuzzing the weight readers (`pytest -m fuzz`): detectron2 .pkl/.pth, torchvision and
retinacli files, damaged byte by byte, and pickles that name Python functions, give tensors or a
CheckpointError (exit code 2), never a traceback, and never run anything from the file."""

from __future__ import annotations

import io
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retinacli.training.checkpoints import load_checkpoint
from retinacli.weights.readers import read_weights_file
from tests.fuzzing import FUZZ, expect_clean

pytestmark = pytest.mark.fuzz

MARKER = Path(tempfile.gettempdir()) / "retinacli-fuzz-weights-code-ran"


def _torch_bytes(data) -> bytes:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def _files() -> dict[str, tuple[str, bytes]]:
    weights = OrderedDict(
        (f"backbone.bottom_up.res2.0.conv1.{k}", torch.arange(6, dtype=torch.float32).reshape(2, 3)) for k in ("weight", "bias")
    )
    zoo = {"model": {k: v.numpy() for k, v in weights.items()}, "__author__": "fuzz", "matching_heuristics": True}
    caffe2 = {"conv1_w": np.ones((2, 3), np.float32), "res_conv1_bn_s": np.ones(2, np.float32)}
    torchvision = {"conv1.weight": torch.ones(2, 3), "layer1.0.conv1.weight": torch.ones(1), "fc.bias": torch.zeros(2)}
    checkpoint = {
        "format": "retinacli-checkpoint", "format_version": 2, "model": {"backbone.body.conv1.weight": torch.ones(2)},
        "optimizer": {}, "scheduler": {}, "iteration": 3, "rng": {}, "loss_normalizer": 100.0, "recipe": {},
    }
    return {
        "detectron2 .pth": (".pth", _torch_bytes({"model": weights, "iteration": 9})),
        "detectron2 zoo .pkl": (".pkl", pickle.dumps(zoo, protocol=2)),
        "caffe2 .pkl (py2-style)": (".pkl", pickle.dumps({"blobs": caffe2}, protocol=0)),
        "torchvision .pth": (".pth", _torch_bytes(torchvision)),
        "retinacli checkpoint": (".pth", _torch_bytes(checkpoint)),
    }


FILES = _files()


def _read(data: bytes, suffix: str, test: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"weights{suffix}"
        path.write_bytes(data)
        result = expect_clean(lambda: read_weights_file(path), test=test)
        if result is not None:
            state, kind = result
            assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()), kind
        if suffix == ".pth":
            expect_clean(lambda: load_checkpoint(path), test="weights: retinacli checkpoint reader")
    assert not MARKER.exists(), "code from the file ran"


@FUZZ
@given(
    name=st.sampled_from(sorted(FILES)),
    edits=st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 64), st.binary(max_size=16)), min_size=1, max_size=4),
)
def test_damaged_weight_files(name: str, edits):
    suffix, data = FILES[name]
    for start, length, insert in edits:
        start = start % (len(data) + 1)
        data = data[:start] + insert + data[start + length :]
    _read(data, suffix, f"weights: damaged {name}")


DANGEROUS = [("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
             ("posix", "system"), ("builtins", "open"), ("torch", "load"), ("numpy", "load"),
             ("numpy.core.multiarray", "_reconstruct_evil"), ("builtins", "getattr"), ("pathlib", "Path")]


@FUZZ
@given(target=st.sampled_from(DANGEROUS), wrap=st.sampled_from(["top", "in_dict", "in_array_state"]),
       protocol=st.integers(0, 5), suffix=st.sampled_from([".pkl", ".pth"]))
def test_pickles_that_name_python_functions_are_refused_unrun(target, wrap, protocol, suffix):
    module, name = target
    command = f"touch {MARKER}"

    class Call:
        def __reduce__(self):  # pickles as: import module.name, call it with (command,)
            return (_Global(module, name), (command,))

    payload = {"top": Call(), "in_dict": {"model": {"w": Call()}, "__author__": "x"},
               "in_array_state": {"blobs": {"w": np.ones(2), "x": Call()}}}[wrap]
    data = _pickle_with_globals(payload, protocol)
    _read(data, suffix, "weights: pickles naming Python functions")


class _Global:
    """Stands for `module.name` in a pickle without importing it here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants a callable there; never called
        raise AssertionError("not to be called")


def _pickle_with_globals(payload, protocol: int) -> bytes:
    """Pickle bytes where each _Global becomes a GLOBAL opcode naming its module and name."""
    buffer = io.BytesIO()
    _GlobalPickler(buffer, protocol=protocol).dump(payload)
    return buffer.getvalue()


class _GlobalPickler(pickle._Pickler):  # the pure-Python pickler, to write GLOBAL by hand
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

"""Readers of weight files, and backbone name conversions to detectron2's names.

`read_weights_file` tells the formats apart and returns a flat `{name: Tensor}` state dict:

| kind | file | names |
| --- | --- | --- |
| `retinacli` | our checkpoint (`format: retinacli-checkpoint`) | ours (its `model` entry) |
| `detectron2` | a torch file `{"model": state_dict, ...}` (detectron2 training output), or a flat state dict whose names start with `backbone.` | detectron2's |
| `detectron2_zoo` | a pickle `{"model": {name: ndarray}, "__author__": ...}` (detectron2 model zoo `.pkl`) | detectron2's, or backbone-relative ones (`stem.conv1.weight`) for files made by detectron2's `convert-torchvision-to-d2.py` |
| `caffe2` | a pickle of `{name: ndarray}` or `{"blobs": {...}}` (MSRA `R-50.pkl`, Detectron1) | Caffe2's (`res2_0_branch2a_w`) |
| `torchvision` | a torch file holding a torchvision ResNet state dict | torchvision's (`layer1.0.conv1.weight`) |

Torch files are read with `torch.load(weights_only=True)`. Pickles (`.pkl`) are read with a
restricted unpickler that can only rebuild numpy arrays, dtypes and scalars (and OrderedDicts):
any other global (a function, a class) stops the load with a CheckpointError before anything is
called. `encoding="latin1"` reads the Python 2 pickles of the Caffe2 era.

`caffe2_resnet_to_detectron2` and `torchvision_resnet_to_detectron2` rename ResNet backbone
weights to detectron2's backbone names (`backbone.bottom_up.res2.0.conv1.weight`) and report every
key they did not map, with the reason.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from retinacli.errors import CheckpointError
from retinacli.train.checkpoints import FORMAT_MARKER, load_torch_file

WeightsKind = Literal["retinacli", "detectron2", "detectron2_zoo", "caffe2", "torchvision"]

DETECTRON2_BACKBONE_PREFIX = "backbone.bottom_up."
FROZEN_BN_EPS = 1e-5


# ----------------------------------------------------------------------------- safe pickles


def _numpy_attr(module_names: tuple[str, ...], attr: str) -> Any:
    for name in module_names:
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[f'{m}.{attr}' for m in module_names]}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles of protocol <= 2 store bytes as _codecs.encode(str, "latin1").
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    reconstruct = _numpy_attr(multiarray, "_reconstruct")
    scalar = _numpy_attr(multiarray, "scalar")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): OrderedDict,
    }
    for module in multiarray:
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    try:
        frombuffer = _numpy_attr(numeric, "_frombuffer")
    except ImportError:  # numpy < 1.16 has no protocol-5 path; such pickles cannot exist then
        frombuffer = None
    if frombuffer is not None:
        for module in numeric:
            allowed[(module, "_frombuffer")] = frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays, dtypes and scalars, plain containers and
    OrderedDicts. `find_class` returns objects from a fixed table; every other global raises
    `RefusedGlobal` before it is imported or called."""

    def __init__(self, file: io.BufferedIOBase, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def load_numpy_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle `path` with `NumpyOnlyUnpickler` (encoding latin1); failures as CheckpointError."""
    target = Path(path)
    _check_file(target)
    try:
        with open(target, "rb") as handle:
            return NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise CheckpointError(
            f"{target}: refused to load: the pickle asks for the Python global "
            f"{exc.qualified_name}, and only numpy arrays are allowed in a weights .pkl; nothing "
            "from the file was executed; do not use this file unless you know who made it"
        ) from exc
    except Exception as exc:  # pickle raises many types for damaged data
        raise CheckpointError(
            f"{target}: not a readable pickle: truncated, corrupted or of another format "
            f"({type(exc).__name__}: {exc}); download or copy the file again"
        ) from exc


def _check_file(target: Path) -> None:
    if not target.exists():
        raise CheckpointError(f"{target}: no such file; check the path")
    if target.is_dir():
        raise CheckpointError(f"{target}: is a directory, not a weights file; name the file")


# ----------------------------------------------------------------------------- reading


def _array_to_tensor(value: Any, target: Path, key: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype != np.dtype("O"):
        try:
            return torch.from_numpy(np.ascontiguousarray(value).copy())
        except TypeError:
            pass
    raise CheckpointError(
        f"{target}: entry {key!r} is a {type(value).__name__}"
        f"{' of dtype ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, "
        "not a numeric array; the file is not a weights file this reader knows"
    )


def _tensor_dict(entries: Mapping[Any, Any], target: Path, where: str) -> dict[str, Tensor]:
    result: dict[str, Tensor] = {}
    for key, value in entries.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{target}: {where} has a non-string key {key!r}; not weights")
        result[key] = _array_to_tensor(value, target, key)
    return result


def _looks_torchvision_resnet(keys: list[str]) -> bool:
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def read_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], WeightsKind]:
    """Read a weights file of any supported format (module table) as `({name: Tensor}, kind)`.

    Tensors are on CPU, in the file's dtype, named as in the file (no renaming here). Every
    problem raises CheckpointError naming the file: missing, unreadable, refused pickle globals,
    or a layout none of the formats has.
    """
    target = Path(path)
    _check_file(target)
    if target.suffix == ".pkl" and not zipfile.is_zipfile(target):
        return _read_pickle_weights(target)
    data = load_torch_file(target)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{target}: holds a {type(data).__name__}, not a dict of weights; pass a retinacli "
            "checkpoint, a detectron2 .pth/.pkl or torchvision ResNet weights"
        )
    if data.get("format") == FORMAT_MARKER:
        if not isinstance(data.get("model"), dict):
            raise CheckpointError(f"{target}: retinacli checkpoint without a model state; damaged")
        return _tensor_dict(data["model"], target, "model"), "retinacli"
    if isinstance(data.get("model"), dict):
        return _tensor_dict(data["model"], target, "model"), "detectron2"
    if data and all(isinstance(v, Tensor) for v in data.values()):
        keys = [str(k) for k in data]
        if _looks_torchvision_resnet(keys):
            return _tensor_dict(data, target, "state dict"), "torchvision"
        if any(k.startswith("backbone.") for k in keys):
            return _tensor_dict(data, target, "state dict"), "detectron2"
    raise CheckpointError(
        f"{target}: a dict with keys {sorted(map(str, data))[:8]} is none of the known weight "
        "layouts; pass a retinacli checkpoint, a detectron2 .pth ({'model': ...}) or .pkl, "
        "or a torchvision ResNet state dict"
    )


def _read_pickle_weights(target: Path) -> tuple[dict[str, Tensor], WeightsKind]:
    data = load_numpy_pickle(target)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{target}: holds a {type(data).__name__}, not a dict of arrays; not a weights .pkl"
        )
    if "model" in data and "__author__" in data:
        if not isinstance(data["model"], dict):
            raise CheckpointError(f"{target}: its 'model' entry is not a dict of arrays")
        return _tensor_dict(data["model"], target, "model"), "detectron2_zoo"
    blobs = data["blobs"] if isinstance(data.get("blobs"), dict) else data
    return _tensor_dict(blobs, target, "blobs"), "caffe2"


# ----------------------------------------------------------------------------- conversions


@dataclass
class BackboneConversion:
    """The result of renaming backbone weights to detectron2 names.

    mapped: detectron2 name -> tensor (the input tensors, not copies, plus `filled` ones).
    not_mapped: source name -> why it was left out (classifier, step counters, unknown names).
    filled: detectron2 names of running statistics created because the file has none.
    """

    mapped: dict[str, Tensor] = field(default_factory=dict)
    not_mapped: dict[str, str] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)


_C2_PARAM = {"w": "weight", "b": "bias"}
_C2_NORM = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_C2_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_STEM_CONV = re.compile(r"^conv1_(?P<p>w|b)$")
_C2_STEM_NORM = re.compile(r"^res_conv1_(?P<n>bn|gn)_(?P<p>s|b|rm|riv)$")
_C2_BLOCK_CONV = re.compile(r"^res(?P<s>[2-5])_(?P<i>\d+)_branch(?P<br>1|2a|2b|2c)_(?P<p>w|b)$")
_C2_BLOCK_NORM = re.compile(
    r"^res(?P<s>[2-5])_(?P<i>\d+)_branch(?P<br>1|2a|2b|2c)_(?P<n>bn|gn)_(?P<p>s|b|rm|riv)$"
)
_C2_CLASSIFIER = re.compile(r"^(fc1000|pred)_(w|b)$")


def caffe2_resnet_to_detectron2(
    state_dict: Mapping[str, Tensor],
    *,
    prefix: str = DETECTRON2_BACKBONE_PREFIX,
    frozen_bn_eps: float = FROZEN_BN_EPS,
) -> BackboneConversion:
    """Rename MSRA/Caffe2 ResNet weights (e.g. detectron2's ImageNet `R-50.pkl`) to detectron2
    backbone names under `prefix`, following detectron2's `convert_basic_c2_names`:

    | Caffe2 | detectron2 (after `prefix`) |
    | --- | --- |
    | `conv1_w` | `stem.conv1.weight` |
    | `res_conv1_bn_{s,b,rm,riv}` | `stem.conv1.norm.{weight,bias,running_mean,running_var}` |
    | `res{S}_{I}_branch{1,2a,2b,2c}_{w,b}` | `res{S}.{I}.{shortcut,conv1,conv2,conv3}.{weight,bias}` |
    | `res{S}_{I}_branch..._bn_{s,b,rm,riv}` | `res{S}.{I}.<conv>.norm.{...}` (`_gn_` likewise) |
    | `fc1000_{w,b}`, `pred_{w,b}` | not mapped: ImageNet classifier |
    | `*_momentum` | not mapped: optimizer state |

    MSRA files keep only each BatchNorm's scale and bias (the statistics were folded in). For
    every BN with a weight but no running statistics we add `running_mean = 0` and
    `running_var = 1 - frozen_bn_eps`: the values a fresh detectron2 FrozenBatchNorm2d holds and
    keeps when such a file is loaded, which make the layer exactly `x * weight + bias`.
    """
    result = BackboneConversion()
    bn_modules: dict[str, Tensor] = {}  # norm module name -> its weight
    for key, tensor in state_dict.items():
        if key.endswith("_momentum"):
            result.not_mapped[key] = "optimizer momentum buffer, not a weight"
            continue
        if _C2_CLASSIFIER.match(key):
            result.not_mapped[key] = "ImageNet classifier, not part of the detection backbone"
            continue
        name = None
        if match := _C2_STEM_CONV.match(key):
            name = f"stem.conv1.{_C2_PARAM[match['p']]}"
        elif match := _C2_STEM_NORM.match(key):
            module = "stem.conv1.norm"
            name = f"{module}.{_C2_NORM[match['p']]}"
            if match["n"] == "bn" and match["p"] == "s":
                bn_modules[module] = tensor
        elif match := _C2_BLOCK_CONV.match(key):
            conv = _C2_BRANCH[match["br"]]
            name = f"res{match['s']}.{int(match['i'])}.{conv}.{_C2_PARAM[match['p']]}"
        elif match := _C2_BLOCK_NORM.match(key):
            conv = _C2_BRANCH[match["br"]]
            module = f"res{match['s']}.{int(match['i'])}.{conv}.norm"
            name = f"{module}.{_C2_NORM[match['p']]}"
            if match["n"] == "bn" and match["p"] == "s":
                bn_modules[module] = tensor
        if name is None:
            result.not_mapped[key] = "not a Caffe2 ResNet backbone name this converter knows"
            continue
        _put(result, prefix + name, tensor, key)
    _fill_running_stats(result, bn_modules, prefix=prefix, eps=frozen_bn_eps)
    return result


_TV_STEM = re.compile(
    r"^(?:conv1\.(?P<cp>weight|bias)|bn1\.(?P<np>weight|bias|running_mean|running_var))$"
)
_TV_BLOCK = re.compile(
    r"^layer(?P<l>[1-4])\.(?P<i>\d+)\."
    r"(?:conv(?P<c>[1-3])\.(?P<cp>weight|bias)"
    r"|bn(?P<b>[1-3])\.(?P<np>weight|bias|running_mean|running_var)"
    r"|downsample\.0\.(?P<dcp>weight|bias)"
    r"|downsample\.1\.(?P<dnp>weight|bias|running_mean|running_var))$"
)


def torchvision_resnet_to_detectron2(
    state_dict: Mapping[str, Tensor], *, prefix: str = DETECTRON2_BACKBONE_PREFIX
) -> BackboneConversion:
    """Rename torchvision ResNet weights (`resnet50-*.pth`, resnet18 ...) to detectron2 backbone
    names under `prefix`, as detectron2's `convert-torchvision-to-d2.py` does:

    | torchvision | detectron2 (after `prefix`) |
    | --- | --- |
    | `conv1.weight` | `stem.conv1.weight` |
    | `bn1.*` | `stem.conv1.norm.*` |
    | `layer{L}.{I}.conv{K}.weight` | `res{L+1}.{I}.conv{K}.weight` |
    | `layer{L}.{I}.bn{K}.*` | `res{L+1}.{I}.conv{K}.norm.*` |
    | `layer{L}.{I}.downsample.0.weight` | `res{L+1}.{I}.shortcut.weight` |
    | `layer{L}.{I}.downsample.1.*` | `res{L+1}.{I}.shortcut.norm.*` |
    | `fc.*` | not mapped: ImageNet classifier |
    | `*.num_batches_tracked` | not mapped: BatchNorm step counter (FrozenBN has none; BN with a momentum never reads it) |

    torchvision BatchNorms carry real running statistics, so nothing is filled.
    """
    result = BackboneConversion()
    for key, tensor in state_dict.items():
        if key.endswith(".num_batches_tracked"):
            result.not_mapped[key] = "BatchNorm step counter, unused by detectron2's norms"
            continue
        if key.startswith("fc."):
            result.not_mapped[key] = "ImageNet classifier, not part of the detection backbone"
            continue
        name = None
        if match := _TV_STEM.match(key):
            name = f"stem.conv1.{match['cp']}" if match["cp"] else f"stem.conv1.norm.{match['np']}"
        elif match := _TV_BLOCK.match(key):
            block = f"res{int(match['l']) + 1}.{int(match['i'])}"
            if match["cp"]:
                name = f"{block}.conv{match['c']}.{match['cp']}"
            elif match["np"]:
                name = f"{block}.conv{match['b']}.norm.{match['np']}"
            elif match["dcp"]:
                name = f"{block}.shortcut.{match['dcp']}"
            else:
                name = f"{block}.shortcut.norm.{match['dnp']}"
        if name is None:
            result.not_mapped[key] = "not a torchvision ResNet backbone name this converter knows"
            continue
        _put(result, prefix + name, tensor, key)
    return result


def _put(result: BackboneConversion, name: str, tensor: Tensor, source: str) -> None:
    if name in result.mapped:
        raise CheckpointError(
            f"weights: {source} maps to {name}, which another key already filled; the file "
            "holds duplicate backbone weights and cannot be converted"
        )
    result.mapped[name] = tensor


def _fill_running_stats(
    result: BackboneConversion, bn_modules: Mapping[str, Tensor], *, prefix: str, eps: float
) -> None:
    for module, weight in bn_modules.items():
        stats: dict[str, Callable[[], Tensor]] = {
            "running_mean": lambda w=weight: torch.zeros_like(w),
            "running_var": lambda w=weight: torch.ones_like(w) - eps,
        }
        for stat, make in stats.items():
            name = f"{prefix}{module}.{stat}"
            if name not in result.mapped:
                result.mapped[name] = make()
                result.filled.append(name)

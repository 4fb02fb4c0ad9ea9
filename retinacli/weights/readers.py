"""Read a weights file of any supported format as a flat `{name: Tensor}` state dict.

| kind | file | names |
| --- | --- | --- |
| `retinacli` | our checkpoint or model file (`format: retinacli-checkpoint`), or a flat state dict of our names (`backbone.body.*`) | ours |
| `detectron2` | a torch file `{"model": state_dict, ...}` (detectron2 training output), or a flat state dict whose names start with `backbone.` | detectron2's |
| `detectron2_zoo` | a pickle `{"model": {name: ndarray}, "__author__": ...}` (detectron2 model zoo `.pkl`) | detectron2's, or backbone-relative ones (`stem.conv1.weight`) for files made by detectron2's `convert-torchvision-to-d2.py` |
| `caffe2` | a pickle of `{name: ndarray}` or `{"blobs": {...}}` (MSRA `R-50.pkl`, Detectron1) | Caffe2's (`res2_0_branch2a_w`) |
| `torchvision` | a torch file holding a torchvision ResNet state dict | torchvision's (`layer1.0.conv1.weight`) |

Torch files are read with `files.load_torch` (`weights_only=True`), pickles with
`pickles.load_numpy_pickle`: nothing in a file is executed. Names are returned as in the file;
`names` renames them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from retinacli.errors import CheckpointError
from retinacli.files import is_retinacli_file, load_torch
from retinacli.weights.pickles import check_file, load_numpy_pickle

WeightsKind = Literal["retinacli", "detectron2", "detectron2_zoo", "caffe2", "torchvision"]

RETINACLI_PREFIX = "backbone.body."


def read_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], WeightsKind]:
    """Read a weights file of any supported format (module table) as `({name: Tensor}, kind)`.

    Tensors are on CPU, in the file's dtype, named as in the file. Every problem raises
    CheckpointError naming the file: missing, unreadable, refused pickle globals, or a layout none
    of the formats has.
    """
    target = Path(path)
    check_file(target)
    if target.suffix == ".pkl" and not zipfile.is_zipfile(target):
        return _read_pickle_weights(target)
    data = load_torch(target)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{target}: holds a {type(data).__name__}, not a dict of weights; pass a retinacli "
            "checkpoint, a detectron2 .pth/.pkl or torchvision ResNet weights"
        )
    if is_retinacli_file(data):
        if not isinstance(data.get("model"), dict):
            raise CheckpointError(f"{target}: retinacli checkpoint without a model state; damaged")
        return _tensor_dict(data["model"], target, "model"), "retinacli"
    if isinstance(data.get("model"), dict):
        return _tensor_dict(data["model"], target, "model"), "detectron2"
    if data and all(isinstance(v, Tensor) for v in data.values()):
        keys = [str(k) for k in data]
        if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
            return _tensor_dict(data, target, "state dict"), "torchvision"
        if any(k.startswith(RETINACLI_PREFIX) for k in keys):
            return _tensor_dict(data, target, "state dict"), "retinacli"
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

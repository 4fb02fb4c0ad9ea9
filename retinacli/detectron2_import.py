"""`retina import-detectron2`: a detectron2 config + weights become a recipe and a model file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retinacli.build import build_model
from retinacli.detectron2_config import read_detectron2_config, translate
from retinacli.engine.d2_names import detectron2_to_retinacli
from retinacli.errors import CheckpointError
from retinacli.model_files import ClassInfo, describe_state_mismatch, save_model_file
from retinacli.recipe import dump_recipe, validate_recipe
from retinacli.train.checkpoints import atomic_write, load_torch_file

# Keys detectron2 state dicts may hold that carry no learned weights of ours.
_HARMLESS_UNMAPPED = ("pixel_mean", "pixel_std")


@dataclass
class ImportResult:
    """What an import wrote and what it could not carry over."""

    recipe_path: Path
    model_path: Path
    ignored_config_keys: list[str] = field(default_factory=list)
    unused_weight_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_detectron2(
    config_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
) -> ImportResult:
    """Translate `config_path`, load `weights_path` into the model it describes (strictly), and
    write `out_dir/recipe.yaml` and `out_dir/model.pth`.

    Every model parameter must come from the weights file with the same shape; weights entries
    the model does not use are reported, never silently dropped. Nothing is written unless
    everything checks out.
    """
    config_path, weights_path, out = Path(config_path), Path(weights_path), Path(out_dir)
    translation = translate(read_detectron2_config(config_path), source=str(config_path))
    recipe = validate_recipe(translation.recipe, source=f"{config_path} (translated)")
    model = build_model(recipe.model)
    state = read_detectron2_weights(weights_path)
    mapped, unmapped = detectron2_to_retinacli(state)
    expected = model.state_dict()
    mismatch = describe_state_mismatch(expected, {k: v for k, v in mapped.items() if k in expected})
    if mismatch:
        raise CheckpointError(
            f"{weights_path}: these weights do not fit the model {config_path} describes "
            f"({mismatch}); pass the weights trained with this config"
        )
    model.load_state_dict({k: mapped[k] for k in expected}, strict=True)
    unused = [k for k in unmapped if not k.endswith(_HARMLESS_UNMAPPED)]
    unused += [k for k in mapped if k not in expected]
    num_classes = recipe.model.head.num_classes
    if class_names is not None and len(class_names) != num_classes:
        raise CheckpointError(
            f"--classes names {len(class_names)} classes but the config has {num_classes}"
        )
    classes = (
        ClassInfo(tuple(class_names), tuple(range(1, num_classes + 1)))
        if class_names
        else ClassInfo.default(num_classes)
    )
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.yaml"
    header = (
        f"# Translated by `retina import-detectron2` from {config_path}\n"
        "# Set data.train.dataset / data.test.dataset before training or evaluating with it.\n"
    )
    with atomic_write(recipe_path, mode="w") as handle:
        handle.write(header + dump_recipe(recipe))
    model_path = save_model_file(out / "model.pth", model=model, recipe=recipe, classes=classes)
    return ImportResult(
        recipe_path=recipe_path,
        model_path=model_path,
        ignored_config_keys=translation.ignored_keys,
        unused_weight_keys=unused,
        notes=translation.notes,
    )


def read_detectron2_weights(path: Path) -> dict[str, torch.Tensor]:
    """A detectron2 state dict from a `.pth` (weights_only) or a model-zoo `.pkl` file."""
    if path.suffix == ".pkl":
        from retinacli.weights import read_weights_file

        state, _ = read_weights_file(path)
        return state
    data: Any = load_torch_file(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"{path}: not a detectron2 weights file (expected {{'model': state_dict}} or a state "
            "dict of tensors)"
        )
    return dict(data)

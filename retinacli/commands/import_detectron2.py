"""`retina import-detectron2`: a detectron2 config (+ weights) becomes a recipe (and a model file)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from retinacli.build import build_model
from retinacli.commands.model_files import check_recipe_fits_tensors, save_model_file
from retinacli.errors import CheckpointError, UsageError
from retinacli.evaluation.classes import ClassInfo
from retinacli.files import check_output_dir, prepare_output_dir, write_text
from retinacli.recipe import dump_recipe, validate_recipe
from retinacli.recipe.detectron2 import read_detectron2_config, translate
from retinacli.weights.loading import load_exactly
from retinacli.weights.names import detectron2_to_retinacli
from retinacli.weights.readers import read_weights_file

RECIPE_NAME = "recipe.yaml"
MODEL_NAME = "model.pth"
COMMAND = "import-detectron2"
# Keys detectron2 state dicts may hold that carry no learned weights of ours.
_HARMLESS_UNMAPPED = ("pixel_mean", "pixel_std")


@dataclass
class ImportResult:
    """What an import wrote and what it could not carry over (`model_path` None without weights)."""

    recipe_path: Path
    model_path: Path | None
    ignored_config_keys: list[str] = field(default_factory=list)
    unused_weight_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_detectron2(
    config_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Translate `config_path` and write `output_dir/recipe.yaml`; with `weights_path`, also load
    those weights into the model the recipe describes (strictly) and write `output_dir/model.pth`.

    Every model parameter must come from the weights file with the same shape; weights entries
    the model does not use are reported, never silently dropped. Nothing is written unless
    everything checks out; `output_dir` must be new, empty, or an earlier import's output (then
    only with `overwrite`): see `files.prepare_output_dir`.
    """
    config_path, out = Path(config_path), Path(output_dir)
    translation = translate(read_detectron2_config(config_path), source=str(config_path))
    recipe = validate_recipe(translation.recipe, source=f"{config_path} (translated)")
    num_classes = recipe.model.head.num_classes
    if class_names is not None and len(class_names) != num_classes:
        raise UsageError(
            f"--classes names {len(class_names)} classes but the config has {num_classes} "
            "(MODEL.RETINANET.NUM_CLASSES); name each class once, in the model's order"
        )
    recipe_path, model_path = out / RECIPE_NAME, out / MODEL_NAME
    check_output_dir(out, command=COMMAND, overwrite=overwrite)
    model, unused = None, []
    if weights_path is not None:
        state, kind = read_weights_file(weights_path)
        if kind not in ("detectron2", "detectron2_zoo"):
            raise CheckpointError(
                f"{weights_path}: holds {kind} weights, not a detectron2 model; pass the .pth or "
                ".pkl detectron2 trained with this config (ImageNet backbones go in the recipe's "
                "model.weights instead)"
            )
        mapped, unmapped = detectron2_to_retinacli(state)
        fix = f"these weights do not belong to {config_path}; pass the weights trained with it"
        with torch.device("meta"):  # the names and shapes the config implies, nothing allocated
            names = build_model(recipe.model).state_dict().keys()
        # The config is a stranger's too: the model it describes is built only once the weights
        # are known to fit it.
        check_recipe_fits_tensors(
            recipe.model, {k: v for k, v in mapped.items() if k in names}, source=str(weights_path), fix=fix
        )
        model = build_model(recipe.model)
        expected = model.state_dict()
        load_exactly(
            model,
            {k: v for k, v in mapped.items() if k in expected},
            source=str(weights_path),
            fix=fix,
        )
        unused = [k for k in unmapped if not k.endswith(_HARMLESS_UNMAPPED)]
        unused += [k for k in mapped if k not in expected]
    header = (
        f"# Translated by `retina import-detectron2` from {config_path}\n"
        "# Set data.train.dataset / data.test.dataset before training or evaluating with it.\n"
    )
    prepare_output_dir(out, command=COMMAND, overwrite=overwrite)
    write_text(recipe_path, header + dump_recipe(recipe))
    if model is not None:
        classes = (
            ClassInfo(tuple(class_names), tuple(range(1, num_classes + 1)))
            if class_names
            else ClassInfo.default(num_classes)
        )
        save_model_file(model_path, model=model, recipe=recipe, classes=classes)
    return ImportResult(
        recipe_path=recipe_path,
        model_path=model_path if model is not None else None,
        ignored_config_keys=translation.ignored_keys,
        unused_weight_keys=unused,
        notes=translation.notes,
    )

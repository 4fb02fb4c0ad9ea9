"""`retina import-detectron2`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import OverwriteOption, app, console, output_dir_option, shown


@app.command("import-detectron2")
def import_detectron2_command(
    config: Annotated[Path, typer.Argument(help="detectron2 config YAML (with _BASE_ chains).", show_default=False)],
    output_dir: Annotated[Path, output_dir_option("Folder for recipe.yaml (and model.pth).")],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="detectron2 weights (.pth or model-zoo .pkl) trained with CONFIG; without them only the recipe is written.",
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names, in the model's class order.", show_default=False),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Turn a detectron2 RetinaNet config (+ weights) into a recipe (and a model file)."""

    from retinacli.commands.import_detectron2 import import_detectron2

    names = [n.strip() for n in classes.split(",")] if classes else None
    result = import_detectron2(config, weights, output_dir, class_names=names, overwrite=overwrite)
    console.print(f"wrote {shown(str(result.recipe_path))}", highlight=False)
    if result.model_path is not None:
        console.print(f"wrote {shown(str(result.model_path))}", highlight=False)
    for key in result.ignored_config_keys:
        console.print(f"[yellow]ignored config key[/] {shown(key)} (not used by RetinaNet here)", highlight=False)
    for key in result.unused_weight_keys:
        console.print(f"[yellow]unused weight[/] {shown(key)}", highlight=False)
    for note in result.notes:
        console.print(f"[cyan]note[/] {shown(note)}", highlight=False)

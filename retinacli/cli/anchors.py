"""`retina anchors`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import OverwriteFileOption, SetOption, app, console


@app.command("anchors")
def anchors_command(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe YAML file \\[default: the default recipe, detectron2's RetinaNet].", show_default=False),
    ] = None,
    set_: SetOption = None,
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="model.anchors.sizes: '32..512', '32,64,128,256,512' or [[32, 40.3], ...].", show_default=False),
    ] = None,
    scales: Annotated[
        int | None, typer.Option("--scales", help="model.anchors.scales: sizes per level for the compact forms.", show_default=False)
    ] = None,
    aspect_ratios: Annotated[
        str | None,
        typer.Option("--aspect-ratios", "--ratios", help="model.anchors.aspect_ratios (h/w) of every level, e.g. 0.5,1,2.", show_default=False),
    ] = None,
    offset: Annotated[
        float | None, typer.Option("--offset", help="model.anchors.offset: anchor centre offset in strides, [0, 1).", show_default=False)
    ] = None,
    strides: Annotated[
        str | None,
        typer.Option("--strides", help="Level strides the FPN builds, e.g. 8,16,32,64,128 (sets model.fpn.in_features).", show_default=False),
    ] = None,
    image_size: Annotated[
        str | None,
        typer.Option("--image-size", help="Input HxW \\[default: the recipe's test short side x max size].", show_default=False),
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Draw the anchors over this picture (test-resized).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="PNG file: the cell anchors to scale, or with --coverage the IoU histogram.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    coverage: Annotated[
        bool, typer.Option("--coverage", help="Best anchor IoU of every training box: positive, low-quality only or none.")
    ] = False,
    suggest: Annotated[
        bool, typer.Option("--suggest", help="Also propose sizes and ratios that raise coverage (implies --coverage).")
    ] = False,
    worst: Annotated[int, typer.Option("--worst", help="Worst-covered boxes to list.")] = 10,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Show the anchors of every pyramid level; with --coverage, whether the training boxes will ever match them."""
    from retinacli.cli.anchors_report import render, result_json
    from retinacli.commands.anchors import anchors

    result = anchors(
        recipe,
        set_ or [],
        sizes=sizes,
        scales=scales,
        aspect_ratios=aspect_ratios,
        offset=offset,
        strides=strides,
        image_size=image_size,
        image=image,
        out=out,
        coverage=coverage,
        suggest=suggest,
        worst=worst,
        overwrite=overwrite,
    )
    if as_json:
        typer.echo(json.dumps(result_json(result)))
    else:
        render(result, console)

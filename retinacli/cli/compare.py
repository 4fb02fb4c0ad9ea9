"""`retina compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import JsonOption, app, console, shown


@app.command("compare")
def compare_command(
    first: Annotated[Path, typer.Argument(help="Evaluation folder A (a `retina eval` output).", show_default=False)],
    second: Annotated[Path, typer.Argument(help="Evaluation folder B, of the same dataset.", show_default=False)],
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="The evaluated COCO json \\[default: the one both metrics.json name; its sha256 must match].",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Resamplings of the images.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Is B better than A, or is it noise? The AP difference of two evaluations of the same
    images with a 95% interval from a paired bootstrap over the images."""
    from retinacli.cli.render import ap_text
    from retinacli.commands.compare import compare

    result = compare(first, second, dataset=dataset, samples=samples, seed=seed)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    console.print(
        f"A {shown(first)}: AP {ap_text(result.first_ap['AP'])}, AP50 {ap_text(result.first_ap['AP50'])}\n"
        f"B {shown(second)}: AP {ap_text(result.second_ap['AP'])}, AP50 {ap_text(result.second_ap['AP50'])}\n"
        f"{result.num_images} images of {shown(result.dataset)}, {samples} paired resamplings",
        highlight=False,
        soft_wrap=True,
    )
    for name in ("AP", "AP50"):
        console.print(result.sentence(name), highlight=False)

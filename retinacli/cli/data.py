"""`retina data check | show | make-shapes`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from retinacli.cli.app import (
    OverwriteOption,
    RecipeArg,
    SetOption,
    app,
    console,
    error_console,
    output_dir_option,
)

data_app = typer.Typer(
    help="Check, look at and make datasets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    recipe: RecipeArg,
    set_: SetOption = None,
    split: Annotated[
        Literal["train", "test", "both"], typer.Option("--split", help="Which dataset: train, test or both.")
    ] = "both",
    decode: Annotated[
        bool, typer.Option("--decode", help="Also decode every image (finds truncated files; slower).")
    ] = False,
) -> None:
    """Validate the recipe's datasets and summarise them; exit code 2 when there are errors."""
    from rich.markup import escape
    from rich.table import Table

    from retinacli.commands.data import check_datasets

    splits = ("train", "test") if split == "both" else (split,)
    errors = 0
    for check in check_datasets(recipe, set_ or [], splits=splits, decode=decode):
        report = check.report
        if report is None:
            console.print(f"data.{check.name}.dataset: not set", highlight=False)
            continue
        summary = Table(title=escape(f"data.{check.name}.dataset: {check.annotations}"), show_header=False)
        summary.add_row("images", f"{report.num_images} ({report.num_images_without_boxes} without boxes)")
        summary.add_row("boxes", f"{report.num_boxes} (+{report.num_crowd_boxes} crowd, ignored in training)")
        for size, count in report.size_counts.items():
            summary.add_row(f"  {size}", str(count))
        for class_name, count in report.boxes_per_class.items():
            summary.add_row(escape(f"  class {class_name}"), str(count))
        summary.add_row("problems", f"{len(report.errors)} errors, {len(report.fixed)} fixed")
        console.print(summary)
        if report.problems:
            problems = Table("severity", "problem", title="problems")
            for problem in report.problems[:50]:
                problems.add_row(problem.severity, escape(problem.message))
            if len(report.problems) > 50:
                problems.add_row("...", f"{len(report.problems) - 50} more")
            console.print(problems)
        errors += len(report.errors)
    if errors:
        error_console.print(
            f"[bold red]error:[/] {errors} problem(s) must be fixed before training "
            "(or set data.fix_bad_boxes: true for fixable box problems)"
        )
        raise typer.Exit(2)


@data_app.command("show")
def data_show(
    recipe: RecipeArg,
    output_dir: Annotated[Path, output_dir_option("Folder for the pictures.")],
    set_: SetOption = None,
    n: Annotated[int, typer.Option("--n", min=1, help="How many images.")] = 16,
    augmented: Annotated[
        bool, typer.Option("--augmented", help="Show them as training augments them (resize, flip).")
    ] = False,
    split: Annotated[Literal["train", "test"], typer.Option("--split", help="train or test.")] = "train",
    overwrite: OverwriteOption = False,
) -> None:
    """Write pictures of images with their boxes and class names, optionally augmented."""
    from retinacli.commands.data import show

    written = show(
        recipe, set_ or [], output_dir=output_dir, num_images=n, augmented=augmented, split=split, overwrite=overwrite
    )
    for path in written:
        console.print(str(path), highlight=False, soft_wrap=True)


@data_app.command("make-shapes")
def data_make_shapes(
    output_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into.", show_default=False)],
    images: Annotated[int, typer.Option("--images", min=1, help="Training images (the test split gets a quarter).")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same images and boxes.")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Write the synthetic shapes dataset (images + COCO json, train and test splits)."""
    from retinacli.commands.data import write_shapes

    splits = write_shapes(output_dir, num_images=images, seed=seed, overwrite=overwrite)
    for name, written in zip(("train", "test"), splits, strict=True):
        console.print(
            f"{name}: {written.num_images} images, annotations {written.annotations}, images {written.images}",
            highlight=False,
        )

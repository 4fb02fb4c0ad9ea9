"""The `retina` command: parses options, calls one function per command, renders with Rich.

Heavy modules (torch, the engine) are imported inside commands so `retina --help` is instant.
Every user-reachable problem raises a `RetinaError`; `main` turns it into one clear screen and
its exit code (2 for usage and recipe errors). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from retinacli import __version__
from retinacli.errors import RecipeError, RetinaError

app = typer.Typer(
    name="retina",
    help="Train, evaluate and inspect RetinaNet object detectors from typed YAML recipes.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
error_console = Console(stderr=True)
_state = {"debug": False}

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe key: --set solver.base_lr=0.02 (repeatable; parsed by the key's type).",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"retina {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command("inspect-config")
def inspect_config(
    recipe: RecipeArg,
    set_: SetOption = None,
    diff: Annotated[bool, typer.Option("--diff", help="Show only what differs from the defaults.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the fully resolved, validated recipe (YAML that loads back to the same recipe)."""
    from retinacli.recipe import diff_from_defaults, dump_recipe, load_recipe, recipe_to_dict

    resolved = load_recipe(recipe, set_ or [])
    data: dict[str, Any] = diff_from_defaults(resolved) if diff else recipe_to_dict(resolved)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif diff and not data:
        console.print("# the recipe equals the defaults")
    else:
        typer.echo(dump_recipe(data), nl=False)


@app.command("lr-plot")
def lr_plot(
    recipe: RecipeArg,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also save the curve as a PNG here.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print [{"iteration": i, "lr": x}, ...] for every iteration.')
    ] = False,
) -> None:
    """Show the recipe's learning-rate curve: warmup, steps or cosine (no dataset needed)."""
    from rich.table import Table

    from retinacli.build import schedule_arguments
    from retinacli.recipe import load_recipe
    from retinacli.train import lr_plot as plot

    solver = load_recipe(recipe, set_ or []).solver
    arguments = schedule_arguments(solver)
    try:
        curve = plot.lr_curve(**arguments)
    except ValueError as exc:
        raise RecipeError(f"{recipe}: solver: {exc}") from None
    if as_json:
        typer.echo(json.dumps(plot.curve_json(curve)))
        return
    points = plot.key_points(**arguments)
    marks = plot.chart_marks(points)
    width = max(20, min(100, console.width - 14))
    console.print(
        f"[bold]{solver.scheduler}[/], base_lr {solver.base_lr:g}, {solver.max_iter} iterations",
        highlight=False,
    )
    console.print(plot.render_terminal_chart(curve, width=width, height=10, marks=marks), highlight=False)
    table = Table("point", "iteration", "lr")
    for point in points:
        table.add_row(point.label, str(point.iteration), f"{point.lr:.6g}")
    console.print(table)
    if out is not None:
        path = plot.save_png(curve, out, marks, title=f"{recipe.name}: {solver.scheduler}")
        console.print(f"saved {path}")


@app.command("import-detectron2")
def import_detectron2_command(
    config: Annotated[Path, typer.Argument(help="detectron2 config YAML (with _BASE_ chains).", show_default=False)],
    weights: Annotated[
        Path, typer.Option("--weights", help="detectron2 weights: .pth or model-zoo .pkl.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for recipe.yaml and model.pth.", show_default=False)],
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names, in the model's class order.", show_default=False),
    ] = None,
) -> None:
    """Turn a detectron2 RetinaNet config + weights into a recipe and a model file."""
    from retinacli.detectron2_import import import_detectron2

    names = [n.strip() for n in classes.split(",")] if classes else None
    result = import_detectron2(config, weights, out, class_names=names)
    console.print(f"wrote {result.recipe_path}\nwrote {result.model_path}", highlight=False)
    for key in result.ignored_config_keys:
        console.print(f"[yellow]ignored config key[/] {key} (not used by RetinaNet here)", highlight=False)
    for key in result.unused_weight_keys:
        console.print(f"[yellow]unused weight[/] {key}", highlight=False)
    for note in result.notes:
        console.print(f"[cyan]note[/] {note}", highlight=False)


def main() -> None:
    """Entry point of the `retina` console script."""
    try:
        app()  # standalone: usage errors print their own message and exit with 2
    except RetinaError as exc:
        if _state["debug"]:
            raise
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("Interrupted.")
        sys.exit(130)


def _print_error(message: str) -> None:
    from rich.markup import escape

    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)

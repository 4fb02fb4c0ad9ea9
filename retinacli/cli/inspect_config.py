"""`retina inspect-config`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from retinacli.cli.app import JsonOption, RecipeArg, SetOption, app, console


@app.command("inspect-config")
def inspect_config(
    recipe: RecipeArg,
    set_: SetOption = None,
    diff: Annotated[bool, typer.Option("--diff", help="Show only what differs from the defaults.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the fully resolved, validated recipe (YAML that loads back to the same recipe)."""
    from retinacli.commands.inspect_config import inspect_config as command
    from retinacli.recipe import dump_recipe

    data = command(recipe, set_ or [], diff=diff)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif diff and not data:
        console.print("# the recipe equals the defaults")
    else:
        typer.echo(dump_recipe(data), nl=False)

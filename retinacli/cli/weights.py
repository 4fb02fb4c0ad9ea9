"""`retina weights list | get`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer

from retinacli.cli.app import JsonOption, app, console, error_console, shown

weights_app = typer.Typer(
    help="Pretrained weights by name (model.weights: zoo:NAME): list them, download them verified.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(as_json: JsonOption = False) -> None:
    """List the pretrained weights retina knows by name, and which are downloaded."""
    from rich.table import Column, Table

    from retinacli.commands.weights import list_weights

    listing = list_weights()
    if as_json:
        typer.echo(json.dumps(listing.to_dict(), indent=2))
        return
    table = Table("source", "architecture", "trained on", "AP", "size", "sha256", "downloaded")
    table.columns.insert(0, Column("name", overflow="fold"))  # the name is what a person copies: never cut
    for row in listing.rows:
        entry = row.entry
        checked = {"sha256": entry.short_hash, "sha256_prefix": f"{entry.short_hash} (prefix)", "none": "none published"}
        table.add_row(
            shown(entry.name),
            shown(entry.source),
            shown(entry.architecture),
            shown(entry.trained_on),
            "—" if entry.ap is None else f"{entry.ap:.1f}",
            _size(entry.size_bytes, entry.max_bytes),
            checked[entry.verification],
            _state(row.state, row.partial_bytes),
        )
    console.print(table)
    console.print(f"cache: {shown(listing.cache_dir)} (TORCH_HOME moves it)", highlight=False)
    if listing.mirror:
        console.print(f"mirror: {shown(listing.mirror)} (RETINA_WEIGHTS_MIRROR)", highlight=False)
    console.print("use one as model.weights: zoo:NAME; fetch ahead with `retina weights get NAME`", highlight=False)


@weights_app.command("get")
def weights_get(
    names: Annotated[
        list[str], typer.Argument(help="Names from `retina weights list` (zoo: optional).", show_default=False)
    ],
) -> None:
    """Download pretrained weights by name into torch's hub cache, verified; print each path."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from retinacli.commands.weights import ZooEntry, get_weights

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
    ) as bar:

        def progress(entry: ZooEntry) -> Callable[[int, int | None], None]:
            task = None  # one task per file, shown when its transfer starts

            def update(done: int, total: int | None) -> None:
                nonlocal task
                if task is None:
                    task = bar.add_task(shown(entry.name), total=total)
                bar.update(task, completed=done, total=total)

            return update

        fetched = get_weights(names, progress=progress)
    for item in fetched:
        how = "downloaded" if item.downloaded else "already downloaded"
        resumed = f", resumed after {item.resumed_from} bytes" if item.resumed_from else ""
        console.print(
            f"{shown(item.entry.name)}: {how}{resumed}; {shown(item.check_text())}", highlight=False, soft_wrap=True
        )
        if item.note:
            console.print(f"  note: {shown(item.note)}", highlight=False, soft_wrap=True)
        console.print(shown(item.path), highlight=False, soft_wrap=True)


def _size(size_bytes: int | None, max_bytes: int | None) -> str:
    if size_bytes is not None:
        return f"{size_bytes / 2**20:.1f} MiB"
    return f"≤ {max_bytes / 2**20:.0f} MiB" if max_bytes is not None else "?"


def _state(state: str, partial_bytes: int) -> str:
    if state == "partial":
        return f"partial ({partial_bytes / 2**20:.1f} MiB)"
    return {"downloaded": "yes", "missing": "no"}.get(state, state)

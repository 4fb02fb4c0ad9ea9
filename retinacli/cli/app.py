"""The Typer application, its consoles, the options every command shares, and the one place
errors become a screen and an exit code.

Every user-reachable problem raises a `RetinaError`; `main` turns it into one clear screen and
its exit code (2 for usage, recipe, data and checkpoint errors). `--debug` shows the traceback
instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from retinacli import __version__
from retinacli.errors import RetinaError

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
ModelArg = Annotated[Path, typer.Argument(help="Model file or training checkpoint.", show_default=False)]
DetectorArg = Annotated[
    Path,
    typer.Argument(
        help="Model file, training checkpoint, or file of retina export (.onnx, OpenVINO .xml; .ts with --trust-code).",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe key: --set solver.base_lr=0.02 (repeatable; parsed by the key's type).",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    Literal["auto", "cpu", "cuda"] | None,
    typer.Option("--device", help="auto|cpu|cuda (the recipe key device) \\[default: the recipe's].", show_default=False),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace this command's earlier output in --output-dir.")
]
OverwriteFileOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace the --out file if it exists.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Run a TorchScript (.ts) file. TorchScript files are programs; run only files you made or "
        "trust (without this flag they are refused before they are opened; model files, .onnx and "
        "OpenVINO .xml files are data and need no trust).",
    ),
]


def output_dir_option(help_text: str) -> object:
    """The one spelling of an output folder flag: `--output-dir`."""
    return typer.Option("--output-dir", help=help_text, show_default=False)


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


def main() -> None:
    """Entry point of the `retina` console script."""
    try:
        app()  # standalone: usage errors print their own message and exit with 2
    except RetinaError as exc:
        if _state["debug"]:
            raise
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("Interrupted.")
        sys.exit(130)


def shown(text: object, *, keep_newlines: bool = False) -> str:
    """`text` as Rich prints it literally: control characters escaped (`text.printable`), then
    Rich markup escaped. Every value from data that the CLI prints goes through it."""
    from rich.markup import escape

    from retinacli.text import printable

    return escape(printable(text, keep_newlines=keep_newlines))


def print_error(message: str) -> None:
    """`error: <message>` on stderr, the message shown as written: no markup, and control
    characters from data (a class or file name) shown escaped (`text.printable`)."""
    error_console.print(f"[bold red]error:[/] {shown(message, keep_newlines=True)}", highlight=False, soft_wrap=True)

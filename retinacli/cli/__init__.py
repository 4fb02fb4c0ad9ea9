"""The `retina` command line: Typer and Rich only.

Each command module parses its options, calls one function of `retinacli.commands` and renders
the result. Heavy modules (torch, the engine) are imported inside the commands, so
`retina --help` is instant. The modules are imported here in the order `retina --help` lists
the commands: the order a user needs them.
"""

# isort: off
from retinacli.cli import train, tune, evaluate, compare, report, predict, export  # noqa: F401 - importing registers the commands
from retinacli.cli import inspect_config, lr_plot, anchors, benchmark, import_detectron2, weights, data  # noqa: F401
# isort: on
from retinacli.cli.app import app, main

__all__ = ["app", "main"]

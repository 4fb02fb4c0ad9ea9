"""The commands layer: one module per `retina` command, the only code besides `retinacli.build`
that reads a recipe.

Each module turns a recipe (or a model file's stored recipe) and the command's options into the
typed arguments of the layers below, wires them together and returns a result object that
`retinacli.cli` renders. Nothing here prints.
"""

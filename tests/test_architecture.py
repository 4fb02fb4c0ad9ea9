"""The import directions of docs/architecture.md: arrows between layers point down only.

Every module of the package is read with `ast` (nothing is imported), and each `import` of a
retinacli module, wherever it sits in the file (inside functions too), is checked against the
layer table below. Third-party imports of the engine are checked as well: it uses only torch,
torchvision and the standard library.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retinacli"

# What each part may import from retinacli (besides itself). Listed top to bottom.
ALLOWED: dict[str, set[str]] = {
    "__main__": {"cli"},
    "cli": {"commands", "recipe", "errors", "text", "predict", "evaluation", "anchors_tool", "training", "audit", "__init__"},
    "commands": {"build", "recipe", "engine", "data", "training", "evaluation", "predict", "report", "export",
                 "benchmarking", "anchors_tool", "weights", "audit", "files", "devices", "errors", "text", "yaml_files", "levels", "__init__"},
    "build": {"recipe", "engine", "data", "training", "anchors_tool", "errors", "levels"},
    "recipe": {"errors", "yaml_files", "levels", "weights"},  # weights: only its zoo table (below)
    "anchors_tool": {"engine", "data", "files", "errors", "text"},
    "report": {"text"},
    "audit": {"data", "files", "errors", "text"},
    "export": {"engine", "files", "errors"},
    "benchmarking": {"engine"},
    "predict": {"engine", "data", "evaluation", "files", "errors", "text"},
    "evaluation": {"engine", "data", "files", "errors", "text"},
    "training": {"engine", "data", "files", "devices", "errors", "text"},
    "data": {"engine", "files", "errors", "text", "yaml_files"},
    "weights": {"files", "errors"},
    "engine": {"levels"},
    "files": {"errors"},
    "devices": {"errors"},
    "errors": set(),
    "text": set(),
    "levels": set(),
    "yaml_files": set(),
    "__init__": {"api"},
    "api": {"commands", "build", "recipe", "data", "predict", "evaluation", "engine", "export", "training",
            "devices", "errors"},
}
ENGINE_THIRD_PARTY = {"torch", "torchvision"}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "retinacli":  # `from retinacli import cli` may name a submodule
                found += [(node.lineno, _module_of(alias.name)) for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _module_of(name: str) -> str:
    is_module = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return f"retinacli.{name}" if is_module else "retinacli"


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_in_the_table() -> None:
    assert {_part(p) for p in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    part = _part(path)
    wrong = []
    for line, module in _imports(path):
        if module.split(".")[0] != "retinacli":
            continue
        target = module.split(".")[1] if "." in module else "__init__"
        if target != part and target not in ALLOWED[part]:
            wrong.append(f"line {line}: {module}")
    assert not wrong, f"{part} may import only {sorted(ALLOWED[part])}: " + "; ".join(wrong)


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "engine").rglob("*.py")), ids=lambda p: p.name
)
def test_engine_imports_only_torch_torchvision_and_the_standard_library(path: Path) -> None:
    for line, module in _imports(path):
        root = module.split(".")[0]
        if root == "retinacli":
            continue
        assert root in ENGINE_THIRD_PARTY or root in sys.stdlib_module_names, f"line {line}: {module}"


def test_lower_layers_never_name_the_recipe_the_commands_or_the_cli() -> None:
    # The grep, done on the source text: not even a docstring import example.
    for part in ("engine", "data", "training", "evaluation", "weights", "anchors_tool"):
        for path in (PACKAGE / part).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for name in ("retinacli.recipe", "retinacli.cli", "retinacli.commands", "retinacli.build"):
                assert name not in text, f"{path.relative_to(PACKAGE)} mentions {name}"


SHARED_BY_COMMANDS = {"retinacli.commands.model_files", "retinacli.commands.train", "retinacli.commands.report"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "commands").glob("*.py")), ids=lambda p: p.name)
def test_no_command_imports_another_command(path: Path) -> None:
    """A concept two commands need lives below them (the run folder in training/, the test resize in
    data/), never in one command imported by another; only model_files.py (a model file) and
    train.py's train_from_recipe (training a recipe, which the audit does once per fold) and
    report.py's report (a run's page, which training uploads to MLflow) are shared."""
    own = f"retinacli.commands.{path.stem}"
    wrong = [
        (line, module)
        for line, module in _imports(path)
        if module.startswith("retinacli.commands.") and module not in SHARED_BY_COMMANDS | {own}
    ]
    assert wrong == [], f"{path.name} imports other commands: {wrong}"


# Narrower than a layer: the recipe reads the zoo table (which recipe keys belong to a
# `model.weights: zoo:NAME`), and nothing else of the weights package; the table module uses the
# standard library only, so validating a recipe never imports torch.
NARROW_IMPORTS = {"recipe": {"retinacli.weights": {"retinacli.weights.zoo"}}}


@pytest.mark.parametrize("path", sorted((PACKAGE / "recipe").rglob("*.py")), ids=lambda p: p.name)
def test_the_recipe_reads_only_the_zoo_table_of_the_weights_package(path: Path) -> None:
    allowed = NARROW_IMPORTS["recipe"]["retinacli.weights"]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "retinacli.weights" and node.level == 0:
            wrong += [f"line {node.lineno}: retinacli.weights.{a.name}" for a in node.names
                      if f"retinacli.weights.{a.name}" not in allowed]
    wrong += [f"line {line}: {module}" for line, module in _imports(path)
              if module.startswith("retinacli.weights.") and module not in allowed]
    assert not wrong, f"the recipe may import only {sorted(allowed)} from weights: {wrong}"


def test_the_zoo_table_module_imports_only_the_standard_library() -> None:
    for line, module in _imports(PACKAGE / "weights" / "zoo.py"):
        assert module.split(".")[0] in sys.stdlib_module_names, f"weights/zoo.py line {line}: {module}"

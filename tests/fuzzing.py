"""Fuzz testing support (pytest plugin, loaded by tests/conftest.py): the `FUZZ` hypothesis
settings, the contract every fuzz test checks, and the count of inputs tried.

Fuzz tests carry `@pytest.mark.fuzz` and are left out of the default run; `pytest -m fuzz` runs
them (CI: a bounded step in .ci/run). Each runs `FUZZ.max_examples` inputs: 500 unless
RETINA_FUZZ_EXAMPLES says otherwise. The contract (`expect_clean`): a valid result, or a
retinacli error of exit code 2 (usage, recipe, dataset, checkpoint); never another exception
(a traceback for the user), never more than `FUZZ.deadline` per input (a hang), never code run
from the input (the tests check for its side effects). For file names from data the contract
adds: no file outside the output changed (`tests/snapshots.py`) and nothing outside the source
opened (`watch_opens`, `opened_outside`).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from retinacli.errors import RetinaError

FUZZ = settings(
    max_examples=int(os.environ.get("RETINA_FUZZ_EXAMPLES", "500")),
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)

_TRIED: Counter[str] = Counter()


def tried(test: str) -> None:
    """Count one input of `test` (for tests that check a lower-level contract themselves)."""
    _TRIED[test] += 1


def expect_clean(call: Callable[[], Any], *, test: str) -> Any:
    """Run `call()`; return its result, or None after a retinacli error of exit code 2. Any other
    exception fails the test (it would be a traceback), naming it. Counts the input as tried."""
    _TRIED[test] += 1
    try:
        return call()
    except RetinaError as exc:
        assert exc.exit_code == 2, f"{type(exc).__name__} with exit code {exc.exit_code}: {exc}"
        assert str(exc).strip(), "an error without a message"
        return None


_WATCHED: list[list[str]] = []  # one list per open `watch_opens`; the audit hook stays installed
_HOOKED = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHED and event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        _WATCHED[-1].append(os.fsdecode(args[0]))


@contextmanager
def watch_opens() -> Iterator[list[str]]:
    """The paths this process opens inside the block (builtins.open, os.open, and so PIL,
    ElementTree, shutil...): a `sys.addaudithook` hook, installed once, records them."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _WATCHED.append([])
    try:
        yield _WATCHED[-1]
    finally:
        _WATCHED.pop()


def opened_outside(opened: list[str], world: Path, *allowed: Path) -> list[str]:
    """The files (not folders: fsync opens those) of `opened` that lie in `world` (the test's
    temporary folder) once resolved but outside every folder of `allowed` and outside the
    temporary folder `files.atomic_directory` builds an output in (`.tmp-<name>.<random>`
    beside it). What is opened outside `world` (modules, fonts) is the program's own."""
    roots = [a.resolve() for a in allowed]
    temporary = {f".tmp-{a.name}." for a in allowed}
    found = []
    for name in opened:
        path = Path(name).resolve()
        if not path.is_relative_to(world.resolve()) or path.is_dir():
            continue
        if any(path.is_relative_to(root) for root in roots):
            continue
        if any(part.startswith(prefix) for part in path.parts for prefix in temporary):
            continue
        found.append(name)
    return found


def shared_inodes(out: Path, world: Path, *kept_apart: Path) -> list[str]:
    """Files of `world` outside `out` and every folder of `kept_apart` (the source) that share an
    inode with a file below `out`: a hard link from the output to something of the user's."""
    if not out.is_dir():
        return []
    inside = {(p.lstat().st_dev, p.lstat().st_ino) for p in out.rglob("*") if p.is_file() and not p.is_symlink()}
    shared = []
    for path in world.rglob("*"):
        if path.is_symlink() or not path.is_file() or path.is_relative_to(out):
            continue
        if any(path.is_relative_to(apart) for apart in kept_apart):
            continue
        if (path.lstat().st_dev, path.lstat().st_ino) in inside:
            shared.append(str(path))
    return shared


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TRIED:
        total = sum(_TRIED.values())
        terminalreporter.write_sep("-", f"fuzz: {total} inputs tried over {len(_TRIED)} tests")
        for name, count in sorted(_TRIED.items()):
            terminalreporter.write_line(f"  {count:6d}  {name}")

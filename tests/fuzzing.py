"""Fuzz testing support (pytest plugin, loaded by tests/conftest.py): the `FUZZ` hypothesis
settings, the contract every fuzz test checks, and the count of inputs tried.

Fuzz tests carry `@pytest.mark.fuzz` and are left out of the default run; `pytest -m fuzz` runs
them (CI: a bounded step in .ci/run). Each runs `FUZZ.max_examples` inputs: 500 unless
RETINA_FUZZ_EXAMPLES says otherwise. The contract (`expect_clean`): a valid result, or a
retinacli error of exit code 2 (usage, recipe, dataset, checkpoint); never another exception
(a traceback for the user), never more than `FUZZ.deadline` per input (a hang), never code run
from the input (the tests check for its side effects).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TRIED:
        total = sum(_TRIED.values())
        terminalreporter.write_sep("-", f"fuzz: {total} inputs tried over {len(_TRIED)} tests")
        for name, count in sorted(_TRIED.items()):
            terminalreporter.write_line(f"  {count:6d}  {name}")

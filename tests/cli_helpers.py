"""Run the `retina` entry point in-process, as a user would run it, and capture what they see."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from retinacli.cli import main


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CliResult:
    """Call `retina ARGS...` through `main()` (error screens and exit codes included)."""
    monkeypatch.setattr(sys, "argv", ["retina", *args])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)

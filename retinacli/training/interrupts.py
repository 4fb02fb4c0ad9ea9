"""Ctrl-C and SIGTERM during training: finish the iteration, checkpoint, exit; twice: exit now.

`StopRequests` is a context manager that, in the main thread, replaces the SIGINT and SIGTERM
handlers. The first signal only records itself (`requested`); the training loop looks at it
after each iteration, writes a checkpoint of that iteration and stops. The first signal also
puts the previous handlers back, so a second Ctrl-C raises KeyboardInterrupt at once and a second
SIGTERM ends the process at once (a checkpoint being written is then left out; the atomic write
keeps the previous files whole). Leaving the block restores the handlers in any case.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_code_of(signal_number: int) -> int:
    """The shell's exit code for a process ended by `signal_number`: 128 + the number."""
    return 128 + int(signal_number)


def signal_name(signal_number: int) -> str:
    return signal.Signals(signal_number).name


class StopRequests:
    """Records SIGINT/SIGTERM instead of dying on the first one (see the module docstring).

    Outside the main thread (where Python cannot install handlers) it records nothing and the
    signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.requested = number
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

"""The errors a user can cause. The CLI turns each into one clear screen and an exit code.

Every message follows `<where>: <what is wrong>; <what to do>`.
"""

from __future__ import annotations


class RetinaError(Exception):
    """Base class of every user-reachable problem. `exit_code` is what the CLI exits with."""

    exit_code: int = 1


class RecipeError(RetinaError):
    """A recipe (or a `--set` override) is malformed or invalid."""

    exit_code = 2


class UsageError(RetinaError):
    """A command-line argument is malformed."""

    exit_code = 2


class DatasetError(RetinaError):
    """A dataset file, image or record is missing or malformed."""

    exit_code = 2


class CheckpointError(RetinaError):
    """A checkpoint or weights file is missing, foreign, truncated or corrupted."""

    exit_code = 2


class TrainingError(RetinaError):
    """Training cannot go on (for example the loss became infinite or NaN)."""

    exit_code = 1


class ExportError(RetinaError):
    """An exported file does not compute what the model computes (or cannot be written)."""

    exit_code = 1

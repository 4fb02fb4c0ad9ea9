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


class DownloadError(CheckpointError):
    """Pretrained weights could not be fetched (offline, an HTTP error, a proxy failure, a
    response larger than the published file) or are not the published file (a hash mismatch).
    The message names the URL and the path to put the file at by hand."""


class TrainingError(RetinaError):
    """Training cannot go on (for example the loss became infinite or NaN)."""

    exit_code = 1


class StorageError(RetinaError):
    """A file could not be written: the disk is full, a quota is reached, the folder is read-only."""

    exit_code = 1


class TrainingInterrupted(RetinaError):
    """Training stopped on a signal (Ctrl-C, SIGTERM) after writing a checkpoint it can resume.

    The exit code is the shell's for the signal: 128 + its number (130 for SIGINT, 143 for
    SIGTERM).
    """

    exit_code = 130

    def __init__(self, message: str, *, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExportError(RetinaError):
    """An exported file does not compute what the model computes (or cannot be written)."""

    exit_code = 1

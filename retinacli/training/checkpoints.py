"""Training checkpoints: what they hold, RNG capture, rotation and resume.

A checkpoint is one `torch.save` file (written by `files.save_torch`, atomically) holding a dict
that `torch.load(weights_only=True)` can read (tensors, numbers, strings, lists, tuples and dicts
only):

| key | content |
| --- | --- |
| `format` | `files.FORMAT_MARKER`, the marker that tells our files from others |
| `format_version` | `files.FORMAT_VERSION` (an int) |
| `model` | the model's `state_dict()` |
| `optimizer` | the optimizer's `state_dict()` |
| `scheduler` | the LR scheduler's `state_dict()` |
| `iteration` | the 0-based index of the last completed iteration; training resumes at `iteration + 1` |
| `rng` | `rng.capture_rng_state()`: python `random`, numpy, torch CPU and (if available) CUDA states |
| `loss_normalizer` | the detector's running loss normalizer (float) |
| `loss_normalizer_per_rank` | every process's normalizer, by rank (one entry for one process) |
| `recipe` | the resolved recipe as plain JSON types |
| `grad_scaler` | the AMP loss scale state (empty without AMP) |
| `ema` | `{"updates", "model"}`: the weights' moving average (empty without EMA) |
| `best` | the best evaluation so far: metric, value, iteration, evaluations since (empty without data.val) |

Files in an output directory (`CheckpointManager`): `model_{iteration:07d}.pth` every period
and after the last iteration, `last_checkpoint`, a text file naming the newest complete
checkpoint (as detectron2 does), and the model files deployment needs: `model_final.pth` at the
end and, with a validation set, `model_best.pth`. A model file holds what predicting needs and
nothing for resuming (`MODEL_FILE_KEYS`: the evaluated weights, the EMA's where used, the
recipe, the classes, the iteration; no optimizer, scheduler or random state), so it is about a
third of a checkpoint of an AdamW or momentum run. `--resume` reads the checkpoint
`last_checkpoint` names; a run folder of an earlier version, whose `last_checkpoint` names
a full `model_final.pth`, still resumes from it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from retinacli.errors import CheckpointError
from retinacli.files import (
    FORMAT_MARKER,
    FORMAT_VERSION,
    read_retinacli_file,
    save_torch,
    write_text,
)

REQUIRED_KEYS: tuple[str, ...] = (
    "model",
    "optimizer",
    "scheduler",
    "iteration",
    "rng",
    "loss_normalizer",
    "recipe",
)
MODEL_FILE_KEYS: tuple[str, ...] = ("model", "recipe")
"""Keys every model file (`model_final.pth`, `model_best.pth`, an imported model) holds."""
POINTER_NAME = "last_checkpoint"
FINAL_NAME = "model_final.pth"
BEST_NAME = "model_best.pth"
_PERIODIC_RE = re.compile(r"^model_(\d{7,})\.pth$")


# ----------------------------------------------------------------------------- save / load


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number; JSON cannot hold it")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check_plain(item, f"{where}.{key}")
        return
    raise ValueError(
        f"{where}: {type(value).__name__} is not a plain JSON type; "
        "pass recipe.model_dump(mode='json')"
    )


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write `payload` (the keys of `REQUIRED_KEYS`) atomically to `path`, adding the format marker.

    Raises ValueError when a key is missing or the recipe holds non-JSON types (programming errors:
    the file would not load back with weights_only). Returns the path written.
    """
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"checkpoint payload: missing keys {missing}")
    if isinstance(payload["iteration"], bool) or not isinstance(payload["iteration"], int):
        raise ValueError(
            f"checkpoint payload: iteration must be an int, got {payload['iteration']!r}"
        )
    _check_plain(payload["recipe"], "checkpoint payload recipe")
    if not isinstance(payload["recipe"], dict):
        raise ValueError("checkpoint payload recipe: must be a dict")
    data = {"format": FORMAT_MARKER, "format_version": FORMAT_VERSION, **payload}
    data["loss_normalizer"] = float(payload["loss_normalizer"])
    return save_torch(path, data)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a retinacli checkpoint on CPU with `torch.load(weights_only=True)`.

    Every problem raises CheckpointError naming the file, what is wrong and what to do: missing
    file, a directory, an empty/truncated/corrupted file, a file holding arbitrary Python objects,
    a file that is not a retinacli checkpoint, a newer format version, missing keys.
    """
    return read_retinacli_file(path, required=REQUIRED_KEYS)


def load_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a model file or a checkpoint (both hold `MODEL_FILE_KEYS`) on CPU, safely; errors as
    `load_checkpoint`'s."""
    return read_retinacli_file(path, required=MODEL_FILE_KEYS)


# ----------------------------------------------------------------------------- manager


def periodic_name(iteration: int) -> str:
    """`model_{iteration:07d}.pth`, detectron2's name for the checkpoint after `iteration`."""
    return f"model_{iteration:07d}.pth"


def checkpoints_due(
    iteration: int, *, period: int, max_iter: int
) -> list[Literal["periodic", "final"]]:
    """What detectron2's PeriodicCheckpointer saves after 0-based `iteration`.

    "periodic" when `(iteration + 1) % period == 0`, "final" when `iteration >= max_iter - 1`;
    both at the last iteration when it is also a multiple of the period.
    """
    if period < 1:
        raise ValueError(f"period: must be >= 1, got {period}")
    due: list[Literal["periodic", "final"]] = []
    if (iteration + 1) % period == 0:
        due.append("periodic")
    if iteration >= max_iter - 1:
        due.append("final")
    return due


class CheckpointManager:
    """Writes, rotates and finds the checkpoints of one output directory.

    `keep_checkpoints` (>= 1) periodic checkpoints stay on disk; older ones are deleted after
    each save. `model_final.pth` and the file `last_checkpoint` names are never deleted. The
    pointer is rewritten (atomically) only after the checkpoint it names is complete, and pruning
    happens after that, so the pointer always names a whole file.
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, keep_checkpoints: int) -> None:
        if (
            isinstance(keep_checkpoints, bool)
            or not isinstance(keep_checkpoints, int)
            or keep_checkpoints < 1
        ):
            raise ValueError(
                f"keep_checkpoints: must be an integer >= 1, got {keep_checkpoints!r}"
            )
        self.output_dir = Path(output_dir)
        self.keep_checkpoints = keep_checkpoints

    @property
    def pointer_path(self) -> Path:
        return self.output_dir / POINTER_NAME

    @property
    def best_path(self) -> Path:
        return self.output_dir / BEST_NAME

    @property
    def final_path(self) -> Path:
        return self.output_dir / FINAL_NAME

    def save_best(self, model_file: Mapping[str, Any]) -> Path:
        """Write `model_best.pth` (a model file, not a resumable checkpoint) atomically."""
        return save_torch(self.best_path, dict(model_file))

    def save_final(self, model_file: Mapping[str, Any]) -> Path:
        """Write `model_final.pth` (a model file, not a resumable checkpoint) atomically."""
        return save_torch(self.final_path, dict(model_file))

    def save(self, payload: Mapping[str, Any]) -> Path:
        """Save `payload` as `model_{payload['iteration']:07d}.pth`, point `last_checkpoint` at
        it, then prune old periodic checkpoints. Returns the path."""
        path = save_checkpoint(self.output_dir / periodic_name(int(payload["iteration"])), payload)
        self._point_to(path.name)
        return path

    def _point_to(self, name: str) -> None:
        write_text(self.pointer_path, name)
        self.prune()

    def step(
        self,
        iteration: int,
        *,
        period: int,
        max_iter: int,
        make_payload: Callable[[], dict[str, Any]],
        make_model_file: Callable[[], dict[str, Any]],
    ) -> list[Path]:
        """Save what `checkpoints_due` says after `iteration`; the makers are called only then.

        Either due save writes the checkpoint `model_{iteration:07d}.pth` (once); "final" also
        writes `model_final.pth` from `make_model_file`, after the checkpoint, so a run killed
        between the two resumes and writes it then. Returns the paths, checkpoint first.
        """
        due = checkpoints_due(iteration, period=period, max_iter=max_iter)
        if not due:
            return []
        saved = [self.save(make_payload())]
        if "final" in due:
            saved.append(self.save_final(make_model_file()))
        return saved

    def periodic_checkpoints(self) -> list[Path]:
        """The `model_NNNNNNN.pth` files of the directory, oldest iteration first."""
        if not self.output_dir.is_dir():
            return []
        found = []
        for entry in self.output_dir.iterdir():
            match = _PERIODIC_RE.match(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
        return [path for _, path in sorted(found)]

    def prune(self) -> list[Path]:
        """Delete periodic checkpoints beyond the newest `keep_checkpoints`; returns what was
        deleted."""
        periodic = self.periodic_checkpoints()
        pointed = self._pointer_target_name()
        deleted = []
        for path in periodic[: max(len(periodic) - self.keep_checkpoints, 0)]:
            if path.name == pointed:
                continue
            path.unlink(missing_ok=True)
            deleted.append(path)
        return deleted

    def _pointer_target_name(self) -> str | None:
        """The checkpoint `last_checkpoint` names, None without a pointer. The name is data from
        the folder: anything but a checkpoint name of this folder (a path, `..`) is refused, so
        no file elsewhere is read or kept because the pointer names it."""
        try:
            with self.pointer_path.open("rb") as handle:
                raw = handle.read(256)
        except FileNotFoundError:
            return None
        name = raw.decode("utf-8", errors="replace").strip() or None
        if name is not None and name != FINAL_NAME and not _PERIODIC_RE.match(name):
            raise CheckpointError(
                f"{self.pointer_path}: names {name!r}, which is not a checkpoint of this folder "
                f"(model_NNNNNNN.pth or {FINAL_NAME}); the folder was altered: fix or delete "
                "last_checkpoint"
            )
        return name

    def find_last(self) -> Path | None:
        """The checkpoint `last_checkpoint` names, or None when there is no pointer (fresh run).

        Raises CheckpointError when the pointer names a file that is gone.
        """
        name = self._pointer_target_name()
        if name is None:
            return None
        path = self.output_dir / name
        if not path.is_file():
            raise CheckpointError(
                f"{self.pointer_path}: names {name}, which does not exist; restore that file, "
                "or delete last_checkpoint to start from scratch"
            )
        return path

    def load_newest_valid(self) -> tuple[Path, dict[str, Any], list[str]] | None:
        """The checkpoint to resume from: the one `last_checkpoint` names when it loads, else the
        newest periodic checkpoint older than it that does (a truncated or corrupted file, or a
        pointer naming a missing one, is skipped). Returns (path, loaded state, one sentence per
        file skipped), or None when there is no pointer.

        Raises CheckpointError when the pointer exists but no checkpoint loads, naming each.
        Nothing is deleted: a skipped file stays until training writes that name again.
        """
        name = self._pointer_target_name()
        if name is None:
            return None
        skipped: list[str] = []
        pointed = self.output_dir / name
        match = _PERIODIC_RE.match(name)
        limit = int(match.group(1)) if match else None  # model_final.pth: every periodic one is older
        candidates = [pointed] + [
            path
            for path in reversed(self.periodic_checkpoints())
            if path.name != name and (limit is None or int(_PERIODIC_RE.match(path.name).group(1)) < limit)
        ]
        for path in candidates:
            if not path.is_file():
                skipped.append(f"{path}: named by last_checkpoint but missing")
                continue
            try:
                return path, load_checkpoint(path), skipped
            except CheckpointError as exc:
                skipped.append(str(exc).split("; ")[0])
        raise CheckpointError(
            f"{self.output_dir}: no checkpoint can be resumed ("
            + "; ".join(skipped)
            + "); restore one from a copy, or start a new run in another --output-dir"
        )

"""Training checkpoints: atomic writes, RNG capture, rotation and resume.

A checkpoint is one `torch.save` file holding a dict that `torch.load(weights_only=True)` can read
(tensors, numbers, strings, lists, tuples and dicts only):

| key | content |
| --- | --- |
| `format` | `"retinacli-checkpoint"`, the marker that tells our files from others |
| `format_version` | `FORMAT_VERSION` (an int) |
| `model` | the model's `state_dict()` |
| `optimizer` | the optimizer's `state_dict()` |
| `scheduler` | the LR scheduler's `state_dict()` |
| `iteration` | the 0-based index of the last completed iteration; training resumes at `iteration + 1` |
| `rng` | `capture_rng_state()`: python `random`, numpy, torch CPU and (if available) CUDA states |
| `loss_normalizer` | the detector's running loss normalizer (float) |
| `recipe` | the resolved recipe as plain JSON types |

Files in an output directory (`CheckpointManager`): `model_{iteration:07d}.pth` every period,
`model_final.pth` at the end, and `last_checkpoint`, a text file naming the newest complete
checkpoint (as detectron2 does). Every file is written to a temporary file in the same directory,
flushed and fsynced, then renamed over its destination with `os.replace` and the directory
fsynced: a crash leaves either the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch

from retinacli.errors import CheckpointError

FORMAT_MARKER = "retinacli-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "model",
    "optimizer",
    "scheduler",
    "iteration",
    "rng",
    "loss_normalizer",
    "recipe",
)
POINTER_NAME = "last_checkpoint"
FINAL_NAME = "model_final.pth"
_PERIODIC_RE = re.compile(r"^model_(\d{7,})\.pth$")
_TEMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open a directory, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, mode: Literal["wb", "w"] = "wb"
) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on a clean exit, flush, fsync and rename it to `path`.

    On any exception the temporary file is removed and `path` is left untouched. The temporary
    name starts with `.tmp-`, so directory listings that look for `model_*.pth` never see it.
    """
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{target.name}.", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator training uses, in weights_only-loadable types.

    Keys: `python` (random.getstate() as nested tuples of ints/floats), `numpy` (the legacy global
    MT19937 state with its key as an int64 tensor), `torch` (CPU ByteTensor) and, when CUDA is
    available, `cuda` (a list of per-device ByteTensors).
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` captured. A saved CUDA state is restored only when CUDA
    is available now (a CPU resume of a GPU run continues without it)."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    keys = np_state["keys"]
    keys_np = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state(
        (
            np_state["name"],
            keys_np.astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)


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
    target = Path(path)
    with atomic_write(target) as handle:
        torch.save(data, handle)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a retinacli checkpoint on CPU with `torch.load(weights_only=True)`.

    Every problem raises CheckpointError naming the file, what is wrong and what to do: missing
    file, a directory, an empty/truncated/corrupted file, a file holding arbitrary Python objects,
    a file that is not a retinacli checkpoint, a newer format version, missing keys.
    """
    target = Path(path)
    data = load_torch_file(target)
    if not isinstance(data, dict) or data.get("format") != FORMAT_MARKER:
        raise CheckpointError(
            f"{target}: not a retinacli checkpoint (no {FORMAT_MARKER!r} marker); pass a file "
            "written by `retina train` (model_*.pth), or use it as model.weights to initialise"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{target}: checkpoint format version {version!r} is not supported (this retinacli "
            f"reads up to {FORMAT_VERSION}); upgrade retinacli"
        )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(
            f"{target}: checkpoint lacks {', '.join(missing)}; the file is damaged or was not "
            "written by `retina train`; use an earlier checkpoint"
        )
    return data


def load_torch_file(path: str | os.PathLike[str]) -> Any:
    """`torch.load(path, weights_only=True, map_location="cpu")`, every failure (missing, empty,
    truncated or foreign file, a pickled Python object) raised as a CheckpointError naming `path`.
    """
    target = Path(path)
    if not target.exists():
        raise CheckpointError(f"{target}: no such file; check the path")
    if target.is_dir():
        raise CheckpointError(
            f"{target}: is a directory, not a checkpoint file; name the .pth file"
        )
    if target.stat().st_size == 0:
        raise CheckpointError(
            f"{target}: the file is empty (an interrupted copy or write?); use another checkpoint"
        )
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _unreadable(target, exc) from exc
        raise CheckpointError(
            f"{target}: refused to load: it holds Python objects beyond tensors and plain values "
            f"({_refused_global(exc)}); nothing from it was executed; re-save only its state "
            "dict with the tool that wrote it, if you trust the file"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for bad files
        raise _unreadable(target, exc) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refused_global(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()
    return "an unsupported global"


def _unreadable(target: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{target}: not a readable PyTorch file: truncated, corrupted or of another format "
        f"({type(exc).__name__}: {_first_line(exc)}); if a write or copy was interrupted, use an "
        "earlier checkpoint or copy the file again"
    )


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

    `keep_last` (>= 1) periodic checkpoints stay on disk; older ones are deleted after each save.
    `model_final.pth` and the file `last_checkpoint` names are never deleted. The pointer is
    rewritten (atomically) only after the checkpoint it names is complete, and pruning happens
    after that, so the pointer always names a whole file.
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, keep_last: int) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last: must be an integer >= 1, got {keep_last!r}")
        self.output_dir = Path(output_dir)
        self.keep_last = keep_last

    @property
    def pointer_path(self) -> Path:
        return self.output_dir / POINTER_NAME

    def save(self, payload: Mapping[str, Any], *, final: bool = False) -> Path:
        """Save `payload` as `model_{payload['iteration']:07d}.pth` (or `model_final.pth`),
        point `last_checkpoint` at it, then prune old periodic checkpoints. Returns the path."""
        name = FINAL_NAME if final else periodic_name(int(payload["iteration"]))
        path = save_checkpoint(self.output_dir / name, payload)
        with atomic_write(self.pointer_path, mode="w") as handle:
            handle.write(name)
        self.prune()
        return path

    def step(
        self,
        iteration: int,
        *,
        period: int,
        max_iter: int,
        make_payload: Callable[[], dict[str, Any]],
    ) -> list[Path]:
        """Save what `checkpoints_due` says after `iteration`; `make_payload` is called only then."""
        due = checkpoints_due(iteration, period=period, max_iter=max_iter)
        if not due:
            return []
        payload = make_payload()
        return [self.save(payload, final=kind == "final") for kind in due]

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
        """Delete periodic checkpoints beyond the newest `keep_last`; returns what was deleted."""
        periodic = self.periodic_checkpoints()
        pointed = self._pointer_target_name()
        deleted = []
        for path in periodic[: max(len(periodic) - self.keep_last, 0)]:
            if path.name == pointed:
                continue
            path.unlink(missing_ok=True)
            deleted.append(path)
        return deleted

    def _pointer_target_name(self) -> str | None:
        try:
            return self.pointer_path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

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

"""A restricted unpickler for weight `.pkl` files (detectron2's model zoo, MSRA/Caffe2 `R-50.pkl`).

`NumpyOnlyUnpickler.find_class` returns objects from a fixed table (numpy arrays, dtypes and
scalars, `OrderedDict`, and the latin1 `_codecs.encode` of Python 2 pickles); any other global (a
function, a class) raises `RefusedGlobal` before it is imported or called, so nothing in the file
runs. `encoding="latin1"` reads the Python 2 pickles of the Caffe2 era.

Work is bounded too: before unpickling, the opcodes are read once with `pickletools.genops`
(which builds nothing) and a memo index larger than the number of opcodes before it is refused.
Python's C unpickler grows its memo table to the index a PUT names, so a 451-byte file naming
index 775 million made it allocate gigabytes for 15 seconds (found by the fuzz tests); a real
pickle numbers its memo entries one by one. The file is memory-mapped, so a declared length
beyond its end is an error, not an allocation.
"""

from __future__ import annotations

import importlib
import io
import mmap
import os
import pickle
import pickletools
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from retinacli.errors import CheckpointError


def _numpy_attr(module_names: tuple[str, ...], attr: str) -> Any:
    for name in module_names:
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[f'{m}.{attr}' for m in module_names]}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles of protocol <= 2 store bytes as _codecs.encode(str, "latin1").
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    reconstruct = _numpy_attr(multiarray, "_reconstruct")
    scalar = _numpy_attr(multiarray, "scalar")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): OrderedDict,
    }
    for module in multiarray:
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    try:
        frombuffer = _numpy_attr(numeric, "_frombuffer")
    except ImportError:  # numpy < 1.16 has no protocol-5 path; such pickles cannot exist then
        frombuffer = None
    if frombuffer is not None:
        for module in numeric:
            allowed[(module, "_frombuffer")] = frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays, dtypes and scalars, plain containers and
    OrderedDicts. `find_class` returns objects from a fixed table; every other global raises
    `RefusedGlobal` before it is imported or called."""

    def __init__(self, file: io.BufferedIOBase, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


class MemoOutOfRange(pickle.UnpicklingError):
    """A pickle names a memo index no pickler would write (module docstring)."""


def check_memo_indices(stream: Any) -> None:
    """Read the opcodes of the pickle in `stream` (nothing is built) and raise MemoOutOfRange at
    a memo index larger than the number of opcodes before it; damaged data raises ValueError."""
    for count, (opcode, argument, position) in enumerate(pickletools.genops(stream)):
        if opcode.name in _MEMO_OPCODES and int(argument) > count:
            raise MemoOutOfRange(f"memo index {argument} at byte {position}, after only {count} opcodes")


def load_numpy_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle `path` with `NumpyOnlyUnpickler` (encoding latin1) after `check_memo_indices`;
    failures as CheckpointError."""
    target = Path(path)
    check_file(target)
    try:
        with open(target, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise EOFError("the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                check_memo_indices(mapped)
                mapped.seek(0)
                return NumpyOnlyUnpickler(mapped, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise CheckpointError(
            f"{target}: refused to load: the pickle asks for the Python global "
            f"{exc.qualified_name}, and only numpy arrays are allowed in a weights .pkl; nothing "
            "from the file was executed; do not use this file unless you know who made it"
        ) from exc
    except Exception as exc:  # pickle raises many types for damaged data
        raise CheckpointError(
            f"{target}: not a readable pickle: truncated, corrupted or of another format "
            f"({type(exc).__name__}: {exc}); download or copy the file again"
        ) from exc


def check_file(target: Path) -> None:
    """CheckpointError unless `target` is an existing regular file (a FIFO or device would block
    the read, or never end)."""
    if not target.exists():
        raise CheckpointError(f"{target}: no such file; check the path")
    if target.is_dir():
        raise CheckpointError(f"{target}: is a directory, not a weights file; name the file")
    if not target.is_file():
        raise CheckpointError(f"{target}: not a regular file (a pipe, socket or device); name a weights file")

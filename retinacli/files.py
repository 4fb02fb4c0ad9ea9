"""Files retinacli writes and reads: atomic writes, safe `torch.load`, the format marker, the
one output rule, and names from data kept inside their folder.

Writing: every file (checkpoints, model files, `config.yaml`, `last_checkpoint`, JSON results,
PNG pictures) goes through `atomic_write`: the data is written to a temporary file in the same
folder, flushed and fsynced, then renamed over its destination (`os.replace`) and the folder
fsynced. A crash or an error leaves either the old file or the new one, never a half-written one,
and no temporary file behind; a full disk (ENOSPC, EDQUOT) becomes a StorageError naming the file,
the space it needs and the space free. The temporary file is created with mode 0o666 and the process
umask applies, exactly as for a plain `open(path, "w")`; a file that replaces an existing one
keeps that file's permission bits. An output made of many files (a converted dataset) is
built in a temporary folder that `atomic_directory` renames into place once complete.

Reading: `load_torch` is `torch.load(weights_only=True, map_location="cpu")` with every failure
(missing, empty, truncated, foreign, a pickled Python object) raised as a `CheckpointError`
naming the file. `read_retinacli_file` also checks the format marker that tells retinacli's own
files (training checkpoints and model files) from others; a TorchScript archive (a program) is
refused whatever its name.

Outputs: `prepare_output_dir` is the one rule of every command that writes a folder (new, empty,
or its own earlier output marked by OUTPUT_MARKER, the last only with --overwrite; never a
folder holding the user's files), `prepare_output_file` that of every `--out FILE`, and
`output_file` keeps a name made from data inside the output folder. Inputs: `contained_path`
resolves a name read from data (symbolic links included) and refuses what leaves its folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal

from retinacli.errors import CheckpointError, StorageError, UsageError

FORMAT_MARKER = "retinacli-checkpoint"
"""The value of the `format` key of every retinacli checkpoint and model file."""
FORMAT_VERSION = 2
"""The newest `format_version` written; 1 stored clip_gradients.type/value (see recipe loading)."""
TEMP_PREFIX = ".tmp-"
"""Temporary files start with this, so listings that look for `model_*.pth` never see them."""

_NEW_FILE_MODE = 0o666  # what open() asks for; the umask takes its bits away
_TEMP_NAME_TRIES = 100
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


# ----------------------------------------------------------------------------- writing


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


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new, empty temporary file next to `target`, created as open() would create it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_NAME_TRIES):
        tmp = target.parent / f"{TEMP_PREFIX}{target.name}.{secrets.token_hex(4)}"
        try:
            return os.open(tmp, flags, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, mode: Literal["wb", "w"] = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on a clean exit, flush, fsync and rename it to `path`.

    The parent folder is created if needed. On any exception the temporary file is removed and
    `path` is left untouched. Text mode writes UTF-8.
    """
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _create_temp(target)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise DiskFullError(target, written=0) from exc
        raise
    written = 0
    try:
        encoding = "utf-8" if mode == "w" else None
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            if target.exists():  # a new file keeps the mode the umask gave it
                os.chmod(handle.fileno(), stat.S_IMODE(target.stat().st_mode))
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            written = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        if _is_no_space(exc):
            raise DiskFullError(target, written=written) from exc
        raise
    _fsync_dir(directory)


class DiskFullError(OSError):
    """The disk (or quota) filled up while `target` was written; `written` bytes had made it.

    An OSError (errno ENOSPC) so that callers that handle OSError keep working; `storage_error`
    turns it into the user's message once the size needed is known.
    """

    def __init__(self, target: Path, *, written: int) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        self.target = target
        self.written = written

    def storage_error(self, *, needed: int | None) -> StorageError:
        """The StorageError a user sees: what was written, the space needed and free, what to do."""
        free = _free_bytes(self.target.parent)
        need = f"it needs {format_bytes(needed)}" if needed is not None else f"{format_bytes(self.written)} had been written"
        have = f", {format_bytes(free)} are free there" if free is not None else ""
        return StorageError(
            f"{self.target}: no space left on the device while writing it ({need}{have}); "
            "nothing was replaced: the previous file of that name and last_checkpoint are "
            "intact; free some space (or move the run) and run the command again"
        )


def _is_no_space(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, is ENOSPC/EDQUOT (torch.save's C++
    writer re-raises a failed write as a RuntimeError naming the errno's text)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        if isinstance(seen, RuntimeError) and os.strerror(errno.ENOSPC) in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _free_bytes(directory: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def format_bytes(count: int) -> str:
    """`1.5 MB`-style size (powers of 1000, as `df -H`), `512 B` below a kilobyte."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    return f"{count} B"  # unreachable


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    target = Path(path)
    try:
        with atomic_write(target, mode="w") as handle:
            handle.write(text)
    except DiskFullError as exc:
        raise exc.storage_error(needed=len(text.encode("utf-8"))) from None
    return target


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically; NaN and infinity are refused
    (ValueError), so every file is valid JSON. Returns the path."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    return write_text(path, text)


def save_torch(path: str | os.PathLike[str], data: Any) -> Path:
    """`torch.save(data)` to `path` atomically; returns the path."""
    import torch

    target = Path(path)
    try:
        with atomic_write(target) as handle:
            torch.save(data, handle)
    except DiskFullError as exc:
        raise exc.storage_error(needed=_saved_size(data)) from None
    return target


class _CountingSink:
    """A write-only file that keeps nothing but the number of bytes written to it."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _saved_size(data: Any) -> int | None:
    """How many bytes `torch.save(data)` writes (serialised again, into nothing)."""
    import torch

    sink = _CountingSink()
    try:
        torch.save(data, sink)
    except Exception:
        return None
    return sink.count


def hard_link(source: Path, target: Path) -> bool:
    """Give the file `source` the second name `target` (a hard link, replacing `target`
    atomically), without writing its bytes again. For a command's own output folder only (a
    checkpoint's second name): it replaces `target`. Returns False, leaving `target` untouched, where
    the filesystem has no hard links."""
    tmp = target.parent / f"{TEMP_PREFIX}{target.name}.{secrets.token_hex(4)}"
    try:
        os.link(source, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return True


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, flag: str = "--output-dir") -> Iterator[Path]:
    """A new, empty temporary folder next to `path`; on a clean exit it is renamed to `path`.

    For outputs made of many files (a converted dataset): a reader sees either no folder at all
    or the complete one. `path` must not exist: a UsageError names it (and `flag`), and nothing
    is replaced, not even an empty folder. On any exception the temporary folder and everything
    in it are removed.
    """
    import shutil

    target = Path(path)
    refuse_existing_folder(target, flag=flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TEMP_PREFIX}{target.name}.{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        # rename() would silently replace an empty folder created meanwhile; refuse that too.
        if target.exists() or target.is_symlink():
            raise _created_meanwhile(target, flag)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise _created_meanwhile(target, flag) from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def refuse_existing_folder(path: Path, *, flag: str = "--output-dir") -> None:
    """Raise UsageError when `path` exists at all: for outputs that are never replaced (see
    `atomic_directory`), checked before the work starts."""
    if path.exists() or path.is_symlink():
        raise UsageError(
            f"{path}: already exists and is never replaced; choose another {flag} or remove it"
        )


def _created_meanwhile(target: Path, flag: str) -> UsageError:
    return UsageError(
        f"{target}: was created by something else while this command wrote, and was left as it "
        f"is; remove it or choose another {flag}"
    )


# ----------------------------------------------------------------------------- reading


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch(path: str | os.PathLike[str]) -> Any:
    """`torch.load(path, weights_only=True, map_location="cpu")`, every failure (missing, empty,
    truncated or foreign file, a pickled Python object) raised as a CheckpointError naming `path`.
    Nothing in the file is executed."""
    import torch

    target = Path(path)
    if not target.exists():
        raise CheckpointError(f"{target}: no such file; check the path")
    if target.is_dir():
        raise CheckpointError(f"{target}: is a directory, not a checkpoint file; name the .pth file")
    if target.stat().st_size == 0:
        raise CheckpointError(
            f"{target}: the file is empty (an interrupted copy or write?); use another checkpoint"
        )
    kind = _archive_kind(target)
    if kind == "unlisted":
        raise CheckpointError(
            f"{target}: a zip archive whose list of files cannot be read (damaged, or made to "
            "confuse readers); it was not loaded, since it cannot be told from a program; use "
            "another copy of the file"
        )
    if kind == "torchscript":
        raise CheckpointError(
            f"{target}: is a TorchScript archive (a program, whatever its name), not a model file; "
            "it was not loaded, since loading one runs the code it holds; pass the .pth model file "
            "(or, for an exported file you trust, `retina predict FILE.ts --trust-code`)"
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


def _archive_kind(path: Path) -> Literal["not a zip", "torchscript", "unlisted", "zip"]:
    """What `path` is to torch.load: "torchscript" for a zip archive holding TorchScript code
    (`<name>/code/...` or `constants.pkl`), which torch.load would hand to torch.jit.load;
    "unlisted" for a zip whose file list Python cannot read (torch's own zip reader might still
    find code in it, so it is not opened); "zip" or "not a zip" otherwise."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return "not a zip"
    except OSError:
        return "not a zip"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()[:10_000]
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):  # UnicodeDecodeError is a ValueError
        return "unlisted"
    return "torchscript" if any("/code/" in name or name.endswith("/constants.pkl") for name in names) else "zip"


def is_retinacli_file(data: Any) -> bool:
    """True when loaded `data` carries retinacli's format marker."""
    return isinstance(data, dict) and data.get("format") == FORMAT_MARKER


def read_retinacli_file(path: str | os.PathLike[str], *, required: tuple[str, ...]) -> dict[str, Any]:
    """Load a retinacli checkpoint or model file and check its marker, version and `required` keys.

    Raises CheckpointError naming the file: unreadable (see `load_torch`), not retinacli's, of a
    newer format version, or lacking a required key.
    """
    target = Path(path)
    data = load_torch(target)
    if not is_retinacli_file(data):
        raise CheckpointError(
            f"{target}: not a retinacli checkpoint or model file (no {FORMAT_MARKER!r} marker); "
            "pass a file written by `retina train` or `retina import-detectron2`, or use it as "
            "model.weights to initialise a model"
        )
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{target}: checkpoint format version {version!r} is not supported (this retinacli "
            f"reads up to {FORMAT_VERSION}); upgrade retinacli"
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise CheckpointError(
            f"{target}: checkpoint lacks {', '.join(missing)}; the file is damaged or was not "
            "written by retinacli; use an earlier checkpoint"
        )
    return data


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


def refuse_existing(paths: Iterable[Path], *, overwrite: bool, flag: str = "--output-dir") -> None:
    """Raise UsageError naming the first of `paths` that exists, unless `overwrite`: a command
    never replaces what an earlier run wrote without being told to."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise UsageError(
                f"{path}: already exists and would be overwritten; choose another {flag}, "
                "remove it, or pass --overwrite to replace it"
            )


def refuse_nonempty_dir(path: Path, *, overwrite: bool, flag: str = "--output-dir") -> None:
    """Raise UsageError when the folder `path` exists and holds anything, unless `overwrite`."""
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise UsageError(
            f"{path}: the folder is not empty and files in it could be overwritten; choose "
            f"another {flag}, empty it, or pass --overwrite"
        )


# ----------------------------------------------------------------------------- containment


class PathOutsideRoot(ValueError):
    """A file name read from data that would leave the folder it is relative to.

    `name` is the name as the data gave it, `root` the folder, `reason` a short phrase
    ("an absolute path", "leaves the folder", "a link to outside the folder") for the record's
    problem message.
    """

    def __init__(self, name: str, root: Path, reason: str) -> None:
        super().__init__(f"{name!r}: {reason} {root}")
        self.name = name
        self.root = root
        self.reason = reason


def contained_path(root: str | os.PathLike[str], name: str | os.PathLike[str]) -> Path:
    """`root / name`, refused unless it stays inside `root` once resolved (symlinks included).

    The model is Python's tarfile `data` filter: the check is by construction, on the resolved
    path, so `..` parts, absolute names, drive letters and symbolic links anywhere on the way
    (to a file or a folder outside `root`) are all refused the same way. The path returned is
    `root / name` as given (not resolved), so messages show what the data said; it need not
    exist. Raises PathOutsideRoot (a ValueError) naming the reason.
    """
    text = os.fspath(name)
    if "\x00" in text:
        raise PathOutsideRoot(text, Path(root), "a name with a NUL character, not allowed in")
    if os.path.isabs(text) or Path(text).drive or Path(text).root:
        raise PathOutsideRoot(text, Path(root), "an absolute path, not a name inside")
    base = Path(root)
    candidate = base / text
    try:
        resolved_root = base.resolve()
        resolved = candidate.resolve()
    except (RuntimeError, OSError):  # a link loop (RuntimeError before Python 3.13)
        raise PathOutsideRoot(text, base, "a link loop, not a file inside") from None
    if not resolved.is_relative_to(resolved_root):
        lexical = Path(os.path.normpath(candidate)).is_relative_to(Path(os.path.normpath(base)))
        reason = "a link to outside the folder" if lexical else "a name that leaves the folder"
        raise PathOutsideRoot(text, base, f"{reason}")
    return candidate


# ----------------------------------------------------------------------------- output folders and files

OUTPUT_MARKER = ".retinacli-output.json"
"""The file that marks a folder as a command's output: `{"command": "...", "format": ...}`."""

_OWN_BOOKKEEPING = frozenset({OUTPUT_MARKER})


def output_owner(folder: Path) -> str | None:
    """The command recorded in `folder`'s output marker (OUTPUT_MARKER), or None when there is
    none (or it is not ours: a link, unreadable, not JSON, another shape)."""
    marker = folder / OUTPUT_MARKER
    if not marker.is_file() or marker.is_symlink():
        return None
    try:
        if marker.stat().st_size > 4096:
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and data.get("format") == FORMAT_MARKER and isinstance(data.get("command"), str):
        return data["command"]
    return None


def _listing(folder: Path, *, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.name not in _OWN_BOOKKEEPING)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output_dir(
    path: str | os.PathLike[str],
    *,
    command: str,
    overwrite: bool = False,
    flag: str = "--output-dir",
    accept: Iterable[str] = (),
) -> Path:
    """Make `path` the output folder of `command` (`"eval"`, `"data show"`, ...), or refuse.

    The one rule of every command that writes a folder: it writes only into a folder that does
    not exist yet (it is created), that is empty, or that holds its own earlier output (marked by
    OUTPUT_MARKER with `command` or one of `accept`), and into the last only with `overwrite`.
    A folder holding files retinacli did not write is refused even with `overwrite`, naming some
    of them; so is a path that is a file. A folder holding nothing but the marker (a command that
    failed before writing) counts as empty, so the corrected command just runs.

    Nothing is written (see `prepare_output_dir`). Raises UsageError naming `path`, what is
    there and `flag`. Returns `path`.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"{folder}: is a file, not a folder; {flag} names the folder to write into: choose another"
        )
    if folder.is_symlink() and not folder.exists():
        raise UsageError(f"{folder}: is a broken symbolic link; choose another {flag}")
    if folder.is_dir():
        contents = [p for p in folder.iterdir() if p.name not in _OWN_BOOKKEEPING]
        if contents:
            owner = output_owner(folder)
            if owner is None:
                raise UsageError(
                    f"{folder}: the folder holds files retinacli did not write ({_listing(folder)}); "
                    "retina writes only into an empty folder or its own earlier output, so nothing "
                    f"of yours is replaced; choose another {flag} or empty it"
                )
            if owner != command and owner not in set(accept):
                raise UsageError(
                    f"{folder}: holds the output of `retina {owner}`, not of `retina {command}`; "
                    f"choose another {flag}"
                )
            if not overwrite:
                raise UsageError(
                    f"{folder}: holds an earlier output of `retina {owner}` ({_listing(folder)}); "
                    f"pass --overwrite to replace it, or choose another {flag}"
                )
    return folder


def prepare_output_dir(
    path: str | os.PathLike[str],
    *,
    command: str,
    overwrite: bool = False,
    flag: str = "--output-dir",
    accept: Iterable[str] = (),
) -> Path:
    """`check_output_dir`, then create the folder and mark it as `command`'s output. Returns `path`."""
    folder = check_output_dir(path, command=command, overwrite=overwrite, flag=flag, accept=accept)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{folder}: a part of the path is a file, not a folder; choose another {flag}") from None
    if output_owner(folder) is None:
        write_json(folder / OUTPUT_MARKER, {"format": FORMAT_MARKER, "command": command})
    return folder


def prepare_output_file(path: str | os.PathLike[str], *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Check that the single output file `path` may be written: it does not exist, or `overwrite`.

    A folder (or anything but a regular file or a link) at `path` is refused even with
    `overwrite`; a missing parent folder is created. Raises UsageError naming `path` and `flag`.
    Returns `path`.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{target}: is a folder; {flag} names the file to write: add a file name")
    if target.exists() and not target.is_file():
        raise UsageError(f"{target}: is not a regular file; choose another {flag}")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise UsageError(
            f"{target}: already exists; pass --overwrite to replace it, or choose another {flag}"
        )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{parent}: is a file, not a folder; choose another {flag}") from None
    return target


def output_file(folder: Path, name: str | os.PathLike[str]) -> Path:
    """`folder / name` for a file a command writes into its output folder, its name possibly made
    from data (an image's name): refused with a UsageError unless it stays inside `folder`."""
    try:
        return contained_path(folder, name)
    except PathOutsideRoot as exc:
        raise UsageError(
            f"{folder}: refused to write {exc.name!r} there: {exc.reason} {folder}; "
            "rename the input it came from"
        ) from None

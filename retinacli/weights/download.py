"""Fetching zoo weights (`zoo.py`) into torch's hub cache: bounded, resumable, verified.

`download(entry)` puts the entry's file at `cache_dir() / entry.file_name`, where `cache_dir()` is
`torch.hub.get_dir()/checkpoints` (so `TORCH_HOME` moves it, and a torchvision file that
`torch.hub` already fetched is found under its own name). Standard library `urllib` only:

- The bytes go to `<file>.partial`. A run that finds a `.partial` asks for the rest with an HTTP
  `Range` request; a server that ignores it (a 200 answer) is read from the start instead, and one
  that refuses it (416) is asked again for the whole file. A connection that breaks after some
  bytes is resumed the same way, up to `ATTEMPTS` requests per call.
- Bounded: a response announcing more than `entry.download_limit` bytes is refused before it is
  read, and one that sends more is cut off there; every socket operation times out after
  `TIMEOUT_S` seconds. A stranger's server cannot fill the disk or hang the command.
- Verified at the end (`entry.verification`): the exact size where known, the sha256 (or its
  published prefix). A resumed file that fails is fetched once more from the start (the old
  bytes may be what is wrong); a mismatch then deletes the file and raises DownloadError saying
  so. Only a file that passes is renamed into place (atomically), so the cache never holds a
  half or a wrong file under the final name.
- A file already in place whose check passes is not fetched again; one that fails is fetched
  anew.
- `RETINA_WEIGHTS_MIRROR` (`MIRROR_ENV`) replaces the scheme and host of every URL with a
  mirror's base URL, keeping the path: `https://mirror.example.com/w` fetches
  `https://mirror.example.com/w/models/resnet50-0676ba61.pth`.
- Two processes fetching into one cache take turns (`fcntl.flock` on the cache folder).

Every failure is a DownloadError (offline, HTTP error, proxy, oversize, mismatch) naming the URL
and the exact path to put the file at by hand, a StorageError when the disk is full, or a
UsageError for a malformed mirror.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from retinacli.errors import DownloadError, StorageError, UsageError
from retinacli.weights.zoo import ZooEntry

MIRROR_ENV = "RETINA_WEIGHTS_MIRROR"
"""Environment variable: a base URL (`http(s)://host[/path]`) that replaces every zoo URL's scheme
and host."""
TIMEOUT_S = 30.0
"""Seconds any one socket operation (connect, a read) may take."""
CHUNK_BYTES = 1 << 20
"""Bytes read per step (and per progress call)."""
ATTEMPTS = 3
"""Requests per `download` call when a connection breaks part way (each resumes the last)."""
USER_AGENT = "retinacli-weights"

ProgressCallback = Callable[[int, int | None], None]
"""`progress(bytes_done, bytes_total)`: bytes of the file on disk so far (resumed bytes
included) and the total when the server announces it (None otherwise)."""

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class Fetched:
    """What `download` did. `path`: the verified file; `sha256`: its digest (hex); `downloaded`:
    False when the file was already there and passed its check; `resumed_from`: the bytes of a
    `.partial` file that the final transfer continued (0 when the file came whole, or was not
    fetched); `url`: the URL fetched (after `MIRROR_ENV`); `note`: what else a person should know (a
    cached file that failed its check and was fetched again), or ''."""

    entry: ZooEntry
    path: Path
    sha256: str
    downloaded: bool
    resumed_from: int
    url: str
    note: str = ""

    def check_text(self) -> str:
        """What was checked, in words: `sha256 ... matches the published one`, or that nothing
        could be (no published checksum), with the file's own sha256 to pin it by."""
        entry = self.entry
        if entry.verification == "sha256":
            what = "sha256 and size match" if entry.size_bytes is not None else "sha256 matches"
            return f"{what} the published file ({self.sha256})"
        if entry.verification == "sha256_prefix":
            return f"sha256 {self.sha256} starts with the published {entry.sha256_prefix}"
        return f"not verified: no checksum of this file is published; its sha256 is {self.sha256}"


def cache_dir() -> Path:
    """torch's hub cache for weight files: `torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub/checkpoints,
    by default ~/.cache/torch/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(entry: ZooEntry, dest_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `download(entry, dest_dir)` puts the file (and where to put it by hand)."""
    return Path(dest_dir if dest_dir is not None else cache_dir()) / entry.file_name


def partial_file(path: Path) -> Path:
    """The `.partial` file a download of `path` writes into before it is verified."""
    return path.with_name(path.name + ".partial")


def download_url(entry: ZooEntry) -> str:
    """The URL to fetch `entry` from: its own, or with the scheme and host replaced by
    `MIRROR_ENV`'s base URL. UsageError for a mirror that is not an http(s) base URL."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return entry.url
    parsed = urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise UsageError(
            f"{MIRROR_ENV}={base!r}: not an http(s) base URL such as https://mirror.example.com/weights; "
            "fix it or unset it"
        )
    original = urlsplit(entry.url)
    return base.rstrip("/") + original.path + (f"?{original.query}" if original.query else "")


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_against_table(entry: ZooEntry, path: Path) -> tuple[str, str]:
    """(sha256 of `path`, problem): problem is '' when the file passes the entry's check (module
    docstring), else what is wrong with it ('has 12 bytes, the table says 34', ...)."""
    size = path.stat().st_size
    if size > entry.download_limit:
        return "", f"has {size} bytes, more than the {entry.download_limit} the table allows"
    digest = file_sha256(path)
    if entry.size_bytes is not None and size != entry.size_bytes:
        return digest, f"has {size} bytes, but the published file has {entry.size_bytes}"
    if entry.sha256 and digest != entry.sha256:
        return digest, f"has sha256 {digest}, but the published file's is {entry.sha256}"
    if not entry.sha256 and entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        return digest, (
            f"has sha256 {digest}, which does not start with the published prefix {entry.sha256_prefix}"
        )
    return digest, ""


def download(
    entry: ZooEntry,
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    timeout: float = TIMEOUT_S,
) -> Fetched:
    """Put `entry`'s file into `dest_dir` (default `cache_dir()`) and return where (module
    docstring: resume, bounds, verification, mirror). `timeout` is in seconds per socket
    operation. Raises DownloadError, StorageError or UsageError (mirror)."""
    target = cached_file(entry, dest_dir)
    _make_folder(target.parent)
    url = download_url(entry)
    with _lock(target):
        note = ""
        if target.is_dir():
            raise DownloadError(
                f"zoo {entry.name}: {target} is a folder, where the weights file belongs; remove it and run again"
            )
        if target.exists() and not target.is_file():  # a FIFO or device would block the hash
            raise DownloadError(
                f"zoo {entry.name}: {target} is not a regular file, where the weights file belongs; "
                "remove it and run again"
            )
        if target.exists():
            digest, problem = check_against_table(entry, target)
            if not problem:
                return Fetched(entry, target, digest, downloaded=False, resumed_from=0, url=url)
            note = f"the cached {target} {problem}; it was deleted and fetched again"
            target.unlink()
        try:
            resumed_from, digest = _fetch(entry, url, target, progress=progress, timeout=timeout)
        except DownloadError as exc:
            if note:  # say why the file that was there is gone
                raise DownloadError(f"{exc} (before that: {note.removesuffix(' and fetched again')})") from None
            raise
        return Fetched(entry, target, digest, downloaded=True, resumed_from=resumed_from, url=url, note=note)


# ----------------------------------------------------------------------------- the transfer


class _Broken(Exception):
    """The connection broke after some bytes: worth another (resuming) request."""


def _fetch(
    entry: ZooEntry, url: str, target: Path, *, progress: ProgressCallback | None, timeout: float
) -> tuple[int, str]:
    """Download into `<target>.partial`, verify, rename to `target`; (resumed_from, sha256).
    At most `ATTEMPTS` transfers may break, and a resumed file that fails its check is fetched
    once more from the start."""
    partial = partial_file(target)
    broken: list[str] = []
    fresh_retry = False
    while len(broken) < ATTEMPTS:
        offset = _usable_partial(entry, partial)
        try:
            if not (entry.size_bytes is not None and offset == entry.size_bytes):
                offset = _transfer(entry, url, target, partial, offset=offset, progress=progress, timeout=timeout)
        except _Broken as exc:
            broken.append(str(exc))
            continue
        size = partial.stat().st_size
        if entry.size_bytes is not None and size < entry.size_bytes:
            broken.append(f"the server sent {size} of the {entry.size_bytes} bytes and closed")
            continue
        digest, problem = check_against_table(entry, partial)
        if problem and offset and not fresh_retry:
            # The bytes kept from before may be what is wrong (another server's, a damaged
            # disk): the whole file, fetched afresh, decides.
            partial.unlink(missing_ok=True)
            fresh_retry = True
            continue
        if problem:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"zoo {entry.name}: the file downloaded from {url} {problem}: it is not the published "
                "file (a damaged transfer, or a server, mirror or proxy serving something else), and "
                f"it was deleted; run again, check {MIRROR_ENV} and your proxy, or "
                + _by_hand(entry, target)
            )
        os.replace(partial, target)
        _fsync_folder(target.parent)
        return offset, digest
    kept = partial.stat().st_size if partial.exists() else 0
    raise DownloadError(
        f"zoo {entry.name}: the download of {url} broke {ATTEMPTS} times ({broken[-1]}); the "
        f"{kept} bytes received are kept in {partial} and the next run continues from there; run "
        "again, or " + _by_hand(entry, target)
    )


def _usable_partial(entry: ZooEntry, partial: Path) -> int:
    """Bytes of an earlier `.partial` worth continuing: 0 (and the file removed) when it is
    already larger than the published file; DownloadError when it is a link or not a file."""
    if not partial.exists() and not partial.is_symlink():
        return 0
    if partial.is_symlink() or not partial.is_file():
        raise DownloadError(
            f"zoo {entry.name}: {partial} is not a regular file; remove it and run again"
        )
    size = partial.stat().st_size
    known = entry.size_bytes if entry.size_bytes is not None else entry.download_limit
    if size > known:
        partial.unlink()
        return 0
    return size


def _transfer(
    entry: ZooEntry,
    url: str,
    target: Path,
    partial: Path,
    *,
    offset: int,
    progress: ProgressCallback | None,
    timeout: float,
) -> int:
    """One request: append the rest of the file (from `offset`) to `partial`, or write all of it
    when the server ignores the Range. Returns the offset the body was written from (0: the whole
    file). Raises _Broken when the connection breaks after the body began, DownloadError
    otherwise."""
    response, offset = _answer(entry, url, target, partial, offset=offset, timeout=timeout)
    with contextlib.closing(response):
        length = _content_length(response)
        total = offset + length if length is not None else None
        if total is not None and total > entry.download_limit:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"zoo {entry.name}: refused {url}: the server announces {total} bytes, more than the "
                f"{entry.download_limit} the published file can have; it is not that file. Check "
                f"{MIRROR_ENV} and your proxy, or " + _by_hand(entry, target)
            )
        _write_body(entry, url, target, partial, response, offset=offset, total=total, length=length, progress=progress)
    return offset


def _answer(
    entry: ZooEntry, url: str, target: Path, partial: Path, *, offset: int, timeout: float
) -> tuple[http.client.HTTPResponse, int]:
    """The response whose body continues `partial` at the returned offset: `offset` when the
    server honours the Range (206 from that byte), 0 when it sends the whole file (200: Range
    ignored), or after a 416 or a range that starts elsewhere, when the whole file is asked for
    again and `partial` removed."""
    response = _open(entry, url, target, offset=offset, timeout=timeout) if offset else None
    if response is not None:
        if response.status != 206:
            return response, 0  # the Range was ignored: this is the whole file
        if _range_start(response.headers.get("Content-Range", "")) == offset:
            return response, offset
        response.close()  # a range we did not ask for
    partial.unlink(missing_ok=True)
    whole = _open(entry, url, target, offset=0, timeout=timeout)
    if whole is None:  # pragma: no cover - _open returns None only for a Range request
        raise DownloadError(f"zoo {entry.name}: {url} answered 416; " + _by_hand(entry, target))
    return whole, 0


def _open(entry: ZooEntry, url: str, target: Path, *, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """The response to GET `url` (from byte `offset` when > 0), None for a 416 answer."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, checked
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return None
        raise DownloadError(f"zoo {entry.name}: {url}: {_http_problem(exc)}; " + _by_hand(entry, target)) from None
    except urllib.error.URLError as exc:
        raise DownloadError(
            f"zoo {entry.name}: cannot reach {url} ({_network_problem(exc.reason)}); "
            + _by_hand(entry, target)
        ) from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"zoo {entry.name}: cannot reach {url} ({_network_problem(exc)}); " + _by_hand(entry, target)
        ) from None


def _write_body(
    entry: ZooEntry,
    url: str,
    target: Path,
    partial: Path,
    response: http.client.HTTPResponse,
    *,
    offset: int,
    total: int | None,
    length: int | None,
    progress: ProgressCallback | None,
) -> None:
    """Copy the response body to `partial` (appended from `offset`, or anew at 0), at most up to
    `entry.download_limit` bytes in all."""
    received = 0
    with _open_partial(partial, append=offset > 0) as handle:
        if progress is not None:
            progress(offset, total)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise _Broken(f"{_network_problem(exc)} after {offset + received} bytes") from None
            if not chunk:
                break
            if offset + received + len(chunk) > entry.download_limit:
                handle.close()
                partial.unlink(missing_ok=True)
                raise DownloadError(
                    f"zoo {entry.name}: refused {url}: the server sent more than the "
                    f"{entry.download_limit} bytes the published file can have; it is not that "
                    f"file, and what came was deleted. Check {MIRROR_ENV} and your proxy, or "
                    + _by_hand(entry, target)
                )
            _write(handle, chunk, partial, entry)
            received += len(chunk)
            if progress is not None:
                progress(offset + received, total)
        handle.flush()
        os.fsync(handle.fileno())
    if length is not None and received < length:
        raise _Broken(f"the connection closed after {offset + received} of {offset + length} bytes")


@contextlib.contextmanager
def _open_partial(partial: Path, *, append: bool) -> Iterator[IO[bytes]]:
    try:
        handle = open(partial, "ab" if append else "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StorageError(f"{partial}: cannot be written ({exc.strerror or exc}); set TORCH_HOME to a writable folder") from None
    with handle:
        yield handle


def _write(handle: IO[bytes], chunk: bytes, partial: Path, entry: ZooEntry) -> None:
    try:
        handle.write(chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(
                f"{partial}: the disk is full after {handle.tell()} bytes (the file needs up to "
                f"{entry.download_limit}); free space, or set TORCH_HOME to a folder on another disk, "
                "and run again: the download continues where it stopped"
            ) from None
        raise StorageError(f"{partial}: cannot be written ({exc.strerror or exc})") from None


def _range_start(content_range: str) -> int | None:
    match = _CONTENT_RANGE.match(content_range.strip())
    return int(match[1]) if match else None


def _content_length(response: http.client.HTTPResponse) -> int | None:
    text = response.headers.get("Content-Length")
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def _http_problem(exc: urllib.error.HTTPError) -> str:
    if exc.code == 404:
        return "the server has no such file (HTTP 404 Not Found)"
    if exc.code == 407:
        return "the proxy asks for credentials (HTTP 407 Proxy Authentication Required)"
    return f"the server answered HTTP {exc.code} {exc.reason}"


def _network_problem(reason: object) -> str:
    if isinstance(reason, socket.gaierror):
        return f"the host name does not resolve: offline, or no DNS ({reason})"
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    text = str(reason)
    if "Tunnel connection failed" in text:
        return f"the proxy refused the connection ({text})"
    return text or type(reason).__name__


def _by_hand(entry: ZooEntry, target: Path) -> str:
    """The fix every download error ends with: where to put the file by hand."""
    check = (
        f" (sha256 {entry.sha256})" if entry.sha256
        else f" (its sha256 starts with {entry.sha256_prefix})" if entry.sha256_prefix
        else ""
    )
    return (
        f"to work offline, download {entry.url} on a machine with internet access and put it at "
        f"{target}{check}, or set {MIRROR_ENV} to a mirror serving the same path"
    )


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"{folder}: the weights cache cannot be created ({exc.strerror or exc}); set TORCH_HOME "
            "to a writable folder"
        ) from None


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """An exclusive `flock` on the cache folder for the whole download (where `fcntl` exists),
    so that two processes never write one `.partial` at once: the second waits, then finds the
    file in place. Locking the folder itself leaves no lock file behind."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StorageError(f"{target.parent}: cannot be opened ({exc.strerror or exc}); set TORCH_HOME to a readable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock

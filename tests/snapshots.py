"""Snapshots of a folder tree, for the hostile-input tests: every file outside a command's named
output must be byte for byte what it was (content, link target, permission bits)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Relative path -> (kind, fingerprint) for everything below `root`, links not followed:
    files by the sha256 of their bytes and their mode, links by their target, folders by mode."""
    found: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", oct(stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", f"{digest}:{oct(stat.S_IMODE(info.st_mode))}")
            else:
                found[rel] = ("other", oct(info.st_mode))
    return found


def changed_outside(before: dict[str, tuple[str, str]], root: Path, *outputs: str) -> list[str]:
    """The paths below `root` (relative) that were added, removed or changed since `before`,
    leaving out those at or below each of `outputs` (relative paths of the named outputs)."""
    after = snapshot(root)

    def inside_output(rel: str) -> bool:
        return any(rel == out or rel.startswith(out.rstrip("/") + "/") for out in outputs)

    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k) and not inside_output(k))

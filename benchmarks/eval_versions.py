"""`retina eval` of this checkout against another version of retinacli, same model, same data.

Each version runs `python -m retinacli eval MODEL ...` in its own process (the other version
from a temporary `git worktree` of REF), alternating, `--repeats` times; the median wall times
and their ratio (this / REF) are printed. Extra arguments after `--` go to this checkout's
`retina eval` only (e.g. `-- --diagnostics` to price the diagnostics).

    python benchmarks/eval_versions.py MODEL --ref 9ec69c8 [--repeats 5] [-- --diagnostics]

MODEL must evaluate without network or extra flags (its recipe's data.test.dataset; set
RETINA_CACHE for a shapes recipe). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(checkout: Path, model: Path, out: Path, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "retinacli", "eval", str(model), "--output-dir", str(out), "--overwrite"]
    start = time.perf_counter()
    subprocess.run([*command, *extra], env=env, cwd=checkout, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--ref", required=True, help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), args.ref], cwd=REPO, check=True, capture_output=True)
        try:
            times: dict[str, list[float]] = {"this": [], "ref": []}
            for _ in range(args.repeats):
                times["ref"].append(_run(other, args.model.resolve(), Path(tmp) / "out_ref", []))
                times["this"].append(_run(REPO, args.model.resolve(), Path(tmp) / "out_this", extra))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, check=False)
    this, ref = statistics.median(times["this"]), statistics.median(times["ref"])
    flags = " ".join(extra) or "(no flag)"
    print(f"retina eval {flags}: this {this:.2f} s, {args.ref} {ref:.2f} s (median of {args.repeats}); ratio {this / ref:.3f}")
    print("  this:", " ".join(f"{t:.2f}" for t in times["this"]))
    print("  ref: ", " ".join(f"{t:.2f}" for t in times["ref"]))


if __name__ == "__main__":
    main()

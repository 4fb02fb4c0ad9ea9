"""The main job, before and after: `retina train recipes/shapes.yaml` at a baseline revision and
in this checkout, run one after the other in one sitting, with wall time and final AP of each.

    python benchmarks/main_job.py --baseline 041b52b [--set solver.max_iter=300 ...]
    python benchmarks/main_job.py --baseline HEAD --time-fraction 0.5   # `--time` at half the baseline's wall time

The baseline is checked out into a temporary git worktree and run from there (its code and its
recipes/shapes.yaml); this checkout's run uses the working tree, with `--set` overrides
if given (to time a recipe change before making it). Both read the same generated
shapes dataset (generated once before either is timed) and run with the same thread count.
Wall time is that of the whole `retina train` command, evaluations and final diagnostics
included. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _train(code: Path, out: Path, env: dict[str, str], overrides: list[str]) -> tuple[float, dict]:
    command = [sys.executable, "-m", "retinacli", "train", str(code / "recipes" / "shapes.yaml"),
               "--output-dir", str(out), *(a for o in overrides for a in ("--set", o))]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code, env={**env, "PYTHONPATH": str(code)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    final = max((out / "eval").iterdir(), key=lambda p: int(p.name))
    return wall, json.loads((final / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="041b52b", help="git revision to compare against")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=None, help="folder for runs (default: temp)")
    parser.add_argument("--time-fraction", type=float, default=None,
                        help="run this checkout with --time set to this fraction of the baseline's measured wall time")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key of this checkout's run only (repeatable)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="retina-main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RETINA_CACHE": str(work / "cache"), "OMP_NUM_THREADS": str(args.threads)}
    baseline = work / "baseline-code"
    if not baseline.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline),
                        args.baseline], check=True, capture_output=True)
    # Generate the dataset once, untimed (both revisions generate the same images).
    subprocess.run([sys.executable, "-m", "retinacli", "data", "check",
                    str(REPO / "recipes" / "shapes.yaml")], cwd=REPO, env=env, check=True,
                   capture_output=True)
    rows = []
    try:
        for name, code in ((f"baseline {args.baseline}", baseline), ("this checkout", REPO)):
            overrides = args.overrides if code == REPO else []
            if code == REPO and args.time_fraction is not None:
                overrides = [*overrides, f"solver.time_budget={args.time_fraction * rows[0][1]:.1f}"]
                print(f"this checkout with solver.time_budget={args.time_fraction * rows[0][1]:.1f}", flush=True)
            wall, metrics = _train(code, work / name.replace(" ", "-"), env, overrides)
            rows.append((name, wall, metrics["AP"], metrics["AP50"]))
            print(f"{name:<22} wall {wall:7.1f} s   AP {metrics['AP']:6.2f}   AP50 "
                  f"{metrics['AP50']:6.2f}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                       capture_output=True)
    (_, base_wall, _, _), (_, wall, ap, _) = rows
    print(f"wall time ratio (this / baseline): {wall / base_wall:.3f}   final AP {ap:.2f} "
          f"(target: ratio <= 0.5 with AP >= 50)")


if __name__ == "__main__":
    main()

"""Peak memory (resident set, VmHWM) of training and of inference, retinacli against
torchvision's RetinaNet, each measured in a fresh process of its own.

Same models and inputs as `engine_vs_torchvision.py` (R50-FPN, 2 images of 480x640 for
training, 1 for inference, same weights). A child process builds one model, runs `--steps`
training iterations (forward, backward, SGD step; ours channels-last, as `retina train`)
or inference calls (ours folded and channels-last, as `retina eval`), and reports its peak
resident set in MiB; the parent prints each and the ratio ours / torchvision.

Usage: python benchmarks/peak_memory.py [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(kind: str, phase: str, steps: int, threads: int) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from engine_vs_torchvision import build_ours, build_torchvision, make_inputs

    from retinacli.engine.fuse import prepare_for_inference

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images, targets = make_inputs(80)
    model = build_ours(80) if kind == "ours" else build_torchvision(80)
    tv_images = [img.float() / 255 for img in images]
    if phase == "train":
        model.train()
        if kind == "ours":
            model.to(memory_format=torch.channels_last)  # as `retina train` runs it
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            if kind == "ours":
                out = model(images, targets)
                loss = out["loss_cls"] + out["loss_box_reg"]
            else:
                out = model(tv_images, [{"boxes": t.boxes, "labels": t.labels} for t in targets])
                loss = sum(out.values())
            loss.backward()
            optimizer.step()
    else:
        model.eval()
        if kind == "ours":
            model = prepare_for_inference(model)
        with torch.inference_mode():
            for _ in range(steps):
                model(images[:1]) if kind == "ours" else model(tv_images[:1])
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": peak / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PHASE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, steps=args.steps, threads=args.threads)
        return
    print(f"peak resident set (MiB), each in its own process, {args.steps} steps, {args.threads} thread(s)")
    for phase in ("train", "infer"):
        peaks = {}
        for kind in ("ours", "torchvision"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, phase, "--steps", str(args.steps), "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )
            peaks[kind] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
        print(f"  {phase:<6} ours {peaks['ours']:8.0f}  torchvision {peaks['torchvision']:8.0f}  ratio {peaks['ours'] / peaks['torchvision']:.3f}")


if __name__ == "__main__":
    main()

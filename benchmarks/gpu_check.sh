#!/usr/bin/env bash
# One short check of retinacli on a CUDA machine (about 5 to 8 minutes on one GPU):
#   1. the golden detectron2 case evaluated on the GPU in fp32, against detectron2's own results
#      (boxes within 0.01 px, scores within 1e-4, the same detections);
#   2. 50 training iterations of recipes/shapes.yaml with AMP: finite losses that go down;
#   3. export to ONNX and parity with onnxruntime (its CUDA provider when installed);
#   4. training and inference images/s beside torchvision's RetinaNet on the same GPU (ratios).
# Run from the repository root: bash benchmarks/gpu_check.sh. Needs ../shared (RETINA_SHARED).
# Exits non-zero at the first failed check; every figure is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export RETINA_SHARED="${RETINA_SHARED:-$(cd .. && pwd)/shared}"
export MPLBACKEND=Agg
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export RETINA_CACHE="$WORK/cache"

python - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
print(f"== device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

echo "== 1. golden detectron2 case on the GPU (fp32)"
python - "$WORK" <<'EOF'
import json, os, subprocess, sys
from collections import defaultdict
from pathlib import Path
work = Path(sys.argv[1])
golden = Path(os.environ["RETINA_SHARED"]) / "golden" / "d2_retinanet_r18"
from retinacli.commands.import_detectron2 import import_detectron2
model = import_detectron2(golden / "config.yaml", golden / "model_final.pth", work / "golden").model_path
subprocess.run([sys.executable, "-m", "retinacli", "eval", str(model), "--dataset", str(golden / "annotations.json"),
                "--images", str(golden / "images"), "--device", "cuda", "--output-dir", str(work / "golden_eval")], check=True)
expected, actual = defaultdict(list), defaultdict(list)
for r in json.loads((golden / "expected" / "coco_results.json").read_text()):
    expected[r["image_id"]].append(r)
for r in json.loads((work / "golden_eval" / "coco_results.json").read_text()):
    actual[r["image_id"]].append(r)
max_box = max_score = 0.0
for image_id, theirs in expected.items():
    ours = actual[image_id]
    assert len(ours) == len(theirs), f"image {image_id}: {len(ours)} detections, detectron2 {len(theirs)}"
    for a, b in zip(ours, theirs):
        assert a["category_id"] == b["category_id"], f"image {image_id}: category differs"
        max_box = max(max_box, *(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])))
        max_score = max(max_score, abs(a["score"] - b["score"]))
print(f"   same detections; largest differences: box {max_box:.2e} px, score {max_score:.2e}")
assert max_box <= 0.01 and max_score <= 1e-4, "outside the golden tolerances"
EOF

echo "== 2. 50 training iterations of recipes/shapes.yaml with AMP"
python -m retinacli train recipes/shapes.yaml --set solver.max_iter=50 --set solver.warmup_iters=10 \
    --set amp=true --set device=cuda --set eval_period=0 --set log_period=5 --output-dir "$WORK/shapes_amp" >/dev/null
python - "$WORK" <<'EOF'
import json, math, sys
from pathlib import Path
lines = [json.loads(l) for l in (Path(sys.argv[1]) / "shapes_amp" / "metrics.jsonl").read_text().splitlines()]
losses = [l["total_loss"] for l in lines if "total_loss" in l]
assert losses and all(math.isfinite(x) for x in losses), f"non-finite losses: {losses}"
first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
print(f"   total_loss {first:.3f} (first logs) -> {last:.3f} (last logs), {len(losses)} logs, all finite")
assert last < first, "the loss did not go down"
EOF

echo "== 3. export to ONNX and onnxruntime parity"
python - <<'EOF'
try:
    import onnxruntime
    print(f"   onnxruntime {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")
except ImportError:
    print("   onnxruntime not installed: skipping the export check")
    raise SystemExit(0)
EOF
if python -c "import onnxruntime" 2>/dev/null; then
    python -m retinacli export "$WORK/shapes_amp/model_final.pth" --out "$WORK/shapes.onnx"
fi

echo "== 4. speed beside torchvision's RetinaNet on this GPU (R50-FPN, 2 images 480x640)"
python benchmarks/engine_vs_torchvision.py --device cuda --repeats 10 --full-repeats 10
python -m retinacli benchmark recipes/coco.yaml --device cuda --image-size 800x1067 --images-per-batch 2 --no-onnx
python -m retinacli benchmark recipes/coco.yaml --device cuda --image-size 800x1067 --images-per-batch 2 --no-onnx --amp
echo "== all GPU checks passed"

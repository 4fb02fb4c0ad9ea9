"""How well `retina data audit` finds known label errors, beside cleanlab's scores of the same
detections (docs/audit.md).

    # 1. put known errors into a COCO json (5% of the boxes per kind by default)
    python benchmarks/label_audit.py inject DATA.json --out INJECTED.json --truth TRUTH.json
    # 2. audit it, with a model that never saw these images or in K-fold mode
    retina data audit MODEL.pth --dataset INJECTED.json --images DIR --output-dir AUDIT
    retina data audit RECIPE.yaml --dataset INJECTED.json --images DIR --output-dir AUDIT
    # 3. precision and recall of each kind at k = the number injected; cleanlab too
    python benchmarks/label_audit.py measure AUDIT --truth TRUTH.json

    # 4. a picture of the top issue of each kind (docs/images/)
    python benchmarks/label_audit.py mosaic AUDIT --out PNG

`measure` rescores the audit's detections.json with the given thresholds (the defaults are the
audit's), so it runs no model; cleanlab's rows need the `audit` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retinacli.audit.inject import INJECTED_KINDS, Injected, found_injected, inject_errors
from retinacli.audit.issues import find_issues, predictions_from_results
from retinacli.audit.scoring import AuditThresholds
from retinacli.build import DatasetFiles, build_given_dataset


def inject(args: argparse.Namespace) -> None:
    data = json.loads(Path(args.data).read_text())
    injected = inject_errors(data, fraction=args.fraction, seed=args.seed)
    Path(args.out).write_text(json.dumps(injected.data))
    Path(args.truth).write_text(json.dumps({kind: getattr(injected, kind) for kind in INJECTED_KINDS}))
    print(f"{args.out}: {injected.counts()} of {sum(1 for a in data['annotations'] if not a.get('iscrowd'))} boxes")


def measure(args: argparse.Namespace) -> None:
    audit = Path(args.audit)
    summary = json.loads((audit / "summary.json").read_text())
    dataset = build_given_dataset(DatasetFiles(Path(summary["dataset"]), Path(summary["images"])))
    predictions = predictions_from_results(json.loads((audit / "detections.json").read_text()), dataset)
    truth = Injected({}, **json.loads(Path(args.truth).read_text()))
    thresholds = AuditThresholds(score_thresh=args.score_thresh)
    ours = found_injected([i.to_dict() for i in find_issues(dataset, predictions, thresholds)], truth)
    rows = [("retinacli", kind, values) for kind, values in ours.items()]
    if not args.no_cleanlab:
        from retinacli.audit.cleanlab_scores import cleanlab_scores

        for label, confident in (("cleanlab (its defaults)", None), (f"cleanlab (confident >= {args.score_thresh})", args.score_thresh)):
            boxes = cleanlab_scores(dataset, predictions, confident=confident)["boxes"]
            theirs = found_injected([i for kind in boxes.values() for i in kind], truth)
            # cleanlab has no kind of its own for a label on background: its badloc ranking is the nearest
            theirs["spurious"] = found_injected([{**i, "kind": "spurious"} for i in boxes["poor_box"]], truth)["spurious"]
            rows += [(label, kind, theirs[kind]) for kind in ("missing", "wrong_class", "poor_box", "spurious")]
    print(f"{summary['mode']} audit of {summary['num_images']} images, {summary['num_labels']} labels; {audit}")
    print("| scores | kind | injected | reported | precision@k | recall@k | recall (all reported) |")
    print("|---|---|---|---|---|---|---|")
    for who, kind, v in rows:
        print(
            f"| {who} | {kind} | {v['injected']} | {v['reported']} | {v['precision_at_k']:.2f} | "
            f"{v['recall_at_k']:.2f} | {v['recall']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([{"scores": w, "kind": k, **v} for w, k, v in rows], indent=1))


def mosaic(args: argparse.Namespace) -> None:
    import tempfile

    from PIL import Image

    from retinacli.audit.issues import Issue
    from retinacli.audit.outputs import draw_issues
    from retinacli.audit.scoring import KINDS

    audit = Path(args.audit)
    summary = json.loads((audit / "summary.json").read_text())
    dataset = build_given_dataset(DatasetFiles(Path(summary["dataset"]), Path(summary["images"])))
    issues = json.loads((audit / "issues.json").read_text())["issues"]
    skip = set(args.skip or [])
    firsts = []
    for kind in KINDS:
        of_kind = [i for i in issues if i["kind"] == kind and i["image_id"] not in skip]
        if of_kind:
            first = of_kind[0]
            firsts.append(Issue(**{**first, "bbox": tuple(first["bbox"])}))
    with tempfile.TemporaryDirectory() as tmp:
        pictures = [Image.open(path).convert("RGB") for _, path in draw_issues(Path(tmp), firsts, dataset, limit=len(firsts))]
    side = args.side
    tiles = [p.resize((side, round(p.height * side / p.width))) for p in pictures]
    columns = min(args.columns, len(tiles))
    rows = -(-len(tiles) // columns)
    height = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * side + (columns - 1) * 4, rows * height + (rows - 1) * 4), (255, 255, 255))
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % columns) * (side + 4), (n // columns) * (height + 4)))
    # 128 colours: the docs' pictures are PNG (tests/test_docs.py opens them); a photo mosaic in
    # full colour would be 5 times larger
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {', '.join(i.kind for i in firsts)}; {sheet.size[0]}x{sheet.size[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("inject", help="put known errors into a COCO json")
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=inject)
    m = commands.add_parser("measure", help="precision and recall of an audit of an injected json")
    m.add_argument("audit")
    m.add_argument("--truth", required=True)
    m.add_argument("--score-thresh", type=float, default=AuditThresholds().score_thresh)
    m.add_argument("--no-cleanlab", action="store_true")
    m.add_argument("--json")
    m.set_defaults(run=measure)
    c = commands.add_parser("mosaic", help="a picture of the top issue of each kind")
    c.add_argument("audit")
    c.add_argument("--out", required=True)
    c.add_argument("--side", type=int, default=320, help="width of each tile in pixels")
    c.add_argument("--columns", type=int, default=3)
    c.add_argument("--skip", type=int, nargs="*", help="image ids left out")
    c.set_defaults(run=mosaic)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

"""Time retinacli's RetinaNet engine against torchvision's RetinaNet, same shapes, same inputs.

Both models are ResNet-50-FPN RetinaNets with random weights and the same layout: BatchNorm
everywhere, nothing frozen, stride on the 3x3 conv, P6 from P5, 256 FPN channels, 4-conv head,
9 anchors, K classes, score threshold 0.05, top-k 1000, NMS 0.5, 300 detections. Both get the
same 2 images of 480x640 (HxW, so torchvision's transform does not change their size) and the
same 5 GT boxes per image, and the same weights: ours are copied into torchvision's model, so
both compute the same features and head outputs. The classification bias is then set so that 2%
of all scores exceed the 0.05 threshold (the golden detectron2 case has 2% on p3 and 8% on p4):
p3 and p4 then still hit the top-1000 cut and NMS sees a few thousand boxes per image.

Measured in one process, ours and torchvision's alternating, median of `--repeats` runs after a
warm-up, with a fixed thread count:
- inference: eval-mode forward under no_grad;
- train iteration: forward + backward of the whole model (training mode; measured last, since
  it moves the BatchNorm statistics), then again with our weights channels-last, as
  `retina train` keeps them;
- anchors + matching + loss: from precomputed head outputs, forward and backward of the loss;
- postprocess: from precomputed head outputs, anchors + decoding + NMS + rescaling.

The default is one thread: on a shared machine, each parallel region of a multi-threaded op waits
for a descheduled thread (milliseconds), which swamps the measurement; `--threads 2` on an idle
machine measures the parallel case.

Usage: python benchmarks/engine_vs_torchvision.py [--threads 1] [--repeats 5] [--classes 80]
       [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.detection import retinanet_resnet50_fpn

from retinacli.build import build_model
from retinacli.engine.detector import NetworkOutputs, RetinaNet
from retinacli.engine.structures import Targets
from retinacli.recipe import load_recipe

HEIGHT, WIDTH = 480, 640
NUM_IMAGES = 2
BOXES_PER_IMAGE = 5
FRACTION_ABOVE_THRESHOLD = 0.02
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_ours(num_classes: int) -> RetinaNet:
    """Our RetinaNet through the recipe builder users get, set to torchvision's layout."""
    mean = [255 * m for m in IMAGENET_MEAN]
    std = [255 * v for v in IMAGENET_STD]
    recipe = load_recipe(
        None,
        [
            "model.input_format=RGB",
            f"model.pixel_mean={mean}",
            f"model.pixel_std={std}",
            "model.backbone.norm=BN",
            "model.backbone.freeze_at=0",
            "model.backbone.stride_in_1x1=false",
            "model.fpn.top_block_input=p5",
            f"model.head.num_classes={num_classes}",
            "model.loss.smooth_l1_beta=0.0",
            "model.test.detections_per_image=300",
        ],
    )
    return build_model(recipe.model)


def build_torchvision(num_classes: int) -> torch.nn.Module:
    return retinanet_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=HEIGHT,
        max_size=WIDTH,
        detections_per_img=300,
    )


def make_inputs(num_classes: int) -> tuple[list[torch.Tensor], list[Targets]]:
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, HEIGHT, WIDTH), generator=gen, dtype=torch.uint8)
        for _ in range(NUM_IMAGES)
    ]
    targets = []
    for _ in range(NUM_IMAGES):
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=gen) * torch.tensor(
            [WIDTH - 200, HEIGHT - 200]
        )
        wh = 20 + torch.rand(BOXES_PER_IMAGE, 2, generator=gen) * 180
        labels = torch.randint(0, num_classes, (BOXES_PER_IMAGE,), generator=gen)
        targets.append(Targets(boxes=torch.cat([xy, xy + wh], dim=1), labels=labels))
    return images, targets


def copy_weights_to_torchvision(ours: RetinaNet, theirs: torch.nn.Module) -> None:
    """Load our weights into torchvision's model (the same layout under other names)."""
    state = {}
    for key, value in ours.state_dict().items():
        name = key
        for mine, tv in (
            ("backbone.fpn.lateral_convs.p", "backbone.fpn.inner_blocks."),
            ("backbone.fpn.output_convs.p", "backbone.fpn.layer_blocks."),
            ("backbone.fpn.top_block.", "backbone.fpn.extra_blocks."),
        ):
            if key.startswith(mine):
                rest = key[len(mine) :]
                if not tv.endswith("extra_blocks."):
                    level, param = rest.split(".")
                    rest = f"{int(level) - 3}.0.{param}"
                name = tv + rest
        for mine, tv in (
            ("head.cls_subnet.", "head.classification_head.conv."),
            ("head.bbox_subnet.", "head.regression_head.conv."),
        ):
            if key.startswith(mine):
                index, param = key[len(mine) :].split(".")
                name = f"{tv}{int(index) // 2}.0.{param}"
        name = name.replace("head.cls_score.", "head.classification_head.cls_logits.")
        name = name.replace("head.bbox_pred.", "head.regression_head.bbox_reg.")
        state[name] = value
    theirs.load_state_dict(state, strict=True)


def set_score_fraction(model: RetinaNet, images: list[torch.Tensor], fraction: float) -> float:
    """Shift the classification bias so that `fraction` of all scores exceed score_thresh."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([x.reshape(-1) for x in model.run_network(images).logits])
        cut = torch.quantile(logits[torch.randperm(len(logits))[: 1 << 20]], 1.0 - fraction)
        t = model.score_thresh
        shift = math.log(t / (1 - t)) - float(cut)
        model.head.cls_score.bias.add_(shift)
    return shift


DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def compare(
    name: str, ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of `ours` and `theirs`, alternating runs after one warm-up each."""
    ours()
    theirs()
    _sync()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            start = time.perf_counter()
            fn()
            _sync()
            times.append(time.perf_counter() - start)
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"{name:<32} {a * 1e3:>10.1f} {b * 1e3:>14.1f} {a / b:>8.3f}", flush=True)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-repeats", type=int, default=3, help="repeats of whole iterations")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument(
        "--parts-only", action="store_true", help="skip the whole-model train/inference timings"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = build_ours(args.classes)
    theirs = build_torchvision(args.classes)
    images, targets = make_inputs(args.classes)
    set_score_fraction(ours, images, FRACTION_ABOVE_THRESHOLD)
    copy_weights_to_torchvision(ours, theirs)
    ours.to(DEVICE)
    theirs.to(DEVICE)
    images = [img.to(DEVICE) for img in images]
    targets = [t.to(DEVICE) for t in targets]
    tv_images = [img.float() / 255 for img in images]
    tv_targets = [{"boxes": t.boxes, "labels": t.labels} for t in targets]
    original_sizes = [(HEIGHT, WIDTH)] * NUM_IMAGES
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(
        f"torch {torch.__version__}, {DEVICE}, threads {torch.get_num_threads()}, {NUM_IMAGES} images "
        f"{HEIGHT}x{WIDTH}, K={args.classes}, parameters ours {n_ours} / torchvision {n_theirs}"
    )
    print(f"{'median time':<32} {'ours ms':>10} {'torchvision ms':>14} {'ratio':>8}")

    def train_ours() -> None:
        ours.zero_grad(set_to_none=True)
        out = ours(images, targets)
        (out["loss_cls"] + out["loss_box_reg"]).backward()

    def train_theirs() -> None:
        theirs.zero_grad(set_to_none=True)
        out = theirs(tv_images, tv_targets)
        sum(out.values()).backward()

    ours.eval()
    theirs.eval()
    with torch.no_grad():
        if not args.parts_only:
            compare("inference", lambda: ours(images), lambda: theirs(tv_images), args.full_repeats)
        # Network outputs once, for the parts outside the network.
        net = ours.run_network(images)
        image_list, tv_t = theirs.transform(tv_images, tv_targets)
        tv_features = list(theirs.backbone(image_list.tensors).values())
        tv_head = theirs.head(tv_features)
    above = [
        f"{float((torch.sigmoid(x) > ours.score_thresh).float().mean()):.3f}" for x in net.logits
    ]
    print(f"fraction of scores above the threshold per level p3..p7: {', '.join(above)}")
    diff = (torch.cat(net.logits, dim=1) - tv_head["cls_logits"]).abs().max().item()
    print(f"same weights and inputs: max |logit ours - torchvision| = {diff:.2e}")
    feature_hw = [tuple(f.shape[-2:]) for f in net.features]

    def ours_outputs(requires_grad: bool) -> NetworkOutputs:
        return NetworkOutputs(
            images=net.images,
            input_sizes=net.input_sizes,
            features=net.features,
            logits=[x.detach().requires_grad_(requires_grad) for x in net.logits],
            deltas=[x.detach().requires_grad_(requires_grad) for x in net.deltas],
            anchors=ours.anchor_generator.grid_anchors(feature_hw),
        )

    def loss_ours() -> None:
        out = ours.losses(ours_outputs(True), targets)
        (out["loss_cls"] + out["loss_box_reg"]).backward()

    def loss_ours_uncached() -> None:
        ours.anchor_generator._grid_cache.clear()
        loss_ours()

    def loss_theirs() -> None:
        head = {k: v.detach().requires_grad_(True) for k, v in tv_head.items()}
        anchors = theirs.anchor_generator(image_list, tv_features)
        sum(theirs.compute_loss(tv_t, head, anchors).values()).backward()

    print("outside the network:")
    compare("  anchors+matching+loss (f+b)", loss_ours, loss_theirs, args.repeats)
    compare("  same, anchor cache cleared", loss_ours_uncached, loss_theirs, args.repeats)

    def post_ours() -> None:
        ours.detect(ours_outputs(False), original_sizes)

    def post_theirs() -> None:
        anchors = theirs.anchor_generator(image_list, tv_features)
        per_level = [x.size(2) * x.size(3) for x in tv_features]
        a = tv_head["cls_logits"].size(1) // sum(per_level)
        per_level = [hw * a for hw in per_level]
        split_head = {k: list(v.split(per_level, dim=1)) for k, v in tv_head.items()}
        split_anchors = [list(x.split(per_level)) for x in anchors]
        dets = theirs.postprocess_detections(split_head, split_anchors, image_list.image_sizes)
        theirs.transform.postprocess(dets, image_list.image_sizes, original_sizes)

    with torch.no_grad():
        compare("  postprocess", post_ours, post_theirs, args.repeats)
        num_dets = [len(d.scores) for d in ours.detect(ours_outputs(False), original_sizes)]
    print(f"detections per image after postprocess (ours): {num_dets}")

    # Last: training-mode forwards update the BatchNorm statistics, which changes eval outputs.
    if not args.parts_only:
        ours.train()
        theirs.train()
        compare("train iteration (fwd+bwd)", train_ours, train_theirs, args.full_repeats)
        ours.to(memory_format=torch.channels_last)  # as `retina train` runs it
        compare("  same, ours channels-last", train_ours, train_theirs, args.full_repeats)


if __name__ == "__main__":
    main()

"""Reading detectron2 configs safely and translating them into recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from retinacli.errors import RecipeError
from retinacli.recipe import validate_recipe
from retinacli.recipe.detectron2 import read_detectron2_config, translate


def test_golden_config_translates_to_an_equivalent_recipe(golden_dir):
    flat = read_detectron2_config(golden_dir / "config.yaml")
    translation = translate(flat)
    recipe = validate_recipe(translation.recipe)
    m = recipe.model
    assert (m.backbone.depth, m.backbone.norm, m.backbone.freeze_at) == (18, "FrozenBN", 2)
    assert m.backbone.res2_out_channels == 64 and m.fpn.out_channels == 64
    assert m.head.num_classes == 3 and m.head.num_convs == 4
    # the eval-tag sizes, computed without eval, equal Python's arithmetic exactly
    assert m.anchors.sizes == [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    assert m.anchors.aspect_ratios == [[0.5, 1.0, 2.0]] * 5
    assert m.loss.smooth_l1_beta == 0.1 and m.test.topk_candidates == 1000
    assert recipe.data.test.resize.short_sizes == [320] and recipe.data.test.resize.max_size == 533
    assert recipe.data.train.flip == "none"
    assert translation.ignored_keys == []


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_chain_tuple_strings_and_defaults(tmp_path):
    write(
        tmp_path,
        "Base.yaml",
        "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE: {NAME: build_retinanet_resnet_fpn_backbone}\n"
        "  RESNETS: {OUT_FEATURES: [res3, res4, res5]}\n  FPN: {IN_FEATURES: [res3, res4, res5]}\n"
        "INPUT:\n  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)\n"
        "SOLVER:\n  IMS_PER_BATCH: 16\n  BASE_LR: 0.01\n  STEPS: (60000, 80000)\n  MAX_ITER: 90000\n",
    )
    child = write(tmp_path, "child.yaml", "_BASE_: Base.yaml\nSOLVER:\n  STEPS: (210000, 250000)\n  MAX_ITER: 270000\n")
    recipe = validate_recipe(translate(read_detectron2_config(child)).recipe)
    assert recipe.data.train.resize.short_sizes == [640, 672, 704, 736, 768, 800]
    assert (recipe.solver.steps, recipe.solver.max_iter, recipe.solver.base_lr) == ([210000, 250000], 270000, 0.01)
    # not written anywhere: detectron2's defaults.py values
    assert recipe.model.anchors.sizes == [[32.0, 64.0, 128.0, 256.0, 512.0]] * 5
    assert recipe.data.test.resize.short_sizes == [800]


def test_eval_expression_that_is_not_arithmetic_is_refused(tmp_path):
    path = write(
        tmp_path,
        "evil.yaml",
        'MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: !!python/object/apply:eval ["__import__(\'os\').system(\'true\')"]\n',
    )
    with pytest.raises(RecipeError, match=r"evil\.yaml line 3, column \d+: apply:eval expression refused"):
        read_detectron2_config(path)


def test_other_python_tags_are_refused(tmp_path):
    path = write(tmp_path, "evil.yaml", 'SEED: !!python/object/apply:os.system ["true"]\n')
    with pytest.raises(RecipeError, match=r"evil\.yaml line 1"):
        read_detectron2_config(path)


def test_unsupported_values_are_named(tmp_path):
    path = write(
        tmp_path,
        "x.yaml",
        "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE: {NAME: build_retinanet_resnet_fpn_backbone}\n"
        "  RESNETS: {NUM_GROUPS: 32, DEFORM_ON_PER_STAGE: [false, true, true, true]}\n",
    )
    with pytest.raises(RecipeError) as info:
        translate(read_detectron2_config(path), source="x.yaml")
    assert "MODEL.RESNETS.NUM_GROUPS = 32" in str(info.value)
    assert "MODEL.RESNETS.DEFORM_ON_PER_STAGE" in str(info.value)


def test_unknown_keys_are_reported_and_urls_noted(tmp_path):
    path = write(
        tmp_path,
        "x.yaml",
        "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE: {NAME: build_retinanet_resnet_fpn_backbone}\n"
        "  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl\n  FPN: {IN_FEATURES: [res3, res4, res5]}\n"
        "  RESNETS: {OUT_FEATURES: [res3, res4, res5]}\n  FANCY_THING: 3\n"
        "DATASETS:\n  TRAIN: (coco_2017_train,)\n",
    )
    translation = translate(read_detectron2_config(path))
    assert "MODEL.FANCY_THING" in translation.ignored_keys
    assert "DATASETS.TRAIN" in translation.ignored_keys
    assert any("never downloads" in note for note in translation.notes)
    assert translation.recipe["model"]["weights"] is None


RETINA_HEADER = (
    "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  BACKBONE: {NAME: build_retinanet_resnet_fpn_backbone}\n"
    "  FPN: {IN_FEATURES: [res3, res4, res5]}\n  RESNETS: {OUT_FEATURES: [res3, res4, res5]}\n"
)


def test_training_keys_that_change_training_are_translated(tmp_path):
    path = write(
        tmp_path,
        "lvis.yaml",
        RETINA_HEADER + "DATALOADER: {SAMPLER_TRAIN: RepeatFactorTrainingSampler, REPEAT_THRESHOLD: 0.001, "
        "REPEAT_SQRT: false}\nSOLVER: {LR_SCHEDULER_NAME: WarmupStepWithFixedGammaLR, NUM_DECAYS: 4, "
        "RESCALE_INTERVAL: true}\n",
    )
    recipe = validate_recipe(translate(read_detectron2_config(path)).recipe)
    train = recipe.data.train
    assert (train.sampler, train.repeat_threshold, train.repeat_sqrt) == ("RepeatFactorTrainingSampler", 0.001, False)
    assert (recipe.solver.scheduler, recipe.solver.num_decays, recipe.solver.rescale_interval) == (
        "WarmupStepWithFixedGammaLR", 4, True,
    )


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        ("DATALOADER: {SAMPLER_TRAIN: RandomSubsetTrainingSampler}\n", "DATALOADER.SAMPLER_TRAIN = 'RandomSubsetTrainingSampler'"),
        ("SOLVER: {REFERENCE_WORLD_SIZE: 8}\n", "SOLVER.REFERENCE_WORLD_SIZE = 8 (retinacli does not rescale"),
        ("TEST: {PRECISE_BN: {ENABLED: true}}\n", "TEST.PRECISE_BN.ENABLED = True (precise BN"),
        ("TEST: {AUG: {ENABLED: true}}\n", "TEST.AUG.ENABLED = True (test-time augmentation"),
    ],
)
def test_keys_retinacli_cannot_carry_over_are_refused_by_name(tmp_path, lines, named):
    path = write(tmp_path, "x.yaml", RETINA_HEADER + lines)
    with pytest.raises(RecipeError) as info:
        translate(read_detectron2_config(path), source="x.yaml")
    assert named in str(info.value)


def test_disabled_precise_bn_and_test_augmentation_are_fine(tmp_path):
    path = write(tmp_path, "x.yaml", RETINA_HEADER + "TEST: {PRECISE_BN: {ENABLED: false, NUM_ITER: 300}, AUG: {ENABLED: false}}\n")
    translation = translate(read_detectron2_config(path))
    assert not any(k.startswith("TEST.") for k in translation.ignored_keys)

"""Tests for npmaskrcnn/config.py: presets and the round trip through a checkpoint's JSON."""

import json

import pytest

from npmaskrcnn.config import PRESETS, MaskRCNNConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_through_json(name):
    cfg = PRESETS[name]()
    again = MaskRCNNConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_fields_of_older_checkpoints_are_ignored_but_unknown_ones_refused():
    d = PRESETS["shapes"]().to_dict()
    d["roi_heads"]["mask_dilation"] = 1  # removed: never used by the model
    assert MaskRCNNConfig.from_dict(d) == PRESETS["shapes"]()
    d["roi_heads"]["no_such_field"] = 3
    with pytest.raises(TypeError, match="no_such_field"):
        MaskRCNNConfig.from_dict(d)


def test_configs_from_before_the_keypoint_branch_load_as_mask_rcnn():
    """A checkpoint written before keypoints existed has no ``keypoint`` group, no
    ``mask_on`` and no ``loss_keypoint`` weight: it reads back as the same Mask R-CNN."""
    d = PRESETS["shapes"]().to_dict()
    del d["keypoint"], d["roi_heads"]["mask_on"], d["loss_weights"]["loss_keypoint"]
    cfg = MaskRCNNConfig.from_dict(d)
    assert cfg == PRESETS["shapes"]()
    assert not cfg.keypoint.on and cfg.roi_heads.mask_on


@pytest.mark.parametrize("name, mask_on, keypoint_on", [
    ("shapes", True, False), ("r50_fpn", True, False), ("keypoint_r50_fpn", False, True),
    ("keypoint_mask_r50_fpn", True, True), ("figures", False, True),
    ("figures_mask", True, True)])
def test_which_branches_each_preset_builds(name, mask_on, keypoint_on):
    cfg = PRESETS[name]()
    assert (cfg.roi_heads.mask_on, cfg.keypoint.on) == (mask_on, keypoint_on)
    assert cfg.num_classes == (2 if keypoint_on else cfg.num_classes)


def test_checkpoints_from_before_the_canonical_scale_read_back_with_224():
    """Older configs have no roi_heads.canonical_scale: they were trained with the level rule's
    224, the field's default, and read back so; the presets scale it with their anchors."""
    d = PRESETS["shapes"]().to_dict()
    del d["roi_heads"]["canonical_scale"]
    assert MaskRCNNConfig.from_dict(d).roi_heads.canonical_scale == 224
    assert PRESETS["shapes"]().roi_heads.canonical_scale == 56
    assert PRESETS["r50_fpn"]().roi_heads.canonical_scale == 224
    assert PRESETS["figures"]().roi_heads.canonical_scale == 448  # keypoints want P2

"""Recognising, importing and placing pretrained weights (and torchvision parity)."""

from pathlib import Path

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy, backend_name, get_xp
from npmaskrcnn.config import MaskRCNNConfig, r50_fpn, tiny
from npmaskrcnn.engine.checkpoint import load_checkpoint, read_meta
from npmaskrcnn.engine.weight_files import WeightsError, WeightsFile, write_safetensors
from npmaskrcnn.engine.weights import (
    LAYOUTS,
    import_weights,
    infer_config,
    load_pretrained,
    recognise,
    rename,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN

COCO_MINI = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_mini"
BODY = "backbone.body."


def tiny_bn(num_classes=3):
    """The tiny model with FrozenBN and stem + layer1 frozen, as torchvision fine-tunes."""
    cfg = tiny(num_classes)
    cfg.backbone.norm = "frozen_bn"
    cfg.backbone.frozen_stages = 2
    return cfg


def random_state(cfg, seed=1):
    """Every array of ``MaskRCNN(cfg)``, filled with distinct random float32 values."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in MaskRCNN(cfg).state_dict().items():
        a = rng.uniform(0.5, 1.5, v.shape) if k.endswith("running_var") else \
            rng.standard_normal(v.shape)
        out[k] = a.astype(np.float32)
    return out


def torchvision_style(state):
    """As torchvision's ``state_dict()`` of a BatchNorm model: + ``num_batches_tracked``."""
    out = {}
    for k, v in state.items():
        out[k] = v
        if k.endswith(".running_var"):
            out[k.replace("running_var", "num_batches_tracked")] = np.array(100, np.int64)
    return out


def classifier_style(state, num_outputs=10):
    """A torchvision ResNet classifier: the body without its prefix, + ``fc``."""
    body = {k[len(BODY):]: v for k, v in torchvision_style(state).items() if k.startswith(BODY)}
    c5 = body["layer4.1.conv2.weight"].shape[0]  # BasicBlock: C5 = planes
    return {**body, "fc.weight": np.ones((num_outputs, c5), np.float32),
            "fc.bias": np.zeros(num_outputs, np.float32)}


def host_state(model):
    return {k: asnumpy(v).copy() for k, v in model.state_dict().items()}


def one_line_naming(err, path, key):
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{path}: {key}: "), msg
    return msg


# ----------------------------------------------------------------------------- recognising


@pytest.mark.parametrize("keys, name", [
    (["backbone.body.conv1.weight", "roi_heads.box_head.fc6.weight",
      "roi_heads.mask_predictor.mask_fcn_logits.weight"], "maskrcnn_resnet50_fpn names"),
    (["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"], "ResNet classifier"),
    (["backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight"], "ResNet backbone"),
    (["rpn.head.conv.0.0.weight", "rpn.head.conv.1.0.weight", "roi_heads.box_head.0.0.weight",
      "roi_heads.box_head.5.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight"],
     "maskrcnn_resnet50_fpn_v2"),
    (["roi_heads.box_head.fc6.weight", "roi_heads.keypoint_predictor.kps_score_lowres.weight"],
     "keypointrcnn_resnet50_fpn"),
    (["roi_heads.box_head.fc6.weight", "roi_heads.keypoint_predictor.kps_score_lowres.weight",
      "roi_heads.mask_predictor.mask_fcn_logits.weight"], "keypointrcnn_resnet50_fpn"),
])
def test_recognise_each_layout(keys, name):
    layout = recognise(WeightsFile("w.pth", {k: np.zeros(1) for k in keys}, "test"))
    assert name in layout.name
    assert bool(layout.refuse) == (name == "maskrcnn_resnet50_fpn_v2")


def test_unknown_layout_names_the_file_and_its_first_key():
    wf = WeightsFile("model.pth", {"module.encoder.weight": np.zeros(1)}, "test")
    with pytest.raises(WeightsError) as err:
        recognise(wf)
    msg = one_line_naming(err, "model.pth", "module.encoder.weight")
    assert "not a layout npmaskrcnn knows" in msg


def test_rename_prefixes_and_skips_with_reasons():
    layout = next(lay for lay in LAYOUTS if "classifier" in lay.name)
    arrays = {"conv1.weight": np.zeros(1), "bn1.num_batches_tracked": np.array(3),
              "layer1.0.bn1.num_batches_tracked": np.array(3), "fc.weight": np.zeros(1),
              "fc.bias": np.zeros(1)}
    mapped, skipped = rename(WeightsFile("w", arrays, "t", dropped={"wrapper": ["epoch"]}),
                             layout)
    assert list(mapped) == ["backbone.body.conv1.weight"]
    counts = {reason.split(":")[0]: names for reason, names in skipped.items()}
    assert counts == {"wrapper": ["epoch"], "fc.*": ["fc.weight", "fc.bias"],
                      "num_batches_tracked": ["bn1.num_batches_tracked",
                                              "layer1.0.bn1.num_batches_tracked"]}


def test_infer_config_reads_depth_and_classes():
    state = random_state(tiny_bn(5))
    layout = next(lay for lay in LAYOUTS if "maskrcnn_resnet50_fpn names" in lay.name)
    cfg = infer_config(layout, state)
    assert cfg.backbone.depth == 18 and cfg.num_classes == 5
    assert cfg.backbone.norm == "frozen_bn" and cfg.transform.min_size == 800  # r50_fpn's
    del state["backbone.body.layer3.1.conv1.weight"], state["backbone.body.layer3.1.bn1.bias"]
    state = {k: v for k, v in state.items() if not k.startswith("backbone.body.layer3.1.")}
    with pytest.raises(ValueError, match=r"basic blocks \(2, 2, 1, 2\)"):
        infer_config(layout, state)


# ----------------------------------------------------------------------------- import


def test_import_classifier_backbone(tmp_path):
    """A ResNet classifier (safetensors, no torch): body mapped under backbone.body.*,
    fc.* and num_batches_tracked skipped and counted."""
    state = random_state(tiny_bn())
    src = write_safetensors(tmp_path / "resnet.safetensors", classifier_style(state))
    report = import_weights(src, tmp_path / "out.npz", cfg=tiny_bn())
    body = {k: v for k, v in state.items() if k.startswith(BODY)}
    num_bn = sum(k.endswith(".running_var") for k in body)
    assert report.scope == "backbone" and "ResNet classifier" in report.kind
    assert len(report.mapped) == len(body)
    assert ("conv1.weight", "backbone.body.conv1.weight") in report.mapped
    skipped = {reason.split(":")[0]: len(names) for reason, names in report.skipped.items()}
    assert skipped == {"num_batches_tracked": num_bn, "fc.*": 2}
    text = str(report)
    assert f"mapped  {len(body):4d} arrays" in text and f"skipped {num_bn:4d} num_batches" in text
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == sorted(["meta"] + [f"model/{k}" for k in body])
        for k, v in body.items():
            np.testing.assert_array_equal(z[f"model/{k}"], v)
    meta = read_meta(str(tmp_path / "out.npz"))
    assert meta["weights"]["scope"] == "backbone" and "model_config" not in meta


def test_import_whole_model_is_a_checkpoint(tmp_path):
    """A torchvision-named Mask R-CNN: the output is read back by load_checkpoint."""
    state = random_state(tiny_bn())
    np.savez(tmp_path / "mrcnn.npz", **torchvision_style(state))
    report = import_weights(tmp_path / "mrcnn.npz", tmp_path / "out.npz", cfg=tiny_bn())
    assert report.scope == "model" and len(report.mapped) == len(state)
    meta = read_meta(str(tmp_path / "out.npz"))
    assert MaskRCNNConfig.from_dict(meta["model_config"]) == tiny_bn()
    assert meta["weights"]["source"] == "mrcnn.npz"
    model = MaskRCNN(tiny_bn())
    load_checkpoint(str(tmp_path / "out.npz"), model)
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k])
    # importing our own file again keeps its config (no cfg given)
    again = import_weights(tmp_path / "out.npz", tmp_path / "again.npz")
    assert again.container.startswith("npmaskrcnn weights file")
    meta = read_meta(str(tmp_path / "again.npz"))
    assert MaskRCNNConfig.from_dict(meta["model_config"]) == tiny_bn()


def _missing_key(state):
    del state["backbone.body.layer2.0.conv1.weight"]
    return state, "backbone.body.layer2.0.conv1.weight", "missing from the file"


def _shape_mismatch(state):
    key = "backbone.fpn.layer_blocks.1.0.weight"
    state[key] = np.zeros((8, 8, 1, 1), np.float32)
    return state, key, r"shape mismatch: the file has (8, 8, 1, 1), the model has (8, 8, 3, 3)"


def _unknown_key(state):
    state["roi_heads.box_head.fc8.weight"] = np.zeros((2, 2), np.float32)
    return state, "roi_heads.box_head.fc8.weight", "the model has no such array"


def _other_architecture(state):
    # first in the file both in insertion order (.npz) and in name order (.safetensors)
    state["roi_heads.box_head.0.0.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    state["rpn.head.conv.1.0.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    return state, "roi_heads.box_head.0.0.weight", "maskrcnn_resnet50_fpn_v2, another"


@pytest.mark.parametrize("case", [_missing_key, _shape_mismatch, _unknown_key,
                                  _other_architecture])
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_import_refuses_naming_file_and_key_and_writes_nothing(tmp_path, case, suffix):
    state, key, problem = case(random_state(tiny_bn()))
    src = tmp_path / f"bad{suffix}"
    if suffix == ".npz":
        np.savez(src, **state)
    else:
        write_safetensors(src, state)
    out = tmp_path / "out.npz"
    with pytest.raises(WeightsError) as err:
        import_weights(src, out, cfg=tiny_bn())
    assert problem in one_line_naming(err, src, key)
    assert not out.exists()
    out.write_bytes(b"previous")  # an existing OUT is left as it was
    with pytest.raises(WeightsError):
        import_weights(src, out, cfg=tiny_bn())
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "out.npz"])


def test_import_refuses_a_truncated_file(tmp_path):
    state = random_state(tiny_bn())
    src = write_safetensors(tmp_path / "w.safetensors", state)
    blob = Path(src).read_bytes()
    Path(src).write_bytes(blob[:-100])
    last = sorted(state)[-1]  # tensors are laid out in name order: the last one is cut
    with pytest.raises(WeightsError) as err:
        import_weights(src, tmp_path / "out.npz", cfg=tiny_bn())
    assert "truncated" in one_line_naming(err, src, last)
    assert not (tmp_path / "out.npz").exists()


def test_import_infers_r50_and_refuses_other_shapes(tmp_path):
    """Without cfg a torchvision-named file is checked against r50_fpn: a tiny ResNet-18
    file fits its names but not its shapes."""
    np.savez(tmp_path / "w.npz", **random_state(tiny_bn()))
    with pytest.raises(WeightsError) as err:
        import_weights(tmp_path / "w.npz", tmp_path / "out.npz")
    assert "the file has (4, 3, 7, 7), the model has (64, 3, 7, 7)" in one_line_naming(
        err, tmp_path / "w.npz", "backbone.body.conv1.weight")
    with pytest.raises(WeightsError, match=r"out\.pth: the output must be an \.npz"):
        import_weights(tmp_path / "w.npz", tmp_path / "out.pth")


# ----------------------------------------------------------------------------- load_pretrained


def test_load_whole_model(tmp_path):
    state = random_state(tiny_bn())
    np.savez(tmp_path / "w.npz", **torchvision_style(state))
    model = MaskRCNN(tiny_bn())
    report = load_pretrained(model, tmp_path / "w.npz")
    assert len(report.mapped) == len(state) and not report.fresh
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k])
    assert "stem + layer1 frozen (frozen_stages=2)" in str(report)


def test_other_number_of_classes_keeps_class_specific_layers_fresh(tmp_path):
    state = random_state(tiny_bn(num_classes=3))
    np.savez(tmp_path / "w.npz", **state)
    model = MaskRCNN(tiny_bn(num_classes=5))
    init = host_state(MaskRCNN(tiny_bn(num_classes=5)))  # same seed: the same fresh init
    report = load_pretrained(model, tmp_path / "w.npz")
    (reason, fresh), = report.fresh.items()
    assert "file 3 classes, model 5" in reason
    assert sorted(fresh) == sorted(
        f"roi_heads.{m}.{p}" for m in ("box_predictor.cls_score", "box_predictor.bbox_pred",
                                       "mask_predictor.mask_fcn_logits")
        for p in ("weight", "bias"))
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, init[k] if k in fresh else state[k], err_msg=k)
    assert "fresh      6 class-specific" in str(report)
    summary = report.as_dict()
    assert summary["mapped"] == len(state) - 6 and summary["fresh"] == {reason: 6}


def test_import_refuses_another_number_of_classes_than_its_cfg(tmp_path):
    """import_weights writes a file as it is: class-specific layers of another shape than
    the configuration it is checked against are a mismatch there, not left out."""
    np.savez(tmp_path / "w.npz", **random_state(tiny_bn(num_classes=3)))
    with pytest.raises(WeightsError) as err:
        import_weights(tmp_path / "w.npz", tmp_path / "out.npz", cfg=tiny_bn(num_classes=5))
    assert "the file has (3, 32), the model has (5, 32)" in one_line_naming(
        err, tmp_path / "w.npz", "roi_heads.box_predictor.cls_score.weight")


def test_load_backbone_from_a_classifier(tmp_path):
    state = random_state(tiny_bn())
    src = write_safetensors(tmp_path / "resnet.safetensors", classifier_style(state))
    model = MaskRCNN(tiny_bn(num_classes=4))
    before = host_state(model)
    report = load_pretrained(model, src)
    assert report.scope == "backbone"
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k] if k.startswith(BODY) else before[k])
    (reason, rest), = report.fresh.items()
    assert "outside the backbone" in reason and all(not k.startswith(BODY) for k in rest)


def test_backbone_only_from_a_whole_model_file(tmp_path):
    state = random_state(tiny_bn())
    np.savez(tmp_path / "w.npz", **state)
    model = MaskRCNN(tiny_bn())
    before = host_state(model)
    report = load_pretrained(model, tmp_path / "w.npz", backbone_only=True)
    assert report.scope == "backbone"
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k] if k.startswith(BODY) else before[k])


def test_single_level_model_skips_the_stage_it_does_not_build(tmp_path):
    state = random_state(tiny_bn())
    src = write_safetensors(tmp_path / "resnet.safetensors", classifier_style(state))
    cfg = tiny_bn()
    cfg.backbone.features = "c4"  # layer4 is not built
    report = load_pretrained(MaskRCNN(cfg), src)
    (names,) = [v for r, v in report.skipped.items() if "does not build" in r]
    assert names and all(n.startswith("layer4.") for n in names)  # as named in the file


def test_classifier_refusals_name_the_file_key_and_ours(tmp_path):
    arrays = classifier_style(random_state(tiny_bn()))
    del arrays["layer2.0.conv1.weight"]
    src = write_safetensors(tmp_path / "resnet.safetensors", arrays)
    with pytest.raises(WeightsError) as err:
        load_pretrained(MaskRCNN(tiny_bn()), src)
    msg = one_line_naming(err, src, "layer2.0.conv1.weight")
    assert msg.endswith("missing from the file (the model needs it) "
                        "(ours: backbone.body.layer2.0.conv1.weight)")


def test_group_norm_model_refuses_batchnorm_statistics(tmp_path):
    src = write_safetensors(tmp_path / "resnet.safetensors",
                            classifier_style(random_state(tiny_bn())))
    model = MaskRCNN(tiny())  # GroupNorm
    before = host_state(model)
    with pytest.raises(WeightsError) as err:
        load_pretrained(model, src)
    msg = one_line_naming(err, src, "bn1.running_mean")  # the file's name, and ours
    assert "(ours: backbone.body.bn1.running_mean)" in msg
    assert "BatchNorm statistics" in msg and "'group_norm'" in msg and "'frozen_bn'" in msg
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, before[k])


def test_frozen_bn_model_refuses_a_group_norm_file(tmp_path):
    np.savez(tmp_path / "gn.npz", **random_state(tiny()))
    with pytest.raises(WeightsError) as err:
        load_pretrained(MaskRCNN(tiny_bn()), tmp_path / "gn.npz")
    msg = one_line_naming(err, tmp_path / "gn.npz", "backbone.body.bn1.running_mean")
    assert "no BatchNorm statistics" in msg and "GroupNorm" in msg


def test_refusal_leaves_the_model_untouched(tmp_path):
    state, key, _ = _shape_mismatch(random_state(tiny_bn()))  # a key late in the file
    np.savez(tmp_path / "w.npz", **state)
    model = MaskRCNN(tiny_bn())
    before = host_state(model)
    with pytest.raises(WeightsError) as err:
        load_pretrained(model, tmp_path / "w.npz")
    one_line_naming(err, tmp_path / "w.npz", key)
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, before[k])


def test_load_onto_the_cpupy_backend(tmp_path):
    state = random_state(tiny_bn())
    np.savez(tmp_path / "w.npz", **state)
    model = MaskRCNN(tiny_bn(), backend="cpupy")
    load_pretrained(model, tmp_path / "w.npz")
    for k, v in model.state_dict().items():
        assert backend_name(get_xp(v)) == "cpupy", k
        np.testing.assert_array_equal(asnumpy(v), state[k])


# ----------------------------------------------------------------------------- torchvision


def _randomize_batchnorm(module, seed):
    """Random BatchNorm affine and statistics (torchvision initialises them to the
    identity, under which a swapped mean/var or weight/bias would go unnoticed)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    t = getattr(m, name)
                    r = torch.rand(t.shape, generator=g)
                    t.copy_(0.5 + r if name in ("weight", "running_var") else 0.4 * (r - 0.5))


def _coco_image(name="000000005802.jpg"):
    from PIL import Image

    if not COCO_MINI.is_dir():
        pytest.skip("shared coco_mini data not present")
    with Image.open(COCO_MINI / "images" / name) as im:
        return np.asarray(im.convert("RGB"), np.float64).transpose(2, 0, 1) / 255


def test_torchvision_maskrcnn_imported_gives_torchvision_detections(tmp_path):
    """A randomly initialised torchvision maskrcnn_resnet50_fpn, saved with
    ``torch.save(model.state_dict())`` and imported, detects what torchvision detects on a
    real image (float64; score threshold 0 so that random weights give detections)."""
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    size = 256
    # fewer proposals and detections than the defaults keep the test fast; the same
    # settings on both sides
    tv = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=size,
                                         max_size=size, rpn_pre_nms_top_n_test=300,
                                         rpn_post_nms_top_n_test=150, box_score_thresh=0.0,
                                         box_detections_per_img=30)
    _randomize_batchnorm(tv, 0)
    torch.save(tv.state_dict(), tmp_path / "maskrcnn.pth")
    report = import_weights(tmp_path / "maskrcnn.pth", tmp_path / "maskrcnn.npz")
    assert report.scope == "model" and len(report.mapped) == 307
    assert sum(len(v) for k, v in report.skipped.items() if "num_batches" in k) == 53

    # the model is rebuilt from the imported file's own config, as the CLI does
    cfg = MaskRCNNConfig.from_dict(read_meta(str(tmp_path / "maskrcnn.npz"))["model_config"])
    assert cfg.num_classes == 91 and cfg.backbone.depth == 50
    cfg.transform.min_size = cfg.transform.max_size = size
    cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test = 300, 150
    cfg.roi_heads.score_thresh, cfg.roi_heads.detections_per_img = 0.0, 30
    ours = MaskRCNN(cfg, dtype=np.float64)
    load_pretrained(ours, tmp_path / "maskrcnn.npz")

    image = _coco_image()
    with torch.no_grad():
        want = tv.double().eval()([torch.from_numpy(image)])[0]
    want = {k: v.numpy() for k, v in want.items()}
    got = ours.predict([image])[0]
    assert len(want["labels"]) == 30
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=1e-6)
    np.testing.assert_allclose(got["masks"], want["masks"][:, 0], atol=1e-5)


def test_torchvision_resnet50_imported_gives_torchvision_features(tmp_path):
    """An ImageNet-style torchvision resnet50 (random init: nothing is downloaded) imported
    into our backbone gives torchvision's C2..C5 on a real image (float64)."""
    torch = pytest.importorskip("torch")
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    tv = tvm.resnet50(weights=None)
    _randomize_batchnorm(tv, 1)
    torch.save(tv.state_dict(), tmp_path / "resnet50.pth")
    report = import_weights(tmp_path / "resnet50.pth", tmp_path / "resnet50.npz")
    assert len(report.mapped) == 265 and report.scope == "backbone"
    assert "ResNet-50" in " ".join(report.notes)

    ours = MaskRCNN(r50_fpn(num_classes=3), dtype=np.float64)
    load_pretrained(ours, tmp_path / "resnet50.npz")
    x = (_coco_image()[:, :160, :192] - 0.45) / 0.225
    tv = tv.double().eval()
    with torch.no_grad():
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(torch.from_numpy(x[None])))))
        want = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            t = getattr(tv, name)(t)
            want.append(t.numpy())
    got = ours.eval().backbone.body(x[None])
    for level, (g, w) in enumerate(zip(got, want), start=2):
        err = np.abs(g - w).max() / np.abs(w).max()
        assert err < 1e-10, f"C{level}: relative error {err:.1e}"


# ----------------------------------------------------------------------------- keypoints


def tiny_bn_keypoints(masks=False, num_keypoints=17, num_classes=2):
    """``tiny_bn`` with a keypoint branch (as Keypoint R-CNN: no mask branch by default)."""
    from npmaskrcnn.config import KeypointConfig

    cfg = tiny_bn(num_classes)
    cfg.roi_heads.mask_on = masks
    cfg.keypoint = KeypointConfig(on=True, num_keypoints=num_keypoints, layers=(8, 8))
    return cfg


def test_infer_config_of_a_keypoint_file():
    """A torchvision-named Keypoint R-CNN file: keypoint_r50_fpn with the file's depth,
    classes, keypoints and head widths; its mask branch when it has one."""
    layout = next(lay for lay in LAYOUTS if "keypointrcnn" in lay.name)
    for masks in (False, True):
        cfg = infer_config(layout, random_state(tiny_bn_keypoints(masks, num_keypoints=5)))
        assert cfg.keypoint.on and cfg.keypoint.layers == (8, 8)
        assert cfg.keypoint.num_keypoints == 5 and cfg.num_classes == 2
        assert cfg.roi_heads.mask_on == masks and cfg.backbone.depth == 18
        assert cfg.transform.min_size == (640, 672, 704, 736, 768, 800)


def test_import_and_load_a_keypoint_model(tmp_path):
    state = random_state(tiny_bn_keypoints())
    np.savez(tmp_path / "kp.npz", **torchvision_style(state))
    report = import_weights(tmp_path / "kp.npz", tmp_path / "out.npz", cfg=tiny_bn_keypoints())
    assert "Keypoint R-CNN" in report.kind and len(report.mapped) == len(state)
    model = MaskRCNN(tiny_bn_keypoints())
    load_checkpoint(str(tmp_path / "out.npz"), model)
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k])


def test_a_branch_the_file_lacks_stays_fresh_and_is_named(tmp_path):
    """A Keypoint R-CNN file (no mask branch) into the keypoint & mask model, and a Mask
    R-CNN file into a keypoint model: the other branch keeps its initialisation, named in
    the report; everything else comes from the file. import_weights still refuses it."""
    cases = ((tiny_bn_keypoints(), tiny_bn_keypoints(masks=True), "mask"),
             (tiny_bn(num_classes=2), tiny_bn_keypoints(), "keypoint"))
    for source, target, branch in cases:
        state = random_state(source)
        np.savez(tmp_path / "w.npz", **state)
        model = MaskRCNN(target)
        before = host_state(model)
        report = load_pretrained(model, tmp_path / "w.npz")
        fresh = {n for names in report.fresh.values() for n in names}
        assert fresh == {k for k in before if k.startswith(f"roi_heads.{branch}_")}
        assert any(f"the {branch} branch, which the file does not have" in r
                   for r in report.fresh)
        for k, v in host_state(model).items():
            np.testing.assert_array_equal(v, before[k] if k in fresh else state[k])
        if branch == "keypoint":  # and the file's mask branch has no place in the model
            skipped = report.skipped["the mask branch, which the model does not build"]
            assert sorted(skipped) == sorted(k for k in state if k.startswith("roi_heads.mask"))
        with pytest.raises(WeightsError, match="missing from the file"):
            import_weights(tmp_path / "w.npz", tmp_path / "out.npz", cfg=target)


def test_other_number_of_keypoints_keeps_the_keypoint_predictor_fresh(tmp_path):
    np.savez(tmp_path / "w.npz", **random_state(tiny_bn_keypoints(num_keypoints=17)))
    model = MaskRCNN(tiny_bn_keypoints(num_keypoints=5))
    report = load_pretrained(model, tmp_path / "w.npz")
    fresh = sorted(n for names in report.fresh.values() for n in names)
    assert fresh == ["roi_heads.keypoint_predictor.kps_score_lowres.bias",
                     "roi_heads.keypoint_predictor.kps_score_lowres.weight"]

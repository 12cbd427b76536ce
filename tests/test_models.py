import pytest
import torch
import torchvision

from net.frozen_bn import FrozenBatchNorm2d
from net.models import MODELS, build_model, is_mask_model


def _batch(mask: bool):
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    if mask:
        for t, img in zip(targets, images):
            m = torch.zeros((len(t["boxes"]), *img.shape[-2:]), dtype=torch.uint8)
            if len(t["boxes"]):
                m[0, 6:50, 5:40] = 1
            t["masks"] = m
    return images, targets


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_and_evaluates(name):
    torch.manual_seed(0)
    model = build_model(name, 3, min_size=64, max_size=96, preset="cpu_fast", train_scales=(0.8, 1.2))
    images, targets = _batch(is_mask_model(name))
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "labels", "scores"}
    assert ("masks" in out[0]) == is_mask_model(name)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="fasterrcnn_mobilenet_v2_fpn"):
        build_model("yolo", 3)
    with pytest.raises(ValueError, match="cpu_fast"):
        build_model("fasterrcnn_mobilenet_v2_fpn", 3, preset="gpu_turbo")
    with pytest.raises(ValueError, match="no detection weights"):
        build_model("fasterrcnn_mobilenet_v2_fpn", 3, weights="DEFAULT")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_model("fasterrcnn_mobilenet_v2_fpn", 3, weights="nothere.pth")


def test_local_weights_initialise_and_heads_follow_num_classes(tmp_path):
    torch.manual_seed(1)
    src = build_model("fasterrcnn_mobilenet_v2_fpn", 5, min_size=64, preset="cpu_fast")
    path = str(tmp_path / "det.pth")
    torch.save({"model": src.state_dict(), "epoch": 3}, path)
    torch.manual_seed(2)
    dst = build_model("fasterrcnn_mobilenet_v2_fpn", 3, weights=path, min_size=64, preset="cpu_fast")
    s, d = src.state_dict(), dst.state_dict()
    for key in d:
        if "box_predictor" in key:
            assert d[key].shape[0] in (3, 12)  # new head for 3 classes, left at init
        else:
            torch.testing.assert_close(d[key], s[key], msg=key)


def test_local_backbone_weights_freeze_batchnorm(tmp_path):
    features = torchvision.models.mobilenet_v2().features.state_dict()
    path = str(tmp_path / "mnv2.pth")
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    model = build_model("fasterrcnn_mobilenet_v2_fpn", 3, weights_backbone=path, min_size=64)
    body = model.backbone.body.state_dict()
    loaded = [k for k in features if k in body]
    assert len(loaded) > 200  # FrozenBatchNorm2d has no num_batches_tracked
    for k in loaded:
        torch.testing.assert_close(body[k], features[k], msg=k)
    assert isinstance(model.backbone.body["1"].conv[0][1], torchvision.ops.FrozenBatchNorm2d)
    scratch = build_model("fasterrcnn_mobilenet_v2_fpn", 3, min_size=64)
    assert isinstance(scratch.backbone.body["1"].conv[0][1], torch.nn.BatchNorm2d)


def test_rpn_and_roi_sizes_override_the_preset():
    model = build_model(
        "fasterrcnn_mobilenet_v2_fpn",
        3,
        min_size=64,
        preset="cpu_fast",
        rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=32,
    )
    assert model.rpn._post_nms_top_n["testing"] == 50
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 32
    assert model.rpn._pre_nms_top_n["training"] == 600  # from the preset


@pytest.mark.parametrize("name", ["fasterrcnn_resnext50_32x4d_fpn", "maskrcnn_resnext101_32x4d_fpn"])
def test_resnext_models_build_and_refuse_weights_torchvision_lacks(name):
    model = build_model(name, 3, min_size=64, max_size=96)
    assert (
        model.backbone.body.layer1[0].conv2.groups == 32
        and model.roi_heads.box_predictor.cls_score.out_features == 3
    )
    with pytest.raises(ValueError, match="torchvision has no detection weights"):
        build_model(name, 3, weights="DEFAULT")
    if "32x4d" in name and "101" in name:
        with pytest.raises(ValueError, match="no torchvision ImageNet weights"):
            build_model(name, 3, weights_backbone="DEFAULT")


def test_the_demo_preset_puts_the_fpn_on_the_stride_8_16_and_32_stages():
    """MobileNetV2's blocks 4, 7 and 14 start its stride-8, 16 and 32 stages (32, 64 and 160 channels);
    torchvision's default takes blocks 14 and 18 (both stride 32). One anchor set per level, pool too."""
    demo = build_model("maskrcnn_mobilenet_v2_fpn", 3, min_size=64, preset="demo")
    plain = build_model("fasterrcnn_mobilenet_v2_fpn", 3, min_size=64, preset="cpu_fast")
    assert [b[0].in_channels for b in demo.backbone.fpn.inner_blocks] == [32, 64, 160]
    assert [b[0].in_channels for b in plain.backbone.fpn.inner_blocks] == [160, 1280]
    assert demo.rpn.anchor_generator.num_anchors_per_location() == [15] * 4
    features = demo.backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in features.values()] == [8, 4, 2, 1]  # strides 8, 16, 32 and the pool's 64
    target = {
        "boxes": torch.tensor([[4.0, 4, 40, 40]]),
        "labels": torch.tensor([1]),
        "masks": torch.zeros(1, 64, 64, dtype=torch.uint8),
    }
    demo.train()
    assert torch.isfinite(sum(demo([torch.rand(3, 64, 64)], [target]).values()))


def _trained_like_statistics(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Frozen BatchNorm buffers as a trained network has them (not the identity of a fresh one)."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(module, name)
        low, high = (0.2, 3.0) if name == "running_var" else (-1.0, 1.5)
        value.copy_(torch.rand(value.shape, generator=generator) * (high - low) + low)


def test_light_frozen_batchnorm_is_torchvisions_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    theirs = torchvision.ops.FrozenBatchNorm2d(24)
    _trained_like_statistics(theirs, generator)
    ours = FrozenBatchNorm2d(24)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 24, 37, 29, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 24, 37, 29, generator=generator)
    expected, got = theirs(x), ours(x)
    assert torch.equal(got, expected)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    (got_grad,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(got_grad, expected_grad)


def test_a_training_step_with_the_light_frozen_batchnorm_equals_torchvisions(tmp_path):
    """build_model swaps every frozen BatchNorm for ours; one SGD step ends on the same weights as
    with torchvision's layer, bit for bit (same process, same kernels)."""
    path = _mobilenet_features(tmp_path)
    steps = []
    for swap_back in (False, True):
        torch.manual_seed(3)
        model = build_model("fasterrcnn_mobilenet_v2_fpn", 3, weights_backbone=path, min_size=64, max_size=96)
        frozen = [m for m in model.modules() if isinstance(m, torchvision.ops.FrozenBatchNorm2d)]
        assert len(frozen) == 52 and all(type(m) is FrozenBatchNorm2d for m in frozen)
        for m in frozen if swap_back else ():
            m.__class__ = torchvision.ops.FrozenBatchNorm2d
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        model.train()
        images, targets = _batch(False)
        torch.manual_seed(4)
        sum(model(images, targets).values()).backward()
        optimizer.step()
        steps.append(model.state_dict())
    mine, theirs = steps
    saved = torch.load(path)
    body = {k: v for k, v in mine.items() if k.startswith("backbone.body.")}
    assert any(  # the step reached the backbone's trainable stages
        not torch.equal(v, saved["features." + k.removeprefix("backbone.body.")]) for k, v in body.items()
    )
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key


def _mobilenet_features(tmp_path) -> str:
    generator = torch.Generator().manual_seed(0)
    features = torchvision.models.mobilenet_v2(norm_layer=torchvision.ops.FrozenBatchNorm2d).features
    for module in features.modules():
        if isinstance(module, torchvision.ops.FrozenBatchNorm2d):
            _trained_like_statistics(module, generator)
    path = str(tmp_path / "mnv2.pth")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path

"""Detectors by name: torchvision Faster / Mask R-CNN variants with replaceable heads.

``num_classes`` follows torchvision: it counts the background, so a dataset with ``C`` classes
needs ``num_classes = C + 1``. Heads are replaced after loading weights, so COCO-pretrained
weights (91 classes) can start a 4-class detector.

Weights:

* ``weights``: a torchvision weight name (``DEFAULT``, ``COCO_V1``) or a local ``.pth`` (a plain
  state dict or one of our checkpoints); tensors whose shape does not fit (other class count) are
  skipped and logged.
* ``weights_backbone``: a torchvision ImageNet weight name, or a local ``.pth`` of the backbone
  body in torchvision's key layout (a leading ``features.`` or ``backbone.body.`` is stripped).

Nothing is downloaded unless a weight *name* is given.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V2_Weights
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from net.frozen_bn import lighten_frozen_bn
from net.pisa import PisaConfig, PisaRoIHeads
from net.roi_pool import ThreadedMultiScaleRoIAlign

logger = logging.getLogger(__name__)

# A light RPN and ROI head for CPU training (the demo's default). ROI Align's backward and the box
# head's matrix products dominate a CPU step, so the preset samples fewer ROIs per image and, on the
# MobileNetV2 models, narrows the FPN (128 channels) and the box head (512 units).
PRESETS: dict[str, dict] = {
    "cpu_fast": dict(
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        box_detections_per_img=100,
        fpn_channels=128,
        box_head_dim=512,
    ),
    "default": {},
}
# The built-in demo's (tools.loop.options.DEMO_DEFAULTS): cpu_fast with the FPN on MobileNetV2's stride 8,
# 16 and 32 stages instead of two stride-32 ones (torchvision's choice): its shapes are 40-96 px, and
# boxes tight enough for SL (IoU 0.8 with the drawn box) need the finer levels.
PRESETS["demo"] = {**PRESETS["cpu_fast"], "returned_layers": (2, 3, 4)}
_CUSTOM_OPTIONS = ("fpn_channels", "box_head_dim", "returned_layers")

SMALL_ANCHORS = ((16, 32, 64, 128, 256),) * 3
# The demo's backbone: MobileNetV2 features pretrained on synthetic images of their own (never the
# demo's; bench/pretrain_demo_backbone.py regenerates it, its provenance is the .json beside it)
DEMO_BACKBONE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "demo_mobilenet_v2.pth")


def pretraining_seed(weights: str) -> int | None:
    """The synthetic images' seed a shipped backbone was pretrained on (``image_seed`` in the
    provenance JSON beside it), or None: no provenance, or not one of ours."""
    try:
        with open(os.path.splitext(weights)[0] + ".json", encoding="utf-8") as f:
            return int(json.load(f)["image_seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mobilenet_v2_fpn(
    mask: bool,
    num_classes: int,
    weights_backbone,
    trainable_layers,
    local_backbone,
    fpn_channels: int = 256,
    box_head_dim: int = 1024,
    returned_layers: tuple[int, ...] | None = None,
    **kw,
):
    pretrained = weights_backbone is not None or local_backbone is not None
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v2",
        weights=MobileNet_V2_Weights.verify(weights_backbone),
        fpn=True,
        norm_layer=misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
        trainable_layers=trainable_layers if trainable_layers is not None else (3 if pretrained else 6),
        returned_layers=list(returned_layers) if returned_layers else None,
    )
    if local_backbone is not None:
        _load_backbone(backbone.body, local_backbone)
    if fpn_channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = fpn_channels
    levels = len(backbone.fpn.inner_blocks) + 1  # and the FPN's max-pool level
    anchors = AnchorGenerator(SMALL_ANCHORS[:1] * levels, ((0.5, 1.0, 2.0),) * levels)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, box_head_dim)
    if mask:
        kw["mask_predictor"] = MaskRCNNPredictor(256, 256, num_classes)
    cls = MaskRCNN if mask else FasterRCNN
    return cls(
        backbone,
        rpn_anchor_generator=anchors,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes),
        **kw,
    )


def _torchvision(fn_name: str) -> Callable[..., nn.Module]:
    def build(num_classes, weights, weights_backbone, trainable_layers, local_backbone, **kw):
        for key in _CUSTOM_OPTIONS:  # options of our MobileNetV2 models only
            kw.pop(key, None)
        fn = getattr(torchvision.models.detection, fn_name)
        if trainable_layers is not None:
            kw["trainable_backbone_layers"] = trainable_layers
        model = fn(
            weights=weights,
            weights_backbone=weights_backbone,
            num_classes=None if weights else num_classes,
            **kw,
        )
        if local_backbone is not None:
            _load_backbone(model.backbone.body, local_backbone)
        return model

    build.__name__ = fn_name
    return build


def _resnext_fpn(
    mask: bool, arch: str, num_classes, weights, weights_backbone, trainable_layers, local_backbone, **kw
):
    """Faster/Mask R-CNN on a ResNeXt-FPN backbone, built as torchvision builds its ResNet-50 ones.
    ``arch``: a torchvision ResNeXt (ImageNet weights by torchvision's names, e.g. ``DEFAULT``), or
    ``resnext101_32x4d`` (MMDetection's; no torchvision weights: random init or a local ``.pth``)."""
    if weights is not None:
        raise ValueError(
            f"torchvision has no detection weights for the {arch} models; pass a local .pth to --weights"
        )
    pretrained = weights_backbone is not None or local_backbone is not None
    norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    if arch == "resnext101_32x4d":
        if weights_backbone is not None:
            raise ValueError(
                "resnext101_32x4d has no torchvision ImageNet weights; pass a local .pth to "
                "--weights-backbone, or none for random init"
            )
        body = ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4, norm_layer=norm)
    else:
        body = getattr(torchvision.models, arch)(weights=weights_backbone, norm_layer=norm)
    layers = trainable_layers if trainable_layers is not None else (3 if pretrained else 5)
    backbone = _resnet_fpn_extractor(body, layers)
    if local_backbone is not None:
        _load_backbone(backbone.body, local_backbone)
    for key in _CUSTOM_OPTIONS:
        kw.pop(key, None)
    return (MaskRCNN if mask else FasterRCNN)(backbone, num_classes=num_classes, **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_resnet50_fpn": _torchvision("fasterrcnn_resnet50_fpn"),
    "fasterrcnn_resnet50_fpn_v2": _torchvision("fasterrcnn_resnet50_fpn_v2"),
    "fasterrcnn_mobilenet_v3_large_fpn": _torchvision("fasterrcnn_mobilenet_v3_large_fpn"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn"),
    "fasterrcnn_mobilenet_v2_fpn": partial(_mobilenet_v2_fpn, False),
    "maskrcnn_resnet50_fpn": _torchvision("maskrcnn_resnet50_fpn"),
    "maskrcnn_mobilenet_v2_fpn": partial(_mobilenet_v2_fpn, True),
    **{
        f"{kind}rcnn_{arch}_fpn": partial(_resnext_fpn, kind == "mask", arch)
        for kind in ("faster", "mask")
        for arch in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_32x4d")
    },
}
ROI_HEADS = ("standard", "pisa")
_CUSTOM = {"fasterrcnn_mobilenet_v2_fpn", "maskrcnn_mobilenet_v2_fpn"}


def is_mask_model(name: str) -> bool:
    return name.startswith("maskrcnn")


def _check_names(name: str, preset: str, roi_head: str) -> None:
    for value, known, what in (
        (name, MODELS, "model"),
        (preset, PRESETS, "preset"),
        (roi_head, ROI_HEADS, "RoI head"),
    ):
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; choose one of {sorted(known)}")


def build_model(
    name: str,
    num_classes: int,
    weights: str | None = None,
    weights_backbone: str | None = None,
    trainable_layers: int | None = None,
    min_size: int = 800,
    max_size: int | None = None,
    train_scales: tuple[float, ...] | None = None,
    preset: str = "default",
    roi_head: str = "standard",
    pisa: PisaConfig | None = None,
    **kwargs,
) -> nn.Module:
    """Build a detector by name.

    Args:
        name: a key of :data:`MODELS`.
        num_classes: classes including the background.
        weights: torchvision weight name or local ``.pth`` for the whole detector.
        weights_backbone: torchvision weight name or local ``.pth`` for the backbone body.
        trainable_layers: backbone stages to train (torchvision's ``trainable_backbone_layers``).
        min_size, max_size: the model's resize (shorter side, cap on the longer side).
        train_scales: factors of ``min_size`` picked at random per batch in training (scale
            jitter); evaluation uses ``min_size``.
        preset: a key of :data:`PRESETS` (``cpu_fast``: fewer proposals, smaller ROI batch).
        roi_head: ``standard`` or ``pisa`` (:mod:`net.pisa`: training only, with ``pisa``'s settings).
        **kwargs: more FasterRCNN/MaskRCNN options (``rpn_*``, ``box_*``); they win over the preset.

    Raises:
        ValueError: an unknown name (the valid ones listed), or weights torchvision lacks for ``name``.
    """
    _check_names(name, preset, roi_head)
    local_weights = weights if _is_file(weights) else None
    local_backbone = weights_backbone if _is_file(weights_backbone) else None
    if local_weights is None and weights is not None and name in _CUSTOM:
        raise ValueError(f"torchvision has no detection weights for {name}; pass a local .pth to --weights")
    options = {
        **PRESETS[preset],
        **kwargs,
        "min_size": min_size,
        "max_size": max_size or round(min_size * 1333 / 800),
    }
    model = MODELS[name](
        num_classes=num_classes,
        weights=None if local_weights else weights,
        weights_backbone=None if local_backbone else weights_backbone,
        trainable_layers=trainable_layers,
        local_backbone=local_backbone,
        **options,
    )
    _replace_heads(model, num_classes)
    if local_weights:
        load_matching(model, local_weights)
    if roi_head == "pisa":
        model.roi_heads = PisaRoIHeads(model.roi_heads, pisa or PisaConfig())
    if train_scales:
        # GeneralizedRCNNTransform picks one of min_size at random in training, the last in eval.
        model.transform.min_size = tuple(round(min_size * f) for f in train_scales if f != 1.0) + (min_size,)
    return lighten_frozen_bn(model)  # the same numbers, less memory traffic on the CPU


def _replace_heads(model: nn.Module, num_classes: int) -> None:
    """Predictors for ``num_classes``, and RoI poolers on every CPU thread (:func:`_thread_poolers`)."""
    roi = model.roi_heads
    _thread_poolers(roi)
    if roi.box_predictor.cls_score.out_features != num_classes:
        roi.box_predictor = FastRCNNPredictor(roi.box_predictor.cls_score.in_features, num_classes)
    if getattr(roi, "mask_predictor", None) is not None:
        if roi.mask_predictor.mask_fcn_logits.out_channels != num_classes:
            in_ch = roi.mask_predictor.conv5_mask.in_channels
            roi.mask_predictor = MaskRCNNPredictor(in_ch, 256, num_classes)


def _thread_poolers(roi: RoIHeads) -> None:
    """torchvision's RoI poolers as :class:`ThreadedMultiScaleRoIAlign` (the same pooling, on every
    CPU thread; no parameters, so checkpoints are unchanged)."""
    for name in ("box_roi_pool", "mask_roi_pool"):
        pool = getattr(roi, name, None)
        if type(pool) is MultiScaleRoIAlign:
            setattr(
                roi,
                name,
                ThreadedMultiScaleRoIAlign(
                    pool.featmap_names,
                    pool.output_size,
                    pool.sampling_ratio,
                    canonical_scale=pool.canonical_scale,
                    canonical_level=pool.canonical_level,
                ),
            )


def _is_file(value: str | None) -> bool:
    if value is None:
        return False
    if value.endswith((".pth", ".pt")) or os.sep in value:
        if not os.path.isfile(value):
            raise FileNotFoundError(f"weights file not found: {value}")
        return True
    return False


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our checkpoints
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_matching(module: nn.Module, path: str, strip: tuple[str, ...] = ()) -> None:
    """Load the tensors of ``path`` whose names and shapes fit ``module``; log the rest."""
    state = _read_state_dict(path)
    for prefix in strip:
        state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
    own = module.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise ValueError(f"{path}: no tensor matches the model's names and shapes")
    skipped = sorted(set(state) - set(fits))
    missing = sorted(set(own) - set(fits))
    module.load_state_dict(fits, strict=False)
    logger.info(
        "%s: loaded %d tensors, skipped %d (%s), left %d at init (%s)",
        path,
        len(fits),
        len(skipped),
        ", ".join(skipped[:4]),
        len(missing),
        ", ".join(missing[:4]),
    )


def _load_backbone(body: nn.Module, path: str) -> None:
    load_matching(body, path, strip=("backbone.body.", "features."))

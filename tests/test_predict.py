import numpy as np
import pytest
import torch

from datasets.synthetic import load_demo
from datasets.torch_data import DetectionDataset
from datasets.transforms import build_transforms
from net.models import build_model
from tools.engine.predict import compute_loss, predict_proba


@pytest.fixture
def demo(demo_cache):
    data = load_demo("train", num_train=120, num_val=20, cache_dir=demo_cache)
    return data, [r for r in data.records if len(r)][:3]


def _model(name="fasterrcnn_mobilenet_v2_fpn", **kw):
    torch.manual_seed(0)
    return build_model(name, 5, min_size=64, preset="cpu_fast", box_score_thresh=0.0, **kw)


def test_probs_agree_with_scores_labels_and_plain_forward(demo):
    data, records = demo
    model = _model()
    model.train()
    preds = predict_proba(model, records, data.image_root, conf_thres=0.0, nms_thres=0.5)
    assert model.training  # mode restored
    model.eval()
    ds = DetectionDataset(records, data.image_root, build_transforms(False))
    with torch.no_grad():
        plain = model([ds[i][0] for i in range(len(ds))])
    assert sum(len(p["scores"]) for p in preds) > 0
    for p, q, r in zip(preds, plain, records):
        assert p["file_name"] == r.file_name and p["probs"].shape == (len(p["scores"]), 5)
        np.testing.assert_allclose(p["probs"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(
            p["probs"][np.arange(len(p["labels"])), p["labels"]], p["scores"], rtol=1e-6
        )
        np.testing.assert_allclose(p["boxes"], q["boxes"].numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(p["labels"], q["labels"].numpy())
    strict = predict_proba(model, records, data.image_root, conf_thres=0.3, nms_thres=0.5)
    assert all((s["scores"] > 0.3).all() for s in strict)


def test_compute_loss_leaves_the_model_unchanged_and_equals_frozen_bn_training_loss(demo):
    data, records = demo
    model = _model()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    losses = compute_loss(model, records, data.image_root, seed=5)
    assert not model.training and all(not m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert set(losses[0]) == {
        "file_name",
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss",
    }
    # the same loss a training step of a frozen-BatchNorm model computes
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    ds = DetectionDataset(records, data.image_root, build_transforms(False))
    for i, expected in enumerate(losses):
        image, target = ds[i]
        torch.manual_seed(5)
        with torch.no_grad():
            ref = model([image], [target])
        for k, v in ref.items():
            assert expected[k] == pytest.approx(float(v), rel=1e-6), k


def test_mask_rcnn_gives_masks_and_mask_loss(demo_cache):
    data = load_demo("train", "coco", num_train=120, num_val=20, cache_dir=demo_cache)
    records = [r for r in data.records if len(r)][:2]
    model = _model("maskrcnn_mobilenet_v2_fpn")
    preds = predict_proba(model, records, data.image_root, conf_thres=0.0)
    assert all(p["masks"].shape == (len(p["scores"]), r.height, r.width) for p, r in zip(preds, records))
    losses = compute_loss(model, records, data.image_root, with_masks=True)
    assert all(np.isfinite(v["loss_mask"]) for v in losses)


def test_masks_reach_the_loss_and_move_only_through_the_mask_head(tiny_coco_root):
    """One step on real COCO masks: the mask loss is there and finite, and the mask head's weights
    move; with the mask loss left out of the step they stay where they were."""
    import os

    from datasets.coco import load_coco

    data = load_coco(
        os.path.join(tiny_coco_root, "annotations", "instances_train2017.json"),
        os.path.join(tiny_coco_root, "train2017"),
    )
    ds = DetectionDataset(
        [r for r in data.records if len(r)][:2], data.image_root, build_transforms(False), True
    )
    images, targets = zip(*(ds[i] for i in range(len(ds))))
    for keep_mask in (True, False):
        torch.manual_seed(0)
        model = build_model("maskrcnn_mobilenet_v2_fpn", data.num_classes + 1, min_size=96, preset="cpu_fast")
        model.train()
        head = model.roi_heads.mask_predictor.mask_fcn_logits.weight
        before = head.detach().clone()
        losses = model(list(images), [dict(t) for t in targets])
        assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
        total = sum(v for k, v in losses.items() if keep_mask or k != "loss_mask")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        total.backward()
        opt.step()
        assert (not torch.equal(head.detach(), before)) == keep_mask

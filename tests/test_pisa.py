"""PISA (net/pisa.py): hand-computed ranks and weights, equality with the standard head at exponent 0,
CARL's gradient, and Faster / Mask R-CNN training with it."""

import json
import math
import os

import pytest
import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import box_iou

import net.roi_pool as roi_pool
from net.models import build_model
from net.pisa import (
    PisaConfig,
    PisaRoIHeads,
    batch_gt_ids,
    iou_hlr_weights,
    nms_group_ids,
    overlaps,
    pisa_losses,
    rank_within,
    score_hlr_sample,
)
from tests.pisa_oracle import iou_hlr_weights_loop, nms_groups_loop, score_hlr_importance_loop
from tools.runtime.logs import read_jsonl


def test_iou_hlr_ranks_inside_each_gt_then_across_and_keeps_the_loss():
    # two GT boxes of one class, three positives each: A's IoUs .9 .7 .5, B's .8 .6 .95
    ious = torch.tensor([0.9, 0.7, 0.5, 0.8, 0.6, 0.95])
    gt_ids, labels = torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(6, dtype=torch.long)
    losses = torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    # local ranks A 0 1 2, B 1 2 0; IoU-HLR (local rank first, then IoU): B.95 A.9 B.8 A.7 B.6 A.5;
    # u = (6 - rank) / 6 with 6 positives in the class; k=2: u^2, then scaled to keep sum(w * loss) = 7
    u = torch.tensor([5, 3, 1, 4, 2, 6]) / 6
    expected = u**2 * (7 / (u**2 * losses).sum())
    weights = iou_hlr_weights(ious, gt_ids, labels, losses, k=2.0, bias=0.0)
    torch.testing.assert_close(weights, expected)
    assert float((weights * losses).sum()) == pytest.approx(7.0)
    assert torch.equal(iou_hlr_weights(ious, gt_ids, labels, losses, k=0.0, bias=0.0), torch.ones(6))


def test_two_classes_share_the_largest_class_count_as_the_top():
    ious, gt_ids = torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0, 0, 1])
    labels = torch.tensor([1, 1, 2])
    weights = iou_hlr_weights(ious, gt_ids, labels, torch.ones(3), k=1.0, bias=0.0)
    u = torch.tensor([2 / 2, 1 / 2, 2 / 2])  # class 2's only positive is its top
    torch.testing.assert_close(weights, u * 3 / u.sum())


def test_score_hlr_groups_overlapping_negatives_and_ranks_by_group_then_score():
    probs = torch.tensor(
        [[0.1, 0.9, 0.0], [0.4, 0.0, 0.6], [0.3, 0.7, 0.0], [0.98, 0.02, 0.0], [0.97, 0.03, 0.0]]
    )
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 5, 5], [70, 70, 80, 80.0]])
    assert nms_group_ids(boxes[:3], probs[:3, 1:].max(1).values, 0.5).tolist() == [0, 0, 2]
    bg = -torch.log(probs[:, 0])
    # importance: n0 3-0+.9, n1 3-1+.6, n2 3-0+.7 -> order n0 n2 n1; u = (3 - rank) / 3; k=.5: sqrt
    pick, w = score_hlr_sample(probs, boxes, bg, 3, PisaConfig())
    assert pick.tolist() == [0, 2, 1]
    raw = torch.tensor([1.0, 2 / 3, 1 / 3]).sqrt()
    torch.testing.assert_close(w, raw * bg[pick].sum() / (raw * bg[pick]).sum())
    # one more wanted than valid: a random low-score negative at the lowest weight; top = max(4, 3)
    pick, w = score_hlr_sample(probs, boxes, bg, 4, PisaConfig(), torch.Generator().manual_seed(0))
    assert pick[:3].tolist() == [0, 2, 1] and int(pick[3]) in (3, 4)
    raw = torch.tensor([1.0, 0.75, 0.5, 0.5]).sqrt()
    torch.testing.assert_close(w, raw * bg[pick].sum() / (raw * bg[pick]).sum())


def _head_outputs(n=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, requires_grad=True)
    deltas = torch.randn(n, 4 * classes, generator=g, requires_grad=True)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[:2] = torch.tensor([1, 2])  # at least two positives
    return logits, deltas, labels, torch.randn(n, 4, generator=g)


def test_losses_equal_the_standard_head_when_the_exponents_are_0():
    logits, deltas, labels, targets = _head_outputs()
    cls, box = fastrcnn_loss(logits, deltas, [labels], [targets])
    p_cls, p_box, p_carl = pisa_losses(
        logits, deltas, labels, targets, torch.ones(len(labels)), carl_k=0.0, carl_bias=0.2, beta=1 / 9
    )
    torch.testing.assert_close(p_cls, cls, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p_box, box, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p_carl, box, rtol=1e-6, atol=1e-7)  # k = 0: CARL adds the plain term again


def test_carl_weights_by_class_score_and_its_gradient_reaches_the_class_logits():
    logits, deltas, labels, targets = _head_outputs()
    _, plain_box, carl = pisa_losses(
        logits, deltas, labels, targets, torch.ones(len(labels)), carl_k=1.0, carl_bias=0.2
    )
    assert (
        torch.autograd.grad(carl, logits, retain_graph=True)[0].abs().sum() > 0
    )  # CARL trains the classifier
    unused = torch.autograd.grad(plain_box, logits, allow_unused=True)[0]
    assert unused is None or float(unused.abs().sum()) == 0.0  # the plain box term does not
    _, _, plain = pisa_losses(
        logits, deltas, labels, targets, torch.ones(len(labels)), carl_k=0.0, carl_bias=0.2
    )
    unused = torch.autograd.grad(plain, logits, allow_unused=True)[0]
    assert unused is None or float(unused.abs().sum()) == 0.0  # k = 0: the plain box loss
    # hand-computed: scores .5 1 0 -> 0.2 + 0.8 p = .6 1 .2, normalised to a mean of 1
    three = torch.tensor([[0.0, 0.0], [-50.0, 50.0], [50.0, -50.0]], requires_grad=True)
    lab = torch.ones(3, dtype=torch.long)
    per = torch.tensor([1.0, 2.0, 3.0])  # each positive's smooth L1 sum, put in through the targets
    deltas3 = torch.zeros(3, 8)
    targets3 = torch.zeros(3, 4)
    targets3[:, 0] = per + 0.5  # smooth_l1(beta=1) of |x| >= 1 is |x| - 0.5
    _, plain3, carl3 = pisa_losses(three, deltas3, lab, targets3, torch.ones(3), carl_k=1.0, carl_bias=0.2)
    w = torch.tensor([0.6, 1.0, 0.2]) * 3 / 1.8
    assert float(carl3.detach()) == pytest.approx(float((w * per).sum() / 3), rel=1e-5)
    assert float(plain3.detach()) == pytest.approx(6 / 3, rel=1e-6)  # the plain term: (1 + 2 + 3) / 3


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v2_fpn", "maskrcnn_mobilenet_v2_fpn"])
def test_a_training_step_with_pisa_and_standard_inference(name):
    torch.manual_seed(0)
    model = build_model(name, 3, min_size=64, preset="cpu_fast", roi_head="pisa")
    assert isinstance(model.roi_heads, PisaRoIHeads)
    target = {"boxes": torch.tensor([[5.0, 5, 30, 30], [35, 10, 60, 40]]), "labels": torch.tensor([1, 2])}
    if name.startswith("mask"):
        masks = torch.zeros(2, 48, 64, dtype=torch.uint8)
        masks[0, 5:30, 5:30] = masks[1, 10:40, 35:60] = 1
        target["masks"] = masks
    model.train()
    losses = model([torch.rand(3, 48, 64)], [target])
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_carl"} and all(
        math.isfinite(float(v.detach())) for v in losses.values()
    )
    assert ("loss_mask" in losses) == name.startswith("mask")
    sum(losses.values()).backward()
    standard = build_model(name, 3, min_size=64, preset="cpu_fast")
    standard.load_state_dict(model.state_dict())  # the same modules: a PISA checkpoint loads anywhere
    model.eval(), standard.eval()
    image = torch.rand(3, 48, 64)
    with torch.no_grad():
        a, b = model([image])[0], standard([image])[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["scores"], b["scores"])


def test_faster_rcnn_with_pisa_trains_mines_evaluates_and_resumes(tmp_path, capsys):
    from tests.test_asm_run import TINY
    from train_asm_one import main

    out = str(tmp_path / "pisa")
    argv = [*TINY, "--roi-head", "pisa", "--cache-dir", str(tmp_path / "cache"), "--output-dir", out]
    assert main([*argv, "--exit-after-epochs", "2"]) == 3  # killed inside round 1
    capsys.readouterr()
    assert main([*argv, "--resume", os.path.join(out, "last.pth")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 2
    last_round = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round"][-1]
    assert summary["ap50"] == last_round["AP50"] and last_round["round"] == 2
    config = open(os.path.join(out, "config.yaml")).read()
    assert "roi_head: pisa" in config and "isr_k: 2.0" in config and "smooth_l1_beta: 1.0" in config
    epochs = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "epoch"]
    assert epochs and all({"loss_box_reg", "loss_carl"} <= set(e["losses"]) for e in epochs)


def test_a_one_epoch_bccd_run_with_pisa_finishes_and_resumes(bccd_root, tmp_path, capsys):
    """Real data: BCCD's 6 train images of tests/data at 128 px (3 val images evaluate), cut after the
    pretrain epoch and continued."""
    from train_asm_one import main

    root = tmp_path / "bccd"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for name in ("Annotations", "JPEGImages"):
        os.symlink(os.path.join(bccd_root, name), root / name)
    for split, name in (("train", "tr"), ("val", "ev")):
        ids = open(os.path.join(bccd_root, "ImageSets", "Main", f"{split}.txt")).read()
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text(ids)
    out = str(tmp_path / "run")
    argv = [
        "--dataset",
        "voc",
        "--voc-roots",
        str(root),
        "--voc-train-split",
        "tr",
        "--voc-val-split",
        "ev",
        "--voc-classes",
        "RBC",
        "WBC",
        "Platelets",
        "--roi-head",
        "pisa",
        "--min-size",
        "128",
        "--epochs",
        "1",
        "--round-epochs",
        "1",
        "--K",
        "2",
        "--initial",
        "4",
        "--max-rounds",
        "1",
        "--batch-size",
        "2",
        "--warmup-iters",
        "2",
        "--no-cache",
        "--output-dir",
        out,
    ]
    assert main([*argv, "--exit-after-epochs", "1"]) == 3
    capsys.readouterr()
    assert main([*argv, "--auto-resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 1 and summary["epochs"] == 2


def _heads(**cfg):
    torch.manual_seed(0)
    model = build_model("fasterrcnn_mobilenet_v2_fpn", 4, min_size=64, preset="cpu_fast", roi_head="pisa")
    model.roi_heads.pisa = PisaConfig(**cfg)
    return model, model.roi_heads


def test_grouping_and_ranking_match_the_per_box_loops_on_random_inputs():
    g = torch.Generator().manual_seed(3)
    for n in (1, 5, 40, 200):
        xy = torch.rand(n, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], 1)
        scores = torch.rand(n, generator=g)
        groups = nms_group_ids(boxes, scores, 0.5)
        loop = nms_groups_loop(boxes, scores, 0.5)
        assert sorted(sorted(grp.tolist()) for grp in loop) == sorted(
            torch.where(groups == leader)[0].tolist() for leader in groups.unique()
        )
        importance = (n - rank_within(groups, scores)).double() + scores.double()
        torch.testing.assert_close(importance, score_hlr_importance_loop(boxes, scores, 0.5))
        labels = torch.randint(1, 4, (n,), generator=g)
        gt_ids = labels * 10 + torch.randint(0, 3, (n,), generator=g)  # a GT box has one class
        ious, losses = torch.rand(n, generator=g), torch.rand(n, generator=g) + 0.1
        for k, bias in ((2.0, 0.0), (1.0, 0.3)):
            torch.testing.assert_close(
                iou_hlr_weights(ious, gt_ids, labels, losses, k, bias),
                iou_hlr_weights_loop(ious, gt_ids, labels, losses, k, bias),
            )


def test_a_bias_lifts_the_lowest_ranks():
    # the first test's IoU-HLR ranks, u = 5/6 3/6 1/6 4/6 2/6 6/6; bias .5, k 2: (.5 + .5 u)^2, renormalised
    ious = torch.tensor([0.9, 0.7, 0.5, 0.8, 0.6, 0.95])
    gt_ids, labels, losses = torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(6, dtype=torch.long), torch.ones(6)
    raw = (0.5 + 0.5 * torch.tensor([5, 3, 1, 4, 2, 6]) / 6) ** 2
    torch.testing.assert_close(iou_hlr_weights(ious, gt_ids, labels, losses, 2.0, 0.5), raw * 6 / raw.sum())
    # Score-HLR of the grouping test's three valid negatives (u = 1, 2/3, 1/3) with hlr_bias .4
    probs = torch.tensor([[0.1, 0.9, 0.0], [0.4, 0.0, 0.6], [0.3, 0.7, 0.0]])
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60.0]])
    bg = -torch.log(probs[:, 0])
    pick, w = score_hlr_sample(probs, boxes, bg, 3, PisaConfig(hlr_bias=0.4))
    raw = (0.4 + 0.6 * torch.tensor([1.0, 2 / 3, 1 / 3])).sqrt()
    assert pick.tolist() == [0, 2, 1]
    torch.testing.assert_close(w, raw * bg[pick].sum() / (raw * bg[pick]).sum())


def test_gt_ids_stay_unique_across_three_images():
    # GT boxes per image 2, 1, 3: offsets 0, 2, 3
    matched = [torch.tensor([0, 1, 0]), torch.tensor([0, 0]), torch.tensor([1, 2])]
    assert batch_gt_ids(matched, [2, 1, 3]).tolist() == [0, 1, 0, 2, 2, 4, 5]


def test_isr_p_decodes_each_positive_with_its_own_class_and_pairs_it_with_its_gt_box():
    """Two positives of class 1 on one GT box [0, 0, 10, 10], both from the proposal [0, 0, 10, 10]:
    RoI 0 predicts no shift (IoU 1), RoI 1 shifts x by 0.1 x 10 px (box [1, 0, 11, 10], IoU 90/110).
    RoI 0's class-2 deltas would move its box far off: decoding them would swap the ranks. Ranks 0, 1
    of top 2: u = 1, 0.5 (k 1), renormalised over equal losses: 4/3, 2/3; the negative keeps 0.7."""
    _, heads = _heads(isr_k=1.0, isr_bias=0.0)
    proposals = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30.0]])
    gt_boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0.0]])
    deltas = torch.zeros(3, 4, 4)
    deltas[0, 2] = torch.tensor([5.0, 5.0, 0, 0])
    deltas[1, 1] = torch.tensor([1.0, 0, 0, 0])
    labels, gt_ids = torch.tensor([1, 1, 0]), torch.tensor([0, 0, 0])
    weights = heads.isr_p(
        torch.zeros(3, 4),
        deltas.reshape(3, 16),
        labels,
        gt_ids,
        proposals,
        gt_boxes,
        torch.tensor([1.0, 1.0, 0.7]),
    )
    torch.testing.assert_close(weights, torch.tensor([4 / 3, 2 / 3, 0.7]))


def test_negatives_are_decoded_with_their_best_foreground_class():
    _, heads = _heads()
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]])  # best foreground: class 2
    deltas = torch.zeros(1, 4, 4)
    deltas[0, 1] = torch.tensor([0, 2.0, 0, 0])
    deltas[0, 2] = torch.tensor([1.0, 0, 0, 0])  # x + 0.1 x 10 px
    deltas[0, 3] = torch.tensor([0, 0, 1.0, 0])
    probs, boxes = heads.best_class_boxes(logits, deltas.reshape(1, 16), torch.tensor([[0, 0, 10, 10.0]]))
    torch.testing.assert_close(boxes, torch.tensor([[1.0, 0, 11, 10]]))
    torch.testing.assert_close(probs, torch.softmax(logits, -1))


def test_sample_splits_positives_and_negatives_at_the_configured_fraction(monkeypatch):
    _, heads = _heads(hlr_num=8, hlr_pos_fraction=0.25)
    labels = torch.tensor([1, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0])
    negatives = torch.where(labels == 0)[0]
    logits = torch.zeros(len(negatives), 4)
    logits[:, 0] = 10.0  # every negative below hlr_score_thr: random fill
    monkeypatch.setattr(heads, "score_negatives", lambda *a: (logits, torch.zeros(len(negatives), 16)))
    proposals = [torch.tensor([[0, 0, 10, 10.0]]).repeat(12, 1)]
    picks, weights = heads.sample(None, proposals, [labels], [(64, 64)])
    pick = picks[0].tolist()
    assert len(pick) == 8 == len(set(pick))
    assert set(pick[:2]) <= {0, 2, 5} and set(pick[2:]) <= set(negatives.tolist())
    assert weights[0][:2].tolist() == [1.0, 1.0] and len(weights[0]) == 8


def test_scoring_the_negatives_leaves_batchnorm_statistics_alone():
    model, heads = _heads()
    heads.box_head = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(128 * 7 * 7, 512), torch.nn.BatchNorm1d(512), torch.nn.ReLU()
    )
    model.train()
    features = model.backbone(torch.rand(1, 3, 64, 64))
    boxes = [torch.tensor([[0, 0, 20, 20], [10, 10, 40, 50], [5, 30, 60, 60.0]])]
    bn = heads.box_head[2]
    before = bn.running_mean.clone()
    heads.score_negatives(features, boxes, [(64, 64)])
    assert torch.equal(bn.running_mean, before) and heads.box_head.training  # eval for the pass only
    heads.box_head(heads.box_roi_pool(features, boxes, [(64, 64)]))  # a train-mode pass does move them
    assert not torch.equal(bn.running_mean, before)


def test_overlaps_is_box_iou_above_the_threshold_bit_for_bit():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 60], 1)
    boxes[:5, 2:] = boxes[:5, :2]  # zero-area boxes: IoU 0 / 0, no overlap
    boxes[5] = boxes[6]  # an exact duplicate: IoU 1
    for thr in (0.3, 0.5, 0.7):
        assert torch.equal(overlaps(boxes[:120], boxes[100:], thr), box_iou(boxes[:120], boxes[100:]) > thr)
    # 2,000 crowded boxes, as a young head's negatives: the grouping still matches the per-box loop's
    xy = torch.rand(2000, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 20 + torch.rand(2000, 2, generator=g) * 80], 1)
    scores = torch.rand(2000, generator=g)
    groups = nms_group_ids(boxes, scores, 0.5)
    assert (groups != torch.arange(2000)).sum() > 500  # most boxes were suppressed into a group
    loop = nms_groups_loop(boxes, scores, 0.5)
    assert sorted(sorted(grp.tolist()) for grp in loop) == sorted(
        torch.where(groups == leader)[0].tolist() for leader in groups.unique()
    )


class ReversedPool:
    """A thread pool stand-in that runs the jobs last first (another schedule of the same jobs)."""

    def __init__(self, workers):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, jobs):
        jobs = list(jobs)
        return list(reversed([fn(job) for job in reversed(jobs)]))


def test_negatives_are_sampled_alike_whatever_runs_the_images_first(monkeypatch):
    """Score-HLR runs image by image in threads; each image's random fill has its own seeded generator,
    so the picks do not depend on which thread ran which image first."""
    _, heads = _heads(hlr_num=16)
    g = torch.Generator().manual_seed(4)
    labels = [
        torch.cat([torch.ones(3, dtype=torch.long), torch.zeros(n, dtype=torch.long)]) for n in (60, 45, 80)
    ]
    xy = [torch.rand(len(lab), 2, generator=g) * 50 for lab in labels]
    proposals = [torch.cat([p, p + 8 + torch.rand(len(p), 2, generator=g) * 20], 1) for p in xy]
    n_neg = sum(int((lab == 0).sum()) for lab in labels)
    logits = torch.randn(n_neg, 4, generator=g)
    logits[:, 0] = 8.0  # most negatives under hlr_score_thr: the random fill takes most places
    logits[::10, 0] = 0.0
    monkeypatch.setattr(heads, "score_negatives", lambda *a: (logits, torch.zeros(n_neg, 16)))
    before, results = torch.get_num_threads(), []
    try:
        torch.set_num_threads(1)  # one image after the other, in order
        torch.manual_seed(0)
        results.append(heads.sample(None, proposals, labels, [(64, 64)] * 3))
        torch.set_num_threads(2)
        monkeypatch.setattr(roi_pool, "ThreadPoolExecutor", ReversedPool)  # the last image first
        torch.manual_seed(0)
        results.append(heads.sample(None, proposals, labels, [(64, 64)] * 3))
    finally:
        torch.set_num_threads(before)
    (picks_1, weights_1), (picks_2, weights_2) = results
    assert [len(p) for p in picks_1] == [16, 16, 16]
    assert all(torch.equal(a, b) for a, b in zip(picks_1, picks_2))
    for a, b in zip(weights_1, weights_2):
        torch.testing.assert_close(a, b)

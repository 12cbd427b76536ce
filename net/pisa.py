"""Prime Sample Attention (PISA, Cao et al., CVPR 2020) in torchvision's R-CNN box head.

Training only; inference is torchvision's unchanged, and the head holds the same modules, so a PISA
checkpoint loads into a standard model. Three parts, with MMDetection's ``train_cfg`` defaults:

* **ISR-N** (Score-HLR negative sampling, ``hlr_*``): negatives are scored by the current head
  (without gradient). Those whose best foreground score is above ``hlr_score_thr`` are grouped by
  NMS over their predicted boxes (``hlr_iou_thr``); each is ranked inside its group by score, then
  all by (group rank, score): the Score-HLR. The top ones are sampled (random low-score negatives
  fill up), weighted ``((1 - bias) * u + bias) ** k`` for ``u`` = 1 at the top falling linearly,
  and renormalised so their summed classification loss is unchanged.
* **ISR-P** (``isr_*``): positives are ranked by IoU-HLR: by IoU of the predicted box with its GT
  box inside the group of that GT box, then across the groups of a class; weights as above,
  renormalised so the positives' summed classification loss is unchanged.
* **CARL** (``carl_*``): a second box loss, ``loss_carl``, added to the plain ``loss_box_reg`` as
  MMDetection does: each positive's box loss weighted by ``((1 - bias) * p + bias) ** k``, p its
  score for its GT class (with gradient, so it also trains the classifier), normalised to a mean
  weight of 1.

Both box terms are Smooth-L1 with ``smooth_l1_beta`` 1.0, the value of MMDetection's PISA configs
(torchvision's standard head uses 1/9). Negatives are scored by the box head in eval mode, so that
BatchNorm in a box head (``fasterrcnn_resnet50_fpn_v2``) keeps its running statistics. Grouping and
ranking are tensor operations (torchvision's NMS, sorts), with no host read per box.

With every exponent 0 the classification loss and ``loss_box_reg`` are torchvision's at the same
beta, but the negatives are still those Score-HLR picks, and ``loss_carl`` equals ``loss_box_reg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.ops import box_iou, nms

from net.roi_pool import in_threads


@dataclass(frozen=True)
class PisaConfig:
    """MMDetection's PISA ``train_cfg.rcnn`` fields and defaults (``num`` None: the model's own
    ``box_batch_size_per_image``, so PISA and the standard head see as many RoIs)."""

    isr_k: float = 2.0
    isr_bias: float = 0.0
    carl_k: float = 1.0
    carl_bias: float = 0.2
    hlr_num: int | None = None
    hlr_pos_fraction: float = 0.25
    hlr_k: float = 0.5
    hlr_bias: float = 0.0
    hlr_score_thr: float = 0.05
    hlr_iou_thr: float = 0.5
    smooth_l1_beta: float = 1.0  # MMDetection's PISA configs: SmoothL1Loss(beta=1.0), both box terms


def rank_descending(values: Tensor) -> Tensor:
    """Rank of each value, 0 for the largest (ties: the earlier index first)."""
    order = torch.sort(values, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(values), device=values.device)
    return rank


def rank_within(groups: Tensor, values: Tensor) -> Tensor:
    """Rank of each value inside its group (equal ``groups``), 0 for the largest; ties: the earlier
    index first. Two stable sorts, no loop."""
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]  # group by group, each by value
    position = torch.arange(len(order), device=values.device)
    starts = torch.ones(len(order), dtype=torch.bool, device=values.device)
    starts[1:] = groups[order][1:] != groups[order][:-1]
    first = torch.cummax(torch.where(starts, position, 0), 0).values  # where each one's group starts
    rank = torch.empty_like(order)
    rank[order] = position - first
    return rank


def linear_importance(rank: Tensor, top: int | Tensor, k: float, bias: float) -> Tensor:
    """``((1 - bias) * u + bias) ** k`` with ``u = (top - rank) / top``."""
    u = (top - rank.to(torch.float32)) / top
    return (bias + (1 - bias) * u).pow(k)


def renormalise(weights: Tensor, losses: Tensor) -> Tensor:
    """``weights`` scaled so that ``sum(weights * losses) == sum(losses)`` (unchanged when it is 0)."""
    new = (weights * losses).sum()
    return weights * torch.where(new > 0, losses.sum() / new.clamp_min(1e-30), 1.0)


def iou_hlr_weights(
    ious: Tensor, gt_ids: Tensor, labels: Tensor, cls_losses: Tensor, k: float, bias: float
) -> Tensor:
    """ISR-P weights of positives: IoU-HLR (rank by IoU inside each GT box's group, then across the
    groups of a class), mapped linearly with the largest class count as the top, renormalised on the
    positives' classification losses.

    Args:
        ious: IoU of each positive's predicted box with its GT box.
        gt_ids: a GT box id per positive (unique across the images of the batch).
        labels: each positive's class.
        cls_losses: each positive's (unweighted) classification loss.
    """
    if len(labels) == 0:
        return cls_losses.new_ones(0)
    top = torch.bincount(labels).max()
    local = rank_within(gt_ids, ious)  # inside each GT box's group, by IoU
    key = ious.to(torch.float64) + (top - local).to(torch.float64)  # local rank first, then IoU
    weights = linear_importance(rank_within(labels, key), top, 1.0, 0.0)
    weights = (bias + (1 - bias) * weights).pow(k)
    return renormalise(weights, cls_losses)


def nms_group_ids(boxes: Tensor, scores: Tensor, iou_thr: float) -> Tensor:
    """Greedy NMS that keeps what it suppresses: for each box, the index of the kept box whose group
    it joins (itself when kept). A box joins the first kept box, in descending score order, that
    comes before it and overlaps it by IoU > ``iou_thr`` (torchvision's NMS rule)."""
    n = len(scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    # descending ranks as scores: torchvision's NMS visits the boxes in this (stable) order
    kept = torch.sort(
        nms(ranked, torch.arange(n, 0, -1, dtype=torch.float32, device=boxes.device), iou_thr)
    ).values
    leader = torch.arange(n, device=boxes.device)  # a kept box leads its own group
    suppressed = torch.ones(n, dtype=torch.bool, device=boxes.device)
    suppressed[kept] = False
    suppressed = torch.where(suppressed)[0]
    if len(suppressed):
        # the first kept box overlapping a suppressed box is the one that suppressed it: no earlier
        # kept box overlaps it, and a kept box after it comes after its suppressor too
        joins = overlaps(ranked[kept], ranked[suppressed], iou_thr)
        leader[suppressed] = kept[joins.to(torch.uint8).argmax(0)]
    group = torch.empty_like(order)
    group[order] = order[leader]
    return group


def overlaps(a: Tensor, b: Tensor, iou_thr: float) -> Tensor:
    """``box_iou(a, b) > iou_thr`` with one ``[len(a), len(b)]`` buffer reused in place (the grouping
    compares every suppressed negative with every kept one: about 1,000 x 1,000 per image)."""
    inter = (
        torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ).clamp_(min=0)
    height = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    inter.mul_(height.clamp_(min=0))
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = height.copy_(area_a[:, None]).add_(area_b[None]).sub_(inter)
    return inter.div_(union) > iou_thr


def score_hlr_sample(
    probs: Tensor,
    boxes: Tensor,
    bg_losses: Tensor,
    num: int,
    cfg: PisaConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """ISR-N for one image's negatives: which to sample and their classification-loss weights.

    Args:
        probs: ``[N, C + 1]`` softmax scores of the negatives (column 0: background).
        boxes: ``[N, 4]`` each negative's predicted box for its best foreground class.
        bg_losses: ``[N]`` each negative's classification loss as background.
        num: negatives wanted (at most N are taken).

    Returns:
        ``(indices into the N negatives, weights)``.
    """
    num = min(num, len(probs))
    if num == 0:
        return torch.zeros(0, dtype=torch.long, device=probs.device), probs.new_zeros(0)
    max_score = probs[:, 1:].max(1).values
    valid = torch.where(max_score > cfg.hlr_score_thr)[0]
    invalid = torch.where(max_score <= cfg.hlr_score_thr)[0]
    if len(valid) == 0:
        pick = torch.randperm(len(probs), generator=generator, device=probs.device)[:num]
        return pick, probs.new_ones(num)
    scores = max_score[valid]
    groups = nms_group_ids(boxes[valid], scores, cfg.hlr_iou_thr)
    # a negative's rank inside its NMS group first, then its score
    importance = (len(valid) - rank_within(groups, scores)).to(torch.float64) + scores.to(torch.float64)
    rank = rank_descending(importance)
    n_hlr = min(len(valid), num)
    hlr = torch.sort(rank).indices[:n_hlr]  # the best Score-HLR first
    fill = invalid[torch.randperm(len(invalid), generator=generator, device=probs.device)[: num - n_hlr]]
    pick = torch.cat([valid[hlr], fill])
    weights = probs.new_ones(num)
    weights[:n_hlr] = (max(num, len(valid)) - rank[hlr].to(probs.dtype)) / max(num, len(valid))
    weights[n_hlr:] = weights[:n_hlr].min()
    weights = (cfg.hlr_bias + (1 - cfg.hlr_bias) * weights).pow(cfg.hlr_k)
    return pick, renormalise(weights, bg_losses[pick])


def pisa_losses(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    label_weights: Tensor,
    carl_k: float,
    carl_bias: float,
    beta: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The weighted classification loss, the plain box loss and the CARL box loss, each averaged
    over all sampled RoIs as torchvision's ``fastrcnn_loss`` and MMDetection's ``avg_factor`` do (with
    unit weights and ``beta`` 1/9 the first two are ``fastrcnn_loss``'s)."""
    n = labels.numel()
    loss_cls = (F.cross_entropy(class_logits, labels, reduction="none") * label_weights).sum() / n
    pos = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
    per_box = F.smooth_l1_loss(
        box_regression[pos, labels[pos]], regression_targets[pos], beta=beta, reduction="none"
    ).sum(1)
    score = F.softmax(class_logits[pos], -1)[
        torch.arange(len(pos), device=pos.device), labels[pos]
    ]  # with gradient
    carl = (carl_bias + (1 - carl_bias) * score).pow(carl_k)
    carl = carl * (len(pos) / carl.sum().clamp_min(1e-12))
    return loss_cls, per_box.sum() / n, (per_box * carl).sum() / n


def batch_gt_ids(matched: list[Tensor], gt_counts: list[int]) -> Tensor:
    """Each sampled RoI's GT box as an id unique across the batch: its index in its image's GT boxes
    plus the GT boxes of the images before it (MMDetection offsets by RoIs, which can collide)."""
    offsets = [sum(gt_counts[:i]) for i in range(len(gt_counts))]
    return torch.cat([m + o for m, o in zip(matched, offsets)])


class PisaRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with PISA's training path (:mod:`net.pisa`); inference unchanged."""

    def __init__(self, base: RoIHeads, cfg: PisaConfig) -> None:
        super().__init__(
            base.box_roi_pool,
            base.box_head,
            base.box_predictor,
            base.proposal_matcher.high_threshold,
            base.proposal_matcher.low_threshold,
            base.fg_bg_sampler.batch_size_per_image,
            base.fg_bg_sampler.positive_fraction,
            base.box_coder.weights,
            base.score_thresh,
            base.nms_thresh,
            base.detections_per_img,
            base.mask_roi_pool,
            base.mask_head,
            base.mask_predictor,
        )
        self.proposal_matcher.allow_low_quality_matches = base.proposal_matcher.allow_low_quality_matches
        self.pisa = cfg

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        picks, weights = self.sample(features, proposals, labels, image_shapes)
        proposals = [p[i] for p, i in zip(proposals, picks)]
        matched = [m[i] for m, i in zip(matched, picks)]
        labels = [lab[i] for lab, i in zip(labels, picks)]
        targets_boxes = [
            g[m] if len(g) else torch.zeros_like(p) for g, m, p in zip(gt_boxes, matched, proposals)
        ]
        regression_targets = torch.cat(self.box_coder.encode(targets_boxes, proposals))
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        all_labels, label_weights = torch.cat(labels), torch.cat(weights)
        gt_ids = batch_gt_ids(matched, [len(g) for g in gt_boxes])
        label_weights = self.isr_p(
            class_logits,
            box_regression,
            all_labels,
            gt_ids,
            torch.cat(proposals),
            torch.cat(targets_boxes),
            label_weights,
        )
        loss_classifier, loss_box_reg, loss_carl = pisa_losses(
            class_logits,
            box_regression,
            all_labels,
            regression_targets,
            label_weights,
            self.pisa.carl_k,
            self.pisa.carl_bias,
            self.pisa.smooth_l1_beta,
        )
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_carl": loss_carl}
        if self.has_mask():  # torchvision's mask branch, on the sampled positives
            pos = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[i] for p, i in zip(proposals, pos)]
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
            )
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits,
                mask_proposals,
                [t["masks"] for t in targets],
                gt_labels,
                [m[i] for m, i in zip(matched, pos)],
            )
        return [], losses

    def sample(self, features, proposals, labels, image_shapes) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: random positives (at most ``num * pos_fraction``), Score-HLR negatives; the
        indices into the image's proposals and their classification-loss weights (1 for positives)."""
        num = self.pisa.hlr_num or self.fg_bg_sampler.batch_size_per_image
        pos = []
        for lab in labels:
            candidates = torch.where(lab >= 1)[0]
            keep = torch.randperm(len(candidates), device=lab.device)[: int(num * self.pisa.hlr_pos_fraction)]
            pos.append(candidates[keep])
        neg = [torch.where(lab == 0)[0] for lab in labels]
        logits, deltas = self.score_negatives(features, [p[i] for p, i in zip(proposals, neg)], image_shapes)
        counts = [len(n) for n in neg]
        # each image's random fill from its own generator, seeded here: the same draws whichever
        # thread runs the image
        seeds = torch.randint(2**62, (len(neg),)).tolist()

        def one_image(job) -> tuple[Tensor, Tensor]:
            p, image_pos, image_neg, lg, dt, seed = job
            probs, boxes = self.best_class_boxes(lg, dt, p[image_neg])
            bg_losses = F.cross_entropy(
                lg, torch.zeros(len(lg), dtype=torch.long, device=lg.device), reduction="none"
            )
            generator = torch.Generator(device=lg.device).manual_seed(seed)
            chosen, w = score_hlr_sample(probs, boxes, bg_losses, num - len(image_pos), self.pisa, generator)
            return torch.cat([image_pos, image_neg[chosen]]), torch.cat([w.new_ones(len(image_pos)), w])

        jobs = list(zip(proposals, pos, neg, logits.split(counts), deltas.split(counts), seeds))
        # on the CPU the images' grouping (an IoU matrix each) runs side by side
        done = in_threads(one_image, jobs, torch.get_num_threads() if logits.device.type == "cpu" else 1)
        picks, weights = [list(x) for x in zip(*done)] if done else ([], [])
        return picks, weights

    def best_class_boxes(self, logits: Tensor, deltas: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax scores of RoIs and each one's predicted box for its best foreground class."""
        probs = F.softmax(logits, -1)
        best = probs[:, 1:].argmax(1) + 1
        picked = deltas.reshape(len(deltas), -1, 4)[torch.arange(len(deltas), device=deltas.device), best]
        return probs, self.box_coder.decode_single(picked, boxes)

    @torch.no_grad()
    def score_negatives(self, features, boxes: list[Tensor], image_shapes) -> tuple[Tensor, Tensor]:
        """The head's class logits and box deltas for ``boxes``, in eval mode: a BatchNorm in the box
        head is not updated by negatives alone (its running statistics stay the training step's)."""
        modes = [(m, m.training) for m in (self.box_head, self.box_predictor)]
        for m, _ in modes:
            m.eval()
        try:  # on the CPU the pooler runs on every thread (net.roi_pool): 2,000 boxes per image
            return self.box_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))
        finally:
            for m, was in modes:
                m.train(was)

    def isr_p(
        self, class_logits, box_regression, labels, gt_ids, proposals, gt_boxes, label_weights
    ) -> Tensor:
        """``label_weights`` with the positives' weights replaced by their ISR-P weights."""
        pos = torch.where(labels > 0)[0]
        if len(pos) == 0:
            return label_weights
        with torch.no_grad():
            deltas = box_regression.reshape(len(labels), -1, 4)[pos, labels[pos]]
            predicted = self.box_coder.decode_single(deltas, proposals[pos])
            ious = box_iou(predicted, gt_boxes[pos]).diagonal()
            cls_losses = F.cross_entropy(class_logits[pos], labels[pos], reduction="none")
            weights = iou_hlr_weights(
                ious, gt_ids[pos], labels[pos], cls_losses, self.pisa.isr_k, self.pisa.isr_bias
            )
        label_weights = label_weights.clone()
        label_weights[pos] = weights.to(label_weights.dtype)
        return label_weights

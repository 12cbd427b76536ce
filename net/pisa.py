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
* **CARL** (``carl_*``): each positive's box loss is weighted by ``((1 - bias) * p + bias) ** k``, p
  its score for its GT class (with gradient, so the box loss also trains the classifier),
  normalised to a mean weight of 1. Here CARL weights the box loss itself (MMDetection adds it as a
  second box term): with every exponent 0 the losses are exactly torchvision's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.ops import box_iou


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


def rank_descending(values: Tensor) -> Tensor:
    """Rank of each value, 0 for the largest (ties: the earlier index first)."""
    order = torch.sort(values, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(values), device=values.device)
    return rank


def linear_importance(rank: Tensor, top: int, k: float, bias: float) -> Tensor:
    """``((1 - bias) * u + bias) ** k`` with ``u = (top - rank) / top``."""
    u = (top - rank.to(torch.float32)) / top
    return (bias + (1 - bias) * u).pow(k)


def renormalise(weights: Tensor, losses: Tensor) -> Tensor:
    """``weights`` scaled so that ``sum(weights * losses) == sum(losses)`` (unchanged when it is 0)."""
    new = (weights * losses).sum()
    return weights * (losses.sum() / new) if new > 0 else weights


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
    top = int(torch.bincount(labels).max())
    weights = torch.ones_like(ious, dtype=torch.float32)
    for cls in torch.unique(labels):
        in_cls = torch.where(labels == cls)[0]
        key = ious[in_cls].to(torch.float64).clone()
        for gt in torch.unique(gt_ids[in_cls]):
            group = torch.where(gt_ids[in_cls] == gt)[0]
            key[group] += top - rank_descending(ious[in_cls][group]).to(torch.float64)  # local rank first
        weights[in_cls] = linear_importance(rank_descending(key), top, 1.0, 0.0)
    weights = (bias + (1 - bias) * weights).pow(k)
    return renormalise(weights, cls_losses)


def nms_groups(boxes: Tensor, scores: Tensor, iou_thr: float) -> list[Tensor]:
    """Greedy NMS that keeps what it suppresses: each group is a kept box (highest score left)
    and the boxes it suppresses (IoU >= ``iou_thr``), in descending score order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    free = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    groups = []
    for a in range(len(order)):
        if not free[a]:
            continue
        members = torch.where(free & (iou[a] >= iou_thr))[0]
        members = torch.unique(
            torch.cat([members, members.new_tensor([a])])
        )  # a degenerate box has IoU 0 with itself
        free[members] = False
        groups.append(order[members])
    return groups


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
    importance = probs.new_zeros(len(valid), dtype=torch.float64)
    for group in nms_groups(boxes[valid], max_score[valid], cfg.hlr_iou_thr):
        importance[group] = len(valid) - torch.arange(len(group), device=probs.device, dtype=torch.float64)
        importance[group] += max_score[valid][group].to(torch.float64)
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
) -> tuple[Tensor, Tensor]:
    """Weighted classification loss and CARL box loss, both averaged over all sampled RoIs as
    torchvision's ``fastrcnn_loss`` does (which they equal with unit weights and ``carl_k`` 0)."""
    n = labels.numel()
    loss_cls = (F.cross_entropy(class_logits, labels, reduction="none") * label_weights).sum() / n
    pos = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
    per_box = F.smooth_l1_loss(
        box_regression[pos, labels[pos]], regression_targets[pos], beta=1 / 9, reduction="none"
    ).sum(1)
    score = F.softmax(class_logits[pos], -1)[
        torch.arange(len(pos), device=pos.device), labels[pos]
    ]  # with gradient
    carl = (carl_bias + (1 - carl_bias) * score).pow(carl_k)
    carl = carl * (len(pos) / carl.sum()) if len(pos) else carl
    return loss_cls, (per_box * carl).sum() / n


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
        offsets = torch.cumsum(
            torch.tensor([0] + [len(g) for g in gt_boxes[:-1]], device=all_labels.device), 0
        )
        gt_ids = torch.cat([m + o for m, o in zip(matched, offsets)])
        label_weights = self.isr_p(
            class_logits,
            box_regression,
            all_labels,
            gt_ids,
            torch.cat(proposals),
            torch.cat(targets_boxes),
            label_weights,
        )
        loss_classifier, loss_box_reg = pisa_losses(
            class_logits,
            box_regression,
            all_labels,
            regression_targets,
            label_weights,
            self.pisa.carl_k,
            self.pisa.carl_bias,
        )
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
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
        with torch.no_grad():  # the negatives as the current head sees them
            feats = self.box_head(
                self.box_roi_pool(features, [p[i] for p, i in zip(proposals, neg)], image_shapes)
            )
            logits, deltas = self.box_predictor(feats)
        picks, weights = [], []
        for p, image_pos, image_neg, lg, dt in zip(
            proposals, pos, neg, logits.split([len(n) for n in neg]), deltas.split([len(n) for n in neg])
        ):
            probs = F.softmax(lg, -1)
            best = probs[:, 1:].argmax(1) + 1
            boxes = self.box_coder.decode_single(
                dt.reshape(len(dt), -1, 4)[torch.arange(len(dt)), best], p[image_neg]
            )
            bg_losses = F.cross_entropy(
                lg, torch.zeros(len(lg), dtype=torch.long, device=lg.device), reduction="none"
            )
            chosen, w = score_hlr_sample(probs, boxes, bg_losses, num - len(image_pos), self.pisa)
            picks.append(torch.cat([image_pos, image_neg[chosen]]))
            weights.append(torch.cat([w.new_ones(len(image_pos)), w]))
        return picks, weights

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

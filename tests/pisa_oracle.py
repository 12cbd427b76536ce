"""The per-box loops that net/pisa.py's grouping and ranking replaced: the tests check the vectorised
versions against them on random inputs (as tests/asm_oracle.py does for the merge)."""

import torch
from torchvision.ops import box_iou

from net.pisa import linear_importance, rank_descending, renormalise


def nms_groups_loop(boxes, scores, iou_thr):
    """Greedy NMS that keeps what it suppresses: each group is a kept box and the boxes it suppresses."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    free = torch.ones(len(order), dtype=torch.bool)
    groups = []
    for a in range(len(order)):
        if not free[a]:
            continue
        members = torch.where(free & (iou[a] > iou_thr))[0]  # torchvision NMS: suppressed above the threshold
        members = torch.unique(torch.cat([members, members.new_tensor([a])]))
        free[members] = False
        groups.append(order[members])
    return groups


def score_hlr_importance_loop(boxes, scores, iou_thr):
    """Score-HLR importance: a box's rank inside its NMS group first, then its score."""
    importance = torch.zeros(len(scores), dtype=torch.float64)
    for group in nms_groups_loop(boxes, scores, iou_thr):
        importance[group] = len(scores) - torch.arange(len(group), dtype=torch.float64)
        importance[group] += scores[group].to(torch.float64)
    return importance


def iou_hlr_weights_loop(ious, gt_ids, labels, cls_losses, k, bias):
    """ISR-P weights: rank by IoU inside each GT box's group, then across the groups of a class."""
    if len(labels) == 0:
        return cls_losses.new_ones(0)
    top = int(torch.bincount(labels).max())
    weights = torch.ones_like(ious, dtype=torch.float32)
    for cls in torch.unique(labels):
        in_cls = torch.where(labels == cls)[0]
        key = ious[in_cls].to(torch.float64).clone()
        for gt in torch.unique(gt_ids[in_cls]):
            group = torch.where(gt_ids[in_cls] == gt)[0]
            key[group] += top - rank_descending(ious[in_cls][group]).to(torch.float64)
        weights[in_cls] = linear_importance(rank_descending(key), top, 1.0, 0.0)
    weights = (bias + (1 - bias) * weights).pow(k)
    return renormalise(weights, cls_losses)

"""The ASM decision rules for a batch of images: split, rejudge, merge with ground truth, score.

Pure functions over arrays and records (no model, no disk, no globals). For each image, given the
detections sorted by score and the oracle's ground truth:

1. **Split** by score: certain = ``score >= certain_thre``; uncertain =
   ``uncertain_thre <= score < certain_thre``; lower scores are ignored.
2. **Rejudge** (ASM_core): each uncertain box is *consumed* by the highest-scoring certain box it
   overlaps at IoU >= ``judge_iou``. A certain box that consumed uncertain boxes, none of them with
   its label, is demoted (another class competes for the object). Because consumption does not
   depend on demotion, the rule needs no sequential loop and is computed for all images at once
   (the IoU of the certain x uncertain blocks only: detections come sorted by score).
3. **Merge with GT** (the simulated human): certain boxes are matched one-to-one to GT boxes of
   their class at IoU >= ``gt_iou``, greedily by score (each takes its best free GT box). A matched
   GT box is replaced by the model's box and counts as **SL** (confirmed); an unmatched GT box stays
   and counts as **AL** (drawn); an unmatched certain box is a false positive the human **deletes**.
4. **AL ann_ratio** = AL / (AL + SL). An image without GT boxes has ratio 0.0 when the model also
   found nothing certain (nothing to draw, nothing wrong) and 1.0 when the human had to delete
   false positives (the model is wrong there).

Speed without changing a decision: all pairs first go through a float32 screen without division;
only the pairs whose IoU lies within a relative 1e-4 of a threshold (or, for GT matching, above it)
get the float64 IoU, so every decision equals :mod:`asm.reference`'s per-box loop bit for bit.

Ablations: with ``enable_sl=False`` no model box is used (the human draws every GT box: all AL);
with ``enable_al=False`` no GT is used for the labels: the certain boxes *are* the SA annotation
(pseudo-labels), AL = 0, and the ratio becomes the model-only share of uncertain boxes
``U / (U + C)``. Precision against GT is still measured and reported.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from datasets.records import Record


@dataclass(frozen=True)
class ASMConfig:
    certain_thre: float = 0.8
    uncertain_thre: float = 0.3
    judge_iou: float = 0.5
    gt_iou: float = 0.8
    enable_al: bool = True
    enable_sl: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.uncertain_thre <= self.certain_thre <= 1:
            raise ValueError(f"need 0 <= uncertain_thre <= certain_thre <= 1, got {self.uncertain_thre}, "
                             f"{self.certain_thre}")  # fmt: skip
        for name in ("judge_iou", "gt_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


@dataclass
class MergeResult:
    """What the human did on one image and the SA annotation that came out of it.

    ``sa.masks`` is not touched: SL boxes keep the GT mask. ``sl`` flags the SA boxes that came
    from the model (confirmed by the human); the others were drawn (AL).
    """

    sa: Record
    sl: np.ndarray  # bool [len(sa)]
    drawn: int  # AL boxes
    confirmed: int  # SL boxes
    deleted: int  # certain boxes shown to the human that matched no GT
    certain: int  # certain boxes after rejudge
    uncertain: int  # uncertain boxes after rejudge (demoted ones included)
    demoted: int  # certain boxes demoted by rejudge
    matched: int  # certain boxes that match GT: the pseudo-label precision is matched / certain
    ratio: float  # AL ann_ratio
    sl_score: float = 0.0  # sum of the detection scores of the matched certain boxes
    deleted_boxes: np.ndarray | None = None  # [deleted, 4] the false positives the human removed
    deleted_labels: np.ndarray | None = None  # [deleted] their classes
    moved: np.ndarray | None = None  # bool [len(sa)]: AL boxes made by moving a model box (asm.edits.count_moves)


def _pad(arrays: Sequence[np.ndarray], width: int, fill: float, dtype=np.float64, shape: tuple = ()) -> np.ndarray:
    """Stack ragged arrays into ``[len(arrays), width, *shape]`` with one concatenation and one scatter."""
    lens = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    out = np.full((len(arrays), max(width, 1), *shape), fill, dtype=dtype)
    if lens.sum():
        ndim = 1 + len(shape)
        flat = np.concatenate([a if isinstance(a, np.ndarray) and a.ndim == ndim else np.reshape(a, (-1, *shape))
                               for a in arrays], dtype=dtype, casting="unsafe")  # fmt: skip
        pos = np.arange(len(flat)) + np.repeat(np.arange(len(arrays)) * out.shape[1] - (np.cumsum(lens) - lens), lens)
        out.reshape(-1, *shape)[pos] = flat
    return out


class _Workspace:
    """Scratch arrays reused across the chunks of a batch: allocating (and page-faulting in) fresh
    multi-megabyte temporaries for every chunk cost about as much as the arithmetic itself.
    A workspace serves one thread at a time."""

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self.buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self.buffers[name] = np.empty(max(size, 1), dtype)
        return buf[:size].reshape(shape)


def _inter_union(a: np.ndarray, b: np.ndarray, dtype, ws: _Workspace,
                 exact: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Intersection and union areas ``[B, N, M]`` of ``[B, N, 4]`` x ``[B, M, 4]`` boxes in ``dtype``,
    plus a scratch array of that shape; each coordinate is a contiguous plane, temporaries reused.
    With ``exact=False`` the intersection is only right where it is positive (<= 0 elsewhere),
    which is all a threshold test needs, for one pass less."""
    ax1, ay1, ax2, ay2 = (np.ascontiguousarray(a[..., k], dtype)[:, :, None] for k in range(4))
    bx1, by1, bx2, by2 = (np.ascontiguousarray(b[..., k], dtype)[:, None, :] for k in range(4))
    shape = (a.shape[0], a.shape[1], b.shape[1])
    inter, union, tmp = (ws.get(name, shape, dtype) for name in ("inter", "union", "tmp"))
    np.minimum(ax2, bx2, out=inter)
    inter -= np.maximum(ax1, bx1, out=tmp)
    np.maximum(inter, 0.0, out=inter)
    np.minimum(ay2, by2, out=union)
    union -= np.maximum(ay1, by1, out=tmp)
    if exact:
        np.maximum(union, 0.0, out=union)
    inter *= union
    np.add((ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1), out=union)
    union -= inter
    return inter, union, tmp


def batched_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of padded box sets ``[B, N, 4]`` x ``[B, M, 4]`` -> ``[B, N, M]`` (float64, as ``box_iou``)."""
    iou, union, _ = _inter_union(a, b, np.float64, _Workspace())
    ok = union > 0
    np.divide(iou, union, out=iou, where=ok)
    iou[~ok] = 0.0
    return iou


_BAND = 1e-4  # relative; the float32 IoU is within ~1e-6 of the float64 one for pixel boxes


def _screenable(a: np.ndarray, b: np.ndarray, thresh: float) -> bool:
    """Whether the float32 :func:`_screen` decides like float64 here: a threshold well above its
    band, coordinates below 1e15 in size, and box sides either 0 (padding, degenerate boxes) or
    longer than 1e-9 (no overflow, no underflow)."""
    if thresh <= 2 * _BAND:
        return False
    for b in (a, b):
        if not b.size:
            continue
        sides = b[..., 2:] - b[..., :2]
        if not (np.abs(b).max() < 1e15 and sides.min() >= 0 and np.where(sides > 0, sides, 1.0).min() > 1e-9):
            return False
    return True


def _screen(a: np.ndarray, b: np.ndarray, thresh: float, near: bool,
            ws: _Workspace) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """A float32 pass over all pairs: ``(maybe, surely)`` that IoU >= ``thresh`` (bool ``[B, N, M]``).

    ``maybe`` holds every pair whose float64 IoU can reach the threshold. With ``near``, ``surely``
    holds those that reach it with a margin, and ``maybe`` is narrowed to the pairs in between,
    which need the exact IoU; otherwise ``surely`` is None. No division, half the memory traffic
    of float64, and no allocation: both results live in ``ws`` until its next use.
    """
    inter, union, tmp = _inter_union(a, b, np.float32, ws, exact=False)
    # two empty boxes have union 0 and IoU 0: a tiny floor keeps "inter >= union * t" false there
    # (real unions are >= 1e-18 by _screenable), and IoU >= thresh > 0 needs inter > 0
    np.maximum(union, np.float32(1e-30), out=union)
    maybe = np.greater_equal(inter, np.multiply(union, np.float32(thresh - _BAND), out=tmp),
                             out=ws.get("maybe", inter.shape, bool))  # fmt: skip
    if not near:
        return maybe, None
    union *= np.float32(thresh + _BAND)
    surely = np.greater_equal(inter, union, out=ws.get("surely", inter.shape, bool))
    maybe ^= surely  # surely implies maybe: what is left is the band around the threshold
    return maybe, surely


def _flat_pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 3-d mask, through one flat index (faster)."""
    flat = np.flatnonzero(mask)
    _, n, m = mask.shape
    bi, rest = np.divmod(flat, n * m)
    i, j = np.divmod(rest, m)
    return bi, i, j


def _exact_pairs(a: np.ndarray, b: np.ndarray, pairs: tuple[np.ndarray, ...]) -> np.ndarray:
    """:func:`batched_iou` of the listed ``(image, i, j)`` pairs only."""
    return batched_iou(a[pairs[0], pairs[1]][:, None], b[pairs[0], pairs[2]][:, None])[:, 0, 0]


def overlaps(a: np.ndarray, b: np.ndarray, thresh: float, ws: _Workspace | None = None) -> np.ndarray:
    """``batched_iou(a, b) >= thresh`` (bool ``[B, N, M]``), decided exactly as in float64.

    The float32 :func:`_screen` decides every pair whose IoU is not within a relative ``1e-4``
    of the threshold; the few that are get the float64 IoU. Coordinates that float32 cannot hold
    safely take the float64 path throughout. With a workspace ``ws`` the result lives in it.
    """
    if not _screenable(a, b, thresh):
        return batched_iou(a, b) >= thresh
    band, surely = _screen(a, b, thresh, True, ws or _Workspace())
    pairs = _flat_pairs(band)
    if len(pairs[0]):
        surely[pairs] = _exact_pairs(a, b, pairs) >= thresh
    return surely


def iou_pairs_at_least(a: np.ndarray, b: np.ndarray, thresh: float, keep: Callable | None = None,
                       ws: _Workspace | None = None) -> tuple[tuple[np.ndarray, ...], np.ndarray]:  # fmt: skip
    """The pairs ``(image, i, j)`` with ``batched_iou(a, b) >= thresh`` and their exact IoU.

    Sparse: the float32 :func:`_screen` picks the candidates; only those get the float64 IoU.
    ``keep(bi, i, j)`` (optional) filters the candidates first. Pairs come in ``(image, i, j)`` order.
    """
    if _screenable(a, b, thresh):
        cand = _flat_pairs(_screen(a, b, thresh, False, ws or _Workspace())[0])
    else:
        cand = _flat_pairs(batched_iou(a, b) >= thresh)
    if keep is not None:
        ok = keep(*cand)
        cand = tuple(c[ok] for c in cand)
    iou = _exact_pairs(a, b, cand)
    ok = iou >= thresh
    return tuple(c[ok] for c in cand), iou[ok]


@dataclass
class _Packed:
    """A batch of detections as padded arrays; rows sorted by score, certain boxes first."""

    sizes: np.ndarray  # [B] detections per image
    scores: np.ndarray  # [B, D] float64, -1 as padding
    boxes: np.ndarray  # [B, N, 4] float64 (exact copies of the float32 detections), certain + uncertain only
    labels: np.ndarray  # [B, N] int64, -1 as padding
    n_cert: np.ndarray  # [B] certain boxes before rejudge
    n_unc: np.ndarray  # [B] uncertain boxes before rejudge
    demote: np.ndarray  # [B, NC] certain boxes demoted by rejudge

    @property
    def kept(self) -> np.ndarray:
        """[B, NC] certain boxes that survive rejudge."""
        nc = self.demote.shape[1]
        return (np.arange(nc)[None, :] < self.n_cert[:, None]) & ~self.demote


def _rejudge(dets: Sequence[dict], cfg: ASMConfig, ws: _Workspace) -> _Packed:
    """Pack the detections and apply split + rejudge to all images at once (module docstring)."""
    sizes = np.fromiter((len(d["scores"]) for d in dets), np.int64, len(dets))
    scores = _pad([d["scores"] for d in dets], int(sizes.max(initial=0)), -1.0)  # -1: below any threshold
    if (np.diff(scores, axis=1) > 0).any():
        raise ValueError("detections must be sorted by descending score")
    n_cert = (scores >= cfg.certain_thre).sum(1)
    n_unc = (scores >= cfg.uncertain_thre).sum(1) - n_cert
    nc, nu = max(int(n_cert.max(initial=0)), 1), max(int(n_unc.max(initial=0)), 1)
    # boxes and labels of the certain and uncertain detections only (the first ones: sorted by score)
    used = (n_cert + n_unc).tolist()
    n = max(used, default=0) or 1
    boxes = _pad([np.asarray(d["boxes"], np.float32)[:k] for d, k in zip(dets, used)], n, 0.0, shape=(4,))
    labels = _pad([np.asarray(d["labels"])[:k] for d, k in zip(dets, used)], n, -1, np.int64)
    c_valid = np.arange(nc)[None, :] < n_cert[:, None]
    u_valid = np.arange(nu)[None, :] < n_unc[:, None]
    u_idx = np.minimum(n_cert[:, None] + np.arange(nu)[None, :], n - 1)
    cb = np.where(c_valid[..., None], boxes[:, :nc], 0.0)
    ub = np.where(u_valid[..., None], np.take_along_axis(boxes, u_idx[..., None], 1), 0.0)
    overlap = overlaps(cb, ub, cfg.judge_iou, ws)  # padding boxes are empty: IoU 0 < judge_iou
    # each uncertain box belongs to the first (highest-scoring) certain box overlapping it
    first = np.where(overlap.any(1), overlap.argmax(1), -1)  # [B, nu]
    bi, ui = np.nonzero(first >= 0)
    ci = first[bi, ui]
    owns = np.zeros((len(dets), nc), bool)
    owns[bi, ci] = True
    same = np.take_along_axis(labels, u_idx, 1)[bi, ui] == labels[bi, ci]
    owns_same = np.zeros((len(dets), nc), bool)
    owns_same[bi[same], ci[same]] = True
    return _Packed(sizes, scores, boxes, labels, n_cert, n_unc, owns & ~owns_same & c_valid)


def split_and_rejudge(dets: Sequence[dict], cfg: ASMConfig) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Certain (after rejudge) and uncertain flags per image, and the number demoted.

    Args:
        dets: per image ``boxes`` ``[D, 4]`` xyxy, ``labels`` ``[D]``, ``scores`` ``[D]`` sorted by
            descending score, so that certain boxes come first and uncertain ones next.
    """
    p = _rejudge(dets, cfg, _Workspace())
    certain, uncertain = [], []
    for k, c, u, kept in zip(p.sizes, p.n_cert, p.n_unc, p.kept):
        flags = np.zeros(k, bool)
        flags[:c] = kept[:c]
        certain.append(flags)
        flags = np.zeros(k, bool)
        flags[c : c + u] = True
        uncertain.append(flags)
    return certain, uncertain, p.demote.sum(1).tolist()


def _match(p: _Packed, gts: Sequence[Record], gt_iou: float, ws: _Workspace) -> tuple[np.ndarray, np.ndarray]:
    """The GT index matched by each kept certain box (``[B, NC]``, -1 = none), greedy by score.

    Box ``r`` (in score order) takes its best free same-class GT box at IoU >= ``gt_iou``. On the
    sparse candidate pairs this greedy walk equals deferred acceptance in which every GT box
    prefers higher-scoring boxes: each unmatched box proposes to its best GT box not yet tried, and
    a GT box keeps the best-ranked proposer. A few rounds over all images at once, no rank loop.
    Also returns the GT counts ``[B]``.
    """
    nc = p.demote.shape[1]
    gt_lens = np.fromiter((len(g) for g in gts), np.int64, len(gts))
    m = max(int(gt_lens.max(initial=0)), 1)
    match = np.full((len(gts), nc), -1)
    gt_labels = _pad([g.labels for g in gts], m, -2, np.int64)
    kept, labels = p.kept, p.labels
    (bi, ri, gi), iou = iou_pairs_at_least(p.boxes[:, :nc], _pad([g.boxes for g in gts], m, 0.0, shape=(4,)), gt_iou,
                                           lambda b, r, g: kept[b, r] & (labels[b, r] == gt_labels[b, g]), ws)  # fmt: skip
    if len(bi) == 0:
        return match, gt_lens
    # each box's candidates, best IoU first; the pairs come in (image, box, GT) order and the sort
    # is stable, so ties keep the lower GT index, as argmax does
    box = bi * nc + ri  # flat box id
    order = np.lexsort((-iou, box))
    bi, ri, gi, box = bi[order], ri[order], gi[order], box[order]  # candidates of one box are contiguous
    start = np.flatnonzero(np.r_[True, box[1:] != box[:-1]])
    count = np.diff(np.r_[start, len(box)])
    owner = np.full(len(gts) * m, -1)  # flat GT id -> rank of the box holding it
    tried = np.zeros(len(start), np.int64)  # candidates already proposed, per box
    active = np.ones(len(start), bool)  # boxes holding nothing that still have candidates
    while active.any():
        waiting = np.flatnonzero(active)
        cand = start[waiting] + tried[waiting]
        target = bi[cand] * m + gi[cand]
        # the best-ranked proposer per GT box competes with its current holder
        order = np.lexsort((ri[cand], target))
        first = np.r_[True, target[order][1:] != target[order][:-1]]
        win, tgt = waiting[order][first], target[order][first]
        holder = owner[tgt]
        take = (holder < 0) | (ri[start[win]] < holder)
        win, tgt, holder = win[take], tgt[take], holder[take]
        owner[tgt] = ri[start[win]]
        tried[waiting] += 1
        active[win] = False
        bumped = holder >= 0  # displaced holders propose again, to their next candidate
        active[np.searchsorted(box[start], bi[start[win[bumped]]] * nc + holder[bumped])] = True
        active &= tried < count
    held = np.flatnonzero(owner >= 0)
    match[held // m, owner[held]] = held % m
    return match, gt_lens


def merge_batch(dets: Sequence[dict], gts: Sequence[Record], cfg: ASMConfig, chunk: int = 256,
                threads: int | None = None) -> list[MergeResult]:  # fmt: skip
    """Apply split, rejudge and merge to a batch of images; see the module docstring.

    Images are processed in chunks of ``chunk`` (similar certain-box counts together, which bounds
    the padded ``[B, N, M]`` arrays); chunks run on ``threads`` threads (default: the usable CPU
    cores), since NumPy releases the GIL in the array work that dominates.

    Raises:
        ValueError: a detection list not sorted by descending score, or mismatched lengths.
    """
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detections but {len(gts)} ground-truth records")
    if len(dets) <= chunk:
        return _merge_chunk(dets, gts, cfg, _Workspace())
    sizes = np.fromiter((len(d["scores"]) for d in dets), np.int64, len(dets))
    certain = np.concatenate([np.asarray(d["scores"], np.float64).reshape(-1) for d in dets]) >= cfg.certain_thre
    n_cert = np.add.reduceat(np.r_[certain, False], np.r_[0, np.cumsum(sizes)[:-1]]) * (sizes > 0)
    order = np.lexsort((sizes, n_cert)).tolist()
    parts = [order[start : start + chunk] for start in range(0, len(order), chunk)]
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, min(threads, len(parts)))

    spaces: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()  # one per thread, passed from chunk to chunk
    for _ in range(threads):
        spaces.put(_Workspace())

    def work(idx: list[int]) -> list[MergeResult]:
        ws = spaces.get()
        try:
            return _merge_chunk([dets[i] for i in idx], [gts[i] for i in idx], cfg, ws)
        finally:
            spaces.put(ws)

    out: list[MergeResult | None] = [None] * len(dets)
    with ThreadPoolExecutor(threads, thread_name_prefix="asm-merge") as pool:
        for idx, results in zip(parts[::-1], pool.map(work, parts[::-1])):  # the largest chunks first
            for i, r in zip(idx, results):
                out[i] = r
    return out


def _merge_chunk(dets: Sequence[dict], gts: Sequence[Record], cfg: ASMConfig, ws: _Workspace) -> list[MergeResult]:
    if not dets:
        return []
    p = _rejudge(dets, cfg, ws)
    match, gt_lens = _match(p, gts, cfg.gt_iou, ws)
    return _results(p, match, gt_lens, gts, cfg)


def _split(flat: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """``flat`` cut into consecutive pieces of ``counts`` rows (views; ``np.split`` is slower)."""
    ends = np.cumsum(counts).tolist()
    return [flat[e - c : e] for e, c in zip(ends, counts.tolist())]


def _results(p: _Packed, match: np.ndarray, gt_lens: np.ndarray, gts: Sequence[Record], cfg: ASMConfig) -> list[MergeResult]:
    """One :class:`MergeResult` per image; the counts and the SA boxes computed for the whole batch."""
    nc = match.shape[1]
    kept, matched = p.kept, match >= 0
    n_certain, n_matched = kept.sum(1), matched.sum(1)
    demoted = p.demote.sum(1)
    n_uncertain = p.n_unc + demoted
    sl_score = np.where(matched, p.scores[:, :nc], 0.0).sum(1)
    c_boxes = p.boxes[:, :nc].astype(np.float32)
    gt_flat = {k: np.concatenate([getattr(g, k) for g in gts]) for k in ("boxes", "labels", "difficult", "iscrowd")}
    if not cfg.enable_al:  # pseudo-labels only: the certain boxes are the annotation, no human
        boxes, labels = _split(c_boxes[kept], n_certain), _split(p.labels[:, :nc][kept], n_certain)
        total = n_uncertain + n_certain
        ratio = np.divide(n_uncertain, total, out=np.zeros(len(gts)), where=total > 0)
        return [MergeResult(Record(g.image_id, g.file_name, g.width, g.height, b, lab), np.ones(len(b), bool), 0, 0,
                            0, int(c), int(u), int(dm), int(mt), float(r), float(s))
                for g, b, lab, c, u, dm, mt, r, s in zip(gts, boxes, labels, n_certain, n_uncertain, demoted,
                                                         n_matched, ratio, sl_score)]  # fmt: skip
    sl = np.zeros(len(gt_flat["boxes"]), bool)
    if cfg.enable_sl:  # matched GT boxes take the model's coordinates
        offsets = np.cumsum(gt_lens) - gt_lens
        bi, ri = np.nonzero(matched)
        gt_flat["boxes"][offsets[bi] + match[bi, ri]] = c_boxes[bi, ri]
        sl[offsets[bi] + match[bi, ri]] = True
        confirmed, deleted = n_matched, n_certain - n_matched
        deleted_boxes = _split(c_boxes[kept & ~matched], deleted)
        deleted_labels = _split(p.labels[:, :nc][kept & ~matched], deleted)
        ratio = np.divide(gt_lens - confirmed, gt_lens, out=(deleted > 0).astype(np.float64), where=gt_lens > 0)
    else:  # the human draws every box; model boxes are never shown
        confirmed = deleted = np.zeros(len(gts), np.int64)
        deleted_boxes = deleted_labels = [None] * len(gts)
        ratio = (gt_lens > 0).astype(np.float64)
    parts = [_split(v, gt_lens) for v in gt_flat.values()]  # boxes, labels, difficult, iscrowd
    counts = [a.tolist() for a in (gt_lens - confirmed, confirmed, deleted, n_certain, n_uncertain, demoted,
                                   n_matched, ratio, sl_score)]  # fmt: skip
    out = []
    for g, boxes, labels, difficult, iscrowd, sl_i, dbox, dlab, *c in zip(gts, *parts, _split(sl, gt_lens),
                                                                        deleted_boxes, deleted_labels, *counts):  # fmt: skip
        sa = Record.trusted(g.image_id, g.file_name, g.width, g.height, boxes, labels, difficult, iscrowd,
                            None if g.masks is None else list(g.masks))  # fmt: skip
        out.append(MergeResult(sa, sl_i, *c, dbox, dlab))
    return out

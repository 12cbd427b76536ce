"""One ASM round: choose the images, detect them, merge with the oracle (or pause for a human), and
finish (move the pools, report, set up the round's training phase).

The rules are pure (:mod:`asm`); this module runs them on a :class:`tools.loop.run.Run`'s model and data.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from asm.merge import ASMConfig
from asm.pools import ASMState
from asm.select import choose_informative
from datasets.records import record_from_dict, record_to_dict
from tools.engine.checkpoint import unwrap
from tools.engine.epoch import evaluate
from tools.engine.evaluator import OutcomeEvaluator
from tools.engine.fit import Phase
from tools.engine.mining import Mirrored, detect_sorted, merge_with_oracle, preannotate
from tools.loop import held_out
from tools.loop.labelling import export_round, results_from_imported
from tools.loop.report import AP50, log_round, round_scalars, write_round_report
from tools.runtime import dist
from tools.runtime.drawing import round_sheet, to_tensorboard
from tools.runtime.progress import HEARTBEAT, rounds_planned


class Paused(Exception):
    """A round waits for a human's labels (``--oracle none``) in ``folder``."""

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


class LabelsMissing(Exception):
    """--resume of a paused round before its labels were imported."""


def start_round(run, train_set, device) -> None:
    """Detect the next batch, merge with the oracle, move the pools; set up the round's training.

    With ``--candidates C`` the model detects ``C x K`` images and the ``K`` most informative are
    kept (:func:`asm.select.choose_informative`); the rest stay unlabelled. With ``--oracle none``
    the round pauses instead: the pre-annotations are exported for a labelling tool and
    :class:`Paused` ends the process until the labels are imported.
    """
    args, asm, policy = run.args, run.asm, run.policy
    cfg, info = round_rules(run)
    if not policy.shows_model:  # random: nothing is shown to the human, no detection pass
        oracle = {r.image_id: r for r in train_set.records}
        batch = [oracle[i] for i in asm.next_batch()]
        shown = scored = raw = [no_detections() for _ in batch]
    else:
        batch, raw = detect_batch(run, train_set, device, cfg, info)
        shown, scored, said = policy.screen(raw, RoundSight(run, batch, train_set, device), cfg)
        info.update(said)
    if args.oracle == "none":
        pre, scores, estimates = preannotate(shown, batch, cfg)
        run.awaiting = os.path.join("labelling", f"round{asm.round + 1}")  # relative to the run: it can move
        folder = os.path.join(args.output_dir, run.awaiting)
        if dist.is_main():
            export_round(folder, asm.round + 1, pre, scores, train_set, estimates)
        run.save()
        raise Paused(f"round {asm.round + 1}: {len(batch)} images with pre-annotations in {folder}", folder)
    # the best score on --certain-thre's scale (rescaled by the rules, before any demotes a box)
    info["max_score"] = round(
        max((float(d["scores"][0]) for d in scored if len(d["scores"])), default=0.0), 4
    )
    finish_round(run, train_set, merge_with_oracle(shown, batch, cfg), info)


def detect_batch(run, train_set, device, cfg: ASMConfig, info: dict) -> tuple[list, list[dict]]:
    """The round's images (oracle records) and the model's detections on them. With
    ``--candidates``, the most informative of the candidates detected go first (``info`` says how
    many were detected)."""
    args, asm, policy = run.args, run.asm, run.policy
    oracle = {r.image_id: r for r in train_set.records}
    ids = asm.next_batch(policy.candidates)
    found = detect_sorted(
        run.model, [oracle[i] for i in ids], train_set.image_root, device, args.eval_batch_size, args.workers
    )
    dets = dict(zip(ids, found))
    if policy.candidates > 1:
        fresh = [i for i in ids if i not in asm.pending]
        picks = choose_informative(
            [dets[i] for i in fresh],
            asm.K - (len(ids) - len(fresh)),
            cfg,
            train_set.num_classes,
            policy.diversity,
        )
        asm.prefer([fresh[j] for j in picks])
        info["candidates"] = len(ids)
    batch = [oracle[i] for i in (asm.next_batch() if policy.candidates > 1 else ids)]  # K of them
    return batch, [dets[r.image_id] for r in batch]


def no_detections() -> dict:
    """An image's detections when the model shows the human nothing (``--strategy random``)."""
    return {
        "boxes": np.zeros((0, 4), np.float32),
        "scores": np.zeros(0, np.float32),
        "labels": np.zeros(0, np.int64),
    }


def round_rules(run) -> tuple[ASMConfig, dict]:
    """This round's merge rules: no SL below the mining gate (the certainty rules then screen the
    detections: :meth:`asm.policy.RoundPolicy.screen`). Also what to log about them."""
    policy, cfg = run.policy, run.rules
    ap50 = run.phase.history[-1]["metrics"][AP50] if run.phase.history else 0.0
    info = {"ap50_before": ap50}  # the model that detected this round's images
    if not policy.shows_model:  # random: the human draws every box of the next K images
        return dataclasses.replace(cfg, enable_sl=False), info
    info["gated"] = bool(cfg.enable_sl and ap50 < policy.mining_gate)
    if info["gated"]:  # ASM_core's ap_thre: a weak model's boxes are not offered to the human
        cfg = dataclasses.replace(cfg, enable_sl=False)
    return cfg, info


class RoundSight:
    """The round as the certainty rules see it (:class:`asm.policy.RoundView`): the current model's
    outcomes on the validation set, and its detections on the round's images mirrored."""

    def __init__(self, run, batch: list, train_set, device) -> None:
        self.run, self.batch, self.train_set, self.device = run, batch, train_set, device
        self.classes = run.classes

    def validation_outcomes(self, cfg: ASMConfig) -> dict[str, list]:
        return validation_outcomes(self.run, cfg)

    def mirrored(self) -> list[dict]:
        args = self.run.args
        model = Mirrored(unwrap(self.run.model))
        return detect_sorted(
            model, self.batch, self.train_set.image_root, self.device, args.eval_batch_size, args.workers
        )


def validation_outcomes(run, cfg: ASMConfig) -> dict[str, list]:
    """The current model's detections on the validation set (scores >= ``uncertain_thre``), each
    right or not at ``gt_iou``: those of the phase's last evaluation when it was of this model (the
    last epoch was evaluated, in this process), else one more pass over the evaluation images."""
    t = run.trainer
    kept = next((e for e in t.evaluators if isinstance(e, OutcomeEvaluator)), None)
    outcomes = kept.take() if kept is not None else None
    if outcomes is not None and run.phase.history and run.phase.history[-1].get("evaluated", True):
        return outcomes
    fresh = OutcomeEvaluator(cfg.gt_iou, cfg.uncertain_thre)
    evaluate(t.model, t.val_loader, [fresh], t.device)
    return fresh.outcomes


def resume_labelled(run, train_set) -> None:
    """Continue a round paused for a human, with the labels imported by import_labels.py."""
    folder = os.path.join(run.args.output_dir, run.awaiting)  # an older checkpoint's absolute path: kept
    path = os.path.join(folder, "imported.json")
    if not os.path.isfile(path):
        raise LabelsMissing(f"no labels imported for {folder}: run import_labels.py first")
    with open(path, encoding="utf-8") as f:
        results = results_from_imported(json.load(f))
    run.awaiting = None
    finish_round(run, train_set, results)


def finish_round(run, train_set, results, info: dict | None = None) -> None:
    """Move the pools with the round's results (selection on rank 0, broadcast to the others),
    report the round, and start its training phase."""
    args = run.args
    if dist.is_main():
        run.train_records = run.asm.apply(results)
        held = held_out.hold_out_round(run, results)  # --eval-from-labels: a share joins the evaluation set
        run.asm.rounds[-1].update(info or {})
        if getattr(args, "eval_from_labels", None) is not None:  # the pool as it trains, the held out apart
            run.asm.rounds[-1].update(held_out=len(held), labelled_images=len(run.asm.labelled))
        sheet = round_sheet(results, train_set.image_root, train_set.classes)
        os.makedirs(os.path.join(args.output_dir, "rounds"), exist_ok=True)
        sheet.save(os.path.join(args.output_dir, "rounds", f"round{run.asm.round}.png"))
        write_round_report(run, results)
        if run.trainer.log.enabled:
            to_tensorboard(run.trainer.log.writer, "ASM/most_uncertain", sheet, run.asm.round)
    if dist.is_distributed():
        state, train = dist.broadcast((run.asm.state_dict(), [record_to_dict(r) for r in run.train_records]))
        run.asm, run.train_records = ASMState.from_state(state), [record_from_dict(r) for r in train]
    run.trainer.log.scalars(round_scalars(run), run.asm.round)
    log_round(run)
    if (
        getattr(args, "eval_from_labels", None) is not None
    ):  # evaluate on the grown set; compare the last model on it too
        held_out.refresh_evaluation(run, train_set.image_root)
        run.asm.rounds[-1]["ap_previous_on_set"] = held_out.compare_on_grown_set(run)
    run.new_phase(Phase(f"round{run.asm.round}", run.asm.round, args.round_epochs), args.ap_shift_asm)
    run.save()


def plan_rounds(run, current: int | None = None) -> None:
    """Tell the progress line which round comes (``current``: the one running) and how many are planned."""
    if run.asm is None:
        return
    asm, max_rounds = run.asm, run.args.max_rounds
    left = rounds_planned(
        len(asm.unlabelled) + len(asm.pending),
        asm.K,
        None if max_rounds is None else max(max_rounds - asm.round, 0),
    )
    HEARTBEAT.set(round=asm.round + 1 if current is None else current, rounds=asm.round + left)


def check_ranks_agree(asm: ASMState) -> list[str]:
    """Every rank's pool digest (one entry per process); raises if the ranks' pools differ."""
    digests = dist.all_gather(asm.digest())
    if len(set(digests)) > 1:
        raise RuntimeError(f"round {asm.round}: the processes hold different pools {digests}")
    return digests

"""Active sample mining (ASM) for torchvision detectors: train, mine, grow the labelled pool.

    python train_asm_one.py --K 100                 # built-in demo dataset, 2 CPU cores
    python train_asm_one.py --strategy none         # fully supervised baseline (upper bound)
    python train_asm_one.py --output-dir outputs/demo --resume   # continue that run

:func:`main` reads as the story: options -> resume -> data -> model and state -> first phase ->
rounds -> report. A round is :mod:`tools.loop.rounds`, a phase :class:`tools.engine.fit.PhaseTraining`, the run's
state :class:`tools.loop.run.Run`, what the user reads :mod:`tools.loop.report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch

from asm.pools import initial_pool
from datasets import AnnotationError
from datasets.build import add_data_args, describe, evaluation_warnings
from tools.engine.checkpoint import CheckpointError, RunState, last_path, weights_digest
from tools.engine.evaluator import AP50, AP_KEYS
from tools.engine.fit import Diverged
from tools.loop import held_out, run_dir
from tools.loop.config import add_config_args, parse_with_config, save_resolved
from tools.loop.options import (
    OPTION_PRESETS,
    HelpFormatter,
    add_asm_args,
    add_model_args,
    add_train_args,
    check_options,
    str2bool,
)
from tools.loop.report import (
    ap_summary,
    closing_story,
    explain_drop,
    initial_record,
    next_steps,
    round_record,
    run_summary,
    summary_table,
)
from tools.loop.resume import DEFAULT_OUTPUT, resolve_resume
from tools.loop.rounds import (
    LabelsMissing,
    Paused,
    check_ranks_agree,
    plan_rounds,
    resume_labelled,
    start_round,
)
from tools.loop.run import Run
from tools.loop.setup import build_run, start, write_load_report
from tools.runtime import dist
from tools.runtime.stop import (  # the exit codes, one table: tools/runtime/stop.py
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_DONE,
    EXIT_INTERRUPTED,
    EXIT_PAUSED,
    STOP,
    Interrupted,
    Stopped,
    resume_command,
)

logger = logging.getLogger("train_asm_one")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter, epilog=MMDET_FLAGS)
    p.add_argument(
        "config_file", nargs="?", default=None, help="a YAML config (as --config; MMDetection style)"
    )
    add_data_args(p)
    add_model_args(p)
    add_train_args(p)
    add_asm_args(p)
    add_config_args(p)
    g = p.add_argument_group("evaluation and output")
    g.add_argument(
        "--coco-ap",
        type=str2bool,
        default=None,
        help="also evaluate COCO-style bbox AP (default: only with --dataset coco)",
    )
    g.add_argument(
        "--output-dir",
        "--ckpt",
        "--work-dir",
        dest="output_dir",
        default=None,
        help=f"the run's folder (default {DEFAULT_OUTPUT}; with --resume CKPT, the checkpoint's folder)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue a run (restores everything): CKPT, or without a value <output-dir>/last.pth; the run "
        "keeps its options (tools/loop/resume.py says which may change)",
    )
    g.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from <output-dir>/last.pth when it exists, otherwise start (MMDetection's --resume "
        "without a path)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --output-dir that holds another run (its checkpoints and logs are removed)",
    )
    g.add_argument(
        "--exit-after-epochs",
        type=int,
        default=None,
        help="stop the process after this many epochs in all, as if killed (resume tests)",
    )
    return p


MMDET_FLAGS = """MMDetection's tools/train.py flags here:
  CONFIG (positional)   the same (also --config, several merged in order)
  --work-dir DIR        --output-dir DIR (alias)
  --resume [CKPT]       --resume CKPT, or --auto-resume for the latest in --output-dir
  --amp                 --amp (CUDA)
  --auto-scale-lr       --auto-scale-lr, with --base-batch-size (16)
  --cfg-options K=V     --cfg-options K=V
  --no-validate         --no-validate (MMDetection 2.x)
  --seed / --deterministic   the same
  --launcher pytorch    torchrun ... train_asm_one.py (README "Several GPUs")
  --gpu-id N            --device cuda:N
"""


def main(argv: list[str] | None = None) -> int:
    with dist.session():
        return run_main(argv)


def run_main(argv: list[str] | None) -> int:
    """Options, resume, data; then :func:`run_job`. Bad input ends here in one line, no traceback."""
    try:
        args = parse_with_config(get_args_parser(), argv, OPTION_PRESETS)
        checkpoint = resolve_resume(args, argv, get_args_parser)
        check_options(args)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        logger.error("%s", e)  # names the option or the config file and key
        return EXIT_BAD_INPUT
    try:
        # the folder is claimed before the data loads: --overwrite also clears the old run's splits/
        with (
            STOP,
            run_dir.claim(args.output_dir, bool(args.resume), args.overwrite, enabled=dist.will_be_main()),
        ):
            try:
                args, device, train_set, val_set = start(args)
                if args.strategy != "none":
                    dist.check_shardable(args.K, "--K (images detected per round)")
                    initial_pool(len(train_set), args.initial, args.seed)  # --initial too large: say so now
            except (AnnotationError, ValueError, FileNotFoundError) as e:
                logger.error("%s", e)  # names the file and field
                return EXIT_BAD_INPUT
            return run_job(args, device, train_set, val_set, argv, checkpoint)
    except run_dir.OutputDirError as e:
        logger.error("%s", e)
        return EXIT_BAD_INPUT
    except Stopped as e:  # before training started, or between the loop and its handler
        logger.warning("%s before anything was saved; run the same command again", e)
        return e.exit_code


def run_job(
    args: argparse.Namespace,
    device: torch.device,
    train_set,
    val_set,
    argv: list[str] | None = None,
    checkpoint: RunState | None = None,
) -> int:
    """Model and state (restored from ``checkpoint``, the one ``--resume`` named), the first phase
    and the rounds (:func:`train_all`), then the report. Returns the exit code."""
    logger.info(describe("train pool", train_set))
    logger.info(describe("evaluation", val_set))
    for line in evaluation_warnings(val_set):
        logger.warning(line)
    if dist.is_main():
        write_load_report(args.output_dir, train_set, val_set)
    start_wall = time.perf_counter()
    run = build_run(args, device, train_set, val_set)
    if dist.is_main():
        logger.info("resolved config written to %s", save_resolved(args, args.output_dir, run.environment))
    if checkpoint is not None:
        try:
            run.load_state(checkpoint, args.resume)
        except CheckpointError as e:
            logger.error("%s", e)
            return EXIT_BAD_INPUT
        logger.info("resumed %s: %s epoch %d", args.resume, run.phase.name, run.phase.epoch)
        if args.eval_from_labels is not None and run.asm is not None:  # the set as it had grown
            held_out.refresh_evaluation(run, train_set.image_root)
    try:
        metrics, stopped = train_all(run, train_set, device)
    except (Interrupted, Stopped, Paused, LabelsMissing, Diverged) as e:
        return stopped_early(run, e, continue_command(args, argv))
    finally:
        run.trainer.log.close()
    if not dist.is_main():
        return EXIT_DONE
    return report(run, metrics, stopped, time.perf_counter() - start_wall)


def train_all(run: Run, train_set, device) -> tuple[dict, str]:
    """The phase a run is in (the first, or the round a resumed run was in), then round after round
    until the pool is exhausted, AP settles across rounds, or ``--max-rounds``. Returns the last
    evaluation's metrics and why the run stopped."""
    if run.awaiting:  # a round paused for a labelling tool
        resume_labelled(run, train_set)
    plan_rounds(run, run.phase.index)
    metrics = run.train_phase()
    if run.asm is None:  # the supervised point of a learning curve
        run.trainer.log.jsonl(
            initial_record(len(run.train_records), sum(map(len, run.train_records)), metrics)
        )
        return metrics, "the supervised baseline finished"
    while True:
        if run.phase.index > 0:  # a round's training just finished
            settled = round_finished(run, metrics)
            if settled:
                return metrics, settled
        elif not run.asm.rounds:  # the initial phase: the start of the learning curve
            run.trainer.log.jsonl(initial_record(len(run.asm.labelled), run.initial_boxes, metrics))
        if run.asm.exhausted():
            return metrics, "the unlabelled pool is exhausted"
        if run.args.max_rounds is not None and run.asm.round >= run.args.max_rounds:
            return metrics, f"--max-rounds {run.args.max_rounds} reached"
        plan_rounds(run)
        start_round(run, train_set, device)
        metrics = run.train_phase()


def round_finished(run: Run, metrics: dict) -> str | None:
    """Record the round that just trained (log.jsonl, a drop warning); why the rounds stop when AP
    has settled across rounds, else None."""
    run.asm.rounds[-1].update(ap_summary(metrics))
    explain_drop(run, metrics[AP50])
    run.trainer.log.jsonl(round_record(run, check_ranks_agree(run.asm)))
    if run.round_stopper.update(run.asm.round, metrics[AP_KEYS[run.args.ap]]):
        return f"AP settled across rounds (shift {run.round_stopper.ap_shift:.4f} < --ap-shift-asm)"
    return None


def stopped_early(run: Run, e: Exception, command: str) -> int:
    """The line and exit code of a run that stopped before its end (see the exit-code table)."""
    if isinstance(e, Interrupted):
        logger.warning("%s; continue with: %s", e, command)
        return EXIT_INTERRUPTED
    if isinstance(e, Stopped):
        if os.path.isfile(last_path(run.args.output_dir)):
            logger.warning("%s; the last checkpoint is complete. Continue with: %s", e, command)
        else:
            logger.warning("%s before the first checkpoint; run the same command again to start over", e)
        return e.exit_code
    if isinstance(e, Paused):
        logger.warning("%s", next_steps(e, run.args.output_dir, command))
        return EXIT_PAUSED
    logger.error("%s", e)
    return EXIT_DIVERGED if isinstance(e, Diverged) else EXIT_BAD_INPUT


def report(run: Run, metrics: dict, stopped: str, wall_s: float) -> int:
    """The table of rounds, the closing story and the final JSON line."""
    summary = run_summary(run, metrics, stopped, weights_digest(run.model), round(wall_s, 1))
    if run.asm is not None:
        print(summary_table(run))
    logger.info("finished: %s", stopped)
    print(closing_story(run, summary["ap50"]))
    print(json.dumps(summary))
    return EXIT_DONE


def continue_command(args: argparse.Namespace, argv: list[str] | None) -> str:
    """The exact command that continues this run from its last checkpoint (``argv``: the command
    line's options; None: ``sys.argv``)."""
    options = list(argv) if argv is not None else sys.argv[1:]
    return resume_command(options, last_path(args.output_dir), "train_asm_one.py")


if __name__ == "__main__":
    raise SystemExit(main())

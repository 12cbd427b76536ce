"""Command-line options shared by ``train_asm_one.py`` and ``al_curve.py``: argparse and checking.

argparse is the single source of defaults: config files (and ``--cfg-options``) only override it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os

from asm.merge import ASMConfig
from asm.policy import CalibratedPrecision, FixedThreshold, MirrorAgreement, RoundPolicy
from asm.pools import ROUND_TRAIN, STRATEGIES
from net.models import DEMO_BACKBONE, MODELS, PRESETS, ROI_HEADS, pretraining_seed
from net.pisa import PisaConfig
from tools.engine.early_stop import APShiftStopper
from tools.engine.evaluator import AP_KEYS
from tools.engine.fit import FitConfig
from tools.runtime import dist

FIT = FitConfig()  # the training flags' defaults
NO_VALIDATE_INTERVAL = 10**9  # --no-validate's evaluation interval: longer than any phase


def str2bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def _number_or_none(value: str, cast, what: str):
    if value.lower() in ("none", "off"):
        return None
    try:
        return cast(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} or 'none', got {value!r}") from None


def int_or_none(value: str) -> int | None:
    """A whole number, or ``none`` / ``off`` for no value (an option whose default is None)."""
    return _number_or_none(value, int, "a whole number")


def float_or_none(value: str) -> float | None:
    """A number, or ``none`` / ``off`` for no value (an option whose default is a number)."""
    return _number_or_none(value, float, "a number")


def count_or_fraction(value: str) -> float:
    number = float(value)
    if number <= 0 or (number > 1 and not number.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or an image count, got {value!r}")
    return number


# ASM_core's values of the options where our defaults differ (README, "Where we differ from ASM_core").
# --asm-core-defaults puts them under any config file and explicit flag.
ASM_CORE_DEFAULTS = {
    "ap_range": 3,
    "ap_shift_pretrain": 0.05,
    "ap_shift_asm": 0.001,
    "ap_thre": 0.5,  # AP-shift stops only above it ...
    "mining_gate": 0.5,  # ... and no model boxes are offered below it (ASM_core mines only above ap_thre)
    "round_train": "replay",  # a round trains on its images plus K random label-pool records
    "round_epochs": 1,  # ASM_core brings K new images after every epoch
}
# The built-in demo's own values (any flag or config file wins): a few minutes on two CPU cores from a
# backbone pretrained on synthetic images of its own (net.models.DEMO_BACKBONE; --weights-backbone none
# trains from scratch), so that the model confirms boxes from its first round.
DEMO_DEFAULTS = {
    "weights_backbone": DEMO_BACKBONE,
    "preset": "demo",  # the FPN on the stride 8-32 stages (net.models.PRESETS)
    "demo_train": 300,
    "demo_val": 60,
    "initial": 1 / 3,  # 100 of the 300 images (a fraction, so that --demo-train N keeps a third)
    "epochs": 10,
    "eval_interval": 2,
    "round_epochs": 2,
    "round_train": "replay",  # a round trains on its 100 images and 100 of the pool: 200, not 300
    "batch_size": 2,
    "lr": 0.01,
}
# later presets win where both apply: an explicit --asm-core-defaults over the demo's own values
OPTION_PRESETS = {"dataset=demo": DEMO_DEFAULTS, "asm_core_defaults": ASM_CORE_DEFAULTS}
NO_WEIGHTS = "none"  # --weights-backbone none: no backbone weights, not even the demo's


HIDDEN_ALIASES = ("--ckpt",)  # ASM_core's name of the output folder: still read, not listed


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows one flag style: the old underscore spellings (ASM_core's ``--certain_thre``)
    and :data:`HIDDEN_ALIASES` still work but are not listed."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [s for s in action.option_strings if "_" not in s and s not in HIDDEN_ALIASES]
        if shown and len(shown) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


def add_model_args(p: argparse.ArgumentParser) -> None:  # pragma: no mutate block
    g = p.add_argument_group("model")
    g.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn", help=f"one of {sorted(MODELS)}")
    g.add_argument("--weights", default=None, help="torchvision weight name (DEFAULT) or local .pth")
    g.add_argument(
        "--weights-backbone",
        default=None,
        help="torchvision weight name or local .pth of the backbone; none: no weights (the demo loads "
        "its own by default)",
    )
    g.add_argument("--trainable-layers", type=int, default=None)
    g.add_argument("--min-size", type=int, default=224)
    g.add_argument("--max-size", type=int, default=None)
    g.add_argument("--preset", default="cpu_fast", choices=sorted(PRESETS))
    g.add_argument(
        "--scale-jitter", type=str2bool, default=True, help="random train scales 0.8-1.2x min-size"
    )
    g.add_argument(
        "--roi-head",
        choices=ROI_HEADS,
        default="standard",
        help="pisa: Prime Sample Attention in training (ISR-P, CARL, Score-HLR sampling; net/pisa.py); "
        "inference is the standard head's",
    )
    g = p.add_argument_group("PISA (--roi-head pisa): MMDetection's train_cfg fields and defaults")
    for f in dataclasses.fields(PisaConfig):
        part, key = f.name.split("_", 1)
        g.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=int if f.name == "hlr_num" else float,
            default=f.default,
            help=(
                "Smooth-L1 beta of both PISA box terms (MMDetection's PISA configs: loss_bbox beta)"
                if f.name == "smooth_l1_beta"
                else f"MMDetection's {dict(hlr='sampler').get(part, part)}.{key}"
                + (" (default: the model's RoIs per image)" if f.name == "hlr_num" else "")
            ),
        )


# pragma: no mutate start  (declarations, as the other builders: tests/data/cli_options.json pins them)
def add_train_args(
    p: argparse.ArgumentParser, batch_flags: tuple[str, ...] = ("--batch-size", "--batch_size")
) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    g.add_argument(
        *batch_flags, dest="batch_size", type=int, default=FIT.batch_size, help="training images per batch"
    )
    g.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="images per detection batch (default: 1 on CPU, where padding a batch costs more than it "
        "saves; 8 on CUDA)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers, alive for a whole phase (default: 0 on CPU, where workers compete with "
        "compute; on CUDA one per free core, at most 8, per process)",
    )
    g.add_argument(
        "--eval-interval",
        type=int,
        default=FIT.eval_interval,
        help="evaluate every E epochs and at the end of each phase (AP-shift stopping counts evaluations)",
    )
    g.add_argument("--opt", default=FIT.opt, choices=("sgd", "adamw"))
    g.add_argument("--lr", type=float, default=FIT.lr)
    g.add_argument("--momentum", type=float, default=FIT.momentum)
    g.add_argument("--weight-decay", type=float, default=FIT.weight_decay)
    g.add_argument(
        "--lr-steps",
        type=float,
        nargs="+",
        default=list(FIT.lr_steps),
        help="decay points, fractions of a phase",
    )
    g.add_argument("--lr-gamma", type=float, default=FIT.lr_gamma)
    g.add_argument("--warmup-iters", type=int, default=FIT.warmup_iters)
    g.add_argument("--clip-grad", type=float, default=FIT.clip_grad)
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    g.add_argument(
        "--auto-scale-lr",
        action="store_true",
        help="scale --lr by the total batch (--batch-size x processes) / --base-batch-size (MMDetection's "
        "auto_scale_lr)",
    )
    g.add_argument(
        "--base-batch-size",
        type=int,
        default=16,
        help="the total batch --lr is meant for (MMDetection's configs: 16 = 8 GPUs x 2)",
    )
    g.add_argument(
        "--no-validate",
        nargs="?",
        const=True,
        default=False,
        type=str2bool,
        metavar="BOOL",
        help="evaluate only at the end of each phase (as --eval-interval larger than any phase); "
        "AP-shift early stopping then cannot stop a phase early. A resumed run turns it off with "
        "--no-validate false, and its --eval-interval applies again",
    )
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (torchrun, CUDA)")
    g.add_argument(
        "--epochs",
        "--num_epoches",
        dest="epochs",
        type=int,
        default=12,
        help="max epochs of the initial phase",
    )
    g.add_argument(
        "--seed", type=int, default=FIT.seed, help="seeds the initial pool, the unlabelled queue and training"
    )
    g.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seeds training alone (initialisation, batches, sampling; default: --seed): the same --seed "
        "with another --train-seed keeps every label and differs by training noise only",
    )
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    g.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG also lists every skipped file of the load report",
    )
    g = p.add_argument_group("early stopping (AP shift)")
    g.add_argument("--ap", default=FIT.ap, choices=sorted(AP_KEYS))
    g.add_argument("--ap-thre", "--ap_thre", type=float, default=0.0, help="stop only above this AP")
    g.add_argument("--ap-range", "--ap_range", type=int, default=4, help="window of AP values")
    g.add_argument("--ap-shift-pretrain", "--ap_shift_pretrain", type=float, default=0.005)
    g.add_argument("--ap-shift-asm", "--ap_shift_asm", type=float, default=0.005)
    g.add_argument(
        "--ap-shift-squared", action="store_true", help="mean squared instead of absolute deviation"
    )
    g.add_argument(
        "--ap-min-rise",
        type=float,
        default=0.05,
        help="AP shift stops a phase only once its AP has risen this much above the phase's first "
        "evaluation, or reached --ap-floor (a model flat near zero has a small shift too)",
    )
    g.add_argument("--ap-floor", type=float, default=0.5, help="see --ap-min-rise")


# pragma: no mutate end


def ap_stopper(args: argparse.Namespace, threshold: float) -> APShiftStopper:
    """AP-shift early stopping with the run's window, rules and ``threshold``."""
    return APShiftStopper(
        args.ap_range, threshold, args.ap_thre, args.ap_shift_squared, args.ap_min_rise, args.ap_floor
    )


def add_asm_args(p: argparse.ArgumentParser, rules_only: bool = False) -> None:  # pragma: no mutate block
    """The active sample mining options: the merge rules (``--certain-thre`` ...; :func:`asm_config`)
    and, unless ``rules_only`` (``al_curve.py``'s ``al_ratio`` sampler), the rounds."""
    g = p.add_argument_group("active sample mining")
    if not rules_only:
        g.add_argument(
            "--strategy",
            default="v1+",
            choices=("none", *STRATEGIES),
            help="how a round grows the label pool (asm/pools.py); random: the next K images of the "
            "same seeded queue, every box drawn by the human (v1+ --enable-sl false without the "
            "detection pass: the same-trainer baseline); none: the fully supervised baseline",
        )
        g.add_argument("--K", type=int, default=100, help="images detected per ASM round")
        g.add_argument(
            "--initial", type=count_or_fraction, default=0.2, help="initial label pool: fraction or count"
        )
        g.add_argument("--round-epochs", type=int, default=5, help="max epochs of each ASM round")
        g.add_argument(
            "--round-train",
            choices=ROUND_TRAIN,
            default="pool",
            help="besides its images, a round trains on the whole label pool (default) or on K replayed "
            "label records (ASM_core's rule)",
        )
        g.add_argument(
            "--max-rounds",
            type=int_or_none,
            default=None,
            help="stop after this many rounds (default, or none: until the pool is exhausted; a resumed "
            "run may raise, lower or remove it)",
        )
        g.add_argument(
            "--round-cache",
            default=None,
            metavar="DIR",
            help="a folder shared by runs from one initial model: a round that another run trained on the "
            "same weights, labels and options is loaded from it instead of trained again (tools/loop/round_cache.py; "
            "single process)",
        )
        g.add_argument(
            "--asm-core-defaults",
            action="store_true",
            help="ASM_core's defaults where ours differ: "
            + ", ".join(f"{k}={v}" for k, v in ASM_CORE_DEFAULTS.items())
            + " (a config or flag still wins)",
        )
        g.add_argument("--cer-ratio", "--cer_ratio", type=float, default=0.3)
        g.add_argument("--uncer-ratio", "--uncer_ratio", type=float, default=0.6)
        g.add_argument(
            "--max-passes",
            type=int,
            default=3,
            help="topk_v2: an image detected this many times goes to the human (AL) and joins the pool, "
            "whatever its ratio, so every run ends",
        )
        g.add_argument(
            "--review-cost",
            type=float,
            default=0.2,
            help="human cost of confirming or deleting a model box, in box draws (weighted_cost)",
        )
        g.add_argument(
            "--move-cost",
            type=float,
            default=0.5,
            help="human cost of moving a model box onto its object, in box draws (weighted_cost)",
        )
    g.add_argument("--certain-thre", "--certain_thre", type=float, default=0.8)
    g.add_argument("--uncertain-thre", "--uncertain_thre", type=float, default=0.3)
    g.add_argument("--judge-iou", "--judge_iou", type=float, default=0.5)
    g.add_argument("--gt-iou", "--gt_iou", type=float, default=0.8)
    g.add_argument("--enable-al", "--enable_al", type=str2bool, default=True)
    g.add_argument("--enable-sl", "--enable_sl", type=str2bool, default=True)
    g.add_argument(
        "--move-iou",
        type=float,
        default=0.5,
        help="a certain box at IoU >= this (and < --gt-iou) with a GT box of its class is moved onto it "
        "by the human (one edit), not deleted and drawn again",
    )
    if rules_only:
        return
    g.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="detect this many times K images and keep the K most informative (predicted uncertain "
        "share plus class-mix diversity); 1: the next K of the shuffled queue",
    )
    g.add_argument(
        "--diversity", type=float, default=0.5, help="weight of the class-mix term of --candidates"
    )
    g.add_argument(
        "--mining-gate",
        type=float,
        default=0.0,
        help="AP50 below which a round offers no model boxes (all boxes drawn), as ASM_core's ap_thre",
    )
    g.add_argument(
        "--certain-precision",
        type=float_or_none,
        default=None,
        help="per-class certain thresholds: the lowest score above which the model's boxes on the "
        "validation set are right (IoU >= --gt-iou) with a precision whose 95%% lower bound reaches "
        "this; a class that cannot show it gets no certain box (read from the phase's last "
        "evaluation). none: one --certain-thre for every class",
    )
    g.add_argument(
        "--certain-agreement",
        type=float_or_none,
        default=None,
        help="IoU: a certain box counts as certain only if the model, run again on the mirrored "
        "image, draws it again at least this close (one more detection pass per round); a box it "
        "places elsewhere is offered as uncertain. none: the score alone decides",
    )
    g.add_argument(
        "--oracle",
        choices=("gt", "none"),
        default="gt",
        help="gt: the dataset's labels simulate the human; none: pause each round for a labelling "
        "tool (export, import_labels.py, --resume)",
    )
    g.add_argument(
        "--eval-from-labels",
        type=float,
        default=None,
        metavar="FRACTION",
        help="evaluate on FRACTION (0 to 0.5) of the images the human labels each round, the initial pool "
        "included, held out and never trained on: the evaluation set grows with the labels. Default: 0.25 "
        "with --oracle none where the data has no evaluation split of its own; else off",
    )


def round_policy(args: argparse.Namespace) -> RoundPolicy:
    """What decides a round (:class:`asm.policy.RoundPolicy`), from the options: the one place the
    certainty rules' options are read.

    Raises:
        ValueError: a rule's value is out of its range (one line naming the option).
    """
    _check_thresholds(args)
    rules = [FixedThreshold(args.certain_thre)]
    if args.certain_precision is not None:
        rules.append(CalibratedPrecision(args.certain_precision))
    if args.certain_agreement is not None:
        rules.append(MirrorAgreement(args.certain_agreement))
    return RoundPolicy(
        strategy=args.strategy,
        K=args.K,
        rules=asm_config(args),
        certainty=tuple(rules),
        mining_gate=args.mining_gate,
        candidates=args.candidates,
        diversity=args.diversity,
    )


def _check_thresholds(args: argparse.Namespace) -> None:
    _need(
        args.uncertain_thre <= args.certain_thre,
        f"--uncertain-thre ({args.uncertain_thre}) must not exceed --certain-thre ({args.certain_thre})",
    )


def asm_config(args: argparse.Namespace) -> ASMConfig:
    """The merge rules of :func:`add_asm_args`' options."""
    return ASMConfig(
        certain_thre=args.certain_thre,
        uncertain_thre=args.uncertain_thre,
        judge_iou=args.judge_iou,
        gt_iou=args.gt_iou,
        enable_al=args.enable_al,
        enable_sl=args.enable_sl,
        move_iou=args.move_iou,
    )


# What a resume does with an option changed on the command line (tools.loop.resume):
FIXED = "fixed"  # refused: the run keeps what it was started with (data, model, seeds, schedule)
ADJUSTABLE = "adjustable"  # applied: it only changes how the rest of the run proceeds
ROUNDS = "rounds"  # applied until the first round begins (only the rounds read it), refused after
PROCESS = "process"  # this process's (device, workers, logging, caches): the command line's, not compared
COMMAND = "command"  # the command's own (the checkpoint, the folder, config files): not compared


@dataclasses.dataclass(frozen=True)
class OptionFacts:
    """What the run loop knows of one option besides its argparse definition: its range (``(low,
    high, low excluded)``, None: no bound) or that it counts at least one; what a resume does when it
    changes (:data:`FIXED` ...); and whether it changes a round's training (``trains``: False for
    the options that only choose and label images, or manage the folder and the process, which the
    round cache's key leaves out)."""

    range: tuple[float, float | None, bool] | None = None
    at_least_one: bool = False
    resume: str = FIXED
    trains: bool = True


# Every option's facts, declared once (an option not listed: no range, FIXED, trains); the checks
# (check_options), the resume rule (tools.loop.resume) and the round cache's key
# (tools.loop.round_cache) are derived from it. NumPy's seeds are never negative.
OPTION_FACTS = {
    "lr": OptionFacts(range=(0.0, None, True)),
    "momentum": OptionFacts(range=(0.0, 1.0, False)),
    "weight_decay": OptionFacts(range=(0.0, None, False)),
    "lr_gamma": OptionFacts(range=(0.0, 1.0, True)),
    "clip_grad": OptionFacts(range=(0.0, None, True)),
    "certain_thre": OptionFacts(range=(0.0, 1.0, False), resume=ROUNDS, trains=False),
    "uncertain_thre": OptionFacts(range=(0.0, 1.0, False), resume=ROUNDS, trains=False),
    "cer_ratio": OptionFacts(range=(0.0, 1.0, False), resume=ROUNDS, trains=False),
    "uncer_ratio": OptionFacts(range=(0.0, 1.0, False), resume=ROUNDS, trains=False),
    "mining_gate": OptionFacts(range=(0.0, 1.0, False), resume=ROUNDS, trains=False),
    "diversity": OptionFacts(range=(0.0, None, False), resume=ROUNDS, trains=False),
    "judge_iou": OptionFacts(range=(0.0, 1.0, True), resume=ROUNDS, trains=False),
    "gt_iou": OptionFacts(range=(0.0, 1.0, True), resume=ROUNDS, trains=False),
    "move_iou": OptionFacts(range=(0.0, 1.0, True), resume=ROUNDS, trains=False),
    "certain_precision": OptionFacts(range=(0.0, 1.0, True), resume=ROUNDS, trains=False),
    "certain_agreement": OptionFacts(range=(0.0, 1.0, True), resume=ROUNDS, trains=False),
    "ap_shift_pretrain": OptionFacts(range=(0.0, None, False)),
    "ap_shift_asm": OptionFacts(range=(0.0, None, False)),
    "ap_thre": OptionFacts(range=(0.0, 1.0, False)),
    "isr_k": OptionFacts(range=(0.0, None, False)),
    "carl_k": OptionFacts(range=(0.0, None, False)),
    "hlr_k": OptionFacts(range=(0.0, None, False)),
    "isr_bias": OptionFacts(range=(0.0, 1.0, False)),
    "carl_bias": OptionFacts(range=(0.0, 1.0, False)),
    "hlr_bias": OptionFacts(range=(0.0, 1.0, False)),
    "hlr_pos_fraction": OptionFacts(range=(0.0, 1.0, True)),
    "hlr_score_thr": OptionFacts(range=(0.0, 1.0, False)),
    "hlr_iou_thr": OptionFacts(range=(0.0, 1.0, True)),
    "smooth_l1_beta": OptionFacts(range=(0.0, None, True)),
    "seed": OptionFacts(range=(0, None, False)),
    "train_seed": OptionFacts(range=(0, None, False), resume=ROUNDS),
    "review_cost": OptionFacts(range=(0.0, None, False), resume=ADJUSTABLE, trains=False),
    "move_cost": OptionFacts(range=(0.0, None, False), resume=ADJUSTABLE, trains=False),
    "batch_size": OptionFacts(at_least_one=True),
    "eval_interval": OptionFacts(at_least_one=True, resume=ADJUSTABLE),
    "base_batch_size": OptionFacts(at_least_one=True),
    "epochs": OptionFacts(at_least_one=True),
    "round_epochs": OptionFacts(at_least_one=True, resume=ROUNDS),
    "min_size": OptionFacts(at_least_one=True),
    "eval_batch_size": OptionFacts(at_least_one=True, resume=PROCESS),
    "K": OptionFacts(at_least_one=True, resume=ROUNDS, trains=False),
    "candidates": OptionFacts(at_least_one=True, resume=ROUNDS, trains=False),
    "steps": OptionFacts(at_least_one=True),
    "max_passes": OptionFacts(at_least_one=True, resume=ROUNDS, trains=False),
    "hlr_num": OptionFacts(at_least_one=True),
    "max_rounds": OptionFacts(resume=ADJUSTABLE, trains=False),
    "no_validate": OptionFacts(resume=ADJUSTABLE),
    "cache_dir": OptionFacts(resume=PROCESS),
    "device": OptionFacts(resume=PROCESS),
    "exit_after_epochs": OptionFacts(resume=PROCESS, trains=False),
    "log_level": OptionFacts(resume=PROCESS, trains=False),
    "no_cache": OptionFacts(resume=PROCESS),
    "round_cache": OptionFacts(resume=PROCESS, trains=False),
    "workers": OptionFacts(resume=PROCESS),
    "enable_al": OptionFacts(resume=ROUNDS, trains=False),
    "enable_sl": OptionFacts(resume=ROUNDS, trains=False),
    "oracle": OptionFacts(resume=ROUNDS, trains=False),
    "eval_from_labels": OptionFacts(range=(0.0, 0.5, True)),
    "round_train": OptionFacts(resume=ROUNDS),
    "strategy": OptionFacts(resume=ROUNDS, trains=False),
    "asm_core_defaults": OptionFacts(resume=COMMAND),
    "auto_resume": OptionFacts(resume=COMMAND, trains=False),
    "auto_scale_lr": OptionFacts(resume=COMMAND),
    "cfg_options": OptionFacts(resume=COMMAND),
    "config": OptionFacts(resume=COMMAND),
    "config_file": OptionFacts(resume=COMMAND),
    "help": OptionFacts(resume=COMMAND),
    "output_dir": OptionFacts(resume=COMMAND, trains=False),
    "overwrite": OptionFacts(resume=COMMAND, trains=False),
    "resume": OptionFacts(resume=COMMAND, trains=False),
    "weights": OptionFacts(resume=COMMAND),
}
RANGES = {name: f.range for name, f in OPTION_FACTS.items() if f.range is not None}
AT_LEAST_ONE = tuple(name for name, f in OPTION_FACTS.items() if f.at_least_one)


def options_where(**facts) -> frozenset[str]:
    """The options whose facts have these values, e.g. ``options_where(resume=ROUNDS)``."""
    return frozenset(
        name for name, f in OPTION_FACTS.items() if all(getattr(f, k) == v for k, v in facts.items())
    )


def check_options(args: argparse.Namespace) -> None:
    """Cross-check the options before any data loads or training starts. Every rule applies to the
    options the script's parser defines (``al_curve.py`` has no ``--K``); a value of None is unset.

    Raises:
        ValueError: one line naming the option, its value and what it must be.
    """
    given = {k: v for k, v in vars(args).items() if v is not None}
    _check_ranges(args, given)
    _check_rules(args, given)
    out = args.output_dir
    cache = given.get("round_cache")
    _need(cache is None or not dist.launched(), "--round-cache works in a single process, not under torchrun")
    _need(cache is None or not os.path.isfile(cache), f"--round-cache {cache} is a file, not a folder")
    _need(not os.path.exists(out) or os.path.isdir(out), f"--output-dir {out} exists and is not a folder")
    _check_demo_seed(given)


def _check_demo_seed(given: dict) -> None:
    """The demo must not evaluate on images its backbone was pretrained on: the shipped backbone's
    images were drawn with one --data-seed, so the demo refuses that seed while the backbone is in use."""
    weights = given.get("weights_backbone")
    if given.get("dataset") != "demo" or not weights or not os.path.isfile(str(weights)):
        return
    seed = pretraining_seed(str(weights))
    _need(
        seed is None or given.get("data_seed", 0) != seed,
        f"--data-seed {seed}: the demo backbone ({os.path.basename(str(weights))}) was pretrained on the "
        f"images of that seed, so the evaluation would repeat them; pick another --data-seed, or "
        "--weights-backbone none",
    )


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_ranges(args: argparse.Namespace, given: dict) -> None:
    """Counts of at least one, sizes, and the numeric ranges of :data:`RANGES`."""
    for name in AT_LEAST_ONE:
        if name in given:
            _need(given[name] >= 1, f"{_flag(name)} must be at least 1, got {given[name]}")
    _need(args.min_size >= 32, f"--min-size must be at least 32 pixels, got {args.min_size}")
    _need(
        args.max_size is None or args.max_size >= args.min_size,
        f"--max-size ({args.max_size}) must be at least --min-size ({args.min_size})",
    )
    _need(args.workers is None or args.workers >= 0, f"--workers must be >= 0, got {args.workers}")
    _need(args.warmup_iters >= 0, f"--warmup-iters must be >= 0, got {args.warmup_iters}")
    for name, (low, high, low_open) in RANGES.items():
        if name not in given:
            continue
        value = given[name]
        _need(math.isfinite(value), f"{_flag(name)} must be a finite number, got {value}")
        _need(
            value > low if low_open else value >= low,
            f"{_flag(name)} must be {'>' if low_open else '>='} {low}, got {value}",
        )
        _need(high is None or value <= high, f"{_flag(name)} must be <= {high}, got {value}")


def _check_rules(args: argparse.Namespace, given: dict) -> None:
    """The rules between options: schedule fractions, threshold order, what a strategy allows."""
    _need(
        all(0 < f <= 1 for f in args.lr_steps),
        f"--lr-steps are fractions of a phase in (0, 1], got {args.lr_steps}",
    )
    if hasattr(args, "strategy"):  # the entry's rounds: the certainty rules' own checks
        round_policy(args)
    elif hasattr(args, "certain_thre"):  # al_curve.py: the merge rules alone
        _check_thresholds(args)
    if "cer_ratio" in given:
        _need(
            args.cer_ratio < args.uncer_ratio,
            f"--cer-ratio ({args.cer_ratio}) must be below --uncer-ratio ({args.uncer_ratio})",
        )
    _need(
        args.ap_range >= 2,
        f"--ap-range must be at least 2 (a window of AP values to compare), got {args.ap_range}",
    )
    if given.get("strategy") == "random":
        _need(
            args.candidates == 1,
            "--candidates needs the model's detections; --strategy random shows the human "
            "none (it takes the next K images of the queue)",
        )
    if "max_rounds" in given and args.max_rounds is not None:
        _need(
            args.max_rounds >= 0,
            f"--max-rounds must be >= 0 (or left out: until the pool is exhausted), got {args.max_rounds}",
        )


def pick(cls, args: argparse.Namespace):
    """The frozen config ``cls`` (a dataclass) of the options of the same names."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def training_seed(args: argparse.Namespace) -> int:
    """The seed of the model's initialisation and of training: ``--train-seed``, else ``--seed``."""
    train_seed = getattr(args, "train_seed", None)
    return args.seed if train_seed is None else train_seed


def fit_config(args: argparse.Namespace) -> FitConfig:
    """The training values of ``args`` (settled: :func:`settle`)."""
    config = dataclasses.replace(
        pick(FitConfig, args), lr_steps=tuple(args.lr_steps), seed=training_seed(args)
    )
    if args.no_validate:  # the last epoch of each phase is still evaluated
        config = dataclasses.replace(config, eval_interval=NO_VALIDATE_INTERVAL)
    return config


def pisa_config(args: argparse.Namespace) -> PisaConfig:
    return pick(PisaConfig, args)

"""Which options a resumed run takes from its checkpoint, and which from the command line.

One rule for every option: a run keeps what it was started with. On ``--resume`` the checkpoint's
options are the run's; an option given differently on the command line is

* **applied** (and said so) when it only changes how the rest of the run proceeds: evaluation
  spacing, the number of rounds, the cost weights of the report (:data:`ADJUSTABLE`);
* **applied** too, when the run has finished its first phase and mined no round yet, for the
  options only the rounds read (:data:`ROUND_OPTIONS`: strategy, K, certainty and merge rules, round
  schedule, the rounds' training seed): one initial model, mined several ways (copy the folder, resume
  each copy with other round options; ``bench/asm_efficiency.py`` shares round 0 so);
* **refused** otherwise (data, model, seeds, schedule; the round options once a round has begun), in
  one line that lists every such option with both values.

Options of this process only (device, loader workers, logging, caches: :data:`PROCESS`) and of the
command itself (the checkpoint, the folder, config files) are the command line's and not compared.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tools.engine.checkpoint import RunState, last_path, read_state
from tools.engine.fit import Phase
from tools.loop import options as facts
from tools.loop.options import NO_VALIDATE_INTERVAL, options_where
from tools.runtime import dist

logger = logging.getLogger(__name__)
DEFAULT_OUTPUT = "outputs/run"  # a run's folder when --output-dir is left out

ADJUSTABLE = options_where(resume=facts.ADJUSTABLE)
PROCESS = options_where(resume=facts.PROCESS)
ROUND_OPTIONS = options_where(resume=facts.ROUNDS)
NOT_COMPARED = PROCESS | options_where(resume=facts.COMMAND)


class ResumeError(ValueError):
    """A resume that would change what the run is, or continue it in another folder."""


def run_folder(resume: str, output_dir: str | None) -> str:
    """The folder a resumed run writes to: ``output_dir`` when given, else the checkpoint's folder.

    Raises:
        ResumeError: ``output_dir`` is given and is not the checkpoint's folder.
    """
    folder = os.path.dirname(os.path.abspath(resume))
    if output_dir is None:
        return folder
    if os.path.abspath(output_dir) != folder:
        raise ResumeError(
            f"--resume {resume} is not in --output-dir {output_dir}: a run continues in its own folder; "
            "drop --output-dir (the run then continues where its checkpoint is) or give that folder"
        )
    return output_dir


def at_first_round(state: RunState) -> bool:
    """Whether ``state`` has finished its first phase and mined no round (nor paused for labels)."""
    if state.asm is None or state.phase is None or state.awaiting:
        return False
    phase = Phase.from_state(state.phase)
    return phase.index == 0 and phase.finished and state.asm.get("round") == 0


def reconcile(
    given: dict[str, Any], saved: dict[str, Any], first_round: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The options of a resumed run.

    Args:
        given: the options the command line (or its config files) set, by name.
        saved: the options of the checkpoint (its ``config``).
        first_round: the checkpoint is where the first round begins (:func:`at_first_round`): the
            :data:`ROUND_OPTIONS` may change too, except to or from ``--strategy none``.

    Returns:
        ``(values, applied)``: the value of every compared option in ``saved`` (the command line's
        for an adjustable one it gives), and one ``--name old -> new`` line per applied change.

    Raises:
        ResumeError: one line listing every refused option with the run's value and the given one.
    """
    values, applied, refused, round_refused = {}, [], [], False
    free = ADJUSTABLE | ROUND_OPTIONS if first_round and given.get("strategy") != "none" else ADJUSTABLE
    for name, old in saved.items():
        if name in NOT_COMPARED:
            continue
        values[name] = old
        if name not in given or _same(given[name], old):
            continue
        flag = "--" + name.replace("_", "-")
        if name in free:
            values[name] = given[name]
            applied.append(f"{flag} {old!r} -> {given[name]!r}")
        else:
            refused.append(f"{flag} {given[name]!r} (the run's: {old!r})")
            round_refused |= name in ROUND_OPTIONS
    if refused:
        rounds = round_refused and not first_round
        raise ResumeError(
            f"--resume keeps the options the run was started with; these differ: {'; '.join(refused)}. "
            "Drop them to continue, or start a new run in another --output-dir"
            + (" (the round options change only before the first round)" if rounds else "")
        )
    return values, applied


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b


def resolve_resume(
    args: argparse.Namespace, argv: list[str] | None, make_parser: Callable[[], argparse.ArgumentParser]
) -> RunState | None:
    """Settle the run's folder and, on a resume, its options: the checkpoint's, except the few that
    may change (:func:`reconcile`), which are listed. ``make_parser``: the script's parser (its
    defaults tell the options given from those left out). Returns the checkpoint's state, read once."""
    folder = args.output_dir or DEFAULT_OUTPUT
    if args.auto_resume and args.resume is None and os.path.isfile(last_path(folder)):
        args.resume = ""
        logger.info(
            "--auto-resume: continuing %s%s",
            last_path(folder),
            " (its model, not --weights)" if args.weights else "",
        )
        args.weights = None
    if args.resume is not None and args.weights:
        raise ValueError("--resume restores the model; do not combine it with --weights")
    if args.resume == "":  # --resume without a value: this folder's last checkpoint
        args.resume = last_path(folder)
    if args.resume is None:
        args.output_dir = folder
        return None
    args.output_dir = run_folder(args.resume, args.output_dir)
    if not os.path.isfile(args.resume):
        raise FileNotFoundError(f"checkpoint not found: {args.resume} (--resume)")
    state = read_state(args.resume)  # read once: run_job() restores from it
    saved = state.config
    defaults = vars(make_parser().parse_args([]))
    named = set(explicit_options(make_parser(), argv if argv is not None else sys.argv[1:]))
    given = {k: v for k, v in vars(args).items() if k in named or v != defaults.get(k)}
    if args.auto_scale_lr and "lr" in given:  # the checkpoint holds the scaled rate
        given["lr"] = args.lr * args.batch_size * dist.world_size() / args.base_batch_size
    values, applied = reconcile(given, saved, at_first_round(state))
    vars(args).update(values)
    args.auto_scale_lr = False  # the checkpoint's lr is the rate the run started with, scaled once
    if (
        saved.get("eval_interval") == NO_VALIDATE_INTERVAL
        and not args.no_validate
        and "eval_interval" not in given
    ):
        args.eval_interval = defaults["eval_interval"]  # a checkpoint from before fit_config applied it
    for line in applied:
        logger.warning("--resume: applied the new value of %s", line)
    if args.no_validate and "eval_interval" in given:
        logger.warning(
            "--resume: --eval-interval has no effect while --no-validate is on (--no-validate false)"
        )
    predated = sorted(k for k in vars(args) if k not in saved and k not in NOT_COMPARED)
    if predated:
        logger.info(
            "--resume: the checkpoint predates %s; taking %s",
            ", ".join("--" + k.replace("_", "-") for k in predated),
            ", ".join(f"{k}={getattr(args, k)!r}" for k in predated),
        )
    return state


def explicit_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The option names (dests) written on a command line."""
    actions = parser._option_string_actions
    return [actions[tok.split("=", 1)[0]].dest for tok in argv if tok.split("=", 1)[0] in actions]

"""Which options a resumed run takes from its checkpoint, and which from the command line.

One rule for every option: a run keeps what it was started with. On ``--resume`` the checkpoint's
options are the run's; an option given differently on the command line is

* **applied** (and said so) when it only changes how the rest of the run proceeds: evaluation
  spacing, the number of rounds, the cost weights of the report (:data:`ADJUSTABLE`);
* **refused** otherwise (data, model, strategy, K, thresholds, seeds, schedule), in one line that
  lists every such option with both values.

Options of this process only (device, loader workers, logging, caches: :data:`PROCESS`) and of the
command itself (the checkpoint, the folder, config files) are the command line's and not compared.
"""

from __future__ import annotations

import os
from typing import Any

ADJUSTABLE = frozenset({"max_rounds", "eval_interval", "no_validate", "review_cost", "move_cost"})
PROCESS = frozenset(
    {"device", "workers", "eval_batch_size", "log_level", "exit_after_epochs", "no_cache", "cache_dir"}
)
NOT_COMPARED = PROCESS | frozenset(
    {
        "resume",
        "auto_resume",
        "overwrite",
        "output_dir",
        "config",
        "config_file",
        "cfg_options",
        "weights",
        "asm_core_defaults",
        "auto_scale_lr",
        "help",
    }
)


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


def reconcile(given: dict[str, Any], saved: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The options of a resumed run.

    Args:
        given: the options the command line (or its config files) set, by name.
        saved: the options of the checkpoint (its ``config``).

    Returns:
        ``(values, applied)``: the value of every compared option in ``saved`` (the command line's
        for an adjustable one it gives), and one ``--name old -> new`` line per applied change.

    Raises:
        ResumeError: one line listing every refused option with the run's value and the given one.
    """
    values, applied, refused = {}, [], []
    for name, old in saved.items():
        if name in NOT_COMPARED:
            continue
        values[name] = old
        if name not in given or _same(given[name], old):
            continue
        flag = "--" + name.replace("_", "-")
        if name in ADJUSTABLE:
            values[name] = given[name]
            applied.append(f"{flag} {old!r} -> {given[name]!r}")
        else:
            refused.append(f"{flag} {given[name]!r} (the run's: {old!r})")
    if refused:
        raise ResumeError(
            f"--resume keeps the options the run was started with; these differ: {'; '.join(refused)}. "
            "Drop them to continue, or start a new run in another --output-dir"
        )
    return values, applied


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b

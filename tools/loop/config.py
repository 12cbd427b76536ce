"""YAML experiment configs that compose, on top of argparse (which stays the source of defaults).

A config file holds argparse option names (``dest``, dashes or underscores) and may list
``_base_`` files, relative to itself. Bases are merged depth-first in order, then the file's own
keys; later wins, and dict values merge key by key. Precedence, lowest first: argparse defaults,
``--config`` file(s), ``--cfg-options key=value ...``, options given explicitly on the command line.

    python train_asm_one.py --config configs/faster_rcnn_r50_fpn_20e_voc0712_topk_v2.yaml \\
        --cfg-options K=500 lr=0.01 --output-dir outputs/voc
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from datasets.atomic import atomic_write_text


def merge_dicts(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested dicts merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config and its ``_base_`` chain into one dict (without ``_base_``)."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ValueError(f"{path}: _base_ cycle through {' -> '.join(_seen)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping of option names to values")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ValueError(f"{path}: key {odd[0]!r} is not an option name (keys are names such as K or lr)")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ValueError(f"{path}: _base_ must be a file name or a list of them, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge_dicts(merged, load_config(os.path.join(os.path.dirname(path), base), _seen + (path,)))
    return merge_dicts(merged, {k.replace("-", "_"): v for k, v in data.items()})


def parse_cfg_options(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (``3``, ``0.5``, ``true``, ``[a, b]``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--cfg-options expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(
                f"--cfg-options {item!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e})"
            ) from None
    return out


def add_config_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("config")
    g.add_argument("--config", nargs="+", default=[], help="YAML config file(s), merged in order")
    g.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")


def check_known_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse an option the parser does not define, naming the closest ones, before anything else
    reads the command line (a mistyped option's value must not be taken for a positional config file).

    Raises:
        ValueError: ``unknown option --certain-thresh; did you mean --certain-thre?``
    """
    known = _long_options(parser)
    shown = [k for k in known if "_" not in k]  # the hyphenated spellings (--certain_thre is an alias)
    for token in argv:
        if token == "--":
            return
        name = token.split("=", 1)[0]
        if not name.startswith("--") or name in known:
            continue
        close = difflib.get_close_matches(name, shown, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; {parser.prog} --help lists them"
        raise ValueError(f"unknown option {name}{hint}")


def parse_checked(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, an unknown option first refused in one line (exit 2) that names
    the closest known ones (:func:`check_known_options`)."""
    try:
        check_known_options(parser, sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return parser.parse_args(argv)


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--option`` of ``parser`` and of its subcommands' parsers."""
    known = []
    for action in parser._actions:
        known += [s for s in action.option_strings if s.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                known += _long_options(sub)
    return known


def parse_with_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` with config files and ``--cfg-options`` applied as defaults.

    ``presets`` maps a condition to option values that apply, when it holds, above argparse's
    defaults and below the config files and explicit flags. A condition is a boolean option
    (``asm_core_defaults``: when it is set) or ``name=value`` (``dataset=demo``: when the option,
    as the command line and config files leave it, has that value).

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or a malformed file.
    """
    check_known_options(parser, sys.argv[1:] if argv is None else argv)
    first, _ = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    positional = vars(first).get("config_file")  # train_asm_one.py configs/x.yaml, as MMDetection
    for path in [*first.config, *([positional] if positional else [])]:
        values = merge_dicts(values, load_config(path))
    values = merge_dicts(values, parse_cfg_options(first.cfg_options))
    actions = {
        a.dest: a for a in parser._actions if a.dest not in ("help", "config", "cfg_options", "config_file")
    }
    source = " ".join([*first.config, *([positional] if positional else [])]) or "--cfg-options"
    _set_defaults(parser, actions, values, source)
    args = parser.parse_args(argv)
    chosen: dict[str, Any] = {}
    for condition, preset in (presets or {}).items():
        name, is_equal, wanted = condition.partition("=")
        value = getattr(args, name, None)
        if (str(value) == wanted) if is_equal else value:
            chosen = merge_dicts(chosen, preset)
    if not chosen:
        return args
    _set_defaults(parser, actions, merge_dicts(chosen, values), source)
    return parser.parse_args(argv)


def _set_defaults(
    parser: argparse.ArgumentParser, actions: dict, values: dict[str, Any], source: str
) -> None:
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(actions)}")
    parser.set_defaults(**{k: _coerce(actions[k], k, v, source) for k, v in values.items()})


def _coerce(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """A config value checked and converted as argparse would convert it on the command line.

    Raises:
        ValueError: naming the key, the value and the config files, e.g. ``K: 1.5`` for an integer.
    """
    if value is None:
        if action.default is None:
            return None
        raise ValueError(f"{source}: {key} is null; expected a value like {action.default!r}")
    many = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 0)
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise ValueError(f"{source}: {key} takes one value, got the list {value!r}")
    out = []
    for item in items:
        if isinstance(item, (dict, list)):
            raise ValueError(f"{source}: {key}: expected a plain value, got {item!r}")
        if action.type is not None:
            if action.type is int and isinstance(item, float) and not item.is_integer():
                raise ValueError(f"{source}: {key} must be an integer, got {item!r}")
            try:
                item = action.type(str(item) if not isinstance(item, bool) else str(item).lower())
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise ValueError(f"{source}: {key}: {e} (got {item!r})") from e
        elif action.const is not None and isinstance(action.const, bool) and not isinstance(item, bool):
            raise ValueError(f"{source}: {key} must be true or false, got {item!r}")
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{source}: {key} must be one of {list(action.choices)}, got {item!r}")
        out.append(item)
    return out if many else out[0]


def save_resolved(
    args: argparse.Namespace, output_dir: str, environment: dict[str, Any] | None = None
) -> str:
    """Write the resolved options to ``<output_dir>/config.yaml`` (a config that reproduces the run).

    ``environment`` (git revision, processor, thread count...) goes in as comments at the top, so the
    file stays a valid config.
    """
    resolved = {k: v for k, v in vars(args).items() if k not in ("config", "cfg_options", "config_file")}
    header = "".join(f"# {k}: {v}\n" for k, v in (environment or {}).items())
    path = os.path.join(output_dir, "config.yaml")
    atomic_write_text(path, header + yaml.safe_dump(resolved, sort_keys=True))
    return path

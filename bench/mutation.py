"""The mutation score: how often a fast unit test notices a broken rule.

``mutmut`` (configured under ``[tool.mutmut]`` in ``pyproject.toml``) mutates the ASM engine
(``asm/``), the run loop (``tools/loop/rounds.py``, ``run.py``, ``round_cache.py``, ``resume.py``,
``options.py``), the phase training and early stopping (``tools/engine/fit.py``, ``early_stop.py``,
``checkpoint.py``), the clean stop (``tools/runtime/stop.py``) and the data readers (``datasets/``:
records, VOC, COCO, folders, the labelling tools' exports) one small change at a time (a comparison
flipped, a constant changed, an argument dropped) and runs, for each mutant, only the fast unit tests
that reach the mutated function (tests marked ``slow`` train and are left out). A mutant is *killed*
when a test fails (or hangs: ``timeout``). Not mutated: lines that hold only words for a person
(``do_not_mutate_patterns``) and the parser builders, whose every option is pinned by
``tests/data/cli_options.json`` (``tests/test_cli_contract.py``).

    python bench/mutation.py                          # writes docs/mutation.json
    python bench/mutation.py --max-children 1         # one mutant at a time (a busy machine)
    python bench/mutation.py --reuse                  # the last run's results, reasons read again
    python bench/mutation.py --reuse --unexamined u.txt  # and the survivors left, by function and line

``docs/mutation.json`` holds, per module, the mutants and how many were killed, survived or reached
by no test, ``killed_fraction`` over all of them (killed + timeout over all mutants), and every
mutant not killed, with its reason (:func:`reason_of`): one given by hand in
``bench/mutation_reasons.json`` (for the mutant, or for every mutant of one line of one function),
else *message only* when the syntax trees of the function and the mutant differ only in what an
error, a log line or a load report's entry says, else one of :data:`RULES` (an exact substitution
known to be equivalent, or a dropped dtype), else ``"not examined"``. The last line printed is the
summary as JSON, with the count of each reason.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.mutant_pytest import TMP_PREFIX  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402

REASONS = os.path.join(ROOT, "bench", "mutation_reasons.json")
KILLED = {"killed", "timeout"}  # a failing or a hanging test both notice the mutant


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-children", type=int, default=2, help="mutants tested side by side")
    p.add_argument("--json-out", default=os.path.join(ROOT, "docs", "mutation.json"))
    p.add_argument("--reuse", action="store_true", help="read the last run's results (mutants/), run nothing")
    p.add_argument(
        "--unexamined",
        metavar="FILE",
        help="also write the survivors not examined, grouped by function and line, most first: the keys "
        "bench/mutation_reasons.json takes, each with its mutants' changes",
    )
    return p


def unexamined_lines(not_killed: dict[str, dict]) -> str:
    """The survivors whose reason is "not examined", one group per ``"<function> | <line>"`` (the key
    a reason by hand takes), most mutants first, each mutant's changed line below it."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, v in sorted(not_killed.items()):
        if v["reason"] == "not examined":
            minus, plus = diff_of(*sources_of(name))
            groups[f"{function_of(name)} | {minus}"].append(f"    {name.rpartition('__mutmut_')[2]}: {plus}")
    out = []
    for key, changes in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        out += [f"{len(changes)} {key}", *changes]
    return "\n".join(out) + "\n"


def read_results() -> dict[str, str]:
    """``mutant name -> status`` of every mutant of the last ``mutmut run``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            results[name] = status
    return results


def sources_of(mutant: str) -> tuple[str, str]:
    """The function a mutant was made from and the mutant, as source, read in this process (one
    ``mutmut show`` process per survivor took a second each)."""
    import libcst as cst  # mutmut's own parser, installed with it
    from mutmut.__main__ import find_mutant
    from mutmut.mutation.diff_apply import (
        read_functions_from_index,
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )

    cwd = os.getcwd()
    os.chdir(ROOT)  # mutmut reads mutants/ relative to the project
    try:
        path = module_of(mutant)
        if not os.path.isfile(os.path.join("mutants", path)):
            path = find_mutant(mutant).path  # reads every module's results: slow
        functions = read_functions_from_index(mutant, path)
        if functions is None:
            module = read_mutants_module(path)
            functions = (read_original_function(module, mutant), read_mutant_function(module, mutant))
    finally:
        os.chdir(cwd)
    return tuple(cst.Module([f]).code.strip() for f in functions)


def diff_of(was: str, now: str) -> tuple[str, str]:
    """The first line the mutant removed and the first it added."""
    lines = list(difflib.unified_diff(was.splitlines(), now.splitlines(), lineterm="", n=0))
    minus = next((ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")), "")
    plus = next((ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")), "")
    return minus, plus


def _differences(a, b, path: tuple = ()):
    """Where two syntax trees differ: for each difference, the ``(node, field, index)`` triples above
    it (``index``: the position in a list field, None for the field as a whole, ``("from", k, n)``
    when a list of ``n`` lost or gained an element at ``k``, moving the ones after it)."""
    if type(a) is not type(b):
        yield path
    elif isinstance(a, ast.AST):
        for name in a._fields:
            yield from _differences(getattr(a, name), getattr(b, name), (*path, (a, name, None)))
    elif isinstance(a, list):
        if len(a) != len(b):  # an element dropped (or added): index ("from", first moved, longer length)
            moved = (i for i, (x, y) in enumerate(zip(a, b)) if next(_differences(x, y), None) is not None)
            k = next(moved, min(len(a), len(b)))
            yield (*path[:-1], (*path[-1][:2], ("from", k, max(len(a), len(b))))) if path else path
        else:
            for k, (x, y) in enumerate(zip(a, b)):
                yield from _differences(x, y, (*path[:-1], (*path[-1][:2], k)) if path else path)
    elif a != b:
        yield path


LOG_CALLS = {"debug", "info", "warning", "error", "exception", "critical"}
# The arguments that are only words for a person, per call (positions, keyword names): a load report's
# entry is (reason, where, detail), of which the reason is counted and decided on; the readers pass
# ``where`` (the file and field a value came from) down to the messages and entries that name it.
WORDS: dict[tuple[str | None, str], set | str] = {  # "*": every argument
    ("report", "add"): {1, 2},
    ("report", "log"): {0},
    (None, "_bad"): {2, 3},
    (None, "Shape"): {3, "where"},
    (None, "_cvat_number"): {2, "where"},
    (None, "_points"): {1, "where"},
    (None, "_size"): {1, 2},
    (None, "safe_relpath"): {2, 3},
    (None, "sanitize_boxes"): {4},
    (None, "check_image"): {4},
    (None, "int_column"): {1},  # the column's name in the refusal
    (None, "_number_or_none"): {2},  # what the option's value must be, in the refusal
    ("HEARTBEAT", "set"): "*",  # the progress line a person reads
    ("HEARTBEAT", "start_phase"): "*",
    (None, "train_one_epoch"): {"desc"},  # the progress bar's label
    ("self", "_label"): {1},  # an image's fate in the label pool, as the round report words it
}
FATES = "fates"  # ``self.fates[image_id] = "..."``: the same words, written directly


def _says(node: ast.AST, field: str, index: int | None, above: tuple) -> bool:
    """``node.field[index]`` is what a message says: the arguments of an exception raised on the spot,
    of a ``logger.<level>(...)`` call or of ``warnings.warn``, or one of :data:`WORDS` (not the
    call, not whether it happens, not a load report entry's reason), or an image's fate."""
    if isinstance(node, ast.Assign) and field == "value":
        t = node.targets[0]
        return isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and t.value.attr == FATES
    if not isinstance(node, ast.Call) or field not in ("args", "keywords"):
        return False
    f = node.func
    owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if owner is not None and (name in LOG_CALLS and owner.endswith(("logger", "log"))):
        return True
    if (owner, name) == ("warnings", "warn"):
        return True
    words = WORDS.get((owner, name))
    if words is not None:
        if index is None:
            return False
        if isinstance(index, tuple):  # an argument dropped: every one from it on moves
            _, k, n = index
            return words == "*" or (field == "args" and set(range(k, n)) <= words)
        return words == "*" or (index if field == "args" else node.keywords[index].arg) in words
    return bool(above) and isinstance(above[-1][0], ast.Raise) and above[-1][1] == "exc"


def message_only(was: str, now: str) -> bool:
    """Every difference between the two functions lies in what an error or a log line says."""
    try:
        paths = list(_differences(ast.parse(was), ast.parse(now)))
    except SyntaxError:
        return False
    return bool(paths) and all(
        any(_says(node, field, index, path[:i]) for i, (node, field, index) in enumerate(path))
        for path in paths
    )


MESSAGE_ONLY = (
    "message only: what an error, a log line or a load report's entry says (its place and detail, not "
    "its reason), not whether it is raised, logged or counted (syntax tree)"
)


def _one_swap(minus: str, plus: str, old: str, new: str, inside: str = "") -> bool:
    """``plus`` is ``minus`` with one occurrence of ``old`` written ``new`` (and nothing else); with
    ``inside``, an occurrence within the parentheses of a call to ``inside``."""

    def within(i: int) -> bool:
        start = minus.rfind(inside + "(", 0, i)
        return start >= 0 and ")" not in minus[start + len(inside) + 1 : i]

    at = [i for i in range(len(minus)) if minus.startswith(old, i) and (not inside or within(i))]
    return any(minus[:i] + new + minus[i + len(old) :] == plus for i in at)


def _numpy_reads_any_negative_size() -> bool:
    return np.zeros(8).reshape(-2, 4).shape == (2, 4)


DTYPES = ("np.float64", "np.float32", "np.int64", "np.uint32", "np.uint8", "bool")
# what mutmut does to a dtype argument: drops it (leaving its comma) or makes it None
DTYPE_SWAPS = [(t, n) for t in DTYPES for n in ("None", "")] + [(f"dtype={t}", "") for t in DTYPES]

RULES = (  # (test on the removed line and the added one, reason): the first that holds is given
    (
        lambda m, p: _one_swap(m, p, "-1", "-2", inside="reshape") and _numpy_reads_any_negative_size(),
        "equivalent: numpy reads any negative size in reshape as the one to infer (checked on this numpy)",
    ),
    (
        lambda m, p: any(
            _one_swap(m, p, f'"{c}"', f'"{c.upper()}"') for c in ("utf-8", "utf-8-sig", "ascii", "stable")
        ),
        "equivalent: codec names and numpy's sort kinds are read in any case",
    ),
    (
        lambda m, p: (
            any(_one_swap(m, p, s, "") for s in ('encoding="utf-8"', 'encoding="utf-8", '))
            or _one_swap(m, p, 'encoding="utf-8"', "encoding=None")
        ),
        "equivalent where the locale's encoding is UTF-8 (Linux, and Python's UTF-8 mode); the explicit "
        "encoding keeps other locales' code pages out",
    ),
    (
        lambda m, p: any(_one_swap(m, p, old, new) for old, new in DTYPE_SWAPS),
        "by rule: an explicit dtype dropped or None (numpy infers the type from the values; with the tests' "
        "values the result is the same)",
    ),
    (
        lambda m, p: any(_one_swap(m, p, 'kind="stable"', new) for new in ("", "kind=None")),
        "by rule: the stable sort dropped where ties cannot occur or numpy sorts small arrays stably",
    ),
)


def function_of(mutant: str) -> str:
    """``tools.loop.rounds.x_start_round__mutmut_4`` -> ``tools.loop.rounds.x_start_round``."""
    return mutant.rpartition("__mutmut_")[0]


def reason_of(mutant: str, hand: dict[str, str]) -> str:
    """A survivor's reason: given by hand for the mutant (its name), for one change of one line of one
    function (``"<function> | <the line as written> => <the line as mutated>"``), or for every mutant
    of that line (``"<function> | <the line as written>"``: a person read that line's mutants); else
    what the syntax trees show, else a rule on the changed line, else ``"not examined"``."""
    if mutant in hand:
        return hand[mutant]
    was, now = sources_of(mutant)
    minus, plus = diff_of(was, now)
    line = f"{function_of(mutant)} | {minus}"
    for key in (f"{line} => {plus}", line):  # the change itself, then any change of the line
        if key in hand:
            return hand[key]
    if message_only(was, now):
        return MESSAGE_ONLY
    return next((reason for test, reason in RULES if test(minus, plus)), "not examined")


def module_of(mutant: str) -> str:
    """``asm.pools.xǁASMStateǁcheck__mutmut_23`` -> ``asm/pools.py``;
    ``tools.loop.rounds.x_start_round__mutmut_4`` -> ``tools/loop/rounds.py`` (the longest dotted
    prefix that names a module of the project)."""
    parts = mutant.split(".")
    for n in range(len(parts) - 1, 0, -1):
        path = "/".join(parts[:n]) + ".py"
        if os.path.isfile(os.path.join(ROOT, path)):
            return path
    return "/".join(parts[:2]) + ".py"


def summarise(results: dict[str, str], reasons: dict[str, str]) -> dict:
    per_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in results.items():
        per_module[module_of(name)][status] += 1
    total = len(results)
    killed = sum(status in KILLED for status in results.values())
    return {
        "killed_fraction": round(killed / total, 4) if total else None,
        "mutants": total,
        "killed": killed,
        "modules": {
            m: {
                "mutants": sum(c.values()),
                "killed": sum(c[s] for s in KILLED),
                "survived": c["survived"],
                "no_tests": c["no tests"],
                "other": sum(n for s, n in c.items() if s not in KILLED | {"survived", "no tests"}),
            }
            for m, c in sorted(per_module.items())
        },
        "not_killed": {
            name: {"status": status, "reason": reason_of(name, reasons)}
            for name, status in sorted(results.items())
            if status not in KILLED
        },
    }


def kill_leftovers() -> int:
    """Stop the processes a mutant's test left behind (a mutant that no longer stops a DataLoader
    worker leaves it waiting for ever; mutmut names every process it forks ``mutmut: <mutant>``)."""
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                named = f.read().startswith(b"mutmut: ")
            with open(f"/proc/{pid}/stat", "rb") as f:  # "pid (name) state ppid ...": orphans only,
                orphan = f.read().rpartition(b")")[2].split()[1] == b"1"  # never a running run's workers
            if named and orphan:
                os.kill(int(pid), 9)
                killed += 1
        except (OSError, ValueError, IndexError):
            continue  # gone already, or not ours
    return killed


START_MARK = b"Running mutation testing"  # what mutmut prints once its set-up is done


def run_mutmut(max_children: int, command: list[str] | None = None) -> dict[str, float | None]:
    """Run mutmut (or ``command``), its output passed through. Returns the seconds until it exits
    (``wall_s``) and before its first mutant (``setup_s``: the mutants written, the tests traced and
    run once unmutated; None if mutmut never said it started them).

    The output is relayed by a thread: a mutant's leftover process (a hung DataLoader worker) keeps
    the pipe open after mutmut has exited, and the run must not wait for it (kill_leftovers ends it).
    """
    start = time.perf_counter()
    setup: list[float] = []
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
        cwd=ROOT,
        # one thread a mutant, as they run side by side; no plugin but those named in [tool.mutmut]
        env=os.environ | {"OMP_NUM_THREADS": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        stdout=subprocess.PIPE,
    )

    def relay() -> None:
        tail = b""
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            if not setup and START_MARK in tail + chunk:
                setup.append(round(time.perf_counter() - start, 1))
            tail = (tail + chunk)[-len(START_MARK) :]

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = proc.wait()
    wall = round(time.perf_counter() - start, 1)
    reader.join(timeout=5)  # the rest of what mutmut wrote; a leftover's open pipe is not waited for
    if code:
        raise subprocess.CalledProcessError(code, proc.args)
    return {"wall_s": wall, "setup_s": setup[0] if setup else None}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    times_file = os.path.join(ROOT, "mutants", "wall_s.json")  # the run's times, for a later --reuse
    if args.reuse:
        times = json.load(open(times_file)) if os.path.isfile(times_file) else {}
    else:
        # mutmut keeps results per function and re-tests only changed code; a changed test must count
        shutil.rmtree(os.path.join(ROOT, "mutants"), ignore_errors=True)
        times = run_mutmut(args.max_children)
        left = kill_leftovers()
        if left:
            print(f"stopped {left} processes that mutants' tests left behind", file=sys.stderr)
        # a mutant stopped by a signal (a timeout) never removes its tmp_path folder (bench/mutant_pytest.py)
        for folder in glob.glob(os.path.join(tempfile.gettempdir(), TMP_PREFIX + "*")):
            shutil.rmtree(folder, ignore_errors=True)
        atomic_write_text(times_file, json.dumps(times))
    with open(REASONS, encoding="utf-8") as f:
        reasons = json.load(f)
    result = summarise(read_results(), reasons)
    result |= {
        "wall_s": times.get("wall_s"),
        "setup_s": times.get("setup_s"),
        "max_children": args.max_children,
    }
    result["reasons"] = dict(Counter(v["reason"] for v in result["not_killed"].values()).most_common())
    atomic_write_text(args.json_out, json.dumps(result, indent=1, ensure_ascii=False))
    if args.unexamined:
        atomic_write_text(args.unexamined, unexamined_lines(result["not_killed"]))
    print(json.dumps({k: v for k, v in result.items() if k not in ("not_killed",)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The mutation score: how often a fast unit test notices a broken rule.

``mutmut`` (configured under ``[tool.mutmut]`` in ``pyproject.toml``) mutates the modules the ASM
engine and resume rest on (``asm/``, ``tools/engine/checkpoint.py``, ``tools/loop/resume.py``, ``tools/runtime/stop.py``,
``datasets/records.py``) one small change at a time (a comparison flipped, a constant changed, an
argument dropped) and runs, for each mutant, only the fast unit tests that reach the mutated function
(tests marked ``slow`` are left out). A mutant is *killed* when a test fails (or hangs: ``timeout``).

    python bench/mutation.py                          # writes docs/mutation.json
    python bench/mutation.py --max-children 1         # one mutant at a time (a busy machine)

``docs/mutation.json`` holds, per module, the mutants and how many were killed, survived or reached
by no test, ``killed_fraction`` over all of them (killed + timeout over all mutants), and every
mutant not killed, with its reason: one given by hand in ``bench/mutation_reasons.json``, else one
of :data:`RULES` (``"by rule: ..."``: a message text, a redundant dtype, a stable sort, judged from
the mutated line), else ``"not examined"``. The last line printed is the summary as JSON, with the
count of each reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets.atomic import atomic_write_text  # noqa: E402

REASONS = os.path.join(ROOT, "bench", "mutation_reasons.json")
KILLED = {"killed", "timeout"}  # a failing or a hanging test both notice the mutant


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-children", type=int, default=2, help="mutants tested side by side")
    p.add_argument("--json-out", default=os.path.join(ROOT, "docs", "mutation.json"))
    p.add_argument("--reuse", action="store_true", help="read the last run's results (mutants/), run nothing")
    return p


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


def diff_of(mutant: str) -> tuple[str, str]:
    """The line a mutant removed and the one it added (what ``mutmut show`` prints; the first of
    each), read in this process: one ``mutmut show`` process per survivor took a second each."""
    from mutmut.__main__ import find_mutant
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)  # mutmut reads mutants/ relative to the project
    try:
        out = get_diff_for_mutant(mutant, path=find_mutant(mutant).path).splitlines()
    finally:
        os.chdir(cwd)
    minus = next((ln[1:].strip() for ln in out if ln.startswith("-") and not ln.startswith("---")), "")
    plus = next((ln[1:].strip() for ln in out if ln.startswith("+") and not ln.startswith("+++")), "")
    return minus, plus


RULES = (  # (test on the removed line and the added one, reason): the first that holds is given
    (
        lambda m, p: any(k in m for k in ("raise ", "logger.", "assert ", "fates", "_label(", "warning(")),
        "by rule: the text of an error, a log line or an image's fate (not the decision) changed",
    ),
    (
        lambda m, p: any(d in m for d in ("np.float64", "np.float32", "np.int64", "bool)", "dtype=")),
        "by rule: an explicit dtype dropped where the value is cast again or already has it",
    ),
    (
        lambda m, p: 'kind="stable"' in m,
        "by rule: the stable sort dropped where ties cannot occur or numpy sorts small arrays stably",
    ),
)


def reason_of(mutant: str, hand: dict[str, str]) -> str:
    if mutant in hand:
        return hand[mutant]
    minus, plus = diff_of(mutant)
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


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    start = time.perf_counter()
    if not args.reuse:
        # mutmut keeps results per function and re-tests only changed code; a changed test must count
        shutil.rmtree(os.path.join(ROOT, "mutants"), ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
            cwd=ROOT,
            check=True,
        )
    wall_file = os.path.join(ROOT, "mutants", "wall_s.json")  # the run's time, for a later --reuse
    if args.reuse:
        wall = json.load(open(wall_file))["wall_s"] if os.path.isfile(wall_file) else None
    else:
        wall = round(time.perf_counter() - start, 1)
        atomic_write_text(wall_file, json.dumps({"wall_s": wall}))
    with open(REASONS, encoding="utf-8") as f:
        reasons = json.load(f)
    result = summarise(read_results(), reasons)
    result |= {"wall_s": wall, "max_children": args.max_children}
    atomic_write_text(args.json_out, json.dumps(result, indent=1, ensure_ascii=False))
    result["reasons"] = dict(Counter(v["reason"] for v in result["not_killed"].values()).most_common())
    atomic_write_text(args.json_out, json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in result.items() if k not in ("not_killed",)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

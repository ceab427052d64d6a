"""Is each check's tolerance at the right scale? ``python -m utils.course bench tolerances``

For every check (or ``--chapter CH``, repeatable) it prints one row:

- the check's tolerance (``atol``, ``rtol`` of ``utils.course.compare``, per check);
- the largest deviation of *correct* code, as a share of that tolerance: the reference run
  in float64, with one and with three threads, with float32-sized noise added to its
  result and with every weight rounded to TF32 (the variants of ``tests/test_robustness.py``),
  and, with ``--catalog all``, the independent catalog's correct implementations written
  differently from the reference;
- the smallest *conceptual mistake*, as a multiple of the tolerance: every catalogued
  mistake of ``tests/mistakes`` (and, with ``--catalog all``, every wrong entry of the
  independent catalog ``benchmarks/independent``) is run through the check with
  signatures off, and the ratio ``|got - want| / tolerance`` of the comparison that failed
  is read. Mistakes caught before any numeric comparison (a type, a shape, a watched side
  effect, a check-specific test) have no ratio and are only counted.

``utils.course.compare`` promises correct code below 1 and every mistake two orders of
magnitude above (>= 100). The ``suggest`` column is the smallest of ``CHOICES`` at which
correct code stays below 1/3 of the tolerance (a margin of three for machines not measured
here), and ``at suggest`` the smallest mistake at that tolerance. ``--json PATH`` writes
every measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from utils.course import compare, settings
from utils.course.chapter import Chapter
from utils.course.checking import TOLERANCES, CheckFailure, check_settings

VARIANTS = ("float64", "one_thread", "three_threads", "noise", "tf32_weights")
CHOICES = (5e-3, 2e-3, 1e-3, 5e-4)  # tolerances a check may take (atol = rtol)
SAFETY = 3.0  # correct code must stay below 1/SAFETY of the tolerance


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chapter", action="append", default=None, metavar="CH", help="only this chapter (repeatable)")
    parser.add_argument("--catalog", choices=("mistakes", "all"), default="all",
                        help="mistakes: tests/mistakes only; all: also the independent catalog's wrong entries (default)")
    parser.add_argument("--json", metavar="PATH", help="write every measurement to PATH")


@contextlib.contextmanager
def _variant(name: str) -> Iterator[None]:
    if name == "float64":
        with check_settings(dtype=torch.float64):
            yield
    elif name in ("one_thread", "three_threads"):
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if name == "one_thread" else 3)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
    elif name == "tf32_weights":
        with check_settings(tf32_weights=True):
            yield
    else:
        yield


def _quiet(fn: Callable[[], Any]) -> tuple[bool, str]:
    """Run ``fn`` strictly and silently: (passed, failure message)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), settings.strict_checks():
        try:
            fn()
        except CheckFailure as failure:
            return False, str(failure)
    return True, ""


def _robustness(chapter: str, exercise: str) -> dict[str, Any]:
    from tests.test_robustness import noisy

    check = Chapter(chapter).check(exercise)
    reference = getattr(Chapter(chapter).reference(), exercise)
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        fn = noisy(reference) if variant == "noise" else reference
        with _variant(variant):
            passed, message = _quiet(lambda fn=fn: check(fn))
        measure = compare.last_measure()
        out[variant] = {"passed": passed, "margin": max(measure.margins, default=0.0) if measure else None,
                        "message": message[:300]}
    return out


def _correct_margins(chapter: str, exercise: str) -> dict[str, Any]:
    """The independent catalog's correct implementations: passed, and their margin."""
    from benchmarks.independent import load_all

    check = Chapter(chapter).check(exercise)
    out: dict[str, Any] = {}
    for impl in load_all():
        if impl.chapter == chapter and impl.exercise == exercise and impl.correct:
            passed, message = _quiet(lambda fn=impl.fn: check(fn))
            measure = compare.last_measure()
            out[f"correct:{impl.name}"] = {"passed": passed, "margin": max(measure.margins, default=0.0) if measure else None,
                                           "message": message[:300]}
    return out


def _mistake_sizes(chapter: str, exercise: str, catalog: str) -> list[dict[str, Any]]:
    check = Chapter(chapter).check(exercise)
    entries = [(f"tests/mistakes:{m.id}", m.fn) for m in Chapter(chapter).mistakes().get(exercise, [])]
    if catalog == "all":
        from benchmarks.independent import load_all

        entries += [(f"independent:{i.name}", i.fn) for i in load_all()
                    if i.chapter == chapter and i.exercise == exercise and not i.correct]
    sizes = []
    for name, fn in entries:
        with check_settings(signatures=False):
            passed, message = _quiet(lambda fn=fn: check(fn))
        measure = compare.last_measure()
        ratio = measure.failed[0] if measure is not None and measure.failed and not passed else None
        sizes.append({"mistake": name, "caught": not passed, "ratio": ratio, "message": message[:200]})
    return sizes


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    chapters = [Chapter(c) for c in args.chapter] if args.chapter else Chapter.with_checks()
    rows = []
    for ch in chapters:
        for exercise in ch.checks():
            atol, rtol = TOLERANCES.get((ch.name, exercise), (compare.ATOL, compare.RTOL))
            robust = _robustness(ch.name, exercise)
            if args.catalog == "all":
                robust.update(_correct_margins(ch.name, exercise))
            sizes = _mistake_sizes(ch.name, exercise, args.catalog)
            measured = [s for s in sizes if s["ratio"] is not None]
            smallest = min(measured, key=lambda s: s["ratio"]) if measured else None
            worst = max(robust, key=lambda v: robust[v]["margin"] or 0.0)
            largest = robust[worst]["margin"] or 0.0
            suggest = min((t for t in CHOICES if largest * atol * SAFETY <= t), default=CHOICES[0])
            row = {"chapter": ch.name, "exercise": exercise, "atol": atol, "rtol": rtol, "robustness": robust,
                   "largest_correct": robust[worst]["margin"], "largest_correct_variant": worst,
                   "all_correct_pass": all(v["passed"] for v in robust.values()),
                   "mistakes": sizes, "measured": len(measured), "uncaught": sum(not s["caught"] for s in sizes),
                   "smallest_mistake": smallest["ratio"] if smallest else None,
                   "smallest_mistake_name": smallest["mistake"] if smallest else None,
                   "suggest": suggest, "smallest_at_suggest": smallest["ratio"] * atol / suggest if smallest else None}
            rows.append(row)
            print(_line(row), flush=True)
    print(f"\n{'check':52} {'atol':>7} {'rtol':>7} {'correct':>9} {'mistake':>9}  measured  {'suggest':>7} {'at it':>7}"
          "  smallest mistake (correct: largest share of the tolerance; mistake: smallest multiple of it)")
    for row in rows:
        print(_line(row))
    holds = [r for r in rows if r["all_correct_pass"] and (r["smallest_mistake"] or float("inf")) >= 100]
    print(f"\n{len(holds)} of {len(rows)} checks: correct code passes in every variant and the smallest measured "
          "mistake is >= 100x the tolerance")
    for r in rows:
        if not r["all_correct_pass"]:
            failed = [v for v, m in r["robustness"].items() if not m["passed"]]
            print(f"  CORRECT CODE FAILS {r['chapter']}.{r['exercise']} in {failed}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")


def _line(row: dict[str, Any]) -> str:
    correct = f"{row['largest_correct']:.3g}" if row["largest_correct"] is not None else "-"
    mistake = f"{row['smallest_mistake']:.3g}" if row["smallest_mistake"] is not None else "-"
    flag = "" if row["all_correct_pass"] else "  CORRECT FAILS"
    at = f"{row['smallest_at_suggest']:.3g}" if row["smallest_at_suggest"] is not None else "-"
    return (f"{row['chapter'] + '.' + row['exercise']:52} {row['atol']:>7.2g} {row['rtol']:>7.2g} {correct:>9} "
            f"{mistake:>9}  {row['measured']:>3}/{len(row['mistakes']):<3}  {row['suggest']:>7.2g} {at:>7}  "
            f"{row['smallest_mistake_name'] or ''}{flag}")

"""Grading a class on one machine: ``python -m utils.course bench grading_parallel [--jobs 1 2] [--count 20]``.

Grades one batch of COUNT chapter-00 submissions (default 20) once per ``--jobs`` value
(default 1, then 2), and prints notebooks per minute for each. The batch is a class as an
instructor gets it: solved notebooks (as saved by Jupyter, and as ``nbstripout`` leaves
them), untouched ones, and the notebooks of the cheat catalog (``tests/cheats.py``), in a
class folder ``<student>/ch00_toolkit.ipynb``. Figures, for each number of jobs:

- ``notebooks_per_minute``: COUNT over the whole ``grade`` call (zygote start and the
  reference's known outputs included: what an instructor waits for);
- ``speedup``: over the first ``--jobs`` value; ``efficiency``: speedup over the ratio of jobs;
- ``load_before`` / ``load_after``: the 1-minute load average, since other work on the
  machine slows grading down (compare runs made side by side, on a quiet machine).

Every run must give every notebook the same score (it is checked): jobs change the speed,
never the grades.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import nbformat

from utils.course import ROOT, grading

CHAPTER = "ch00_toolkit"


def class_folder(folder: Path, count: int) -> list[Path]:
    """``count`` submissions of chapter 00 under ``folder/<student>/``, mixed as a class's are."""
    from tests import cheats

    makers = [("solved", lambda: cheats.solved()), ("untouched", lambda: cheats.untouched()),
              ("stripped", lambda: cheats.stripped_counts(cheats.solved()))]
    makers += [(f"cheats{k}", lambda k=k: cheats.group_notebook(group)[0]) for k, group in enumerate(cheats.GROUPS)]
    paths = []
    for i in range(count):
        kind, make = makers[i % len(makers)]
        path = folder / f"student{i:02d}_{kind}" / f"{CHAPTER}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(nbformat.writes(make()))
        paths.append(path)
    return paths


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="numbers of jobs to compare (default 1 2)")
    parser.add_argument("--count", type=int, default=20, help="submissions in the batch (default 20)")


def main(args: argparse.Namespace) -> None:
    grading.reference_outputs(CHAPTER, 1000)  # imports: not the grader's cost
    figures, grades = {}, {}
    with tempfile.TemporaryDirectory(prefix="sae-bench-class-") as tmp:
        paths = class_folder(Path(tmp), args.count)
        for jobs in args.jobs:
            load = os.getloadavg()[0]
            started = time.perf_counter()
            scores = grading.grade(paths, jobs=jobs, seed_offset=1000)
            seconds = time.perf_counter() - started
            grades[jobs] = {str(s.notebook.relative_to(tmp)): s.fraction for s in scores}
            figures[jobs] = {"seconds": round(seconds, 1), "notebooks_per_minute": round(60 * len(paths) / seconds, 2),
                             "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    first = args.jobs[0]
    for jobs, f in figures.items():
        f["speedup"] = round(figures[first]["seconds"] / f["seconds"], 2)
        f["efficiency"] = round(f["speedup"] / (jobs / first), 2)
    same = all(g == grades[first] for g in grades.values())
    print(json.dumps({"chapter": CHAPTER, "count": args.count, "cores": grading.cores(), "root": str(ROOT),
                      "same_grades": same, "jobs": figures}))
    for jobs, f in figures.items():
        print(f"--jobs {jobs}: {f['notebooks_per_minute']:.1f} notebooks/minute ({args.count} in {f['seconds']:.0f} s; "
              f"speedup {f['speedup']:.2f}, efficiency {f['efficiency']:.0%}; load average {f['load_before']:.1f} "
              f"before, {f['load_after']:.1f} after, {grading.cores()} cores)")
    scored = sorted(grades[first].values())
    print(f"scores of the batch: {sum(s == 1.0 for s in scored)} at 100 %, {sum(s == 0.0 for s in scored)} at 0 %, "
          f"the rest {[f'{s:.0%}' for s in scored if 0 < s < 1]}")
    if not same:
        raise SystemExit("the grades differ between runs: " + json.dumps(grades))

"""Grading a class on one machine: ``python -m utils.course bench grading_parallel [--jobs 1 2] [--count 20] [--rounds R]``.

Grades one batch of COUNT chapter-00 submissions (default 20) once per ``--jobs`` value
(default 1, then 2), ROUNDS times in turn (1, 2, 1, 2, ...: on a shared machine, load that
comes and goes then hits both alike; the median counts), and prints notebooks per minute. The batch is a class as an
instructor gets it: solved notebooks (as saved by Jupyter, and as ``nbstripout`` leaves
them), untouched ones, and the notebooks of the cheat catalog (``tests/cheats.py``), in a
class folder ``<student>/ch00_toolkit.ipynb``. Figures, for each number of jobs:

- ``notebooks_per_minute``: COUNT over the whole ``grade`` call (zygote start and the
  reference's known outputs included: what an instructor waits for), median of the rounds;
- ``cpu_seconds``: CPU time of every process the call started (the work, whatever the load);
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
import resource
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

from utils.course import grading

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
    parser.add_argument("--rounds", type=int, default=1, help="times each --jobs value runs, in turn (default 1)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(args: argparse.Namespace) -> None:
    grading.reference_outputs(CHAPTER, 1000)  # imports: not the grader's cost
    runs: dict[int, list[dict[str, float]]] = {jobs: [] for jobs in args.jobs}
    grades = {}
    with tempfile.TemporaryDirectory(prefix="sae-bench-class-") as tmp:
        paths = class_folder(Path(tmp), args.count)
        for _ in range(args.rounds):
            for jobs in args.jobs:
                load, cpu = os.getloadavg()[0], _children_cpu()
                started = time.perf_counter()
                scores = grading.grade(paths, jobs=jobs, seed_offset=1000)
                seconds = time.perf_counter() - started
                grades.setdefault(jobs, []).append({str(s.notebook.relative_to(tmp)): s.fraction for s in scores})
                runs[jobs].append({"seconds": round(seconds, 1), "cpu_seconds": round(_children_cpu() - cpu, 1),
                                   "notebooks_per_minute": round(60 * len(paths) / seconds, 2),
                                   "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
    figures = {}
    for jobs, found in runs.items():
        seconds = statistics.median(r["seconds"] for r in found)
        figures[jobs] = {"seconds": seconds, "notebooks_per_minute": round(60 * args.count / seconds, 2),
                         "cpu_seconds": statistics.median(r["cpu_seconds"] for r in found), "runs": found}
    first = args.jobs[0]
    for jobs, f in figures.items():
        f["speedup"] = round(figures[first]["seconds"] / f["seconds"], 2)
        f["efficiency"] = round(f["speedup"] / (jobs / first), 2)
    reference = grades[first][0]
    same = all(g == reference for found in grades.values() for g in found)
    print(json.dumps({"chapter": CHAPTER, "count": args.count, "rounds": args.rounds, "cores": grading.cores(),
                      "same_grades": same, "jobs": figures}))
    for jobs, f in figures.items():
        loads = ", ".join(f"{r['load_before']:.1f}-{r['load_after']:.1f}" for r in f["runs"])
        print(f"--jobs {jobs}: {f['notebooks_per_minute']:.1f} notebooks/minute ({args.count} in {f['seconds']:.0f} s, "
              f"median of {len(f['runs'])}; {f['cpu_seconds']:.0f} CPU-s; speedup {f['speedup']:.2f}, efficiency "
              f"{f['efficiency']:.0%}; load average before-after each run: {loads}; {grading.cores()} cores)")
    scored = sorted(reference.values())
    print(f"scores of the batch: {sum(s == 1.0 for s in scored)} at 100 %, {sum(s == 0.0 for s in scored)} at 0 %, "
          f"the rest {[f'{s:.0%}' for s in scored if 0 < s < 1]}")
    if not same:
        raise SystemExit("the grades differ between runs: " + json.dumps(grades))

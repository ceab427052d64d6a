"""What grading costs: ``python -m utils.course bench grading [CHAPTER] [--repeat N]``.

Grades the solution notebook of CHAPTER (default ch00_toolkit) N times in one batch (one
worker), with kernels forked from the zygote and, for comparison, started as new Pythons.
Prints one JSON object, then readable lines. Figures, per notebook:

- ``seconds``: wall time of the whole submission (worker, nbval, re-check);
- ``nbval_seconds`` / ``recheck_seconds``: the two steps inside it;
- ``batch_seconds`` / ``batch_cpu_seconds``: the whole ``grade`` call (zygote start and the
  reference's known outputs included) and the CPU time of every process it started.

Wall times depend on how loaded the machine is: compare runs made side by side.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from utils.course import grading
from utils.course.chapter import Chapter


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(chapter: str, repeat: int, fork: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(repeat):
            path = Path(tmp) / str(i) / f"{chapter}.ipynb"
            path.parent.mkdir()
            shutil.copy(Chapter(chapter).solution_notebook, path)
            paths.append(path)
        cpu, started = _children_cpu(), time.perf_counter()
        scores = grading.grade(paths, jobs=1, seed_offset=1000, fork=fork)
        batch, cpu = time.perf_counter() - started, _children_cpu() - cpu
    assert all(s.fraction == 1.0 for s in scores), grading.table(scores)
    return {
        "seconds": statistics.median(s.seconds for s in scores),
        "nbval_seconds": statistics.median(s.timings["nbval"] for s in scores),
        "recheck_seconds": statistics.median(s.timings["recheck"] for s in scores),
        "batch_seconds": batch,
        "batch_cpu_seconds": cpu,
    }


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chapter", nargs="?", default="ch00_toolkit")
    parser.add_argument("--repeat", type=int, default=2, help="notebooks per batch")


def main(args: argparse.Namespace) -> None:
    grading.reference_outputs(args.chapter, 1000)  # imports and the reference: not the grader's cost
    figures = {mode: measure(args.chapter, args.repeat, fork=mode == "forked") for mode in ("forked", "new_python")}
    print(json.dumps({"chapter": args.chapter, "repeat": args.repeat, **figures}))
    for mode, f in figures.items():
        print(f"{mode:>10}: {f['seconds']:.0f} s per notebook (nbval {f['nbval_seconds']:.0f} s, re-check "
              f"{f['recheck_seconds']:.0f} s); batch of {args.repeat}: {f['batch_seconds']:.0f} s, "
              f"{f['batch_cpu_seconds']:.0f} s CPU")

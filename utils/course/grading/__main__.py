"""The ``grade`` command: ``python -m utils.course grade SUBMISSIONS ... [--chapter CH] [--junit FILE] [--json FILE]``.

Grades every notebook under the paths given (see :mod:`utils.course.grading`), prints one
table per chapter and the reason for every FAIL, and writes JUnit XML and JSON on request.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.course.grading import CELL_TIMEOUT, TIMEOUT, grade, table, write_json, write_junit


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--chapter", help="the chapter every submission should be (default: from path or content)")
    parser.add_argument("--junit", type=Path, help="write JUnit XML (one test case per exercise) here")
    parser.add_argument("--json", type=Path, help="write every result as JSON, keyed by path, here")
    parser.add_argument("--workers", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds a cell may run")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds a submission may take")
    parser.add_argument("--seed-offset", type=int, help="seed offset of the re-check's inputs (default: random)")


def run(args: argparse.Namespace) -> int:
    scores = grade(args.submissions, chapter=args.chapter, workers=args.workers, cell_timeout=args.cell_timeout,
                   timeout=args.timeout, seed_offset=args.seed_offset)
    print(table(scores))
    if args.junit:
        write_junit(scores, args.junit)
        print(f"JUnit XML written to {args.junit}")
    if args.json:
        write_json(scores, args.json)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":  # python -m utils.course.grading: the same as python -m utils.course grade
    from utils.course.__main__ import main

    sys.exit(main(["grade", *sys.argv[1:]]))

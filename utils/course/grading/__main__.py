"""The ``grade`` command: ``python -m utils.course grade SUBMISSIONS ... [--chapter CH] [--jobs N] [--junit FILE]
[--json FILE] [--gradebook FILE [--lms canvas|moodle]] [--feedback FOLDER]``.

Grades every notebook under the paths given (see :mod:`utils.course.grading`), ``--jobs`` at
a time, prints one table per chapter and the reason for every FAIL, and writes on request
JUnit XML, JSON, a gradebook CSV for Canvas or Moodle and a feedback page per student
(:mod:`~utils.course.grading.gradebook`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.course.grading import CELL_TIMEOUT, TIMEOUT, cores, grade, table, write_json, write_junit
from utils.course.grading.gradebook import LAYOUTS, read_roster, write_feedback, write_gradebook


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--chapter", help="the chapter every submission should be (default: from path or content)")
    parser.add_argument("--junit", type=Path, help="write JUnit XML (one test case per exercise) here")
    parser.add_argument("--json", type=Path, help="write every result as JSON, keyed by path, here")
    parser.add_argument("--jobs", "-j", type=int, default=cores(),
                        help=f"submissions graded at once, each in its own process tree (default: the cores, {cores()})")
    parser.add_argument("--gradebook", type=Path, help="write a CSV with one row per student here (see --lms)")
    parser.add_argument("--lms", choices=LAYOUTS, default="canvas", help="the gradebook's layout (default canvas)")
    parser.add_argument("--roster", type=Path,
                        help="a Canvas gradebook export: the identity columns of each student's row come from it")
    parser.add_argument("--feedback", type=Path, help="write one HTML page per student into this folder")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds a cell may run")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds a submission may take")
    parser.add_argument("--seed-offset", type=int, help="seed offset of the re-check's inputs (default: random)")


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    if args.roster is not None and (args.lms != "canvas" or not args.gradebook):
        raise SystemExit("--roster (a Canvas gradebook export) goes with --gradebook FILE and --lms canvas")
    if args.roster is not None:
        try:
            read_roster(args.roster)  # before grading: a bad roster is said at once
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"--roster {args.roster}: {error}") from None
    scores = grade(args.submissions, chapter=args.chapter, jobs=args.jobs, cell_timeout=args.cell_timeout,
                   timeout=args.timeout, seed_offset=args.seed_offset)
    print(table(scores))
    if args.junit:
        write_junit(scores, args.junit)
        print(f"JUnit XML written to {args.junit}")
    if args.json:
        write_json(scores, args.json)
        print(f"JSON written to {args.json}")
    roots = [Path(p) for p in args.submissions]
    if args.gradebook:
        write_gradebook(scores, args.gradebook, roots, args.lms, args.roster)
        print(f"gradebook ({args.lms}) written to {args.gradebook}")
    if args.feedback:
        pages = write_feedback(scores, args.feedback, roots)
        print(f"feedback for {len(pages)} students written to {args.feedback}/")
    return 0


if __name__ == "__main__":  # python -m utils.course.grading: the same as python -m utils.course grade
    from utils.course.__main__ import main

    sys.exit(main(["grade", *sys.argv[1:]]))

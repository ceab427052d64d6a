"""Record known outputs from the reference: ``python -m tests.record_fixtures [CHAPTER ...]``.

This is the only way files under ``tests/fixtures/`` are written: every check of a chapter
runs on the reference solution in recording mode and stores what it compares against.
Run it deliberately, after changing a reference or a check, and review the diff.
"""
from __future__ import annotations

import argparse
import importlib

from tests.harness import checks_of
from utils import build
from utils.checking import recording


def record(chapter: str) -> None:
    reference = importlib.import_module(f"solutions.{chapter}")
    with recording():
        for name, check in checks_of(chapter).items():
            check(getattr(reference, name))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.record_fixtures", description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapters to record (default: all)")
    args = parser.parse_args()
    for chapter in args.chapters or build.chapters():
        record(chapter)


if __name__ == "__main__":
    main()

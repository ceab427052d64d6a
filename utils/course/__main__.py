"""The course's one command: ``python -m utils.course COMMAND [ARGS ...]``.

=============  =========================================================================
command        what it does
=============  =========================================================================
``build``      build chapters from their sources (``--check``: fail if out of sync)
``record``     record the known outputs under ``tests/fixtures/`` from the reference
``grade``      grade submitted notebooks (tables, JUnit XML, JSON)
``bench``      run a benchmark of ``benchmarks/`` (``bench`` alone lists them)
``classroom``  GitHub Classroom: write an assignment's workflow; one exercise's points
``nbgrader``   release a chapter as an nbgrader source assignment
``headless``   execute every learner notebook offline and write HTML beside it
=============  =========================================================================

``python -m utils.course COMMAND --help`` gives a command's options. Each command's module
adds its options (``arguments(parser)``) and runs it (``run(args)``); it is imported only
when its command runs, so ``build`` never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import types

COMMANDS = {  # command -> (module with arguments() and run(), or None: here; one line of help)
    "build": ("utils.course.build", "build chapters from their sources (--check: fail if out of sync)"),
    "record": (None, "record the known outputs under tests/fixtures/ from the reference"),
    "grade": ("utils.course.grading.__main__", "grade submitted notebooks"),
    "bench": (None, "run a benchmark of benchmarks/ (alone: list them)"),
    "classroom": ("utils.course.classroom", "GitHub Classroom: write an assignment's workflow; one exercise's points"),
    "nbgrader": ("utils.course.nbgrader", "release a chapter as an nbgrader source assignment"),
    "headless": ("utils.course.headless", "execute every learner notebook offline, write HTML beside it"),
}
PROG = "python -m utils.course"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()))
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments (COMMAND --help)")
    top = parser.parse_args(argv)
    module_name, text = COMMANDS[top.command]
    if module_name is None:
        arguments, run = _HERE[top.command]
    else:
        module = importlib.import_module(module_name)
        arguments, run = module.arguments, module.run
    command = argparse.ArgumentParser(prog=f"{PROG} {top.command}", description=text)
    arguments(command)
    args = command.parse_args(top.args)
    try:
        return run(args) or 0
    except ValueError as error:  # an unknown chapter or benchmark: one line, not a traceback
        if "unknown" not in str(error):
            raise
        command.error(str(error))
        return 2


# ---------------------------------------------------------------------------------------
# record


def record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chapters", nargs="*", help="chapters to record (default: all)")


def record_run(args: argparse.Namespace) -> int:
    from utils.course.chapter import Chapter
    from utils.course.checking import record

    for ch in [Chapter.get(name) for name in args.chapters] or Chapter.every():
        record(ch)
    return 0


# ---------------------------------------------------------------------------------------
# bench: every module of benchmarks/ with a main(args) is a benchmark; it may add its
# options with arguments(parser). It prints its figures (one JSON object, then readable lines).


def benchmarks() -> dict[str, str]:
    """Benchmark name -> the first line of its docstring."""
    package = importlib.import_module("benchmarks")
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.ispkg:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if callable(getattr(module, "main", None)):
            found[info.name] = (module.__doc__ or "").strip().split("\n")[0]
    return found


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", nargs="?", help="the benchmark's name (leave out to list them)")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's options (BENCHMARK --help)")


def bench_run(args: argparse.Namespace) -> int:
    if args.benchmark is None:
        for name, line in benchmarks().items():
            print(f"{name:<20} {line}")
        return 0
    module = _benchmark(args.benchmark)
    parser = argparse.ArgumentParser(prog=f"{PROG} bench {args.benchmark}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if hasattr(module, "arguments"):
        module.arguments(parser)
    return module.main(parser.parse_args(args.options)) or 0


def bench_alias(name: str) -> None:
    """``python -m benchmarks.NAME ARGS`` as ``python -m utils.course bench NAME ARGS``: kept
    only where a chapter names the old form."""
    sys.exit(main(["bench", name, *sys.argv[1:]]))


def _benchmark(name: str) -> types.ModuleType:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"benchmarks.{name}":
            raise
        module = None
    if module is None or not callable(getattr(module, "main", None)):
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(benchmarks())}")
    return module


_HERE = {"record": (record_arguments, record_run), "bench": (bench_arguments, bench_run)}

if __name__ == "__main__":
    sys.exit(main())

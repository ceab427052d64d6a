"""Grade submitted notebooks with nbval: ``python -m utils.grading SUBMISSIONS ... [--junit FILE]``.

Each submission is re-executed top to bottom by ``pytest --nbval-lax --nbval-current-env``.
A check cell raises when its exercise is wrong, so each exercise reads as one passed or
failed cell. The command prints a score table (one column per exercise) and writes JUnit
XML with one test case per exercise. Arguments are notebooks or folders of notebooks.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import nbformat


@dataclass
class Score:
    """One notebook's result: exercise -> passed, and how many other cells failed."""

    notebook: Path
    exercises: dict[str, bool] = field(default_factory=dict)
    other_failures: list[int] = field(default_factory=list)
    error: str = ""

    @property
    def fraction(self) -> float:
        return sum(self.exercises.values()) / len(self.exercises) if self.exercises else 0.0


def check_cells(nb: nbformat.NotebookNode) -> dict[int, str]:
    """Code-cell index (as nbval counts: code cells only) -> exercise of its check cell."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    return {i: c.metadata["check"] for i, c in enumerate(code) if "check" in c.metadata}


def _cell_results(junit: Path) -> dict[tuple[str, int], bool]:
    """(pytest class name of a notebook, code-cell index) -> passed, from pytest's JUnit XML."""
    results = {}
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "")
        if name.startswith("Cell "):
            failed = any(child.tag in ("failure", "error") for child in case)
            results[(case.get("classname", ""), int(name.split()[1]))] = not failed
    return results


def _class_name(path: Path, root: Path) -> str:
    """How pytest's JUnit XML names a notebook collected under ``--rootdir root``."""
    return ".".join(path.resolve().relative_to(root).parts)


def grade(notebooks: list[Path], timeout: int = 600) -> list[Score]:
    """Run nbval on every notebook (one pytest process) and score each one."""
    root = Path(os.path.commonpath([p.resolve().parent for p in notebooks]))
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "nbval.xml"
        command = [
            sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
            "-p", "no:cacheprovider", f"--junitxml={junit}", f"--nbval-cell-timeout={timeout}",
            "--rootdir", str(root), *map(str, notebooks),
        ]
        run = subprocess.run(command, capture_output=True, text=True)
        if not junit.exists():
            raise RuntimeError(f"pytest did not run:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        results = _cell_results(junit)
    return [_score(path, _class_name(path, root), results) for path in notebooks]


def _score(path: Path, class_name: str, results: dict[tuple[str, int], bool]) -> Score:
    nb = nbformat.read(path, as_version=4)
    checks = check_cells(nb)
    score = Score(path)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    for i in range(n_code):
        passed = results.get((class_name, i))
        if passed is None:
            score.error = "not all cells ran (kernel died or timed out?)"
            passed = False
        if i in checks:
            score.exercises[checks[i]] = passed
        elif not passed:
            score.other_failures.append(i)
    return score


def table(scores: list[Score]) -> str:
    """A plain-text score table: one row per notebook, one column per exercise."""
    exercises = list(dict.fromkeys(e for s in scores for e in s.exercises))
    width = max([len(str(s.notebook.name)) for s in scores] + [8])
    head = f"{'notebook':<{width}}  " + "  ".join(exercises) + "  score  other failed cells"
    lines = [head, "-" * len(head)]
    for s in scores:
        marks = "  ".join(
            f"{('pass' if s.exercises[e] else 'FAIL') if e in s.exercises else '-':^{len(e)}}" for e in exercises
        )
        other = ", ".join(map(str, s.other_failures)) or "none"
        lines.append(f"{s.notebook.name:<{width}}  {marks}  {s.fraction:>5.0%}  {other} {s.error}".rstrip())
    return "\n".join(lines)


def write_junit(scores: list[Score], path: Path) -> None:
    suites = ET.Element("testsuites")
    for s in scores:
        suite = ET.SubElement(
            suites, "testsuite", name=s.notebook.stem, tests=str(len(s.exercises)),
            failures=str(sum(not p for p in s.exercises.values())),
        )
        for exercise, passed in s.exercises.items():
            case = ET.SubElement(suite, "testcase", classname=s.notebook.stem, name=exercise)
            if not passed:
                ET.SubElement(case, "failure", message=f"the check of {exercise} failed")
    ET.ElementTree(suites).write(path, encoding="unicode", xml_declaration=True)


def collect(paths: list[str]) -> list[Path]:
    notebooks: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            notebooks += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.suffix == ".ipynb" and p.exists():
            notebooks.append(p)
        else:
            raise SystemExit(f"not a notebook or folder: {p}")
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grading", description=__doc__.split("\n")[0])
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--junit", type=Path, help="write JUnit XML (one test case per exercise) here")
    args = parser.parse_args(argv)
    scores = grade(collect(args.submissions))
    print(table(scores))
    if args.junit:
        write_junit(scores, args.junit)
        print(f"JUnit XML written to {args.junit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

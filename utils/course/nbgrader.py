"""nbgrader: ``python -m utils.course nbgrader release CHAPTER [--course FOLDER]``.

Writes ``FOLDER/source/<chapter>/<chapter>.ipynb``, the chapter as an nbgrader *source*
assignment, for an instructor who runs nbgrader (JupyterHub's grading tool) with its own
gradebook. Made from the learner notebook:

- each exercise cell is a **solution cell** (``grade_id`` the exercise) holding the reference
  between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (the course's own markers, which
  are nbgrader's), so ``nbgrader generate_assignment`` releases the function's signature and
  docstring with nbgrader's stub in its body;
- each check cell is a **locked autograder test** (``grade_id`` ``check_<exercise>``, one
  point by default) that runs the course's check with strict checking, so a wrong answer
  raises and scores nothing (run in Jupyter, it stops *Run All* there: nbgrader's way);
- the setup cell is **locked**.

Then, in FOLDER: ``nbgrader generate_assignment <chapter> --create``, collect submissions
into ``submitted/<student>/<chapter>/<chapter>.ipynb``, ``nbgrader autograde <chapter>
--create``. nbgrader's kernel must import the course (install it where nbgrader runs).

What nbgrader guarantees is not what ``python -m utils.course grade`` does: it restores
locked cells from its database and executes the notebook, but screens nothing, re-checks
nothing and sandboxes nothing. README's grading section lists which cheats each path stops.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

SCHEMA_VERSION = 3  # nbgrader's cell metadata format (nbgrader 0.6 and later)


def check_source(chapter: str, exercise: str, checks_module: str) -> str:
    return (f"# Check {exercise} (an nbgrader test: a wrong answer raises and scores nothing).\n"
            f"from {checks_module} import check_{exercise}\n"
            "from utils.course.settings import strict_checks\n\n"
            "with strict_checks():\n"
            f"    check_{exercise}({exercise})")


def _meta(grade_id: str, *, grade: bool = False, solution: bool = False, locked: bool = False,
          points: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id,
                            "schema_version": SCHEMA_VERSION}
    if points is not None:
        meta["points"] = points
    return meta


def source_notebook(chapter: str, points: float = 1) -> NotebookNode:
    """The nbgrader source notebook of ``chapter`` (see the module docstring)."""
    from utils.course.chapter import Chapter

    ch = Chapter.get(chapter)
    nb = copy.deepcopy(ch.render_notebook(learner=True))
    seen = set()
    for cell in nb.cells:
        meta = cell.metadata
        if "exercise" in meta:
            name = meta["exercise"]
            cell.source = ch.exercises[name].code.strip()
            meta["nbgrader"] = _meta(name, solution=True)
            seen.add(name)
        elif "check" in meta:
            name = meta["check"]
            cell.source = check_source(chapter, name, ch.checks_module)
            meta["nbgrader"] = _meta(f"check_{name}", grade=True, locked=True, points=points)
        elif "setup" in meta.get("tags", []):
            meta["nbgrader"] = _meta("setup", locked=True)
    missing = [n for n in ch.exercise_names if n not in seen]
    if missing:
        raise RuntimeError(f"{chapter}: no exercise cell for {missing} in the learner notebook")
    return nb


def release(chapter: str, course: Path, points: float = 1) -> Path:
    """Write the source assignment into the nbgrader course folder ``course``; its path."""
    path = course / "source" / chapter / f"{chapter}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(source_notebook(chapter, points), path)
    return path


def arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    out = sub.add_parser("release", help="write a chapter as an nbgrader source assignment")
    out.add_argument("chapters", nargs="+", help="chapters to release")
    out.add_argument("--course", type=Path, default=Path("."), help="the nbgrader course folder (default: here)")
    out.add_argument("--points", type=float, default=1, help="points per exercise (default 1)")


def run(args: argparse.Namespace) -> int:
    for chapter in args.chapters:
        path = release(chapter, args.course, args.points)
        print(f"wrote {path}; next, in {args.course}: nbgrader generate_assignment {chapter} --create")
    return 0

"""Intake: which submissions a batch holds, which can be graded, and what each job runs.

A file that is not a readable notebook (empty, invalid JSON, a folder named ``x.ipynb``, a
link, too large) or not the expected chapter gets one row saying why; the rest of the batch
goes on. The chapter is ``--chapter``, else one named in the path, else the one whose
exercises the notebook holds. A notebook that can be graded is restored and screened
(:mod:`utils.course.screening`) into a job for a worker.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nbformat

from utils.course import screening, source
from utils.course.chapter import Chapter, names
from utils.course.grading.report import Exercise, Score

MAX_BYTES = 64 * 2**20  # larger files are refused: clear the outputs and resubmit


def collect(paths: list[str | Path]) -> list[Path]:
    """The submissions under ``paths``: notebooks given, and every ``*.ipynb`` in folders
    given (checkpoints left out). Anything else given is kept, to get its own row."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and p.suffix != ".ipynb":
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            found.append(p)
    return list({os.path.abspath(p): p for p in found}.values())


def read_submission(path: Path, max_bytes: int = MAX_BYTES) -> nbformat.NotebookNode | str:
    """The notebook at ``path``, or one sentence saying why it cannot be graded."""
    if path.is_symlink():
        return "a link, not a notebook file: submit the notebook itself"
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a folder, not a notebook file"
    if not path.is_file():
        return "not a regular file"
    size = path.stat().st_size
    if size == 0:
        return "an empty file (was the notebook saved?)"
    if size > max_bytes:
        return (f"{size / 2**20:.0f} MB, over the limit of {max_bytes / 2**20:.0f} MB: clear the outputs "
                "(Edit > Clear Outputs of All Cells), save and resubmit")
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        return "not a notebook (not UTF-8 text)"
    except json.JSONDecodeError as error:
        return f"not a notebook: invalid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "JSON, but not a notebook (no list of cells)"
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as error:  # nbformat's many ways of refusing a file
        return f"not a notebook nbformat can read ({type(error).__name__}: {error})"


def chapter_in_path(path: Path) -> str | None:
    """The chapter a path names (``ch00_toolkit.ipynb``, ``ch00_toolkit/alice.ipynb``), if one."""
    named = [c for c in names() if any(c in part for part in path.parts)]
    return named[0] if len(named) == 1 else None


def intake(path: Path, chapter: str | None, max_bytes: int) -> tuple[Score, dict[str, Any] | None]:
    score = Score(path)
    nb = read_submission(path, max_bytes)
    if isinstance(nb, str):
        score.error = nb
        return score, None
    found = screening.identify_chapter(nb)
    expected = chapter or chapter_in_path(path)
    score.chapter = expected or found
    if found is None:
        score.error = (f"none of {expected}'s exercise cells are in it" if expected else
                       "no exercise of any chapter of this course in it: which chapter is it?")
        return score, None
    score.exercises = {name: Exercise() for name in Chapter(score.chapter).exercise_names}
    if found != score.chapter:
        score.error = f"this is {found}'s notebook, not {score.chapter}'s"
        for exercise in score.exercises.values():
            exercise.reason = score.error
        return score, None
    if expected is None:
        score.notes.append(f"graded as {found}: the chapter whose exercises it holds")
    prepared = screening.prepare(nb, score.chapter)
    job = {
        "chapter": score.chapter,
        "notebook": nbformat.writes(prepared.notebook),
        "roles": prepared.roles,
        "chunks": module_chunks(score.chapter, prepared.sources),
        "missing": prepared.missing,
        "findings": [asdict(f) for f in prepared.findings],
    }
    return score, job


def module_chunks(chapter: str, sources: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """The stub module of ``chapter`` cut into course code and exercise cells, the learner's
    cell (its leading ``%%time``-like magic dropped) in place of each stub."""
    ch = Chapter(chapter)
    text = ch.render_module(learner=True)
    chunks: list[tuple[str, str | None, str]] = []
    for name, ex in ch.exercises.items():
        stub = source.stub(ex.code, name).strip()
        before, found, text = text.partition(stub)
        if not found:
            raise RuntimeError(f"{chapter}: the stub of {name} is not in its module")
        learner = re.sub(r"\A\s*%%(time|timeit|capture)\b[^\n]*\n", "", sources.get(name, stub))
        chunks += [("course", None, before), ("exercise", name, learner)]
    return chunks + [("course", None, text)]

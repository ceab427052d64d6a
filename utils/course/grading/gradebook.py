"""A class's results: one gradebook row per student, and a feedback page per student.

A class folder holds ``<student>/<chapter>.ipynb`` (any file name in the student's folder), or
``<chapter>/<student>.ipynb``, or a flat ``<student>_<chapter>.ipynb`` (``<student>.ipynb`` with
``--chapter``): the student is the folder under the one given, else the file's name without
the chapter's.

:func:`write_gradebook` writes the CSV a learning management system imports:

``canvas`` (Canvas's *Import* in the Gradebook)
    ``Student, ID, SIS User ID, SIS Login ID, Section`` (Canvas matches a row by ID, SIS User
    ID, SIS Login ID, then name: the folder name goes into ``Student`` and ``SIS Login ID``,
    or, given ``--roster`` (a Canvas gradebook export), the roster's row for the student),
    then ``Notes`` (a custom column: Canvas imports it into the Gradebook's *Notes* column,
    which must be shown first), then one column per chapter (percent) and per exercise
    (1 or 0), and a second row ``Points Possible`` (100 per chapter, 1 per exercise).
``moodle`` (Moodle's *Import > CSV file*)
    ``Username`` (map it to a user field: username, email address or ID number), the grade
    columns, then one ``<chapter> feedback`` column per chapter (map it to *Feedback for
    <chapter>*); no second row: Moodle refuses a row whose user it cannot find.

A notebook that could not be graded counts 0 and says why; a chapter a student handed in
twice keeps the better notebook and says so. :func:`write_feedback` writes one HTML page per
student (no script, no link, nothing fetched): each chapter's exercises, PASS or FAIL, and why.
"""
from __future__ import annotations

import csv
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from utils.course.chapter import names
from utils.course.grading.report import Score

LAYOUTS = ("canvas", "moodle")
CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


@dataclass
class Student:
    """One student's results, by chapter."""

    name: str
    chapters: dict[str, Score] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # not tied to one chapter (a file that is no notebook)


def student_name(notebook: Path, roots: list[Path], chapter: str | None) -> str:
    """Who handed ``notebook`` in, from its path under the deepest folder of ``roots`` that
    holds it (else under its own folder): the folders, without one named for the chapter;
    with no other folder, the file's name without the chapter's."""
    path = Path(os.path.abspath(notebook))
    under = [r for r in (Path(os.path.abspath(r)) for r in roots) if r in path.parents]
    root = max(under, key=lambda r: len(r.parts)) if under else path.parent
    chapters = [chapter] if chapter else [c for c in names() if c in str(path.relative_to(root))]
    folders = [f for f in path.relative_to(root).parent.parts if not any(c in f for c in chapters)]
    if len(folders) < len(path.relative_to(root).parent.parts) or not folders:  # <chapter>/<student>.ipynb, or flat
        stem = path.name.removesuffix(".ipynb")
        for ch in chapters:
            stem = re.sub(rf"[ _.\-]*{re.escape(ch)}[ _.\-]*", "_", stem).strip("_")
        folders.append(stem)
    name = "/".join(p for p in folders if p)
    return name or root.name or path.stem


def students(scores: list[Score], roots: list[Path]) -> dict[str, Student]:
    """Scores gathered by student (sorted by name); the better of two notebooks of one chapter."""
    found: dict[str, Student] = {}
    for score in scores:
        name = student_name(score.notebook, roots, score.chapter)
        student = found.setdefault(name, Student(name))
        if score.chapter is None:
            student.notes.append(f"{score.notebook.name}: not graded: {score.error}")
            continue
        kept = student.chapters.get(score.chapter)
        if kept is not None:
            better, other = sorted([kept, score], key=lambda s: (s.fraction, str(s.notebook)), reverse=True)
            student.notes.append(f"{score.chapter}: two notebooks ({better.notebook.name} and {other.notebook.name}); "
                                 f"kept the better, {better.fraction:.0%}")
            score = better
        student.chapters[score.chapter] = score
    return dict(sorted(found.items()))


def exercise_columns(scores: list[Score]) -> dict[str, list[str]]:
    """Chapter -> its exercises, for every chapter graded in the batch (in course order)."""
    from utils.course.chapter import Chapter

    graded = {s.chapter for s in scores if s.chapter}
    return {ch: list(Chapter(ch).exercise_names) for ch in names() if ch in graded}


def feedback(score: Score) -> str:
    """One chapter's result in words: the score, the reason for every FAIL, and what the
    grader restored or ignored (a check cell edited, an nbval marker)."""
    if score.error:
        return f"{score.chapter}: 0% (not graded: {score.error})"
    lines = [f"{score.chapter}: {score.fraction:.0%}"]
    for name, e in score.exercises.items():
        lines += [f"{name}: FAIL: {e.reason}"] if not e.passed else []
        lines += [f"{name}: note: {n}" for n in e.notes]
    return "\n".join(lines)


def read_roster(path: Path) -> list[dict[str, str]]:
    """The students of a Canvas gradebook export (*Grades > Export*): its identity columns,
    one dict per student (the ``Points Possible`` row and Canvas's test student left out)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or not set(CANVAS_IDENTITY) <= set(rows[0]):
        raise ValueError(f"{path}: not a Canvas gradebook export (its first columns must be {', '.join(CANVAS_IDENTITY)})")
    return [{k: (r.get(k) or "").strip() for k in CANVAS_IDENTITY} for r in rows
            if "Points Possible" not in (r["Student"] or "") and (r["Student"] or "").strip() not in ("", "Student, Test")]


def match(name: str, roster: list[dict[str, str]]) -> dict[str, str] | None:
    """The roster row of the student whose folder is ``name``: its SIS Login ID, SIS User ID,
    ID or name (any case), else a part of it (``smithjane_4321_...``, as Canvas names the
    files of a bulk download) that is an ID, SIS User ID or SIS Login ID."""
    def key(value: str) -> str:
        return value.strip().lower()

    for column in ("SIS Login ID", "SIS User ID", "ID", "Student"):
        found = [r for r in roster if r[column] and key(r[column]) == key(name)]
        if len(found) == 1:
            return found[0]
    parts = {key(p) for p in re.split(r"[_\-\s./]+", name) if p}
    found = [r for r in roster if any(r[c] and key(r[c]) in parts for c in ("ID", "SIS User ID", "SIS Login ID"))]
    return found[0] if len(found) == 1 else None


def write_gradebook(scores: list[Score], path: Path, roots: list[Path], layout: str = "canvas",
                    roster: Path | None = None) -> None:
    """The CSV of one row per student in ``layout`` (``canvas`` or ``moodle``: see the module
    docstring). With ``roster`` (a Canvas gradebook export), the identity columns come from
    the roster's row for the student, and every student of the roster has a row."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown gradebook layout {layout!r}; expected one of {LAYOUTS}")
    if roster is not None and layout != "canvas":
        raise ValueError("--roster reads a Canvas export; in Moodle, map Username to a user field when importing")
    enrolled = read_roster(roster) if roster is not None else None
    chapters = exercise_columns(scores)
    grades = [c for ch, exercises in chapters.items() for c in [ch, *(f"{ch}: {e}" for e in exercises)]]
    rows = []
    for student in students(scores, roots).values():
        values, notes = {}, list(student.notes)
        for ch, exercises in chapters.items():
            score = student.chapters.get(ch)
            if score is None:
                continue  # not handed in: left empty, which both systems read as "no change"
            values[ch] = f"{100 * score.fraction:g}"
            for e in exercises:
                values[f"{ch}: {e}"] = "1" if e in score.exercises and score.exercises[e].passed else "0"
            values[f"{ch} feedback"] = feedback(score)
            notes.append(values[f"{ch} feedback"])
        identity = {"Student": student.name, "ID": "", "SIS User ID": "", "SIS Login ID": student.name, "Section": ""}
        if enrolled is not None:
            row = match(student.name, enrolled)
            if row is None:
                notes.insert(0, f"{student.name}: not in the roster (no row of it matches this folder name)")
            else:
                identity = row
        rows.append((identity, values, "\n\n".join(notes)))
    if enrolled is not None:  # the roster's students who handed nothing in
        matched = {id(r[0]) for r in rows}
        rows += [(r, {}, "no notebook found for this student") for r in enrolled if id(r) not in matched]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        if layout == "canvas":
            writer.writerow([*CANVAS_IDENTITY, "Notes", *grades])
            points = ["100" if c in chapters else "1" for c in grades]
            writer.writerow(["Points Possible", "", "", "", "", "", *points])
            for identity, values, notes in rows:
                writer.writerow([*(identity[k] for k in CANVAS_IDENTITY), notes, *(values.get(c, "") for c in grades)])
        else:
            writer.writerow(["Username", *grades, *(f"{ch} feedback" for ch in chapters)])
            for identity, values, _ in rows:
                writer.writerow([identity["Student"], *(values.get(c, "") for c in grades),
                                 *(values.get(f"{ch} feedback", "") for ch in chapters)])


def write_feedback(scores: list[Score], folder: Path, roots: list[Path]) -> dict[str, Path]:
    """One self-contained HTML page per student under ``folder``; student -> its page."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = {}
    for student in students(scores, roots).values():
        page = folder / (re.sub(r"[^\w.-]+", "_", student.name) + ".html")
        page.write_text(_page(student), encoding="utf-8")
        pages[student.name] = page
    return pages


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #ddd; padding: .4rem .5rem;
  text-align: left; vertical-align: top; }
.pass { color: #0a6b2d; font-weight: 600; } .fail { color: #a4161a; font-weight: 600; }
.why { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; }
.note { color: #555; }
"""


def _page(student: Student) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>Feedback: {e(student.name)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>Feedback for {e(student.name)}</h1>"]
    parts += [f"<p class='note'>{e(n)}</p>" for n in student.notes]
    for ch, score in student.chapters.items():
        parts.append(f"<h2>{e(ch)}: {score.fraction:.0%}</h2>")
        parts.append(f"<p class='note'>graded notebook: {e(score.notebook.name)}</p>")
        if score.error:
            parts.append(f"<p class='fail'>Not graded: {e(score.error)}</p>")
            continue
        parts.append("<table><tr><th>exercise</th><th>result</th><th>why</th></tr>")
        for name, ex in score.exercises.items():
            mark = "<span class='pass'>PASS</span>" if ex.passed else "<span class='fail'>FAIL</span>"
            why = ex.reason + "".join(f"\n(note: {n})" for n in ex.notes)
            parts.append(f"<tr><td>{e(name)}</td><td>{mark}</td><td class='why'>{e(why)}</td></tr>")
        parts.append("</table>")
        parts += [f"<p class='note'>{e(n)}</p>" for n in score.notes]
        parts += [f"<p class='note'>another cell failed: {e(f)}</p>" for f in score.other_failures]
    parts.append("</body></html>\n")
    return "\n".join(parts)

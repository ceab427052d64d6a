"""A submission's result, and the reports made of a batch's results.

:func:`combine` fills a :class:`Score` from what the restoration found (tampering, restored
cells), the outcome nbval reported for each cell (:mod:`~utils.course.grading.plugin`) and
the re-checks; :func:`table`, :func:`write_junit` and :func:`write_json` report a batch.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Exercise:
    """One exercise of one submission: passed, or why not."""

    passed: bool = False
    reason: str = ""  # why it failed
    tampered: list[str] = field(default_factory=list)  # what looked like tampering (zeroes it)
    notes: list[str] = field(default_factory=list)  # restored or ignored, reported only


@dataclass
class Score:
    """One submission's result, keyed by its path."""

    notebook: Path
    chapter: str | None = None
    exercises: dict[str, Exercise] = field(default_factory=dict)  # every exercise of the chapter, in order
    error: str = ""  # why it was not graded
    notes: list[str] = field(default_factory=list)  # about the whole notebook
    other_failures: list[str] = field(default_factory=list)  # cells other than checks that failed
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each step

    @property
    def fraction(self) -> float:
        return sum(e.passed for e in self.exercises.values()) / len(self.exercises) if self.exercises else 0.0

    @property
    def tampered(self) -> dict[str, list[str]]:
        return {name: e.tampered for name, e in self.exercises.items() if e.tampered}


def combine(score: Score, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Fill ``score`` from the restoration's findings, nbval's cells and the re-checks."""
    if "fatal" in result:
        score.error = result["fatal"]
    score.timings = result.get("timings", {})
    roles = job["roles"]
    cells: dict[int, dict[str, Any]] = {}
    for record in result.get("cells", []):  # a cell's call outcome wins over its teardown
        cells.setdefault(record["cell"], record)
    checks = check_cells(roles)
    for finding in job["findings"]:
        targets = finding["exercises"] or ([] if not finding["tampering"] else list(score.exercises))
        if not targets:
            score.notes.append(finding["reason"])
        for name in targets:
            bucket = score.exercises[name].tampered if finding["tampering"] else score.exercises[name].notes
            bucket.append(finding["reason"])
    for name in result.get("changed", []):
        score.notes.append(f"course file {name} changed while it ran")
    if result.get("changed"):
        for exercise in score.exercises.values():
            exercise.tampered.append("it changed the course's files")
    died = next((i for i, c in sorted(cells.items()) if "the kernel died" in c["message"]), None)
    for i, (role, _) in enumerate(roles):
        record = cells.get(i)
        if died is not None and i > died:
            score.other_failures.append(f"cells {died + 1}-{len(roles) - 1}: not run, the kernel had died in cell {died}")
            break
        if role != "check" and record and record["outcome"] != "passed":
            score.other_failures.append(f"cell {i} ({role}): {_diagnosis(record['message'])}")
    stopped = _stopped(cells, roles, result)
    rechecks = result.get("rechecks", {})
    for name, exercise in score.exercises.items():
        if name in job["missing"]:
            exercise.reason = "no exercise cell for it in the submission (deleted?)"
        elif not score.error:
            exercise.reason = _check_reason(cells.get(checks[name]), stopped, died) or _recheck_reason(
                rechecks.get(name), result.get("recheck_error", ""))
            if name in rechecks:
                exercise.tampered += rechecks[name].get("tampered", [])
        if exercise.tampered and not exercise.reason:
            exercise.reason = "looked tampered with: " + "; ".join(exercise.tampered)
        exercise.passed = not exercise.reason


def _stopped(cells: dict[int, dict[str, Any]], roles: list[Any], result: dict[str, Any]) -> str:
    """Why cells after the last reported one never ran ('' if every cell reported)."""
    if len(cells) >= len(roles):
        return ""
    last = max(cells, default=-1)
    return (f"it never ran: execution stopped after cell {last} (the submission's time limit, or the kernel "
            f"could not start); pytest said: {_diagnosis(result.get('nbval', ''))}")


def _check_reason(record: dict[str, Any] | None, stopped: str, died: int | None = None) -> str:
    if died is not None and (record is None or record["cell"] > died):
        return f"its check never ran: the kernel died in cell {died}"
    if record is None:
        return stopped or "its check cell did not run"
    if record["xfail"]:
        return f"its check was not graded: {record['xfail'].lower()}"
    if record["outcome"] == "skipped":
        return f"its check cell was skipped ({_diagnosis(record['message'])})"
    if record["outcome"] != "passed":
        return "its check failed: " + _diagnosis(record["message"])
    return ""


def _recheck_reason(record: dict[str, Any] | None, problem: str) -> str:
    if record is None:
        return f"its re-check on fresh inputs did not report ({problem or 'no result'})"
    if record["passed"]:
        return ""
    return f"its re-check on fresh inputs failed: {record['reason']}" if record["reason"] else ""


def _diagnosis(message: str) -> str:
    """The line of a cell's failure that says what went wrong."""
    lines = [line.strip().removeprefix("pytest plugin exception: ") for line in plain(message).splitlines()
             if line.strip()]
    for pattern in ("Timeout of", "the kernel died", "Kernel dead", "CheckFailure", "Error:", "Error"):
        hits = [line for line in lines if pattern in line]
        if hits:
            return hits[-1][:400]
    return (lines[-1] if lines else "no message")[:400]


def table(scores: list[Score]) -> str:
    """One table per chapter (a column per exercise), the submissions not graded, then the
    reasons for every FAIL and what looked tampered with."""
    blocks = []
    for chapter in sorted({s.chapter for s in scores if s.chapter and s.exercises and not s.error}):
        rows = [s for s in scores if s.chapter == chapter and not s.error]
        names = list(rows[0].exercises)
        width = max(len(str(s.notebook)) for s in rows + [Score(Path("submission"))])
        head = f"{'submission':<{width}}  " + "  ".join(names) + "  score"
        lines = [f"{chapter}", head, "-" * len(head)]
        for s in rows:
            marks = "  ".join(f"{_mark(s.exercises[n]):^{len(n)}}" for n in names)
            lines.append(f"{str(s.notebook):<{width}}  {marks}  {s.fraction:>5.0%}")
        lines.append("(* looked tampered with, scores nothing; ~ a check cell or nbval marker was restored or "
                     "ignored: see the details)")
        blocks.append("\n".join(lines))
    failed = [s for s in scores if s.error]
    if failed:
        width = max(len(str(s.notebook)) for s in failed)
        blocks.append("\n".join(["not graded (score 0)"] + [f"{str(s.notebook):<{width}}  {s.error}" for s in failed]))
    details = []
    for s in scores:
        if s.error:
            continue
        lines = [f"  note: {n}" for n in s.notes]
        for name, e in s.exercises.items():
            if not e.passed:
                lines.append(f"  {name}: FAIL{' (tampered)' if e.tampered else ''}: {e.reason}")
            lines += [f"  {name}: tampered: {t}" for t in e.tampered if t not in e.reason]
            lines += [f"  {name}: note: {n}" for n in e.notes]
        lines += [f"  other failed cell: {f}" for f in s.other_failures]
        if lines:
            details.append(f"{s.notebook} ({s.fraction:.0%}, {s.seconds:.0f} s)\n" + "\n".join(lines))
    if details:
        blocks.append("details\n" + "\n".join(details))
    return "\n\n".join(blocks)


def _mark(e: Exercise) -> str:
    return ("pass" if e.passed else "FAIL") + ("*" if e.tampered else "~" if e.notes else "")


def write_junit(scores: list[Score], path: Path) -> None:
    """JUnit XML: a test suite per submission (named by its path), a test case per exercise."""
    suites = ET.Element("testsuites")
    for s in scores:
        cases = s.exercises or {"notebook": Exercise(reason=s.error)}
        suite = ET.SubElement(suites, "testsuite", name=str(s.notebook), tests=str(len(cases)),
                              failures=str(sum(not e.passed for e in cases.values())))
        for name, e in cases.items():
            case = ET.SubElement(suite, "testcase", classname=str(s.notebook), name=name)
            if not e.passed:
                ET.SubElement(case, "failure", message=s.error or e.reason)
    ET.ElementTree(suites).write(path, encoding="unicode", xml_declaration=True)


def write_json(scores: list[Score], path: Path) -> None:
    """Every result, keyed by the submission's path."""
    data = {str(s.notebook): {**asdict(s), "notebook": str(s.notebook), "score": s.fraction} for s in scores}
    path.write_text(json.dumps(data, indent=1))


def check_cells(roles: list[list[Any]]) -> dict[str, int]:
    return {exercise: i for i, (role, exercise) in enumerate(roles) if role == "check"}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    return _ANSI.sub("", text or "")

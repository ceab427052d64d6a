"""nbgrader end to end, with real nbgrader 0.9.6 and its sqlite gradebook (``tests/grading_paths.py``):
``python -m utils.course nbgrader release`` makes a source assignment nbgrader accepts,
``nbgrader generate_assignment`` hides the reference, and ``nbgrader autograde`` gives a solved
submission every point and an untouched one none, read back from the gradebook.

Which cheats nbgrader stops is measured by ``python -m utils.course bench grading_paths``
(README's grading section prints the table): it runs the whole catalog through nbgrader.
"""
from __future__ import annotations

import time

import pytest

from tests import cheats, grading_paths
from utils.course import nbgrader as release
from utils.course.chapter import Chapter

CHAPTER = cheats.CHAPTER


def test_source_notebook_marks_solutions_tests_and_setup() -> None:
    nb = release.source_notebook(CHAPTER)
    meta = [c.metadata.get("nbgrader") for c in nb.cells]
    exercises = list(Chapter(CHAPTER).exercise_names)
    solutions = [m["grade_id"] for m in meta if m and m["solution"]]
    tests = [(m["grade_id"], m["points"], m["locked"]) for m in meta if m and m["grade"]]
    assert solutions == exercises
    assert tests == [(f"check_{e}", 1, True) for e in exercises]
    assert [m["grade_id"] for m in meta if m and m["locked"] and not m["grade"]] == ["setup"]
    for cell in nb.cells:
        if "exercise" in cell.metadata:
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        if "check" in cell.metadata:
            assert "strict_checks()" in cell.source


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nbgrader")
    started = time.perf_counter()
    root, env, released = grading_paths.nbgrader_course(folder)
    catalog = grading_paths.submissions(base=released, sandboxed=False)
    notebooks = {label: catalog[label][0] for label in ("solved", "untouched")}
    points, changed = grading_paths.nbgrader(notebooks, folder, root, env)
    print(f"nbgrader round trip (generate, autograde 2 notebooks): {time.perf_counter() - started:.0f} s")
    return released, points, changed


def test_generate_assignment_hides_the_reference(round_trip, meta_tests) -> None:
    released, _, _ = round_trip
    for name, exercise in Chapter(CHAPTER).exercises.items():
        cell = cheats.cell(released, "exercise", name)
        assert "raise NotImplementedError()" in cell.source and "BEGIN SOLUTION" not in cell.source
        body = [line.strip() for line in exercise.code.split("### BEGIN SOLUTION")[1].splitlines()[1:-1]]
        assert not any(line and line in cell.source for line in body if len(line) > 12), cell.source


def test_autograde_gives_solved_every_point_and_untouched_none(round_trip, meta_tests) -> None:
    _, points, changed = round_trip
    exercises = Chapter(CHAPTER).exercise_names
    assert points["solved"] == {e: 1 for e in exercises}, points
    assert points["untouched"] == {e: 0 for e in exercises}, points
    assert not changed

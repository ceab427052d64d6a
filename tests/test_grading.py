"""Grading with nbval: the solution notebook scores 100%, the untouched learner notebook 0%,
and in the latter every cell that is not a check still runs (no cascade of failures)."""
import shutil

import pytest

from utils import build, grading


@pytest.mark.parametrize("chapter", build.chapters())
def test_grade_solution_and_untouched_stubs(chapter, tmp_path, meta_tests):
    solved = tmp_path / f"{chapter}_solved.ipynb"
    untouched = tmp_path / f"{chapter}_untouched.ipynb"
    shutil.copy(build.ROOT / "solutions" / f"{chapter}.ipynb", solved)
    shutil.copy(build.ROOT / "chapters" / f"{chapter}.ipynb", untouched)
    (solved_score, untouched_score) = grading.grade([solved, untouched])
    print(grading.table([solved_score, untouched_score]))
    assert solved_score.exercises and solved_score.fraction == 1.0 and not solved_score.other_failures
    assert untouched_score.fraction == 0.0 and untouched_score.exercises.keys() == solved_score.exercises.keys()
    assert not untouched_score.other_failures and not untouched_score.error
    report = tmp_path / "grades.xml"
    grading.write_junit([solved_score, untouched_score], report)
    assert report.read_text().count("<failure") == len(untouched_score.exercises)

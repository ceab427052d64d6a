"""Grading end to end: each chapter's solution notebook scores 100 % and its untouched
learner notebook 0 % with every other cell still running; JupyterLab's Run All executes
every cell of an untouched notebook; restoring and screening leave honest notebooks alone.
The notebooks are graded in the catalog's shared batch (``tests.cheats.graded``)."""
from __future__ import annotations

import os
import shutil

import nbformat
import pytest

from tests import cheats
from utils.course import ROOT, grading, screening, settings
from utils.course.chapter import Chapter, names


@pytest.mark.parametrize("chapter", names())
def test_solution_scores_full_and_untouched_scores_zero(chapter: str, tmp_path, meta_tests) -> None:
    scores, _, _ = cheats.graded()
    solved, untouched = scores[f"solved/{chapter}"], scores[f"untouched/{chapter}"]
    print(grading.table([solved, untouched]))
    assert list(solved.exercises) == list(Chapter(chapter).exercise_names) == list(untouched.exercises)
    assert solved.fraction == 1.0 and not solved.other_failures and not solved.notes
    assert untouched.fraction == 0.0 and not untouched.other_failures and not untouched.tampered
    assert all("not implemented" in e.reason for e in untouched.exercises.values())
    report = tmp_path / "grades.xml"
    grading.write_junit([solved, untouched], report)
    assert report.read_text().count("<failure") == len(untouched.exercises)
    grading.write_json([solved, untouched], tmp_path / "grades.json")
    assert str(solved.notebook) in (tmp_path / "grades.json").read_text()


@pytest.mark.parametrize("chapter", names())
def test_restoring_leaves_course_notebooks_alone(chapter: str) -> None:
    for folder in ("chapters", "solutions"):
        nb = nbformat.read(ROOT / folder / f"{chapter}.ipynb", as_version=4)
        assert screening.identify_chapter(nb) == chapter
        prepared = screening.prepare(nb, chapter)
        assert not prepared.findings and not prepared.missing, prepared.findings
        assert [r for r in prepared.roles if r[0] == "check"] == [("check", e) for e in Chapter(chapter).exercise_names]


@pytest.mark.parametrize("name", [c.name for c in cheats.CHEATS])
def test_screen_alone_names_each_cheat(name: str) -> None:
    """Before anything runs, restoring and screening already blame the right exercise."""
    group = next(g for g in cheats.GROUPS if name in g)
    nb, targets = cheats.group_notebook(group)
    prepared = screening.prepare(nb, cheats.CHAPTER)
    assert any(targets[name] in f.exercises for f in prepared.findings), prepared.findings


# One chapter: what lets Run All go on is the same generated check cell in every chapter (not
# strict: the failure is printed, nothing raised). That every other cell of every chapter runs
# after failed checks is shown by the untouched notebooks graded above (about a minute saved
# per chapter).
@pytest.mark.parametrize("chapter", names()[:1])
def test_run_all_in_jupyterlab_runs_every_cell(chapter: str, tmp_path, meta_tests) -> None:
    """Run All on an untouched notebook, as JupyterLab does (stop at the first error, checks
    not strict): every cell runs, and each check cell shows its exercise's failure."""
    from nbclient import NotebookClient

    path = tmp_path / f"{chapter}.ipynb"
    shutil.copy(ROOT / "chapters" / f"{chapter}.ipynb", path)
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != settings.STRICT}
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    for cell in code:
        if "check" in cell.metadata:
            shown = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
            assert f"{cell.metadata['check']}:" in shown and "not implemented" in shown, shown

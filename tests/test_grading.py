"""Grading end to end: JupyterLab's Run All executes every cell of an untouched notebook;
restoring and screening leave honest notebooks alone; what runs write beside the course is not
the course. (Each chapter's solution notebook scoring 100 % and its untouched notebook 0 % is
in ``test_cheats.py``: they are graded in the catalog's batch.)"""
from __future__ import annotations

import os
import shutil

import nbformat
import pytest

from tests import cheats
from utils.course import ROOT, screening, settings
from utils.course.chapter import Chapter, names


def test_what_runs_write_is_not_the_course(tmp_path) -> None:
    """The grader's check that no submission wrote into the course (hashes before and after a
    batch) covers the course's files, tracked data included, and leaves out what runs write
    beside them (a view beside a notebook, a screenshot, the headless HTML), which another
    test run or a headless run may rewrite while a batch is graded."""
    from utils.course.grading.worker import hashes

    course = ["utils/graphs/engine.py", "utils/hunt/artifacts/attn_sae/cfg.json", "tests/fixtures/ch00.pt",
              "solutions/ch00_toolkit.ipynb", "chapters/ch00_toolkit.ipynb"]
    written = ["solutions/_views/ch00_dashboard.html", "chapters/_views/ch00_dashboard.html", "chapters/ch00_toolkit.html",
               "tests/artifacts/browser/ch00_toolkit/figure.png", "utils/__pycache__/nodes.cpython-311.pyc",
               "chapters/.ipynb_checkpoints/ch00_toolkit-checkpoint.ipynb"]
    for name in course + written:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(hashes(tmp_path, ("utils", "tests", "solutions", "chapters"))) == sorted(course)


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

"""GitHub Classroom: the template of each chapter is current and passes actionlint, and the
commands its workflow runs, read from the workflow itself and run as GitHub Actions runs them
(``tests/grading_paths.py``), give a solved notebook every point, an untouched one none, and
every catalogued cheat (``tests/cheats.py``) none.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import cheats, grading_paths, tools
from utils.course import ROOT, classroom
from utils.course.chapter import Chapter, names

CHAPTER = cheats.CHAPTER


def test_templates_are_current() -> None:
    for chapter in names():
        for relative, text in classroom.template(chapter).items():
            path = ROOT / "classroom" / chapter / relative
            assert path.exists() and path.read_text() == text, \
                f"{path} is out of date: run python -m utils.course classroom workflow"


def test_one_test_per_exercise_reporting_a_point_each() -> None:
    for chapter in names():
        _, tests = grading_paths.steps(grading_paths.workflow(chapter))
        exercises = list(Chapter(chapter).exercise_names)
        assert [t["with"]["test-name"] for t in tests] == exercises
        assert all(t["with"]["max-score"] == 1 for t in tests)
        (job,) = grading_paths.workflow(chapter)["jobs"].values()
        reporter = job["steps"][-1]
        assert reporter["uses"] == classroom.REPORTER
        assert reporter["with"]["runners"].split(",") == [t["id"] for t in tests]
        assert set(reporter["env"]) == {f"{t['id'].upper()}_RESULTS" for t in tests}
        legacy = json.loads((ROOT / "classroom" / chapter / ".github" / "classroom" / "autograding.json").read_text())
        assert [(t["name"], t["run"], t["points"]) for t in legacy["tests"]] == \
            [(t["with"]["test-name"], t["with"]["command"], 1) for t in tests]


def test_actionlint_accepts_every_template_and_refuses_a_broken_one(tmp_path) -> None:
    env = tools.environment("actionlint")
    files = sorted(str(p) for p in (ROOT / "classroom").glob("*/.github/workflows/classroom.yml"))
    assert len(files) == len(names())
    run = subprocess.run(["actionlint", "-no-color", *files], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    broken = tmp_path / ".github" / "workflows" / "classroom.yml"  # the result of a step that does not exist
    broken.parent.mkdir(parents=True)
    broken.write_text(Path(files[0]).read_text().replace("steps.top-k-latents.outputs.result",
                                                         "steps.top-k-latent.outputs.result"))
    run = subprocess.run(["actionlint", "-no-color", str(broken)], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "top-k-latent" in run.stdout, run.stdout


def test_the_workflow_gives_a_solved_notebook_every_point(tmp_path, meta_tests) -> None:
    """The workflow's commands exactly as written, on the solution notebook as a student pushes it."""
    space = grading_paths.workspace(tmp_path / "workspace", [cheats.solved()])
    started = time.perf_counter()
    graded = grading_paths.run_grading_step(space, tmp_path / "runner-temp")
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    points = grading_paths.run_classroom_tests(space, tmp_path / "runner-temp")
    print(f"the workflow's commands on a solved notebook: {time.perf_counter() - started:.0f} s")
    assert {name: p for name, (p, _) in points.items()} == {e: 1 for e in Chapter(CHAPTER).exercise_names}, points
    assert all("passed" in out for _, out in points.values())


def test_the_workflow_gives_untouched_and_cheating_notebooks_nothing(tmp_path, meta_tests) -> None:
    """The untouched notebook and every notebook of the cheat catalog through the workflow's
    commands (its grading step once for all of them), each scored by the Classroom tests."""
    catalog = grading_paths.submissions(sandboxed=cheats._sandboxed())
    del catalog["solved"]
    started = time.perf_counter()
    points, printed = grading_paths.classroom({label: nb for label, (nb, _) in catalog.items()}, tmp_path)
    print(f"the workflow's commands on {len(catalog)} notebooks: {time.perf_counter() - started:.0f} s")
    for label, found in points.items():
        assert not any(found.values()), (label, printed[label])
        assert all(out.strip() and "passed" not in out for out in printed[label].values()), printed[label]
    assert all("not implemented" in out for out in printed["untouched"].values()), printed["untouched"]
    assert all(grading_paths.stopped(points, catalog).values())
    assert len(grading_paths.stopped(points, catalog)) == len(cheats.CHEATS) + 2


def test_points_refuses_what_it_cannot_read(tmp_path) -> None:
    missing = tmp_path / "grades.json"
    assert not classroom.points(missing, "top_k_latents")[0]
    missing.write_text("{}")
    assert "found 0" in classroom.points(missing, "top_k_latents")[1]
    missing.write_text(json.dumps({"a.ipynb": {"error": "an empty file", "exercises": {}}}))
    assert "not graded: an empty file" in classroom.points(missing, "top_k_latents")[1]
    missing.write_text(json.dumps({"a.ipynb": {"error": "", "chapter": CHAPTER,
                                               "exercises": {"top_k_latents": {"passed": True, "reason": ""}}}}))
    assert classroom.points(missing, "top_k_latents")[0]
    assert not classroom.points(missing, "latent_aurocs")[0]


@pytest.mark.parametrize("chapter", names()[:1])
def test_classroom_command_writes_the_templates(chapter: str, tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "utils.course", "classroom", "workflow", chapter, "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for relative, text in classroom.template(chapter).items():
        assert (tmp_path / chapter / relative).read_text() == text
    check = subprocess.run([sys.executable, "-m", "utils.course", "classroom", "workflow", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

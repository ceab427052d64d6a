"""GitHub Classroom: the template of each chapter is current and passes actionlint, and the
commands its workflow runs, read from the workflow itself, give a solved notebook every
point, an untouched one none, and every catalogued cheat (``tests/cheats.py``) none.

The workflow's steps are run here as GitHub Actions would run them: ``${{ github.workspace }}``
is a folder holding ``submission/`` (the student's repository) and ``grader/`` (this course);
the grading step runs in ``grader/`` with the full environment; each Classroom test runs its
command through ``/bin/sh`` in the workspace with only ``PATH`` and ``HOME``, as
``autograding-command-grader`` does, and scores its ``max-score`` when it exits 0.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from tests import cheats, tools
from utils.course import ROOT, classroom
from utils.course.chapter import Chapter, names

CHAPTER = cheats.CHAPTER


def workflow(chapter: str = CHAPTER) -> dict:
    return yaml.safe_load((ROOT / "classroom" / chapter / ".github" / "workflows" / "classroom.yml").read_text())


def expand(text: str, context: dict[str, str]) -> str:
    """``text`` with each ``${{ expression }}`` replaced as GitHub Actions would (only those we know)."""
    def value(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        assert expression in context, f"the workflow uses ${{{{ {expression} }}}}, which this test does not know"
        return context[expression]
    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def steps(flow: dict) -> tuple[dict, list[dict]]:
    """The grading step and the Classroom tests, in order."""
    (job,) = flow["jobs"].values()
    grade = next(s for s in job["steps"] if s.get("id") == "grade")
    tests = [s for s in job["steps"] if s.get("uses") == classroom.GRADER]
    return grade, tests


def workspace(folder: Path, notebooks: list[Path]) -> Path:
    """A workspace as the workflow's checkouts leave it, for each notebook one ``submission``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grader").symlink_to(ROOT, target_is_directory=True)
    for k, notebook in enumerate(notebooks):
        target = folder / f"submission{k or ''}" / "chapters" / f"{CHAPTER}.ipynb"
        target.parent.mkdir(parents=True)
        target.write_bytes(notebook.read_bytes())
    return folder


def run_grading(grade: dict, space: Path, temp: Path, notebooks: int = 1) -> subprocess.CompletedProcess[str]:
    """The grading step; with several notebooks, its one notebook argument becomes the list
    (one ``grade`` call grades them as it would each alone: each in its own process tree)."""
    context = {"github.workspace": str(space), "runner.temp": str(temp)}
    command = expand(grade["run"], context)
    if notebooks > 1:
        one = f'"{space}/submission/chapters/{CHAPTER}.ipynb"'
        assert one in command, command
        command = command.replace(one, " ".join(f'"{space}/submission{k or ""}/chapters/{CHAPTER}.ipynb"'
                                                for k in range(notebooks)))
    env = {**os.environ, **grade.get("env", {}), "PATH": _path()}
    temp.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", "-c", command], cwd=space / grade["working-directory"], env=env,
                          capture_output=True, text=True, timeout=1800)


def run_tests(tests: list[dict], space: Path, temp: Path) -> dict[str, tuple[int, str]]:
    """Each Classroom test as autograding-command-grader runs it: test name -> (points, what it printed)."""
    env = {"PATH": _path(), "HOME": os.environ.get("HOME", "/tmp"), "FORCE_COLOR": "true"}
    found = {}
    for test in tests:
        spec = test["with"]
        command = expand(spec["command"], {"runner.temp": str(temp), "github.workspace": str(space)})
        run = subprocess.run(["/bin/sh", "-c", command], cwd=space, env=env, capture_output=True, text=True,
                             timeout=60 * float(spec["timeout"]))
        found[spec["test-name"]] = (int(spec["max-score"]) if run.returncode == 0 else 0, run.stdout + run.stderr)
    return found


def _path() -> str:
    """setup-python puts its Python first on PATH: here, the course's."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def test_templates_are_current() -> None:
    for chapter in names():
        for relative, text in classroom.template(chapter).items():
            path = ROOT / "classroom" / chapter / relative
            assert path.exists() and path.read_text() == text, \
                f"{path} is out of date: run python -m utils.course classroom workflow"


def test_one_test_per_exercise_reporting_a_point_each() -> None:
    for chapter in names():
        _, tests = steps(workflow(chapter))
        exercises = list(Chapter(chapter).exercise_names)
        assert [t["with"]["test-name"] for t in tests] == exercises
        assert all(t["with"]["max-score"] == 1 for t in tests)
        (job,) = workflow(chapter)["jobs"].values()
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
    grade, tests = steps(workflow())
    solved = tmp_path / "solved.ipynb"
    solved.write_text(nbformat.writes(cheats.solved()))
    space = workspace(tmp_path / "workspace", [solved])
    started = time.perf_counter()
    graded = run_grading(grade, space, tmp_path / "runner-temp")
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    points = run_tests(tests, space, tmp_path / "runner-temp")
    print(f"the workflow's commands on a solved notebook: {time.perf_counter() - started:.0f} s")
    assert {name: p for name, (p, _) in points.items()} == {e: 1 for e in Chapter(CHAPTER).exercise_names}, points
    assert all("passed" in out for _, out in points.values())


def test_the_workflow_gives_untouched_and_cheating_notebooks_nothing(tmp_path, meta_tests) -> None:
    """The untouched notebook and every notebook of the cheat catalog, graded by the
    workflow's grading command in one call, then each scored by the Classroom tests."""
    submissions = {"untouched": cheats.untouched()}
    for k, group in enumerate(cheats.GROUPS):
        submissions[f"group{k}"] = cheats.group_notebook(group)[0]
    submissions["exit_at_top"] = cheats.exit_at_top()
    submissions["overwrite_course"] = cheats.overwrite_course(repository=cheats._sandboxed())
    files = []
    for label, nb in submissions.items():
        files.append(tmp_path / f"{label}.ipynb")
        files[-1].write_text(nbformat.writes(nb))
    grade, tests = steps(workflow())
    space = workspace(tmp_path / "workspace", files)
    temp = tmp_path / "runner-temp"
    started = time.perf_counter()
    graded = run_grading(grade, space, temp, notebooks=len(files))
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    everything = json.loads((temp / "grades.json").read_text())
    assert len(everything) == len(files)
    scored = {}
    for k, label in enumerate(submissions):
        path = f"{space}/submission{k or ''}/chapters/{CHAPTER}.ipynb"
        own = tmp_path / f"runner-temp-{label}"  # each notebook's own job: its own grades.json
        own.mkdir()
        (own / "grades.json").write_text(json.dumps({path: everything[path]}))
        scored[label] = run_tests(tests, space, own)
    print(f"the workflow's commands on {len(files)} notebooks: {time.perf_counter() - started:.0f} s")
    for label, points in scored.items():
        assert all(p == 0 for p, _ in points.values()), (label, points)
        assert all(out.strip() and "passed" not in out for _, out in points.values()), (label, points)
    untouched = scored["untouched"]
    assert all("not implemented" in out for _, out in untouched.values()), untouched


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

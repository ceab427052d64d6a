"""The three ways an instructor can grade the course, run on the same notebooks.

Each function takes submissions (label -> notebook) and returns label -> exercise -> points:

- :func:`course`: ``python -m utils.course grade`` (:func:`utils.course.grading.grade`);
- :func:`classroom`: the commands of the GitHub Classroom workflow (``classroom/<chapter>/``),
  read from the workflow and run as GitHub Actions runs them: the grading step once, then
  each Classroom test (``autograding-command-grader``: ``/bin/sh``, only ``PATH`` and ``HOME``);
- :func:`nbgrader`: real nbgrader (``tests/tools.py`` installs it): the chapter released with
  ``python -m utils.course nbgrader release``, ``nbgrader generate_assignment``, the
  submissions collected into ``submitted/<label>/``, ``nbgrader autograde``, the points read
  from its sqlite gradebook. Its kernels import the course from a copy (nbgrader sandboxes
  nothing: a submission may write the course's files), forked from a zygote
  (:mod:`utils.course.zygote`) so that a kernel starts in a second: nbgrader itself is unchanged.

:func:`submissions` makes the cheat catalog's notebooks (``tests/cheats.py``) from a base
notebook (the learner notebook, or nbgrader's released one), with a solved and an untouched one.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbformat import NotebookNode

from tests import cheats, tools
from utils.course import ROOT, classroom as classroom_template, settings
from utils.course.chapter import Chapter

CHAPTER = cheats.CHAPTER
Points = dict[str, dict[str, int]]  # label -> exercise -> points


# ---------------------------------------------------------------------------------------
# The submissions


def solved_from(base: NotebookNode) -> NotebookNode:
    """``base`` (slimmed) with every exercise cell as the solution notebook has it."""
    answers = {c.metadata["exercise"]: c.source for c in cheats.solved().cells if "exercise" in c.metadata}
    nb = cheats.slim(base)
    for c in nb.cells:
        if "exercise" in c.metadata:
            c.source = answers[c.metadata["exercise"]]
    return nb


def submissions(base: NotebookNode | None = None, sandboxed: bool = True) -> dict[str, tuple[NotebookNode, dict[str, str]]]:
    """label -> (notebook, cheat -> the exercise it aims at): solved, untouched, the five
    notebooks of the catalog's cheats, a kernel exit and a rewrite of the course's files
    (of the repository too when ``sandboxed``)."""
    base = cheats.untouched() if base is None else base
    found: dict[str, tuple[NotebookNode, dict[str, str]]] = {"solved": (solved_from(base), {}),
                                                            "untouched": (cheats.slim(base), {})}
    for k, group in enumerate(cheats.GROUPS):
        found[f"group{k}"] = cheats.group_notebook(group, base=base)
    found["exit_at_top"] = (cheats.exit_at_top(base=cheats.slim(base)), {})
    found["overwrite_course"] = (cheats.overwrite_course(repository=sandboxed, base=base), {})
    return found


# ---------------------------------------------------------------------------------------
# The course's grader


def course(notebooks: dict[str, NotebookNode], folder: Path, jobs: int | None = None) -> tuple[Points, list[Any]]:
    """label -> exercise -> points, and the scores (a class folder ``folder/<label>/<chapter>.ipynb``)."""
    from utils.course import grading

    paths = {}
    for label, nb in notebooks.items():
        paths[label] = folder / label / f"{CHAPTER}.ipynb"
        paths[label].parent.mkdir(parents=True)
        paths[label].write_text(nbformat.writes(nb))
    scores = grading.grade(list(paths.values()), chapter=CHAPTER, jobs=jobs, cell_timeout=cheats.CELL_TIMEOUT,
                           seed_offset=cheats.SEED_OFFSET)
    by_path = {str(s.notebook): s for s in scores}
    return {label: {e: int(x.passed) for e, x in by_path[str(p)].exercises.items()} for label, p in paths.items()}, scores


# ---------------------------------------------------------------------------------------
# GitHub Classroom


def workflow(chapter: str = CHAPTER) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "classroom" / chapter / ".github" / "workflows" / "classroom.yml").read_text())


def expand(text: str, context: dict[str, str]) -> str:
    """``text`` with each ``${{ expression }}`` replaced as GitHub Actions would (only those given)."""
    def value(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression not in context:
            raise AssertionError(f"the workflow uses ${{{{ {expression} }}}}, which this runner does not know")
        return context[expression]
    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def steps(flow: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grading step and the Classroom tests, in order."""
    (job,) = flow["jobs"].values()
    grade = next(s for s in job["steps"] if s.get("id") == "grade")
    return grade, [s for s in job["steps"] if s.get("uses") == classroom_template.GRADER]


def python_path() -> str:
    """setup-python puts its Python first on PATH: here, the course's."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def run_grading_step(space: Path, temp: Path, count: int = 1) -> subprocess.CompletedProcess[str]:
    """The workflow's grading step in ``space`` (``submission/`` and ``grader/``). With
    ``count`` > 1, its one notebook argument becomes ``submission``, ``submission1``, ...:
    one ``grade`` call grades each as it would alone, in its own process tree."""
    grade, _ = steps(workflow())
    command = expand(grade["run"], {"github.workspace": str(space), "runner.temp": str(temp)})
    if count > 1:
        one = f'"{space}/submission/chapters/{CHAPTER}.ipynb"'
        assert one in command, command
        command = command.replace(one, " ".join(f'"{space}/submission{k or ""}/chapters/{CHAPTER}.ipynb"'
                                                for k in range(count)))
    temp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **grade.get("env", {}), "PATH": python_path()}
    return subprocess.run(["bash", "-c", command], cwd=space / grade["working-directory"], env=env,
                          capture_output=True, text=True, timeout=3600)


def run_classroom_tests(space: Path, temp: Path) -> dict[str, tuple[int, str]]:
    """Each Classroom test as autograding-command-grader runs it: name -> (points, what it printed)."""
    _, tests = steps(workflow())
    env = {"PATH": python_path(), "HOME": os.environ.get("HOME", "/tmp"), "FORCE_COLOR": "true"}
    found = {}
    for test in tests:
        spec = test["with"]
        command = expand(spec["command"], {"runner.temp": str(temp), "github.workspace": str(space)})
        run = subprocess.run(["/bin/sh", "-c", command], cwd=space, env=env, capture_output=True, text=True,
                             timeout=60 * float(spec["timeout"]))
        found[spec["test-name"]] = (int(spec["max-score"]) if run.returncode == 0 else 0, run.stdout + run.stderr)
    return found


def workspace(folder: Path, notebooks: list[NotebookNode]) -> Path:
    """A workspace as the workflow's two checkouts leave it: ``grader/`` (this course) and,
    for each notebook, a ``submission`` whose ``chapters/`` holds it."""
    folder.mkdir(parents=True)
    (folder / "grader").symlink_to(ROOT, target_is_directory=True)
    for k, nb in enumerate(notebooks):
        target = folder / f"submission{k or ''}" / "chapters" / f"{CHAPTER}.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(nbformat.writes(nb))
    return folder


def classroom(notebooks: dict[str, NotebookNode], folder: Path) -> tuple[Points, dict[str, dict[str, str]]]:
    """label -> exercise -> points, and what each test printed, through the workflow's commands
    (its grading step once for every notebook; each notebook's tests on its own grades.json)."""
    space = workspace(folder / "workspace", list(notebooks.values()))
    temp = folder / "runner-temp"
    graded = run_grading_step(space, temp, count=len(notebooks))
    if graded.returncode != 0:
        raise AssertionError(f"the grading step failed: {graded.stdout[-2000:]}{graded.stderr[-2000:]}")
    everything = json.loads((temp / "grades.json").read_text())
    points: Points = {}
    printed: dict[str, dict[str, str]] = {}
    for k, label in enumerate(notebooks):
        path = f"{space}/submission{k or ''}/chapters/{CHAPTER}.ipynb"
        own = folder / f"runner-temp-{label}"  # as in its own job: a grades.json of its own
        own.mkdir()
        (own / "grades.json").write_text(json.dumps({path: everything[path]}))
        found = run_classroom_tests(space, own)
        points[label] = {e: p for e, (p, _) in found.items()}
        printed[label] = {e: out for e, (_, out) in found.items()}
    return points, printed


# ---------------------------------------------------------------------------------------
# nbgrader


def nbgrader_env(folder: Path, code: Path) -> dict[str, str]:
    """nbgrader's environment: the tool, the course copy its kernels import, no strict switch
    (the released check cells are strict by themselves), Jupyter's folders under ``folder``."""
    base = {k: v for k, v in os.environ.items() if k != settings.STRICT}
    base["PYTHONPATH"] = str(code)
    env = tools.environment("nbgrader", base)
    env.update(JUPYTER_PATH=str(folder / "jupyter"), JUPYTER_CONFIG_DIR=str(folder / "jupyter-config"),
               JUPYTER_DATA_DIR=str(folder / "jupyter"), JUPYTER_RUNTIME_DIR=str(folder / "jupyter-runtime"),
               IPYTHONDIR=str(folder / "ipython"), MPLCONFIGDIR=str(folder / "matplotlib"), HF_HUB_OFFLINE="1")
    return env


def nbgrader_course(folder: Path, chapter: str = CHAPTER) -> tuple[Path, dict[str, str], NotebookNode]:
    """An nbgrader course in ``folder/course`` with ``chapter`` released; its folder, the
    environment to run nbgrader in, and the released notebook students get."""
    from utils.course import nbgrader as release
    from utils.course.grading.worker import snapshot

    code, _ = snapshot(folder / "code")  # what the kernels import (a submission may rewrite it)
    root = folder / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        "c.CourseDirectory.course_id = 'sae-circuits'\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{root}/gradebook.db'\n"
        f"c.Execute.timeout = {cheats.CELL_TIMEOUT}\n")
    env = nbgrader_env(folder, code)
    release.release(chapter, root)
    nbgrader_cli(["generate_assignment", chapter, "--create"], root, env)
    return root, env, nbformat.read(root / "release" / chapter / f"{chapter}.ipynb", as_version=4)


def nbgrader_cli(args: list[str], root: Path, env: dict[str, str], check: bool = True) -> str:
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True,
                         text=True, timeout=3600)
    if check and run.returncode != 0:
        raise AssertionError(f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run.stdout + run.stderr


def nbgrader(notebooks: dict[str, NotebookNode], folder: Path, root: Path, env: dict[str, str],
             chapter: str = CHAPTER) -> tuple[Points, list[str]]:
    """Collect ``notebooks`` (label = student) into ``root``, autograde them with nbgrader, read
    label -> exercise -> points from its gradebook; and the course files a submission changed."""
    from utils.course.grading.worker import hashes, start_zygote, stop, zygote_ready

    code = Path(env["PYTHONPATH"].split(os.pathsep)[-1])
    before = hashes(code, ("utils", "tests", "solutions"))
    for label, nb in notebooks.items():
        target = root / "submitted" / label / chapter / f"{chapter}.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(nbformat.writes(nb))
    batch = Path(tempfile.mkdtemp(prefix="zygote-", dir=folder))
    zygote = start_zygote(batch, {"course": str(code), "threads": 1})
    try:
        sock = zygote_ready(zygote, batch)
        assert sock, "the zygote did not start"
        spec = folder / "jupyter" / "kernels" / "python3" / "kernel.json"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps({"argv": [sys.executable, "-m", "utils.course.zygote", "run", sock, "kernel", "",
                                             "-f", "{connection_file}"],
                                    "display_name": "Python 3", "language": "python"}))
        # It goes on past a submission it cannot grade (a dead kernel), and exits 1 at the end.
        log = nbgrader_cli(["autograde", chapter, "--create"], root, env, check=False)
    finally:
        stop(zygote)
    points = read_gradebook(root, chapter, list(notebooks), env)
    for label, found in points.items():
        if found is None:
            if f"for student '{label}'" not in log:
                raise AssertionError(f"nbgrader recorded nothing for {label}:\n{log[-3000:]}")
            points[label] = dict.fromkeys(Chapter(chapter).exercise_names, 0)  # nbgrader failed it: no points
    changed = sorted(k for k, v in hashes(code, before.keys()).items() if before.get(k) != v)
    return points, changed


def read_gradebook(root: Path, chapter: str, students: list[str], env: dict[str, str]) -> Points:
    """label -> exercise -> points, read from nbgrader's sqlite gradebook by its own API."""
    script = ("import json, sys\nfrom nbgrader.api import Gradebook\n"
              f"out = {{}}\nwith Gradebook('sqlite:///{root}/gradebook.db') as gb:\n"
              f"    for s in {students!r}:\n"
              "        try:\n"
              f"            nb = gb.find_submission_notebook({chapter!r}, {chapter!r}, s)\n"
              "        except Exception:  # MissingEntry: nbgrader could not grade it\n"
              "            out[s] = None\n"
              "            continue\n"
              "        out[s] = {g.name: g.score for g in nb.grades}\n"
              "json.dump(out, sys.stdout)\n")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise AssertionError(f"reading nbgrader's gradebook failed: {run.stderr[-2000:]}")
    grades = json.loads(run.stdout)
    exercises = Chapter(chapter).exercise_names
    return {s: None if grades[s] is None else {e: int(grades[s][f"check_{e}"] or 0) for e in exercises}
            for s in students}  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# What each path stops


def stopped(points: Points, catalog: dict[str, tuple[NotebookNode, dict[str, str]]]) -> dict[str, bool]:
    """cheat -> whether it gained nothing (its exercise scored 0; for the notebooks of their
    own, every exercise), for the catalog's cheats, the kernel exit and the course rewrite."""
    found = {}
    for label, (_, targets) in catalog.items():
        for name, exercise in targets.items():
            found[name] = points[label][exercise] == 0
    for label in ("exit_at_top", "overwrite_course"):
        found[label] = not any(points[label].values())
    return found

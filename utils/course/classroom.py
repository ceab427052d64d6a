"""GitHub Classroom: ``python -m utils.course classroom workflow|points ...``.

A Classroom assignment is a template repository; every student's copy runs the template's
workflow in GitHub Actions on each push, on runners the instructor does not manage. The
course's template (``classroom/<chapter>/.github/workflows/classroom.yml``, written by
``classroom workflow CHAPTER``) does what ``python -m utils.course grade`` does on the
instructor's machine, with the same guarantees:

1. checks out the student's repository (``submission/``) and, separately, the course at the
   ref the instructor pins (``grader/``): the grader, checks and known outputs come from the
   instructor's copy, never from the student's;
2. installs the course and grades ``submission/chapters/<chapter>.ipynb`` once, with
   ``python -m utils.course grade ... --json $RUNNER_TEMP/grades.json`` (restored, screened,
   sandboxed and re-checked as always);
3. has one Classroom test per exercise, ``classroom points GRADES EXERCISE``, worth one point:
   it passes when that exercise passed and prints the reason when it did not;
4. reports the points with Classroom's reporter.

``.github/classroom/autograding.json`` beside it holds the same tests in the format of
Classroom's earlier autograder (``education/autograding``), for classrooms that still use it.
What the workflow cannot stop: the student owns the copy, workflow included; see README.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPORTER = "classroom-resources/autograding-grading-reporter@v1"
GRADER = "classroom-resources/autograding-command-grader@v1"
RESULTS = "${{ runner.temp }}/grades.json"  # emptied at the start of every job: nothing the student commits
PYTHON = "3.11"
TORCH = "torch==2.13.0"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


# ---------------------------------------------------------------------------------------
# The template


def step_id(exercise: str) -> str:
    return exercise.replace("_", "-")


def grade_command(chapter: str) -> str:
    """What the workflow runs, in ``grader/``, to grade the student's notebook once."""
    notebook = "${{ github.workspace }}/submission/chapters/" + f"{chapter}.ipynb"
    return f'python -m utils.course grade "{notebook}" --chapter {chapter} --json "{RESULTS}"'


def points_command(exercise: str) -> str:
    """What each Classroom test runs (in the workspace, with PATH and HOME only)."""
    return f'cd grader && python -m utils.course classroom points "{RESULTS}" {exercise}'


def workflow(chapter: str, repository: str, ref: str) -> str:
    """The workflow of ``chapter``'s assignment, as YAML text."""
    from utils.course.chapter import Chapter

    exercises = list(Chapter(chapter).exercise_names)
    lines = [
        f"# GitHub Classroom autograding for {chapter}: written by `python -m utils.course classroom workflow {chapter}`.",
        "# The grader comes from the course at COURSE_REF (pin a tag or commit), not from the student's copy.",
        "name: Autograding Tests",
        "\"on\":",
        "  - push",
        "  - workflow_dispatch",
        "  - repository_dispatch",
        "permissions:",
        "  checks: write",
        "  actions: read",
        "  contents: read",
        "env:",
        f"  COURSE_REPOSITORY: {repository}",
        f"  COURSE_REF: {ref}",
        "jobs:",
        "  run-autograding-tests:",
        "    runs-on: ubuntu-latest",
        "    if: github.actor != 'github-classroom[bot]'",
        "    timeout-minutes: 60",
        "    steps:",
        "      - name: Check out the submission",
        "        uses: actions/checkout@v5",
        "        with:",
        "          path: submission",
        "      - name: Check out the course's grader",
        "        uses: actions/checkout@v5",
        "        with:",
        "          repository: ${{ env.COURSE_REPOSITORY }}",
        "          ref: ${{ env.COURSE_REF }}",
        "          path: grader",
        "      - uses: actions/setup-python@v6",
        "        with:",
        f"          python-version: \"{PYTHON}\"",
        "          cache: pip",
        "          cache-dependency-path: grader/requirements*.txt",
        "      - name: Install the course",
        "        run: |",
        f"          python -m pip install {TORCH} --index-url {TORCH_INDEX}",
        "          python -m pip install -r grader/requirements.txt",
        "      - name: Grade the notebook",
        "        id: grade",
        "        working-directory: grader",
        "        env:",
        "          HF_HUB_OFFLINE: \"1\"",
        f"        run: {grade_command(chapter)}",
    ]
    for exercise in exercises:
        lines += [
            f"      - name: {exercise}",
            f"        id: {step_id(exercise)}",
            f"        uses: {GRADER}",
            "        with:",
            f"          test-name: {exercise}",
            f"          command: {points_command(exercise)}",
            "          timeout: 1",
            "          max-score: 1",
        ]
    lines += ["      - name: Autograding Reporter", f"        uses: {REPORTER}", "        env:"]
    lines += [f"          {step_id(e).upper()}_RESULTS: \"${{{{ steps.{step_id(e)}.outputs.result }}}}\"" for e in exercises]
    lines += ["        with:", f"          runners: {','.join(map(step_id, exercises))}"]
    return "\n".join(lines) + "\n"


def autograding(chapter: str) -> str:
    """The same tests for Classroom's earlier autograder: the first one's setup installs and grades."""
    from utils.course.chapter import Chapter

    setup = (f"python -m pip install {TORCH} --index-url {TORCH_INDEX} && python -m pip install -r grader/requirements.txt"
             f" && cd grader && HF_HUB_OFFLINE=1 {grade_command(chapter)}")
    tests = [{"name": e, "setup": setup if k == 0 else "", "run": points_command(e), "input": "", "output": "",
              "comparison": "included", "timeout": 60 if k == 0 else 1, "points": 1}
             for k, e in enumerate(Chapter(chapter).exercise_names)]
    return json.dumps({"tests": tests}, indent=2) + "\n"


def template(chapter: str) -> dict[str, str]:
    """Relative path -> text of ``chapter``'s template files."""
    from utils.course.source import repository_url

    repository = repository_url().removeprefix("https://github.com/")
    return {".github/workflows/classroom.yml": workflow(chapter, repository, "main"),
            ".github/classroom/autograding.json": autograding(chapter)}


# ---------------------------------------------------------------------------------------
# One test's points


def points(results: Path, exercise: str) -> tuple[bool, str]:
    """Did ``exercise`` pass in ``results`` (the JSON that ``grade --json`` wrote for one
    notebook)? And the line to print."""
    try:
        graded = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return False, f"{exercise}: no grades to read ({error}): did the grading step fail?"
    if len(graded) != 1:
        return False, f"{exercise}: expected the grades of one notebook in {results}, found {len(graded)}"
    (result,) = graded.values()
    if result.get("error"):
        return False, f"{exercise}: the notebook was not graded: {result['error']}"
    exercises = result.get("exercises", {})
    if exercise not in exercises:
        return False, f"{exercise}: not an exercise of {result.get('chapter')} (expected one of {sorted(exercises)})"
    if exercises[exercise]["passed"]:
        return True, f"\N{CHECK MARK} {exercise}: passed"
    return False, f"\N{BALLOT X} {exercise}: {exercises[exercise]['reason']}"


# ---------------------------------------------------------------------------------------
# The command


def arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    write = sub.add_parser("workflow", help="write a chapter's assignment template (workflow and autograding.json)")
    write.add_argument("chapters", nargs="*", help="chapters (default: all)")
    write.add_argument("--out", type=Path, help="write into OUT/<chapter>/ (default: classroom/ of the course)")
    write.add_argument("--check", action="store_true", help="fail if the files there differ, write nothing")
    score = sub.add_parser("points", help="one Classroom test: exit 0 if EXERCISE passed in GRADES")
    score.add_argument("results", type=Path, help="the JSON that `grade --json` wrote for the notebook")
    score.add_argument("exercise")


def run(args: argparse.Namespace) -> int:
    if args.action == "points":
        passed, line = points(args.results, args.exercise)
        print(line)
        return 0 if passed else 1
    from utils.course import ROOT
    from utils.course.chapter import Chapter, names

    out = args.out or ROOT / "classroom"
    stale = []
    for chapter in [Chapter.get(c).name for c in args.chapters] or names():
        for relative, text in template(chapter).items():
            path = out / chapter / relative
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run `python -m utils.course classroom workflow`):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


def expressions(text: str) -> set[str]:
    """The ``${{ ... }}`` expressions in ``text``."""
    return {m.strip() for m in re.findall(r"\$\{\{(.*?)\}\}", text)}

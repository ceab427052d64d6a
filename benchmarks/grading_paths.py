"""Which cheats each way of grading stops: ``python -m utils.course bench grading_paths``.

Runs the cheat catalog of ``tests/cheats.py`` (five notebooks of five cheats each, a kernel
exit, a rewrite of the course's files), a solved and an untouched chapter-00 notebook
through the three paths of ``tests/grading_paths.py``: the course's grader (``python -m
utils.course grade``), the GitHub Classroom workflow's commands, and real nbgrader (release,
``generate_assignment``, ``autograde``, points from its gradebook; the catalog applied to
nbgrader's released notebook). A cheat is *stopped* when the exercise it aims at scores 0
(the notebooks start unsolved, so whatever scores is what the cheat gained). Prints one
JSON object, then the table README's grading section holds (markdown). With ``--samples
FOLDER``, writes there the gradebook of the course grader's run in both layouts
(``gradebook-canvas.csv``, ``gradebook-moodle.csv``) and its feedback pages (``feedback/``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", nargs="+", default=["course", "classroom", "nbgrader"],
                        choices=["course", "classroom", "nbgrader"], help="which paths to run (default: all three)")
    parser.add_argument("--samples", type=Path, help="write the course grader's gradebooks and feedback pages here")


def main(args: argparse.Namespace) -> None:
    from tests import cheats, grading_paths

    results, seconds, changed = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="sae-bench-paths-") as tmp:
        folder = Path(tmp)
        learner = grading_paths.submissions(sandboxed=cheats._sandboxed())
        notebooks = {label: nb for label, (nb, _) in learner.items()}
        for path in args.paths:
            started = time.perf_counter()
            (folder / path).mkdir()
            if path == "course":
                results[path], scores = grading_paths.course(notebooks, folder / path)
                if args.samples:
                    write_samples(scores, folder / path, args.samples)
            elif path == "classroom":
                results[path], _ = grading_paths.classroom(notebooks, folder / path)
            else:
                root, env, released = grading_paths.nbgrader_course(folder / path)
                theirs = {k: nb for k, (nb, _) in grading_paths.submissions(base=released, sandboxed=False).items()}
                # The course rewrite last, and alone but for the student graded after it: it
                # changes what every later submission's kernel imports.
                rewrite = {"overwrite_course": theirs.pop("overwrite_course"), "untouched_next": theirs["untouched"]}
                results[path], _ = grading_paths.nbgrader(theirs, folder / path, root, env)
                after, changed[path] = grading_paths.nbgrader(rewrite, folder / path, root, env)
                results[path].update(after)
            seconds[path] = round(time.perf_counter() - started, 1)
    stops = {path: grading_paths.stopped(points, learner) for path, points in results.items()}
    print(json.dumps({"points": results, "stopped": stops, "seconds": seconds, "changed_course_files": changed}))
    print(table(stops, results, changed))


def write_samples(scores: list, root: Path, out: Path) -> None:
    """The class's gradebook in both layouts and its feedback pages, paths shown relative to the class folder."""
    from utils.course.grading.gradebook import write_feedback, write_gradebook

    out.mkdir(parents=True, exist_ok=True)
    for layout in ("canvas", "moodle"):
        write_gradebook(scores, out / f"gradebook-{layout}.csv", [root], layout)
    write_feedback(scores, out / "feedback", [root])
    print(f"samples written to {out}")


NAMES = {"course": "`grade` (course grader)", "classroom": "GitHub Classroom workflow", "nbgrader": "nbgrader 0.9.6"}


def table(stops: dict[str, dict[str, bool]], results: dict, changed: dict[str, list[str]]) -> str:
    from tests import cheats

    what = {c.name: c.what for c in cheats.CHEATS}
    what["exit_at_top"] = "exited the kernel (`os._exit`) right after the setup cell"
    what["overwrite_course"] = "rewrote the course's checks module and known outputs from a cell"
    paths = list(stops)
    lines = ["| cheat | what the learner did | " + " | ".join(NAMES[p] for p in paths) + " |",
             "|---|---|" + "---|" * len(paths)]
    for name in [*what]:
        marks = []
        for p in paths:
            mark = "stopped" if stops[p][name] else "**scores**"
            if name == "overwrite_course" and changed.get(p):
                later = results[p]["untouched_next"]
                mark += (f" (it rewrote the course's files: the next student's untouched notebook then scored "
                         f"{sum(later.values())}/{len(later)})")
            marks.append(mark)
        lines.append(f"| `{name}` | {what[name]} | " + " | ".join(marks) + " |")
    lines.append("| | solved notebook / untouched notebook | " + " | ".join(
        f"{sum(results[p]['solved'].values())}/{len(results[p]['solved'])} / "
        f"{sum(results[p]['untouched'].values())}/{len(results[p]['untouched'])}" for p in paths) + " |")
    lines.append("| | cheats stopped | " + " | ".join(f"{sum(stops[p].values())} of {len(stops[p])}" for p in paths) + " |")
    return "\n".join(lines)

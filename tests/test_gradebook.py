"""A class's gradebook and feedback pages (``utils/course/grading/gradebook.py``): who handed a
notebook in, the CSV layouts Canvas and Moodle import, and self-contained feedback pages.
The scores here are made by hand (what the grader reports is tested in test_grading and
test_cheats); the layouts follow Canvas's gradebook importer and Moodle's CSV grade import.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from utils.course.grading.gradebook import CANVAS_IDENTITY, student_name, students, write_feedback, write_gradebook
from utils.course.grading.report import Exercise, Score

CH0, CH1 = "ch00_toolkit", "ch01_attribution"


def score(path: Path, chapter: str | None, passed: dict[str, bool] | None = None, error: str = "") -> Score:
    from utils.course.chapter import Chapter

    s = Score(path, chapter=chapter, error=error)
    if chapter:
        for name in Chapter(chapter).exercise_names:
            ok = bool(passed and passed.get(name))
            s.exercises[name] = Exercise(passed=ok, reason="" if ok else f"its check failed: {name} <wrong> & off")
    return s


@pytest.mark.parametrize("relative,chapter,expected", [
    ("alice/ch00_toolkit.ipynb", CH0, "alice"),
    ("ch00_toolkit/bob.ipynb", CH0, "bob"),
    ("carol_ch00_toolkit.ipynb", CH0, "carol"),
    ("ch00_toolkit-dave.ipynb", CH0, "dave"),
    ("erin.ipynb", CH0, "erin"),
    ("section1/frank/ch01_attribution.ipynb", CH1, "section1/frank"),
    ("grace/notes.ipynb", None, "grace"),
    ("heidi/ch00_toolkit_v2.ipynb", CH0, "heidi"),
])
def test_student_is_the_path_without_the_chapter(relative: str, chapter: str | None, expected: str, tmp_path) -> None:
    assert student_name(tmp_path / relative, [tmp_path], chapter) == expected


def test_a_notebook_given_alone_is_named_by_its_folder(tmp_path) -> None:
    assert student_name(tmp_path / "heidi" / "ch00_toolkit.ipynb", [tmp_path / "heidi" / "ch00_toolkit.ipynb"], CH0) == "heidi"


def class_scores(root: Path) -> list[Score]:
    all_ch0 = {"top_k_latents": True, "latent_logit_effects": True, "max_activating_contexts": True,
               "reconstruction_metrics": True, "latent_aurocs": True}
    return [
        score(root / "alice" / f"{CH0}.ipynb", CH0, all_ch0),
        score(root / "alice" / f"{CH1}.ipynb", CH1, {}),
        score(root / "bob" / f"{CH0}.ipynb", CH0, {"top_k_latents": True}),
        score(root / "bob" / f"{CH0}_v2.ipynb", CH0, {"top_k_latents": True, "latent_aurocs": True}),
        score(root / "carol" / f"{CH0}.ipynb", CH0, error="an empty file (was the notebook saved?)"),
        score(root / "dave" / "notes.ipynb", None, error="no exercise of any chapter of this course in it"),
    ]


def read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_canvas_layout(tmp_path) -> None:
    scores = class_scores(tmp_path)
    out = tmp_path / "canvas.csv"
    write_gradebook(scores, out, [tmp_path], "canvas")
    header, points, *rows = read(out)
    # What Canvas's importer requires: Student, ID, (SIS User ID, SIS Login ID), Section, custom
    # columns (Notes), then one column per assignment; a "Points Possible" row is read as such.
    assert header[:5] == CANVAS_IDENTITY and header[5] == "Notes"
    assert header[6:] == [CH0, *(f"{CH0}: {e}" for e in ("top_k_latents", "latent_logit_effects",
                          "max_activating_contexts", "reconstruction_metrics", "latent_aurocs")),
                          CH1, *(f"{CH1}: {e}" for e in score(Path("x"), CH1).exercises)]
    assert points[0] == "Points Possible" and points[6] == "100" and points[7] == "1"
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(table) == ["alice", "bob", "carol", "dave"]
    assert all(len(r) == len(header) for r in rows)
    alice, bob, carol, dave = table.values()
    assert alice["SIS Login ID"] == "alice" and alice[CH0] == "100" and alice[CH1] == "0"
    assert alice[f"{CH1}: logit_diff"] == "0"
    assert bob[CH0] == "40" and bob[f"{CH0}: latent_aurocs"] == "1" and bob[CH1] == ""  # not handed in: no change
    assert "two notebooks" in bob["Notes"] and "kept the better, 40%" in bob["Notes"]
    assert "latent_logit_effects: FAIL: its check failed: latent_logit_effects <wrong> & off" in bob["Notes"]
    assert carol[CH0] == "0" and "an empty file" in carol["Notes"]
    assert all(carol[f"{CH0}: {e}"] == "0" for e in score(Path("x"), CH0).exercises)
    assert "not graded" in dave["Notes"] and dave[CH0] == ""


def test_moodle_layout(tmp_path) -> None:
    out = tmp_path / "moodle.csv"
    write_gradebook(class_scores(tmp_path), out, [tmp_path], "moodle")
    header, *rows = read(out)
    assert header[0] == "Username" and header[-2:] == [f"{CH0} feedback", f"{CH1} feedback"]
    assert [r[0] for r in rows] == ["alice", "bob", "carol", "dave"]  # no Points Possible row: Moodle would refuse it
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert table["bob"][CH0] == "40" and "latent_aurocs" not in table["bob"][f"{CH0} feedback"].split("FAIL")[0]
    assert "reconstruction_metrics: FAIL" in table["bob"][f"{CH0} feedback"]
    assert table["alice"][f"{CH0} feedback"] == f"{CH0}: 100%"
    for r in rows:  # every grade a number (or empty: no change)
        for column in header[1:-2]:
            value = dict(zip(header, r))[column]
            assert value == "" or float(value) >= 0


def test_unknown_layout_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown gradebook layout"):
        write_gradebook(class_scores(tmp_path), tmp_path / "x.csv", [tmp_path], "blackboard")


def test_feedback_pages_are_self_contained_and_say_why(tmp_path) -> None:
    pages = write_feedback(class_scores(tmp_path), tmp_path / "feedback", [tmp_path])
    assert sorted(pages) == ["alice", "bob", "carol", "dave"]
    bob = pages["bob"].read_text()
    assert "PASS" in bob and "FAIL" in bob and "latent_logit_effects &lt;wrong&gt; &amp; off" in bob
    assert "<wrong>" not in bob
    for page in pages.values():
        text = page.read_text().lower()
        assert "<script" not in text and "http" not in text and "<link" not in text and "src=" not in text
    assert "an empty file" in pages["carol"].read_text()
    assert students(class_scores(tmp_path), [tmp_path])["bob"].chapters[CH0].fraction == 0.4


ROSTER = '''Student,ID,SIS User ID,SIS Login ID,Section,ch00_toolkit (123)
    Points Possible,,,,,100
"Alice Ames",101,S-1,alice,Section A,
"Bob Burns",102,S-2,bburns,Section A,
"Carol Cole",103,S-3,ccole,Section B,
"Zed Zimmer",109,S-9,zzimmer,Section B,
"Student, Test",999,,test,Section A,
'''


def test_canvas_roster_gives_each_row_its_identity(tmp_path) -> None:
    roster = tmp_path / "export.csv"
    roster.write_text(ROSTER)
    root = tmp_path / "class"
    scores = [score(root / "alice" / f"{CH0}.ipynb", CH0, {"top_k_latents": True}),  # by SIS Login ID
              score(root / f"burnsbob_102_7781_{CH0}.ipynb", CH0, {}),  # as Canvas names a bulk download: by ID
              score(root / "S-3" / f"{CH0}.ipynb", CH0, {}),  # by SIS User ID
              score(root / "mallory" / f"{CH0}.ipynb", CH0, {})]  # in no row
    out = tmp_path / "canvas.csv"
    write_gradebook(scores, out, [root], "canvas", roster)
    header, _, *rows = read(out)
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert [table["Alice Ames"][k] for k in CANVAS_IDENTITY] == ["Alice Ames", "101", "S-1", "alice", "Section A"]
    assert table["Alice Ames"][CH0] == "20"
    assert table["Bob Burns"]["ID"] == "102" and table["Bob Burns"][CH0] == "0"
    assert table["Carol Cole"]["SIS Login ID"] == "ccole"
    assert table["Zed Zimmer"][CH0] == "" and "no notebook" in table["Zed Zimmer"]["Notes"]
    assert "not in the roster" in table["mallory"]["Notes"]
    assert "Student, Test" not in table and len(rows) == 5


def test_a_roster_that_is_not_a_canvas_export_is_refused(tmp_path) -> None:
    roster = tmp_path / "export.csv"
    roster.write_text("name,email\nalice,a@example.org\n")
    with pytest.raises(ValueError, match="not a Canvas gradebook export"):
        write_gradebook(class_scores(tmp_path), tmp_path / "x.csv", [tmp_path], "canvas", roster)
    with pytest.raises(ValueError, match="Canvas export"):
        write_gradebook(class_scores(tmp_path), tmp_path / "x.csv", [tmp_path], "moodle", roster)

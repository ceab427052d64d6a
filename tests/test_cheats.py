"""The grader cannot be fooled (issue 8 §4), and grades honestly.

Each chapter's solution notebook scores 100 % and its untouched learner notebook 0 %, every
other cell still running (graded in the catalog's batch).

Every cheat of ``tests/cheats.py`` scores nothing and the report blames the exercise it
aimed at; a cell that never returns, a kernel that exits and an attempt to overwrite the
course score nothing and harm nobody; an honest notebook saved by ``nbstripout
--keep-output`` scores what it earns; each malformed submission gets one clear row while
the batch goes on. The catalog is graded once (``cheats.graded()``), a few submissions at a time.
"""
from __future__ import annotations

import pytest

from tests import cheats
from utils.course import grading
from utils.course.chapter import Chapter, names

CASES = [(name, k) for k, group in enumerate(cheats.GROUPS) for name in group if name is not None]


@pytest.fixture(scope="module")
def catalog() -> tuple[dict[str, grading.Score], dict]:
    scores, paths, seconds = cheats.graded()
    print(f"graded the catalog ({len(paths)} submissions) in {seconds:.0f} s")
    return scores, paths


@pytest.mark.parametrize("chapter", names())
def test_solution_scores_full_and_untouched_scores_zero(chapter: str, tmp_path, catalog, meta_tests) -> None:
    scores, _ = catalog
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


def test_every_cheat_has_a_case() -> None:
    assert len(CASES) == len(cheats.CHEATS) >= 15
    assert sorted(n for n, _ in CASES) == sorted(cheats.BY_NAME)


@pytest.mark.parametrize("name,group", CASES, ids=[n for n, _ in CASES])
def test_cheat_scores_nothing_and_is_named(name: str, group: int, catalog, meta_tests) -> None:
    scores, _ = catalog
    score = scores[f"group{group}"]
    _, targets = cheats.group_notebook(cheats.GROUPS[group])
    exercise = score.exercises[targets[name]]
    assert not exercise.passed, f"{name} scored {targets[name]}"
    assert exercise.tampered or exercise.notes, f"the report does not say {targets[name]} looked tampered with"


@pytest.mark.parametrize("group", range(len(cheats.GROUPS)))
def test_cheat_notebooks_score_zero(group: int, catalog, meta_tests) -> None:
    score = catalog[0][f"group{group}"]
    assert not score.error and score.fraction == 0.0, grading.table([score])


def test_kernel_exit_at_the_top_scores_zero(catalog, meta_tests) -> None:
    score = catalog[0]["exit_at_top"]
    assert score.fraction == 0.0 and len(score.exercises) == 5
    assert all("the kernel died in cell" in e.reason for e in score.exercises.values())
    assert all(e.tampered for e in score.exercises.values())
    assert score.seconds < cheats.CELL_TIMEOUT, "a dead kernel must be noticed at once, not after the cell's time limit"


def test_overwriting_the_course_is_refused(catalog, meta_tests) -> None:
    score = catalog[0]["overwrite_course"]
    assert score.fraction == 0.0 and all(e.tampered for e in score.exercises.values())
    assert not any("changed while" in note for note in score.notes), "the course itself must be untouched"


def test_a_cell_that_never_returns_fails_its_exercise_and_those_after(catalog, meta_tests) -> None:
    score = catalog[0]["endless"]
    first, second, *later = score.exercises.values()
    assert first.passed, first.reason
    assert not second.passed and "Timeout" in second.reason
    assert all(not e.passed and "timed out" in e.reason for e in later)


def test_honest_notebook_with_cleared_execution_counts_scores_full(catalog, meta_tests) -> None:
    score = catalog[0]["honest_stripped"]
    assert score.fraction == 1.0, grading.table([score])
    assert not score.tampered and not any(e.notes for e in score.exercises.values())


def test_results_are_keyed_by_path(catalog, meta_tests) -> None:
    scores, paths = catalog
    assert len({str(s.notebook) for s in scores.values()}) == len(paths)
    assert {str(s.notebook) for s in scores.values()} == {str(p) for p in paths.values()}
    honest, exited = scores["honest_stripped"], scores["exit_at_top"]
    assert ".".join(honest.notebook.parts[-3:]) == ".".join(exited.notebook.parts[-4:])  # one JUnit class name
    assert (honest.fraction, exited.fraction) == (1.0, 0.0)
    odd = scores["group0"]
    assert "::" in odd.notebook.name and not odd.error and len(odd.exercises) == 5


@pytest.mark.parametrize("name", list(cheats.MALFORMED) + ["missing.ipynb"])
def test_malformed_submission_gets_one_clear_row(name: str, catalog, meta_tests) -> None:
    scores, _ = catalog
    score = scores[name]
    expected = cheats.MALFORMED[name][1] if name in cheats.MALFORMED else "no such file"
    assert expected in score.error and score.fraction == 0.0
    row = [line for line in grading.table([score]).splitlines() if str(score.notebook) in line]
    assert len(row) == 1 and expected in row[0]


def test_recheck_alone_catches_what_passes_a_tampered_kernel(meta_tests) -> None:
    """Without the static screen, the re-check in a clean process fails every cheat that
    lives in an exercise cell, and an honest neighbour still passes."""
    exercises = cheats.grading_exercises(cheats.CHAPTER)
    plan = dict(zip(exercises, ["import_reference", "wrap_reference", "not_strict_checking", None,
                                "replay_known_outputs"]))
    nb, solved = cheats.untouched(), cheats.solved()
    sources = {}
    for exercise, name in plan.items():
        if name is None:
            sources[exercise] = cheats.cell(solved, "exercise", exercise).source
        else:
            cheats.BY_NAME[name].apply(nb, exercise, cheats.CHAPTER)
            sources[exercise] = cheats.cell(nb, "exercise", exercise).source
    results = grading.recheck_sources(cheats.CHAPTER, sources, seed_offset=cheats.SEED_OFFSET)
    for exercise, name in plan.items():
        result = results[exercise]
        if name is None:
            assert result["passed"] and not result["tampered"], result
        else:
            assert not result["passed"], (name, result)


def test_without_landlock_a_changed_course_copy_is_caught(tmp_path, meta_tests) -> None:
    path = tmp_path / f"{cheats.CHAPTER}.ipynb"
    path.write_text(cheats.nbformat.writes(cheats.overwrite_course(repository=False)))
    (score,) = grading.grade([path], chapter=cheats.CHAPTER, confine=False, seed_offset=cheats.SEED_OFFSET)
    assert score.fraction == 0.0
    assert all("changed the course's files" in " ".join(e.tampered) for e in score.exercises.values())
    assert any("tests/checks" in note for note in score.notes)


TWIN_CHEATS = ["twin_import", "twin_disguised", "twin_metric"]


def test_a_call_to_a_twin_is_graded_like_a_call_to_the_reference(meta_tests) -> None:
    """Each twin cheat computes the right answer (its check passes when run plainly), yet the
    re-check in a clean process fails it as tampering that names the twin, getattr with a
    built name included; the screen names the twins it can see and flags the built name, and
    finds nothing in an honest cell."""
    from utils.course import settings
    from utils.course.chapter import Chapter
    from utils.course.screening import screen

    nb, solved = cheats.untouched(), cheats.solved()
    sources = {}
    for name in TWIN_CHEATS:
        exercise = cheats.BY_NAME[name].only
        cheats.BY_NAME[name].apply(nb, exercise, cheats.CHAPTER)
        sources[exercise] = cheats.cell(nb, "exercise", exercise).source
        namespace: dict = {}
        exec(compile(sources[exercise], f"<{name}>", "exec"), namespace)
        with settings.strict_checks():
            Chapter(cheats.CHAPTER).check(exercise)(namespace[exercise])  # raises if the cheat were wrong
    honest = "latent_logit_effects"
    sources[honest] = cheats.cell(solved, "exercise", honest).source
    results = grading.recheck_sources(cheats.CHAPTER, sources, seed_offset=cheats.SEED_OFFSET)
    assert results[honest]["passed"] and not results[honest]["tampered"], results[honest]
    for name in TWIN_CHEATS:
        result = results[cheats.BY_NAME[name].only]
        assert not result["passed"] and any("its twin" in t for t in result["tampered"]), (name, result)
    seen = {name: [f.reason for f in screen(sources[cheats.BY_NAME[name].only], cheats.CHAPTER,
                                            cheats.BY_NAME[name].only)] for name in TWIN_CHEATS}
    assert any("sae_acts" in r and "twin" in r for r in seen["twin_import"]), seen
    assert any("auroc" in r and "twin" in r for r in seen["twin_metric"]), seen
    assert any("getattr" in r for r in seen["twin_disguised"]), seen  # the name itself is hidden
    assert not screen(sources[honest], cheats.CHAPTER, honest)


# ---------------------------------------------------------------------------------------
# The capstone's answer key and the library's twins of its exercises (chapter 08).


@pytest.mark.parametrize("name", list(cheats.HUNT_CHEATS))
def test_ch08_screen_flags_the_answer_key_and_the_twins(name: str) -> None:
    """Reading the hunt's ground truth (its reader, its file, the generator's rules, the
    labelled prompts) or calling the library's twin of an exercise is tampering, blamed on
    the exercise whose cell does it."""
    from utils.course import screening

    nb, exercise = cheats.hunt_cheat_notebook(name)
    prepared = screening.prepare(nb, cheats.HUNT_CHAPTER)
    blamed = [f for f in prepared.findings if f.tampering and exercise in f.exercises]
    assert blamed, prepared.findings


def test_ch08_recheck_refuses_the_answer_key_and_the_twins(meta_tests) -> None:
    """Without the static screen, the re-check in a clean process fails a function that
    reads the ground truth through the grader's reader or calls the library's twin of the
    exercise (both count as calling the reference), and passes an honest neighbour."""
    from utils.course.chapter import Chapter
    from utils.course.source import strip_markers

    honest = strip_markers(Chapter(cheats.HUNT_CHAPTER).exercises["rule_agreement"].code)
    sources = {"rule_agreement": honest}
    for name in ("hunt_truth_reader", "hunt_library_twin"):
        exercise, text = cheats.HUNT_CHEATS[name]
        sources[exercise] = cheats.textwrap.dedent(text).strip()
    results = grading.recheck_sources(cheats.HUNT_CHAPTER, sources, seed_offset=cheats.SEED_OFFSET)
    assert results["rule_agreement"]["passed"], results["rule_agreement"]
    for exercise in ("hunt_submission", "smallest_faithful_circuit"):
        result = results[exercise]
        assert not result["passed"] and any("reference" in t for t in result["tampered"]), result

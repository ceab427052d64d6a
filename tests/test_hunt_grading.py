"""The capstone's grading is fair and deterministic (issue 20, items 3 and 4).

* Every seed the grader can draw (``utils.course.hunt.GRADED_SEEDS``: one per variant of the
  pool) is solved by the chapter's reference ``hunt_submission``, with the course's own
  methods and without reading the ground truth (the answer key's readers refuse to run
  while it works, and its code passes the grader's screening), and graded in full.
* Grading the same finding twice gives the same grade, number for number.
* Plausible wrong findings fail with the diagnosis that names what is wrong (the catalog in
  ``tests/mistakes/ch08_hunt.py``, run on seed 0 by ``tests/test_ch08_hunt.py``; here on a
  task of each kind, where each mistake is possible).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import utils.course.hunt as grader  # noqa: E402
import utils.hunt.truth as truth_module  # noqa: E402
from solutions import ch08_hunt as reference  # noqa: E402
from tests.mistakes import ch08_hunt as mistakes  # noqa: E402
from utils.backends import load_backend  # noqa: E402
from utils.course import screening  # noqa: E402
from utils.hunt import HuntSubmission, hunt_task, pool_size  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def no_grad_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bk():
    return load_backend("hunt", fresh=True)


class AnswerKeyRead(AssertionError):
    pass


@contextlib.contextmanager
def answer_key_refused():
    """While the block runs, every reader of the ground truth raises: the grader's reader,
    the build's labelled prompts and truth derivation, and any read of truth.json or the
    hunt's README."""
    def refuse(*args, **kwargs):
        raise AnswerKeyRead("the answer key was read")

    read_text, opened = Path.read_text, open

    def guarded_read_text(self, *args, **kwargs):
        if self.name in ("truth.json", "README.md") and "hunt" in str(self):
            refuse()
        return read_text(self, *args, **kwargs)

    patches = [(grader, name) for name in ("_truth_at", "load_truth", "variant_truth", "true_rule", "dense_latents")]
    patches += [(truth_module, name) for name in ("labelled_prompts", "derive_truth", "derive_variant", "latent_table",
                                                  "labelled_corpus")]
    saved = [(module, name, getattr(module, name)) for module, name in patches]
    try:
        for module, name in patches:
            setattr(module, name, refuse)
        Path.read_text = guarded_read_text  # type: ignore[method-assign]
        yield
    finally:
        Path.read_text = read_text  # type: ignore[method-assign]
        for module, name, value in saved:
            setattr(module, name, value)
        assert open is opened


_FOUND: dict[int, HuntSubmission] = {}


def found(bk, seed: int) -> HuntSubmission:
    """The reference's finding on ``seed``, computed once, with the answer key refused."""
    if seed not in _FOUND:
        with answer_key_refused():
            _FOUND[seed] = reference.hunt_submission(bk, seed)
    return _FOUND[seed]


def test_the_graded_seeds_are_the_pool():
    assert list(grader.GRADED_SEEDS) == list(range(pool_size()))
    assert {hunt_task(s) for s in grader.GRADED_SEEDS} == {"hunt-a", "hunt-b", "hunt-c"}


@pytest.mark.parametrize("seed", list(grader.GRADED_SEEDS))
def test_reference_solves_every_seed_without_the_answer_key(bk, seed: int):
    finding = found(bk, seed)
    grade = grader.grade_submission(bk, seed, finding)
    print(grade.report())
    assert grade.passed, grade.failure()
    assert grade.numbers["rule"] == 1.0
    assert grade.numbers["position_precision"] == grade.numbers["position_recall"] == 1.0
    assert grade.numbers["key_latents"] == 1.0
    again = grader.grade_submission(bk, seed, dataclasses.replace(finding))
    assert again.numbers == grade.numbers and again.report() == grade.report(), "grading is not deterministic"


def test_reference_passes_the_graders_screening():
    """The reference's exercise cells are what a learner could write: the grader's
    screening finds nothing in them (hunt_submission reads no answer key)."""
    from utils.course.chapter import Chapter
    from utils.course.source import strip_markers

    findings = [f for name, exercise in Chapter("ch08_hunt").exercises.items()
                for f in screening.screen(strip_markers(exercise.code), "ch08_hunt", exercise=name)]
    assert not findings, findings
    assert "truth" not in inspect.getsource(reference.hunt_submission)


# Wrong findings on a seed of each task; each must fail with the diagnosis that names it.
WRONG = [(name, seed) for name in ("submission_surface_rule", "submission_word_positions", "submission_latents_only",
                                   "submission_neighbours_circuit", "submission_claims_perfect")
         for seed in (3, 4, 5)]


@pytest.mark.parametrize("name,seed", WRONG, ids=[f"{n}-{s}" for n, s in WRONG])
def test_wrong_findings_fail_with_their_diagnosis(bk, name: str, seed: int):
    mistake = next(m for m in mistakes.MISTAKES["hunt_submission"] if m.fn.__name__ == name)
    mistakes._FOUND.setdefault((id(bk.model), bk.model.cfg.dtype, seed), found(bk, seed))
    mistakes._FOUND.setdefault((id(bk.model), bk.model.cfg.dtype, (seed + 1) % pool_size()), found(bk, (seed + 1) % pool_size()))
    grade = grader.grade_submission(bk, seed, mistake.fn(bk, seed))
    print(grade.failure())
    assert not grade.passed
    assert mistake.diagnosis in grade.failure(), grade.failure()


def test_structural_problems_get_one_clear_message(bk):
    finding = found(bk, 0)
    cases = {
        "not a line of rule_menu": dataclasses.replace(finding, rule="the answer is the last word"),
        "outside these": dataclasses.replace(finding, positions=[99]),
        "name no node of these prompts": dataclasses.replace(finding, circuit=[*finding.circuit, reference.Node("transcoder", 1, 40, 3)]),
        "not error nodes": dataclasses.replace(finding, key_latents=[reference.Node("transcoder", 1, -1, "error")]),
        "must be nodes of your circuit": dataclasses.replace(finding, key_latents=[reference.Node("transcoder", 1, 0, 3)]),
        "the number you measured": dataclasses.replace(finding, faithfulness="high"),
        "HuntSubmission": {"rule": finding.rule},
    }
    for expected, submission in cases.items():
        grade = grader.grade_submission(bk, 0, submission)
        assert not grade.passed and expected in grade.failure(), (expected, grade.failure())

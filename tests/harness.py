"""Turn a chapter's checks and mistakes into pytest tests.

Each chapter's test file is two lines::

    from tests.harness import chapter_tests
    test_implementation, test_stub_fails, test_mistake_caught = chapter_tests("ch00_toolkit")

* ``test_implementation``: every check passes on ``--impl`` (``solutions`` by default; a
  learner runs ``pytest tests --impl exercises`` to check their own ``exercises/`` modules).
* ``test_stub_fails``: every check fails on the untouched stubs (built fresh from the source,
  so a learner's edits to ``exercises/`` never matter here).
* ``test_mistake_caught``: every catalogued wrong implementation fails with its diagnosis,
  and the diagnoses of one exercise are distinct.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from utils.course.chapter import Chapter
from utils.course.checking import CheckFailure, Mistake

__all__ = ["Mistake", "chapter_tests", "failure_message"]


def failure_message(check: Callable[..., Any], fn: Callable[..., Any]) -> str:
    """Run ``check`` on ``fn`` and return its failure message (fail the test if it passed)."""
    try:
        check(fn)
    except CheckFailure as failure:
        return str(failure)
    pytest.fail(f"{check.__name__} passed on {fn.__name__}, which is wrong: the check cannot fail")


def chapter_tests(chapter: str) -> tuple[Callable[..., None], ...]:
    ch = Chapter.get(chapter)
    checks = ch.checks()
    mistakes = ch.mistakes()
    cases = [(ex, m) for ex in checks for m in mistakes.get(ex, [])]

    @pytest.mark.parametrize("exercise", list(checks))
    def test_implementation(exercise: str, impl: str) -> None:
        module = ch.module(impl)
        message = None
        try:
            checks[exercise](getattr(module, exercise))
        except CheckFailure as failure:
            message = str(failure)
        if message is not None:  # outside the except: no "during handling" chain, one message
            pytest.fail(message, pytrace=False)

    @pytest.mark.parametrize("exercise", list(checks))
    def test_stub_fails(exercise: str, meta_tests: None) -> None:
        message = failure_message(checks[exercise], getattr(ch.stubs(), exercise))
        assert "not implemented" in message

    @pytest.mark.parametrize("exercise,mistake", cases, ids=[f"{e}-{m.id}" for e, m in cases])
    def test_mistake_caught(exercise: str, mistake: Mistake, meta_tests: None) -> None:
        message = failure_message(checks[exercise], mistake.fn)
        assert mistake.diagnosis in message, f"expected the diagnosis {mistake.diagnosis!r}, got {message!r}"
        others = [m for m in mistakes[exercise] if m is not mistake and m.id not in mistake.coincides
                  and mistake.id not in m.coincides]
        assert not any(m.diagnosis in message for m in others), "diagnoses of one exercise must be distinct"

    return test_implementation, test_stub_fails, test_mistake_caught


def every_exercise_has_mistakes(chapter: str, at_least: int = 4) -> list[str]:
    """Exercises of ``chapter`` with fewer than ``at_least`` catalogued mistakes."""
    ch = Chapter.get(chapter)
    mistakes = ch.mistakes()
    return [ex for ex in ch.checks() if len(mistakes.get(ex, [])) < at_least]

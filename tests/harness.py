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

import importlib
import types
from typing import Any, Callable

import pytest

from utils import build
from utils.checking import CheckFailure, Mistake

__all__ = ["Mistake", "chapter_tests", "checks_of", "mistakes_of", "stub_module", "failure_message"]


def checks_of(chapter: str) -> dict[str, Callable[..., Any]]:
    module = importlib.import_module(f"tests.checks.{chapter}")
    found = {f.exercise: f for f in vars(module).values()
             if hasattr(f, "exercise") and getattr(f, "chapter", None) == chapter}
    exercises = build.find_exercises(build.read_source(chapter), chapter)
    missing = sorted(set(exercises) - set(found))
    if missing:
        raise RuntimeError(f"{chapter}: exercises without a check: {missing}")
    return {name: found[name] for name in exercises}


def mistakes_of(chapter: str) -> dict[str, list[Mistake]]:
    return importlib.import_module(f"tests.mistakes.{chapter}").MISTAKES


def stub_module(chapter: str) -> types.ModuleType:
    """The untouched stub module, built in memory from the chapter's source."""
    module = types.ModuleType(f"exercises.{chapter}")
    exec(compile(build.render_module(chapter, learner=True), f"<stubs of {chapter}>", "exec"), vars(module))
    return module


def failure_message(check: Callable[..., Any], fn: Callable[..., Any]) -> str:
    """Run ``check`` on ``fn`` and return its failure message (fail the test if it passed)."""
    try:
        check(fn)
    except CheckFailure as failure:
        return str(failure)
    pytest.fail(f"{check.__name__} passed on {fn.__name__}, which is wrong: the check cannot fail")


def chapter_tests(chapter: str) -> tuple[Callable[..., None], ...]:
    checks = checks_of(chapter)
    mistakes = mistakes_of(chapter)
    cases = [(ex, m) for ex in checks for m in mistakes.get(ex, [])]

    @pytest.mark.parametrize("exercise", list(checks))
    def test_implementation(exercise: str, impl: str) -> None:
        module = importlib.import_module(f"{impl}.{chapter}")
        message = None
        try:
            checks[exercise](getattr(module, exercise))
        except CheckFailure as failure:
            message = str(failure)
        if message is not None:  # outside the except: no "during handling" chain, one message
            pytest.fail(message, pytrace=False)

    @pytest.mark.parametrize("exercise", list(checks))
    def test_stub_fails(exercise: str, meta_tests: None) -> None:
        message = failure_message(checks[exercise], getattr(stub_module(chapter), exercise))
        assert "not implemented" in message

    @pytest.mark.parametrize("exercise,mistake", cases, ids=[f"{e}-{m.id}" for e, m in cases])
    def test_mistake_caught(exercise: str, mistake: Mistake, meta_tests: None) -> None:
        message = failure_message(checks[exercise], mistake.fn)
        assert mistake.diagnosis in message, f"expected the diagnosis {mistake.diagnosis!r}, got {message!r}"
        others = [m for m in mistakes[exercise] if m is not mistake]
        assert not any(m.diagnosis in message for m in others), "diagnoses of one exercise must be distinct"

    return test_implementation, test_stub_fails, test_mistake_caught


def every_exercise_has_mistakes(chapter: str, at_least: int = 4) -> list[str]:
    """Exercises of ``chapter`` with fewer than ``at_least`` catalogued mistakes."""
    mistakes = mistakes_of(chapter)
    return [ex for ex in checks_of(chapter) if len(mistakes.get(ex, [])) < at_least]

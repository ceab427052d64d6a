"""The course's environment switches, named once.

Environment variables reach every process the course starts (notebook kernels, the grader's
workers, re-checks), so the switches that must cross a process boundary live there:

``SAE_CIRCUITS_STRICT``
    a failed check raises :class:`utils.course.compare.CheckFailure` (pytest, nbval, the
    build, the grader, the headless runner); unset, a check prints its diagnosis in red and
    returns, so *Run All* goes on past an unfinished exercise.
``HF_HUB_OFFLINE``
    no Hugging Face hub lookups (they retry for about 45 s where the hub is unreachable).
``TQDM_DISABLE``
    no progress bars: they are widgets with random ids, which would spoil stored outputs.

What the checks compute in (dtype, device, seed offset) is not an environment switch but a
context variable of :mod:`utils.course.checking` (``check_settings``), and so is the tolerance
of the comparison running now (:func:`utils.course.compare.tolerance`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

STRICT = "SAE_CIRCUITS_STRICT"
OFFLINE = "HF_HUB_OFFLINE"
NO_PROGRESS = "TQDM_DISABLE"


def strict() -> bool:
    """Do failed checks raise (rather than print)?"""
    return os.environ.get(STRICT, "") not in ("", "0")


def for_tests() -> None:
    """The switches of a test run: strict checks, offline unless told otherwise, no progress
    bars (notebook kernels started from here inherit them)."""
    os.environ.setdefault(OFFLINE, "1")
    os.environ.setdefault(NO_PROGRESS, "1")
    os.environ[STRICT] = "1"


def for_graded_process() -> dict[str, str]:
    """The switches every graded process runs with (the rest of its environment is empty)."""
    return {STRICT: "1", OFFLINE: "1", NO_PROGRESS: "1"}


@contextlib.contextmanager
def switched(**values: str) -> Iterator[None]:
    """Set environment switches (by name, e.g. ``switched(SAE_CIRCUITS_STRICT="1")``) inside
    the block and restore what was there before, set or not."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def strict_checks() -> contextlib.AbstractContextManager[None]:
    """Failed checks raise inside the block, whatever the environment said."""
    return switched(**{STRICT: "1"})

"""The course machinery: what builds, checks and grades the course (never imported by the library).

One command runs it all: ``python -m utils.course build|record|grade|bench|headless ...``
(:mod:`utils.course.__main__`).

* :mod:`~utils.course.source` reads a chapter's source (exercises, conventions) and renders
  its notebooks and modules; :mod:`~utils.course.chapter` is the :class:`Chapter` object
  through which everything finds a chapter's parts; :mod:`~utils.course.build` writes them.
* :mod:`~utils.course.checking` runs a learner's function and compares with known outputs
  (:mod:`~utils.course.compare`); :mod:`~utils.course.settings` holds the environment switches.
* :mod:`~utils.course.grading` grades submitted notebooks, with :mod:`~utils.course.screening`
  (restore and screen), :mod:`~utils.course.sandbox`, :mod:`~utils.course.recheck` and
  :mod:`~utils.course.zygote`; :mod:`~utils.course.twins` lists the library functions that
  compute an exercise's answer; :mod:`~utils.course.classroom` (GitHub Classroom templates)
  and :mod:`~utils.course.nbgrader` (nbgrader source assignments) hand grading to the
  platforms instructors use; :mod:`~utils.course.headless` runs every chapter offline.

This package imports nothing itself: the zygote and the sandbox start from it and must
stay light.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (or the grader's snapshot of it)

"""Grade submitted notebooks: ``python -m utils.course grade SUBMISSIONS ... [--chapter CH] [--junit FILE] [--json FILE]``.

Grading works from the instructor's side. For each submission (a notebook, or every
notebook in a folder), one result keyed by its path:

1. **Intake** (:mod:`~utils.course.grading.intake`). A file that is not a readable notebook
   (empty, invalid JSON, a folder named ``x.ipynb``, a link, too large) or not the expected
   chapter gets one row saying why; the rest of the batch goes on. The chapter is ``--chapter``, else one named in the
   path, else the one whose exercises the notebook holds.
2. **Restore** (:mod:`utils.course.screening`): the setup and check cells come from the pristine
   learner notebook, nbval markers and stored outputs are dropped, and what the learner
   wrote is screened for tampering.
3. **Execute** the restored notebook with ``pytest --nbval-lax`` and ``SAE_CIRCUITS_STRICT=1``
   (a wrong exercise's check cell raises), in a fresh folder, in a kernel that may write
   only to that folder (:mod:`utils.course.sandbox`), with a time limit per cell and per
   submission (:mod:`~utils.course.grading.worker`); a dead kernel is noticed at once
   (:mod:`~utils.course.grading.plugin`).
4. **Re-check** each exercise whose check passed in a clean process (:mod:`utils.course.recheck`):
   the learner's exercise cells in place of the stubs, checked on inputs drawn with another
   seed against outputs the reference computed in this process.

An exercise scores only if its check cell passed under nbval, its re-check passed, and
nothing looked tampered with. The denominator is the course's exercise list: a missing
exercise, a skipped, expected-to-fail or timed-out check, or a dead kernel is a FAIL with
its reason. Each submission runs in its own process tree, killed at the end; a course
snapshot it cannot write (or, without Landlock, its own copy, hashed afterwards) holds the
checks and known outputs. Submissions are graded ``jobs`` at a time (default: one per core).
:mod:`~utils.course.grading.report` makes a table per chapter with the reasons, JUnit XML (one
test case per exercise) and JSON; :mod:`~utils.course.grading.gradebook` a class's gradebook
CSV (Canvas, Moodle) and a feedback page per student.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from utils.course import ROOT, settings
from utils.course.chapter import Chapter
from utils.course.grading.intake import MAX_BYTES, collect, intake, module_chunks, read_submission
from utils.course.grading.report import Exercise, Score, combine, table, write_json, write_junit
from utils.course.grading.worker import (CELL_TIMEOUT, TIMEOUT, hashes, landlock, make_writable, recheck, run_worker,
                                         snapshot, start_zygote, stop, zygote_ready)

__all__ = ["CELL_TIMEOUT", "MAX_BYTES", "SEED_OFFSETS", "TIMEOUT", "Exercise", "Score", "collect", "cores", "grade",
           "read_submission", "recheck_sources", "reference_outputs", "table", "write_json", "write_junit"]


# The seed offsets ``grade`` draws the re-check's inputs with when none is given (a notebook's
# own checks use 0; ``--seed-offset`` may give any other). Checks whose grade must not depend
# on the draw (the blind case study's ground truth) are tested against these.
SEED_OFFSETS = range(1000, 10000)


def cores() -> int:
    """The CPU cores this process may run on (its affinity, else every core)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def grade(
    paths: list[str | Path],
    chapter: str | None = None,
    jobs: int | None = None,
    cell_timeout: float = CELL_TIMEOUT,
    timeout: float = TIMEOUT,
    seed_offset: int | None = None,
    max_bytes: int = MAX_BYTES,
    confine: bool = True,
    fork: bool = True,
) -> list[Score]:
    """Grade every submission in ``paths`` (see the module docstring), ``jobs`` at a time
    (default: one per core), each in its own process tree; each graded process gets
    ``cores() // jobs`` threads. ``seed_offset`` shifts the seeds of the re-check's inputs (random by default);
    ``confine=False`` runs without Landlock even where it is available (as elsewhere);
    ``fork=False`` starts every kernel and re-check as a new Python (no :mod:`utils.course.zygote`)."""
    seed_offset = secrets.choice(SEED_OFFSETS) if seed_offset is None else seed_offset
    jobs_at_once, scores, jobs = jobs, [], []
    for path in collect(paths):
        score, job = intake(path, chapter, max_bytes)
        scores.append(score)
        if job is not None:
            jobs.append((score, job))
    if not jobs:
        return scores
    with tempfile.TemporaryDirectory(prefix="sae-grading-") as tmp:
        try:
            _grade_batch(Path(tmp), jobs, max(1, jobs_at_once or cores()), cell_timeout, timeout, seed_offset,
                         confine and landlock(), fork and sys.platform.startswith("linux"))
        finally:
            make_writable(Path(tmp))
    return scores


def _grade_batch(batch: Path, jobs: list[tuple[Score, dict[str, Any]]], at_once: int, cell_timeout: float,
                 timeout: float, seed_offset: int, confine: bool, fork: bool) -> None:
    course, manifest = snapshot(batch / "course")
    before = hashes(ROOT, ("utils", "tests", "solutions", "chapters", "source", "exercises"))
    common = {"course": str(course), "manifest": manifest, "cell_timeout": cell_timeout, "timeout": timeout,
              "seed_offset": seed_offset, "threads": max(1, cores() // at_once), "confine": confine, "zygote": None}
    known = _Known(seed_offset)

    def run(index: int) -> None:
        score, job = jobs[index]
        folder = batch / "jobs" / str(index)
        folder.mkdir(parents=True)
        outputs = known[job["chapter"]]
        started = time.perf_counter()
        result = run_worker(folder, {**common, **job}, outputs)
        combine(score, job, result)
        score.seconds = time.perf_counter() - started

    zygote = start_zygote(batch, common) if fork else None  # it imports while the reference runs
    try:
        known[jobs[0][1]["chapter"]]  # the first chapter's while the zygote imports; the others as they come
        common["zygote"] = zygote_ready(zygote, batch)
        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(run, range(len(jobs))))
    finally:
        stop(zygote)
    changed = sorted(k for k, v in hashes(ROOT, before.keys()).items() if before.get(k) != v)
    if changed:  # only possible without Landlock: nobody can tell which submission did it
        for score, _ in jobs:
            score.notes.append(f"course files changed while this batch was graded: {', '.join(changed[:5])}")


class _Known:
    """Each chapter's known outputs (:func:`reference_outputs`), computed once, when a job
    first needs them, so that a class's later chapters are computed while the first are
    graded. One at a time: the reference seeds torch and switches the environment, which
    every thread of this process shares."""

    def __init__(self, seed_offset: int) -> None:
        self.seed_offset, self.lock = seed_offset, threading.Lock()

    def __getitem__(self, chapter: str) -> bytes:
        with self.lock:
            return reference_outputs(chapter, self.seed_offset)


def recheck_sources(chapter: str, sources: dict[str, str], seed_offset: int) -> dict[str, dict[str, Any]]:
    """Re-check exercise cells (exercise -> source) of ``chapter`` in a clean process, as
    :func:`grade` does after nbval, without restoring or screening anything first."""
    with tempfile.TemporaryDirectory(prefix="sae-recheck-") as tmp:
        folder = Path(tmp)
        course, _ = snapshot(folder / "course")
        job = {"chapter": chapter, "seed_offset": seed_offset, "cell_timeout": CELL_TIMEOUT, "threads": 1,
               "chunks": module_chunks(chapter, sources), "confine": landlock(), "zygote": None}
        known = reference_outputs(chapter, seed_offset)
        results, problem = recheck(folder, job, course, known, list(sources), time.monotonic() + TIMEOUT)
        make_writable(folder)
    if problem:
        raise RuntimeError(f"the re-check failed: {problem}")
    return results


@functools.lru_cache(maxsize=8)
def reference_outputs(chapter: str, seed_offset: int) -> bytes:
    """Known outputs of every check of ``chapter``, recorded from the reference in this
    process on inputs drawn with ``seed_offset`` (``torch.save`` bytes)."""
    import torch

    from utils.course import checking

    ch = Chapter(chapter)
    reference = ch.reference()
    with settings.switched(**{settings.STRICT: "1", settings.NO_PROGRESS: "1"}), \
            checking.check_settings(seed_offset=seed_offset), checking.recording(write=False) as stores, \
            contextlib.redirect_stdout(io.StringIO()):
        for name, check in ch.checks().items():
            check(getattr(reference, name))
    buffer = io.BytesIO()
    torch.save({name: stores[name] for name in ch.exercise_names}, buffer)
    return buffer.getvalue()

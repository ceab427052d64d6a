"""Grade submitted notebooks: ``python -m utils.grading SUBMISSIONS ... [--chapter CH] [--junit FILE] [--json FILE]``.

Grading works from the instructor's side. For each submission (a notebook, or every
notebook in a folder), one result keyed by its path:

1. **Intake.** A file that is not a readable notebook (empty, invalid JSON, a folder named
   ``x.ipynb``, a link, too large) or not the expected chapter gets one row saying why;
   the rest of the batch goes on. The chapter is ``--chapter``, else one named in the
   path, else the one whose exercises the notebook holds.
2. **Restore** (:mod:`utils.screening`): the setup and check cells come from the pristine
   learner notebook, nbval markers and stored outputs are dropped, and what the learner
   wrote is screened for tampering.
3. **Execute** the restored notebook with ``pytest --nbval-lax`` and ``SAE_CIRCUITS_STRICT=1``
   (a wrong exercise's check cell raises), in a fresh folder, in a kernel that may write
   only to that folder (:mod:`utils.sandbox`), with a time limit per cell and per
   submission; a dead kernel is noticed at once.
4. **Re-check** each exercise whose check passed in a clean process (:mod:`utils.recheck`):
   the learner's exercise cells in place of the stubs, checked on inputs drawn with another
   seed against outputs the reference computed in this process.

An exercise scores only if its check cell passed under nbval, its re-check passed, and
nothing looked tampered with. The denominator is the course's exercise list: a missing
exercise, a skipped, expected-to-fail or timed-out check, or a dead kernel is a FAIL with
its reason. Each submission runs in its own process tree, killed at the end; a course
snapshot it cannot write (or, without Landlock, its own copy, hashed afterwards) holds the
checks and known outputs. Prints a table per chapter and the reasons, and writes JUnit
XML (one test case per exercise) and JSON on request.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 64 * 2**20  # larger files are refused: clear the outputs and resubmit
CELL_TIMEOUT = 300  # seconds a cell may run
TIMEOUT = 1800  # seconds a whole submission (execution and re-check) may take
SNAPSHOT = ("utils", "tests", "solutions")  # what the graded code may import from the course
CELLS_ENV = "SAE_GRADING_CELLS"  # where the pytest plugin below writes each cell's outcome


@dataclass
class Exercise:
    """One exercise of one submission: passed, or why not."""

    passed: bool = False
    reason: str = ""  # why it failed
    tampered: list[str] = field(default_factory=list)  # what looked like tampering (zeroes it)
    notes: list[str] = field(default_factory=list)  # restored or ignored, reported only


@dataclass
class Score:
    """One submission's result, keyed by its path."""

    notebook: Path
    chapter: str | None = None
    exercises: dict[str, Exercise] = field(default_factory=dict)  # every exercise of the chapter, in order
    error: str = ""  # why it was not graded
    notes: list[str] = field(default_factory=list)  # about the whole notebook
    other_failures: list[str] = field(default_factory=list)  # cells other than checks that failed
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each step

    @property
    def fraction(self) -> float:
        return sum(e.passed for e in self.exercises.values()) / len(self.exercises) if self.exercises else 0.0

    @property
    def tampered(self) -> dict[str, list[str]]:
        return {name: e.tampered for name, e in self.exercises.items() if e.tampered}


# ---------------------------------------------------------------------------------------
# Intake.


def collect(paths: list[str | Path]) -> list[Path]:
    """The submissions under ``paths``: notebooks given, and every ``*.ipynb`` in folders
    given (checkpoints left out). Anything else given is kept, to get its own row."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and p.suffix != ".ipynb":
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            found.append(p)
    return list({os.path.abspath(p): p for p in found}.values())


def read_submission(path: Path, max_bytes: int = MAX_BYTES) -> nbformat.NotebookNode | str:
    """The notebook at ``path``, or one sentence saying why it cannot be graded."""
    if path.is_symlink():
        return "a link, not a notebook file: submit the notebook itself"
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a folder, not a notebook file"
    if not path.is_file():
        return "not a regular file"
    size = path.stat().st_size
    if size == 0:
        return "an empty file (was the notebook saved?)"
    if size > max_bytes:
        return (f"{size / 2**20:.0f} MB, over the limit of {max_bytes / 2**20:.0f} MB: clear the outputs "
                "(Edit > Clear Outputs of All Cells), save and resubmit")
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        return "not a notebook (not UTF-8 text)"
    except json.JSONDecodeError as error:
        return f"not a notebook: invalid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "JSON, but not a notebook (no list of cells)"
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as error:  # nbformat's many ways of refusing a file
        return f"not a notebook nbformat can read ({type(error).__name__}: {error})"


def chapter_in_path(path: Path) -> str | None:
    """The chapter a path names (``ch00_toolkit.ipynb``, ``ch00_toolkit/alice.ipynb``), if one."""
    from utils.build import chapters

    named = [c for c in chapters() if any(c in part for part in path.parts)]
    return named[0] if len(named) == 1 else None


# ---------------------------------------------------------------------------------------
# The batch.


def grade(
    paths: list[str | Path],
    chapter: str | None = None,
    workers: int = 2,
    cell_timeout: float = CELL_TIMEOUT,
    timeout: float = TIMEOUT,
    seed_offset: int | None = None,
    max_bytes: int = MAX_BYTES,
    confine: bool = True,
    fork: bool = True,
) -> list[Score]:
    """Grade every submission in ``paths`` (see the module docstring), ``workers`` at a time.
    ``seed_offset`` shifts the seeds of the re-check's inputs (random by default);
    ``confine=False`` runs without Landlock even where it is available (as elsewhere);
    ``fork=False`` starts every kernel and re-check as a new Python (no :mod:`utils.zygote`)."""
    seed_offset = secrets.randbelow(9000) + 1000 if seed_offset is None else seed_offset
    scores, jobs = [], []
    for path in collect(paths):
        score, job = _intake(path, chapter, max_bytes)
        scores.append(score)
        if job is not None:
            jobs.append((score, job))
    if not jobs:
        return scores
    with tempfile.TemporaryDirectory(prefix="sae-grading-") as tmp:
        try:
            _grade_batch(Path(tmp), jobs, workers, cell_timeout, timeout, seed_offset,
                         confine and _landlock(), fork and sys.platform.startswith("linux"))
        finally:
            _make_writable(Path(tmp))
    return scores


def _grade_batch(batch: Path, jobs: list[tuple[Score, dict[str, Any]]], workers: int, cell_timeout: float,
                 timeout: float, seed_offset: int, confine: bool, fork: bool) -> None:
    from utils import screening

    course, manifest = _snapshot(batch / "course")
    before = _hashes(ROOT, ("utils", "tests", "solutions", "chapters", "source", "exercises"))
    common = {"course": str(course), "manifest": manifest, "cell_timeout": cell_timeout, "timeout": timeout,
              "seed_offset": seed_offset, "threads": max(1, (os.cpu_count() or 1) // workers),
              "confine": confine, "zygote": None}
    def run(index: int) -> None:
        score, job = jobs[index]
        folder = batch / "jobs" / str(index)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        result = _run_worker(folder, {**common, **job}, known[job["chapter"]])
        _combine(score, job, result, screening)
        score.seconds = time.perf_counter() - started

    zygote = _start_zygote(batch, common) if fork else None  # it imports while the reference runs
    try:
        known = {ch: _reference_outputs(ch, seed_offset) for ch in sorted({job["chapter"] for _, job in jobs})}
        common["zygote"] = _zygote_ready(zygote, batch)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(run, range(len(jobs))))
    finally:
        _stop(zygote)
    changed = sorted(k for k, v in _hashes(ROOT, before.keys()).items() if before.get(k) != v)
    if changed:  # only possible without Landlock: nobody can tell which submission did it
        for score, _ in jobs:
            score.notes.append(f"course files changed while this batch was graded: {', '.join(changed[:5])}")


def _intake(path: Path, chapter: str | None, max_bytes: int) -> tuple[Score, dict[str, Any] | None]:
    from utils import screening

    score = Score(path)
    nb = read_submission(path, max_bytes)
    if isinstance(nb, str):
        score.error = nb
        return score, None
    found = screening.identify_chapter(nb)
    expected = chapter or chapter_in_path(path)
    score.chapter = expected or found
    if found is None:
        score.error = (f"none of {expected}'s exercise cells are in it" if expected else
                       "no exercise of any chapter of this course in it: which chapter is it?")
        return score, None
    score.exercises = {name: Exercise() for name in screening.exercises_of(score.chapter)}
    if found != score.chapter:
        score.error = f"this is {found}'s notebook, not {score.chapter}'s"
        for exercise in score.exercises.values():
            exercise.reason = score.error
        return score, None
    if expected is None:
        score.notes.append(f"graded as {found}: the chapter whose exercises it holds")
    prepared = screening.prepare(nb, score.chapter)
    job = {
        "chapter": score.chapter,
        "notebook": nbformat.writes(prepared.notebook),
        "roles": prepared.roles,
        "chunks": _module_chunks(score.chapter, prepared.sources),
        "missing": prepared.missing,
        "findings": [asdict(f) for f in prepared.findings],
    }
    return score, job


def recheck_sources(chapter: str, sources: dict[str, str], seed_offset: int) -> dict[str, dict[str, Any]]:
    """Re-check exercise cells (exercise -> source) of ``chapter`` in a clean process, as
    :func:`grade` does after nbval, without restoring or screening anything first."""
    with tempfile.TemporaryDirectory(prefix="sae-recheck-") as tmp:
        folder = Path(tmp)
        course, _ = _snapshot(folder / "course")
        job = {"chapter": chapter, "seed_offset": seed_offset, "cell_timeout": CELL_TIMEOUT, "threads": 1,
               "chunks": _module_chunks(chapter, sources), "confine": _landlock(), "zygote": None}
        known = _reference_outputs(chapter, seed_offset)
        results, problem = _recheck(folder, job, course, known, list(sources), time.monotonic() + TIMEOUT)
        _make_writable(folder)
    if problem:
        raise RuntimeError(f"the re-check failed: {problem}")
    return results


def _module_chunks(chapter: str, sources: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """The stub module of ``chapter`` cut into course code and exercise cells, the learner's
    cell (its leading ``%%time``-like magic dropped) in place of each stub."""
    from utils import build

    text = build.render_module(chapter, learner=True)
    chunks: list[tuple[str, str | None, str]] = []
    for name, ex in build.find_exercises(build.read_source(chapter), chapter).items():
        stub = build.stub(ex.code, name).strip()
        before, found, text = text.partition(stub)
        if not found:
            raise RuntimeError(f"{chapter}: the stub of {name} is not in its module")
        learner = re.sub(r"\A\s*%%(time|timeit|capture)\b[^\n]*\n", "", sources.get(name, stub))
        chunks += [("course", None, before), ("exercise", name, learner)]
    return chunks + [("course", None, text)]


@functools.lru_cache(maxsize=8)
def _reference_outputs(chapter: str, seed_offset: int) -> bytes:
    """Known outputs of every check of ``chapter``, recorded from the reference in this
    process on inputs drawn with ``seed_offset`` (``torch.save`` bytes)."""
    import contextlib
    import importlib
    import io

    import torch

    from utils import checking, screening

    checks = importlib.import_module(f"tests.checks.{chapter}")
    reference = importlib.import_module(f"solutions.{chapter}")
    saved = {k: os.environ.get(k) for k in (checking.STRICT_ENV, "TQDM_DISABLE")}
    os.environ.update({checking.STRICT_ENV: "1", "TQDM_DISABLE": "1"})
    try:
        with checking.check_settings(seed_offset=seed_offset), checking.recording(write=False) as stores, \
                contextlib.redirect_stdout(io.StringIO()):
            for name in screening.exercises_of(chapter):
                getattr(checks, f"check_{name}")(getattr(reference, name))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    buffer = io.BytesIO()
    torch.save({name: stores[name] for name in screening.exercises_of(chapter)}, buffer)
    return buffer.getvalue()


def _snapshot(target: Path) -> tuple[Path, dict[str, str]]:
    """A read-only copy of what graded code imports from the course, and its hashes."""
    skip = shutil.ignore_patterns("*.ipynb", "*.html", ".ipynb_checkpoints", ".pytest_cache")
    for name in SNAPSHOT:
        shutil.copytree(ROOT / name, target / name, ignore=skip)
    manifest = _hashes(target, SNAPSHOT)
    _make_read_only(target)
    return target, manifest


def _hashes(root: Path, parts: Any) -> dict[str, str]:
    found = {}
    for part in parts:
        for path in sorted((root / part).rglob("*")) if (root / part).is_dir() else [root / part]:
            if path.is_file() and "__pycache__" not in path.parts:
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _start_zygote(batch: Path, common: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the batch's zygote (:mod:`utils.zygote`): it imports the heavy libraries once."""
    home = batch / "zygote"
    home.mkdir()
    env = {**_environment(common, home), "PYTHONPATH": common["course"], "MPLCONFIGDIR": str(home / "matplotlib")}
    return subprocess.Popen([sys.executable, "-m", "utils.zygote", "serve", str(batch / "zygote.sock")],
                            cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=(home / "zygote.log").open("wb"), start_new_session=True)


def _zygote_ready(zygote: subprocess.Popen[bytes] | None, batch: Path, wait: float = 600) -> str | None:
    """The zygote's socket once it is ready, or None (kernels then start as new processes)."""
    import select

    if zygote is None or not select.select([zygote.stdout], [], [], wait)[0]:
        return None
    return str(batch / "zygote.sock") if zygote.stdout.readline().strip() == b"ready" else None  # type: ignore[union-attr]


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.terminate()  # the zygote kills its children on SIGTERM
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _landlock() -> bool:
    from utils import sandbox

    return sandbox.landlock_abi() >= 1


# ---------------------------------------------------------------------------------------
# One submission in its own process tree (``python -m utils.grading --worker FOLDER``).


def _run_worker(folder: Path, job: dict[str, Any], known: bytes) -> dict[str, Any]:
    """Run the worker for one submission; kill its whole tree when time is up."""
    (folder / "job.json").write_text(json.dumps(job))
    worker = subprocess.Popen([sys.executable, "-m", "utils.grading", "--worker", str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                              cwd=folder, env={**_environment(job, folder), "PYTHONPATH": str(ROOT)})
    worker.stdin.write(known)  # type: ignore[union-attr]
    worker.stdin.close()  # type: ignore[union-attr]
    try:
        worker.wait(job["timeout"] + 120)  # the worker enforces the limits; this is a backstop
    except subprocess.TimeoutExpired:
        worker.terminate()  # it kills its descendants on SIGTERM
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    stderr = worker.stderr.read().decode(errors="replace") if worker.stderr else ""  # type: ignore[union-attr]
    result_file = folder / "result.json"
    if not result_file.exists():
        return {"fatal": f"the grader's worker failed (exit {worker.returncode}): {stderr[-1500:]}"}
    return json.loads(result_file.read_text())


def _environment(job: dict[str, Any], home: Path) -> dict[str, str]:
    """A clean environment for graded processes: nothing inherited but the basics."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    threads = str(job["threads"])
    return {
        **keep,
        "HOME": str(home), "TMPDIR": str(home), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "SAE_CIRCUITS_STRICT": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }


def _worker(folder: Path) -> None:
    """Execute and re-check one submission, then kill every process it left behind."""
    from utils import sandbox

    sandbox.become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: (sandbox.kill_descendants(), os._exit(3)))
    job = json.loads((folder / "job.json").read_text())
    known = sys.stdin.buffer.read()
    deadline = time.monotonic() + job["timeout"]
    course = Path(job["course"])
    if not job["confine"]:  # no Landlock: a copy of its own, so it can only spoil that
        shutil.copytree(course, folder / "course")
        course = folder / "course"
        _make_read_only(course)
    result: dict[str, Any] = {"timings": {}}
    try:
        started = time.perf_counter()
        result["cells"], result["nbval"] = _execute(folder, job, course, deadline)
        result["timings"]["nbval"] = time.perf_counter() - started
        passed = [name for name, i in _check_cells(job["roles"]).items()
                  if any(c["cell"] == i and c["outcome"] == "passed" and not c["xfail"] for c in result["cells"])]
        started = time.perf_counter()
        result["rechecks"], result["recheck_error"] = _recheck(folder, job, course, known, passed, deadline)
        result["timings"]["recheck"] = time.perf_counter() - started
    finally:
        sandbox.kill_descendants()
    result["changed"] = sorted(k for k, v in _hashes(course, SNAPSHOT).items() if job["manifest"].get(k) != v)
    result["changed"] += sorted(set(job["manifest"]) - set(_hashes(course, SNAPSHOT)))
    (folder / "result.json").write_text(json.dumps(result))


def _start(job: dict[str, Any], mode: str, *writable: Path) -> list[str]:
    """The command that starts pytest, a kernel or a re-check writing only beneath
    ``writable``: forked by the zygote where there is one, else a new Python (confined
    where Landlock allows)."""
    if job.get("zygote"):
        folders = os.pathsep.join(map(str, writable)) if job["confine"] else ""
        return [sys.executable, "-m", "utils.zygote", "run", job["zygote"], mode, folders]
    module = {"pytest": "pytest", "kernel": "ipykernel_launcher", "recheck": "utils.recheck"}[mode]
    return [*_confined(job, *writable), sys.executable, "-m", module]


def _confined(job: dict[str, Any], *writable: Path) -> list[str]:
    """The prefix that runs a command able to write only beneath ``writable`` (none without Landlock)."""
    if not job["confine"]:
        return []
    return [sys.executable, "-m", "utils.sandbox", os.pathsep.join(map(str, writable)), "--"]


def _check_cells(roles: list[list[Any]]) -> dict[str, int]:
    return {exercise: i for i, (role, exercise) in enumerate(roles) if role == "check"}


def _execute(folder: Path, job: dict[str, Any], course: Path, deadline: float) -> tuple[list[dict[str, Any]], str]:
    """Run nbval on the restored notebook; each code cell's outcome, and pytest's last words."""
    runner, kernel = folder / "runner", folder / "kernel"
    for path in (runner / "runtime", runner / "jupyter" / "kernels" / "grader", kernel):
        path.mkdir(parents=True, exist_ok=True)
    (kernel / "submission.ipynb").write_text(job["notebook"])
    (runner / "pytest.ini").write_text("[pytest]\n")
    spec = {"argv": [*_start(job, "kernel", kernel), "-f", "{connection_file}"], "display_name": "graded",
            "language": "python"}
    (runner / "jupyter" / "kernels" / "grader" / "kernel.json").write_text(json.dumps(spec))
    cells_file = runner / "cells.jsonl"
    env = {**_environment(job, kernel), "PYTHONPATH": str(course), "JUPYTER_PATH": str(runner / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(runner / "runtime"), "JUPYTER_CONFIG_DIR": str(runner / "jupyter"),
           "JUPYTER_DATA_DIR": str(runner / "jupyter"), "IPYTHONDIR": str(kernel / ".ipython"),
           "MPLCONFIGDIR": str(kernel / ".matplotlib"), CELLS_ENV: str(cells_file)}
    command = [*_start(job, "pytest", runner, kernel),
               "-p", "nbval.plugin", "-p", "utils.grading", "--nbval-lax", "--nbval-kernel-name", "grader",
               f"--nbval-cell-timeout={job['cell_timeout']}", "--nbval-kernel-startup-timeout=300",
               "--noconftest", "-c", str(runner / "pytest.ini"), "--rootdir", str(runner), "-q",
               "-p", "no:cacheprovider", "-W", "ignore", str(kernel / "submission.ipynb")]
    log = runner / "pytest.log"
    with log.open("wb") as out:
        pytest = subprocess.Popen(command, cwd=runner, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
        try:
            pytest.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            from utils import sandbox

            sandbox.kill_descendants()
            pytest.wait()
    cells = [json.loads(line) for line in cells_file.read_text().splitlines()] if cells_file.exists() else []
    return cells, log.read_text(errors="replace")[-3000:]


def _recheck(folder: Path, job: dict[str, Any], course: Path, known: bytes, exercises: list[str],
             deadline: float) -> tuple[dict[str, Any], str]:
    """Re-check ``exercises`` in a clean, confined process; results by exercise, and what
    went wrong with the process itself ('' if nothing)."""
    if not exercises:
        return {}, ""
    work = folder / "recheck"
    work.mkdir()
    nonce = secrets.token_hex(16)
    limit = max(30.0, job["cell_timeout"])
    spec = {"chapter": job["chapter"], "seed_offset": job["seed_offset"], "limit": limit,
            "exercises": exercises, "chunks": job["chunks"]}
    payload = f"{nonce}\n{json.dumps(spec)}\n".encode() + known
    command = _start(job, "recheck", work)
    env = {**_environment(job, work), "PYTHONPATH": str(course)}
    remaining = max(1.0, deadline - time.monotonic()) + limit
    try:
        run = subprocess.run(command, input=payload, capture_output=True, cwd=work, env=env, timeout=remaining)
        out, problem = run.stdout.decode(errors="replace"), "" if run.returncode == 0 else f"exit {run.returncode}"
    except subprocess.TimeoutExpired as expired:
        out, problem = (expired.stdout or b"").decode(errors="replace"), f"it ran past {remaining:.0f} s"
    results: dict[str, Any] = {}
    started = None
    for line in out.splitlines():
        if line.startswith(nonce + " "):
            record = json.loads(line[len(nonce) + 1:])
            if "fatal" in record:
                problem = record["fatal"]
            elif record.get("started"):
                started = record["exercise"]
            else:
                results[record["exercise"]] = record
                started = None
    if started is not None:
        problem = f"the re-check process ended while checking {started} ({problem or 'it exited'})"
    return results, problem


# ---------------------------------------------------------------------------------------
# pytest plugin: loaded into the worker's pytest (``-p utils.grading``); it records every
# cell's outcome as it comes, and notices a dead kernel at once instead of waiting for the
# cell's time limit.


def pytest_configure(config: Any) -> None:
    if not os.environ.get(CELLS_ENV):
        return
    from queue import Empty

    from nbval.kernel import RunningKernel

    waiting = RunningKernel.await_reply

    def await_reply(self: Any, msg_id: str, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            wait = 1.0 if end is None else min(1.0, end - time.monotonic())
            if wait <= 0:
                raise Empty
            try:
                return waiting(self, msg_id, timeout=wait)
            except Empty:
                if not self.is_alive():
                    raise RuntimeError("the kernel died while running this cell (os._exit, a crash, or out of "
                                       "memory)") from None

    RunningKernel.await_reply = await_reply


def pytest_runtest_logreport(report: Any) -> None:
    path = os.environ.get(CELLS_ENV)
    match = re.search(r"::Cell (\d+)$", report.nodeid)
    if not path or not match or (report.when != "call" and report.outcome == "passed"):
        return
    record = {"cell": int(match.group(1)), "when": report.when, "outcome": report.outcome,
              "xfail": getattr(report, "wasxfail", "") or "", "message": _plain(report.longreprtext)[-4000:]}
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    return _ANSI.sub("", text or "")


# ---------------------------------------------------------------------------------------
# Scoring.


def _combine(score: Score, job: dict[str, Any], result: dict[str, Any], screening: Any) -> None:
    """Fill ``score`` from the restoration's findings, nbval's cells and the re-checks."""
    if "fatal" in result:
        score.error = result["fatal"]
    score.timings = result.get("timings", {})
    roles = job["roles"]
    cells: dict[int, dict[str, Any]] = {}
    for record in result.get("cells", []):  # a cell's call outcome wins over its teardown
        cells.setdefault(record["cell"], record)
    checks = _check_cells(roles)
    for finding in job["findings"]:
        targets = finding["exercises"] or ([] if not finding["tampering"] else list(score.exercises))
        if not targets:
            score.notes.append(finding["reason"])
        for name in targets:
            bucket = score.exercises[name].tampered if finding["tampering"] else score.exercises[name].notes
            bucket.append(finding["reason"])
    for name in result.get("changed", []):
        score.notes.append(f"course file {name} changed while it ran")
    if result.get("changed"):
        for exercise in score.exercises.values():
            exercise.tampered.append("it changed the course's files")
    died = next((i for i, c in sorted(cells.items()) if "the kernel died" in c["message"]), None)
    for i, (role, _) in enumerate(roles):
        record = cells.get(i)
        if died is not None and i > died:
            score.other_failures.append(f"cells {died + 1}-{len(roles) - 1}: not run, the kernel had died in cell {died}")
            break
        if role != "check" and record and record["outcome"] != "passed":
            score.other_failures.append(f"cell {i} ({role}): {_diagnosis(record['message'])}")
    stopped = _stopped(cells, roles, result)
    rechecks = result.get("rechecks", {})
    for name, exercise in score.exercises.items():
        if name in job["missing"]:
            exercise.reason = "no exercise cell for it in the submission (deleted?)"
        elif not score.error:
            exercise.reason = _check_reason(cells.get(checks[name]), stopped, died) or _recheck_reason(
                rechecks.get(name), result.get("recheck_error", ""))
            if name in rechecks:
                exercise.tampered += rechecks[name].get("tampered", [])
        if exercise.tampered and not exercise.reason:
            exercise.reason = "looked tampered with: " + "; ".join(exercise.tampered)
        exercise.passed = not exercise.reason


def _stopped(cells: dict[int, dict[str, Any]], roles: list[Any], result: dict[str, Any]) -> str:
    """Why cells after the last reported one never ran ('' if every cell reported)."""
    if len(cells) >= len(roles):
        return ""
    last = max(cells, default=-1)
    return (f"it never ran: execution stopped after cell {last} (the submission's time limit, or the kernel "
            f"could not start); pytest said: {_diagnosis(result.get('nbval', ''))}")


def _check_reason(record: dict[str, Any] | None, stopped: str, died: int | None = None) -> str:
    if died is not None and (record is None or record["cell"] > died):
        return f"its check never ran: the kernel died in cell {died}"
    if record is None:
        return stopped or "its check cell did not run"
    if record["xfail"]:
        return f"its check was not graded: {record['xfail'].lower()}"
    if record["outcome"] == "skipped":
        return f"its check cell was skipped ({_diagnosis(record['message'])})"
    if record["outcome"] != "passed":
        return "its check failed: " + _diagnosis(record["message"])
    return ""


def _recheck_reason(record: dict[str, Any] | None, problem: str) -> str:
    if record is None:
        return f"its re-check on fresh inputs did not report ({problem or 'no result'})"
    if record["passed"]:
        return ""
    return f"its re-check on fresh inputs failed: {record['reason']}" if record["reason"] else ""


def _diagnosis(message: str) -> str:
    """The line of a cell's failure that says what went wrong."""
    lines = [line.strip().removeprefix("pytest plugin exception: ") for line in _plain(message).splitlines()
             if line.strip()]
    for pattern in ("Timeout of", "the kernel died", "Kernel dead", "CheckFailure", "Error:", "Error"):
        hits = [line for line in lines if pattern in line]
        if hits:
            return hits[-1][:400]
    return (lines[-1] if lines else "no message")[:400]


# ---------------------------------------------------------------------------------------
# Reports.


def table(scores: list[Score]) -> str:
    """One table per chapter (a column per exercise), the submissions not graded, then the
    reasons for every FAIL and what looked tampered with."""
    blocks = []
    for chapter in sorted({s.chapter for s in scores if s.chapter and s.exercises and not s.error}):
        rows = [s for s in scores if s.chapter == chapter and not s.error]
        names = list(rows[0].exercises)
        width = max(len(str(s.notebook)) for s in rows + [Score(Path("submission"))])
        head = f"{'submission':<{width}}  " + "  ".join(names) + "  score"
        lines = [f"{chapter}", head, "-" * len(head)]
        for s in rows:
            marks = "  ".join(f"{_mark(s.exercises[n]):^{len(n)}}" for n in names)
            lines.append(f"{str(s.notebook):<{width}}  {marks}  {s.fraction:>5.0%}")
        lines.append("(* looked tampered with, scores nothing; ~ a check cell or nbval marker was restored or "
                     "ignored: see the details)")
        blocks.append("\n".join(lines))
    failed = [s for s in scores if s.error]
    if failed:
        width = max(len(str(s.notebook)) for s in failed)
        blocks.append("\n".join(["not graded (score 0)"] + [f"{str(s.notebook):<{width}}  {s.error}" for s in failed]))
    details = []
    for s in scores:
        if s.error:
            continue
        lines = [f"  note: {n}" for n in s.notes]
        for name, e in s.exercises.items():
            if not e.passed:
                lines.append(f"  {name}: FAIL{' (tampered)' if e.tampered else ''}: {e.reason}")
            lines += [f"  {name}: tampered: {t}" for t in e.tampered if t not in e.reason]
            lines += [f"  {name}: note: {n}" for n in e.notes]
        lines += [f"  other failed cell: {f}" for f in s.other_failures]
        if lines:
            details.append(f"{s.notebook} ({s.fraction:.0%}, {s.seconds:.0f} s)\n" + "\n".join(lines))
    if details:
        blocks.append("details\n" + "\n".join(details))
    return "\n\n".join(blocks)


def _mark(e: Exercise) -> str:
    return ("pass" if e.passed else "FAIL") + ("*" if e.tampered else "~" if e.notes else "")


def write_junit(scores: list[Score], path: Path) -> None:
    """JUnit XML: a test suite per submission (named by its path), a test case per exercise."""
    suites = ET.Element("testsuites")
    for s in scores:
        cases = s.exercises or {"notebook": Exercise(reason=s.error)}
        suite = ET.SubElement(suites, "testsuite", name=str(s.notebook), tests=str(len(cases)),
                              failures=str(sum(not e.passed for e in cases.values())))
        for name, e in cases.items():
            case = ET.SubElement(suite, "testcase", classname=str(s.notebook), name=name)
            if not e.passed:
                ET.SubElement(case, "failure", message=s.error or e.reason)
    ET.ElementTree(suites).write(path, encoding="unicode", xml_declaration=True)


def write_json(scores: list[Score], path: Path) -> None:
    """Every result, keyed by the submission's path."""
    data = {str(s.notebook): {**asdict(s), "notebook": str(s.notebook), "score": s.fraction} for s in scores}
    path.write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m utils.grading", description=__doc__.split("\n")[0])
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--chapter", help="the chapter every submission should be (default: from path or content)")
    parser.add_argument("--junit", type=Path, help="write JUnit XML (one test case per exercise) here")
    parser.add_argument("--json", type=Path, help="write every result as JSON, keyed by path, here")
    parser.add_argument("--workers", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds a cell may run")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds a submission may take")
    parser.add_argument("--seed-offset", type=int, help="seed offset of the re-check's inputs (default: random)")
    args = parser.parse_args(argv)
    scores = grade(args.submissions, chapter=args.chapter, workers=args.workers, cell_timeout=args.cell_timeout,
                   timeout=args.timeout, seed_offset=args.seed_offset)
    print(table(scores))
    if args.junit:
        write_junit(scores, args.junit)
        print(f"JUnit XML written to {args.junit}")
    if args.json:
        write_json(scores, args.json)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

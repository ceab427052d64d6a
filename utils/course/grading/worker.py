"""One submission in its own process tree: ``python -m utils.course.grading.worker FOLDER``
(started by :func:`utils.course.grading.grade`, never by hand).

The worker reads its job from ``FOLDER/job.json`` and the known outputs from stdin, runs the
restored notebook under nbval (``pytest --nbval-lax``, checks strict) in a kernel that may
write only to its own folder (:mod:`utils.course.sandbox`), with a time limit per cell and
per submission, then re-checks each exercise whose check passed in a clean process
(:mod:`utils.course.recheck`), and writes ``FOLDER/result.json``. It kills every process the
submission left behind. Kernels and re-checks are forked by the batch's zygote
(:mod:`utils.course.zygote`) where there is one. This module also holds the batch's
read-only snapshot of the course and the zygote's start and stop.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from utils.course import ROOT, sandbox, settings
from utils.course.grading.plugin import CELLS_ENV
from utils.course.grading.report import check_cells

CELL_TIMEOUT = 300  # seconds a cell may run
TIMEOUT = 1800  # seconds a whole submission (execution and re-check) may take
SNAPSHOT = ("utils", "tests", "solutions")  # what the graded code may import from the course
# What runs of the course write beside its code (git-ignored): views saved beside a notebook,
# the browser tests' screenshots, the HTML of ``course.sh --headless``, Jupyter's checkpoints,
# caches. Not the course: no snapshot copies it, and a change to it while a batch is graded
# (another test run, a headless run) is no sign of a submission writing into the course.
GENERATED_NAMES = frozenset({"__pycache__", "_views", ".ipynb_checkpoints", ".pytest_cache"})
GENERATED_DIRS = (Path("tests", "artifacts"),)


def generated(relative: Path) -> bool:
    """Whether ``relative`` (a path under the repository root) is what a run writes (:data:`GENERATED_NAMES`)."""
    return (bool(GENERATED_NAMES.intersection(relative.parts)) or any(relative.is_relative_to(d) for d in GENERATED_DIRS)
            or (relative.parts[:1] == ("chapters",) and relative.suffix == ".html"))


def snapshot(target: Path) -> tuple[Path, dict[str, str]]:
    """A read-only copy of what graded code imports from the course, and its hashes."""
    def skip(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(ROOT)
        return {n for n in names if n.endswith((".ipynb", ".html")) or generated(relative / n)}

    for name in SNAPSHOT:
        shutil.copytree(ROOT / name, target / name, ignore=skip)
    manifest = hashes(target, SNAPSHOT)
    make_read_only(target)
    return target, manifest


def hashes(root: Path, parts: Any) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``parts`` of ``root``, but what runs
    write (:func:`generated`)."""
    found = {}
    for part in parts:
        for path in sorted((root / part).rglob("*")) if (root / part).is_dir() else [root / part]:
            if path.is_file() and not generated(path.relative_to(root)):
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def start_zygote(batch: Path, common: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the batch's zygote (:mod:`utils.course.zygote`): it imports the heavy libraries once."""
    home = batch / "zygote"
    home.mkdir()
    env = {**environment(common, home), "PYTHONPATH": common["course"], "MPLCONFIGDIR": str(home / "matplotlib")}
    return subprocess.Popen([sys.executable, "-m", "utils.course.zygote", "serve", str(batch / "zygote.sock")],
                            cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=(home / "zygote.log").open("wb"), start_new_session=True)


def zygote_ready(zygote: subprocess.Popen[bytes] | None, batch: Path, wait: float = 600) -> str | None:
    """The zygote's socket once it is ready, or None (kernels then start as new processes)."""
    import select

    if zygote is None or not select.select([zygote.stdout], [], [], wait)[0]:
        return None
    return str(batch / "zygote.sock") if zygote.stdout.readline().strip() == b"ready" else None  # type: ignore[union-attr]


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.terminate()  # the zygote kills its children on SIGTERM
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def landlock() -> bool:
    return sandbox.landlock_abi() >= 1


def run_worker(folder: Path, job: dict[str, Any], known: bytes) -> dict[str, Any]:
    """Run the worker for one submission; kill its whole tree when time is up."""
    (folder / "job.json").write_text(json.dumps(job))
    worker = subprocess.Popen([sys.executable, "-m", "utils.course.grading.worker", str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                              cwd=folder, env={**environment(job, folder), "PYTHONPATH": str(ROOT)})
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


def environment(job: dict[str, Any], home: Path) -> dict[str, str]:
    """A clean environment for graded processes: nothing inherited but the basics."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    threads = str(job["threads"])
    return {
        **keep,
        "HOME": str(home), "TMPDIR": str(home), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
        **settings.for_graded_process(), "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }


def main(folder: Path) -> None:
    """Execute and re-check one submission, then kill every process it left behind."""
    sandbox.become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: (sandbox.kill_descendants(), os._exit(3)))
    job = json.loads((folder / "job.json").read_text())
    known = sys.stdin.buffer.read()
    deadline = time.monotonic() + job["timeout"]
    course = Path(job["course"])
    if not job["confine"]:  # no Landlock: a copy of its own, so it can only spoil that
        shutil.copytree(course, folder / "course")
        course = folder / "course"
        make_read_only(course)
    result: dict[str, Any] = {"timings": {}}
    try:
        started = time.perf_counter()
        result["cells"], result["nbval"] = _execute(folder, job, course, deadline)
        result["timings"]["nbval"] = time.perf_counter() - started
        passed = [name for name, i in check_cells(job["roles"]).items()
                  if any(c["cell"] == i and c["outcome"] == "passed" and not c["xfail"] for c in result["cells"])]
        started = time.perf_counter()
        result["rechecks"], result["recheck_error"] = recheck(folder, job, course, known, passed, deadline)
        result["timings"]["recheck"] = time.perf_counter() - started
    finally:
        sandbox.kill_descendants()
    result["changed"] = sorted(k for k, v in hashes(course, SNAPSHOT).items() if job["manifest"].get(k) != v)
    result["changed"] += sorted(set(job["manifest"]) - set(hashes(course, SNAPSHOT)))
    (folder / "result.json").write_text(json.dumps(result))


def _start(job: dict[str, Any], mode: str, *writable: Path) -> list[str]:
    """The command that starts pytest, a kernel or a re-check writing only beneath
    ``writable``: forked by the zygote where there is one, else a new Python (confined
    where Landlock allows)."""
    if job.get("zygote"):
        folders = os.pathsep.join(map(str, writable)) if job["confine"] else ""
        return [sys.executable, "-m", "utils.course.zygote", "run", job["zygote"], mode, folders]
    module = {"pytest": "pytest", "kernel": "ipykernel_launcher", "recheck": "utils.course.recheck"}[mode]
    return [*_confined(job, *writable), sys.executable, "-m", module]


def _confined(job: dict[str, Any], *writable: Path) -> list[str]:
    """The prefix that runs a command able to write only beneath ``writable`` (none without Landlock)."""
    if not job["confine"]:
        return []
    return [sys.executable, "-m", "utils.course.sandbox", os.pathsep.join(map(str, writable)), "--"]


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
    env = {**environment(job, kernel), "PYTHONPATH": str(course), "JUPYTER_PATH": str(runner / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(runner / "runtime"), "JUPYTER_CONFIG_DIR": str(runner / "jupyter"),
           "JUPYTER_DATA_DIR": str(runner / "jupyter"), "IPYTHONDIR": str(kernel / ".ipython"),
           "MPLCONFIGDIR": str(kernel / ".matplotlib"), CELLS_ENV: str(cells_file)}
    command = [*_start(job, "pytest", runner, kernel),
               "-p", "nbval.plugin", "-p", "utils.course.grading.plugin", "--nbval-lax", "--nbval-kernel-name", "grader",
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
            sandbox.kill_descendants()
            pytest.wait()
    cells = [json.loads(line) for line in cells_file.read_text().splitlines()] if cells_file.exists() else []
    return cells, log.read_text(errors="replace")[-3000:]


def recheck(folder: Path, job: dict[str, Any], course: Path, known: bytes, exercises: list[str],
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
    env = {**environment(job, work), "PYTHONPATH": str(course)}
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))

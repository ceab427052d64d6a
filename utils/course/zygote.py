"""Start graded kernels and re-checks in a second instead of half a minute.

Importing torch, TransformerLens and SAELens costs each new Python process 10-15 s of CPU,
more than running a chapter-00 notebook. The grader therefore starts one *zygote* per
batch: a process that imports those libraries, and nothing of the course or of any
learner, then forks a fresh process for every kernel and every re-check (as Android
starts its apps). A forked child is as clean as a new process: no learner code ran in
its parent. It confines itself (:func:`utils.course.sandbox.confine`) before running anything.

* ``python -m utils.course.zygote serve SOCKET`` imports, checks that it is still single-threaded
  (forking a process with threads is unsafe), prints ``ready`` and serves forks.
* ``python -m utils.course.zygote run SOCKET MODE WRITABLE [ARGS...]`` is what a kernel spec or
  the worker starts instead of Python: a small stand-in that hands its stdin, stdout,
  stderr, folder and environment to the zygote, which forks the child (``pytest``: nbval
  with ``ARGS``; ``kernel``: ipykernel with ``ARGS``; ``recheck``: :mod:`utils.course.recheck`). The stand-in forwards
  signals to the child (Jupyter's interrupt) and exits with its exit code; when the
  stand-in dies, the zygote kills the child. Without a zygote it runs the mode itself.

Learner code runs only in kernels and re-checks. The zygote refuses any request from
their descendants (and adopts their orphans, which it also refuses), so learner code
cannot ask for a child with more rights than its own; only a grader's worker, or the
pytest it had forked, may ask.
"""
from __future__ import annotations

import array
import json
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

PRELOAD = ("torch", "numpy", "einops", "jaxtyping", "transformer_lens", "sae_lens", "ipykernel.kernelapp",
           "matplotlib.font_manager", "pytest", "nbval.plugin", "jupyter_client")
MODES = ("pytest", "kernel", "recheck")  # what a child may become; only pytest's children may ask for more
_MAX_FDS = 3


# ---------------------------------------------------------------------------------------
# The stand-in (runs in the worker's sandbox; no heavy import).


def run(sock_path: str, mode: str, writable: str, args: list[str]) -> int:
    """Have the zygote fork ``mode`` with our stdio, folder and environment; wait for it."""
    request = {"mode": mode, "writable": writable, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock_path)
        conn.sendmsg([json.dumps(request).encode() + b"\n"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    except OSError:  # no zygote (or it is gone): do the work in this process instead
        return _child(request)
    reader = conn.makefile("rb")
    reply = json.loads(reader.readline() or b'{"error": "the zygote closed the connection"}')
    if "error" in reply:
        print(f"zygote: {reply['error']}", file=sys.stderr)
        return 70

    def forward(signum: int, frame: Any) -> None:
        conn.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            line = reader.readline()
            break
        except InterruptedError:  # a signal arrived while waiting
            continue
    return json.loads(line).get("exit", 70) if line else 70


# ---------------------------------------------------------------------------------------
# The zygote.


def serve(sock_path: str) -> None:
    import importlib

    from utils.course import sandbox

    for name in PRELOAD:
        importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").exists() else 1
    if threads > 1 and not _only_allocator_threads():
        print(f"not ready: {threads} threads after importing; forking would be unsafe", flush=True)
        return
    sandbox.become_subreaper()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # child pid -> its stand-in's connection
    modes: dict[int, str] = {}  # child pid -> what it became
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("ready", flush=True)
    while not stop:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is server:
                conn, _ = server.accept()
                pid, mode = _fork_for(conn, server, selector, modes)
                if pid:
                    children[pid], modes[pid] = conn, mode
                    selector.register(conn, selectors.EVENT_READ, pid)
                else:
                    conn.close()
            else:
                _message(key.fileobj, key.data, children, selector)
        _reap(children, selector)
        for pid in [p for p in modes if p not in children]:
            del modes[pid]
    for pid in [*children, *sandbox.descendants(os.getpid())]:
        _kill(pid)
    server.close()


def _only_allocator_threads() -> bool:
    """True if the extra threads are jemalloc's background ones (fork-safe by design)."""
    names = [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    return all(n == names[0] or n.startswith("jemalloc") for n in names)


def _fork_for(conn: socket.socket, server: socket.socket, selector: selectors.BaseSelector,
              modes: dict[int, str]) -> tuple[int, str]:
    """Fork a child for the request on ``conn``; its pid (0 if refused) and mode."""
    data, fds = _receive(conn)
    request = json.loads(data)
    refusal = _refusal(_peer(conn)[0], request, modes)
    if refusal:
        conn.sendall(json.dumps({"error": f"refused: {refusal}"}).encode() + b"\n")
        for fd in fds:
            os.close(fd)
        return 0, ""
    child = os.fork()
    if child == 0:
        code = 70
        try:
            for other in [server, conn, *(k.fileobj for k in selector.get_map().values())]:
                other.close()  # nothing of the zygote's, nor other children's stand-ins, stays open
            selector.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.setsid()
            code = _child(request)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": child}).encode() + b"\n")
    return child, request["mode"]


def _refusal(peer: int, request: dict[str, Any], modes: dict[int, str]) -> str:
    """Why a request may not be served ('' if it may). A request from a process outside the
    zygote's tree (a grader's worker) may ask for anything; from inside, only pytest's own
    descendants may, for a kernel: learner code runs in kernels and re-checks."""
    if request.get("mode") not in MODES:
        return f"unknown mode {request.get('mode')!r}"
    chain = _ancestors(peer)
    if os.getpid() not in chain:
        return ""
    below = chain.index(os.getpid()) - 1  # the zygote's child the request comes through
    if below >= 0 and modes.get(chain[below]) == "pytest" and request["mode"] == "kernel":
        return ""
    return "the request comes from a graded process"


def _ancestors(pid: int) -> list[int]:
    """``pid`` and its ancestors, nearest first (read from /proc)."""
    chain = [pid]
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, ancillary, _, _ = conn.recvmsg(1 << 20, socket.CMSG_LEN(_MAX_FDS * 4))
        if not chunk:
            raise ConnectionError("the stand-in went away")
        data += chunk
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
    return data, fds


def _message(conn: Any, pid: int, children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    """A stand-in forwarded a signal, or went away (then its child goes too)."""
    try:
        data = conn.recv(4096)
    except OSError:
        data = b""
    if not data:
        selector.unregister(conn)
        conn.close()
        children.pop(pid, None)
        _kill(pid)
        return
    for line in data.splitlines():
        signum = json.loads(line).get("signal")
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    """Collect children that ended (telling their stand-ins how), and orphans we adopted."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            except OSError:
                pass
            selector.unregister(conn)
            conn.close()
        _kill(pid)  # its session: anything it left behind


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ---------------------------------------------------------------------------------------
# The child: become a kernel or a re-check, confined.


def _child(request: dict[str, Any]) -> int:
    import random
    import tempfile

    from utils.course import sandbox

    os.chdir(request["cwd"])
    ours = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.clear()
    os.environ.update(request["env"])
    # The course is imported afresh from the requester's PYTHONPATH (its own copy, maybe),
    # never from the zygote's: drop what the zygote holds of it.
    sys.path[:] = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *(p for p in sys.path if p not in ours)]
    for name in [n for n in sys.modules if n.split(".")[0] in ("utils", "tests", "solutions", "exercises")]:
        del sys.modules[name]
    tempfile.tempdir = None  # the zygote's may have been cached
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if request["writable"]:  # empty: not confined (the grader's choice where Landlock is missing)
        sandbox.confine([Path(p) for p in request["writable"].split(os.pathsep)])
    random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    if request["mode"] == "kernel":
        from ipykernel import kernelapp

        sys.argv = [sys.executable, *request["args"]]
        kernelapp.launch_new_instance(argv=request["args"])
        return 0
    if request["mode"] == "recheck":
        from utils.course import recheck

        recheck.main()  # ends with os._exit
    if request["mode"] == "pytest":
        import pytest

        sys.argv = ["pytest", *request["args"]]
        return int(pytest.main(request["args"]))
    return 64


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
        return 0
    if argv[:1] == ["run"] and len(argv) >= 4:
        return run(argv[1], argv[2], argv[3], argv[4:])
    print("usage: python -m utils.course.zygote serve SOCKET | run SOCKET MODE WRITABLE [ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Confine a submission's processes: writes only to its own folders, every descendant killed.

The grader runs learner code, so the course folder (checks, known outputs, the reference)
must be read-only to it, and a kernel stuck in a loop or a process it spawned must not
outlive the submission. Both without root:

* :func:`confine` uses Linux Landlock (kernel 5.13+, unprivileged): after it, this process
  and everything it starts may write only beneath the given folders, and may not signal
  processes outside its sandbox. ``python -m utils.course.sandbox DIR[:DIR...] -- COMMAND ...``
  confines itself, then becomes ``COMMAND``.
* :func:`become_subreaper` makes orphans of this process's children (a kernel whose
  ``pytest`` was killed, a daemon it forked) become its own children, so that
  :func:`kill_descendants` finds and ends them all by pid.

Where Landlock is missing (another OS, an old kernel) :func:`confine` returns False; the
grader then still runs each submission on its own copy of the course and compares hashes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # same numbers on every architecture
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1
_PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 38, 36
# Landlock filesystem rights that change the filesystem, by the ABI version that added them.
_WRITE_RIGHTS = {
    1: sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12)),  # write, remove, make anything
    2: 1 << 13,  # refer (link or rename across folders)
    3: 1 << 14,  # truncate
}
_FILE_RIGHTS = (1 << 1) | (1 << 14)  # the rights a rule on a single file may grant
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2  # ABI 6


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel, 0 where there is none."""
    if not sys.platform.startswith("linux"):
        return 0
    abi = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(abi, 0)


def confine(writable: Sequence[Path]) -> bool:
    """Let this process and its future children write only beneath ``writable`` (and to
    ``/dev``: /dev/null, shared memory) nor signal anything outside. False if unsupported."""
    abi = landlock_abi()
    if abi < 1:
        return False
    libc = _libc()
    handled = sum(rights for version, rights in _WRITE_RIGHTS.items() if version <= abi)
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    # struct landlock_ruleset_attr {u64 handled_access_fs; u64 handled_access_net; u64 scoped}
    # grew with the ABI: pass only the fields this kernel knows.
    attr = struct.pack("=QQQ", handled, 0, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        for path in [*map(Path, writable), Path("/dev")]:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rights = handled if path.is_dir() else handled & _FILE_RIGHTS
                # struct landlock_path_beneath_attr {u64 allowed_access; s32 parent_fd} (packed)
                rule = struct.pack("=Qi", rights, fd)
                if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.c_char_p(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock: cannot allow writes under {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 or libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock: cannot restrict this process")
    finally:
        os.close(ruleset)
    return True


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux), so none escapes :func:`kill_descendants`."""
    return sys.platform.startswith("linux") and _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid``, read from /proc (empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_descendants() -> None:
    """Kill every descendant of this process by pid and reap those that are our children."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in descendants(os.getpid()):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m utils.course.sandbox WRITABLE[:WRITABLE...] -- COMMAND [ARGS...]")
    confine([Path(p) for p in argv[0].split(os.pathsep) if p])
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main()

"""Re-check a submission's exercises in a clean process: ``python -m utils.course.recheck`` (run by the grader).

The grader pipes in one line holding a nonce, one JSON line (chapter, seed offset, time
limit, exercises to re-check, and the module to build: the course's module cells with the
learner's exercise cells in place of the stubs), then the known outputs that the reference
computed *in the grader's process* on inputs drawn with that seed offset (``torch.save``
bytes). Nothing of it is on disk, so the learner's code cannot read the expected answers.

Before any learner code runs this process imports the checks, turns every function of the
reference module into one that refuses to run while a learner's function is running, does
the same for each exercise's twins (library functions that compute its answer,
:mod:`utils.course.twins`) while the learner's function *for that exercise* runs, and takes
a fingerprint of the course's modules, torch and the builtins. Then it runs the
learner's cells and re-checks each exercise (:func:`utils.course.checking.recheck`) under a time
limit; after each cell and each check, whatever was replaced is put back and blamed on that
exercise. An exercise passes only if its check passes, the function is the learner's own
(not imported), it never called the reference nor one of its twins, and it replaced nothing.

It prints one JSON line per exercise, prefixed by the nonce (a learner's ``print`` cannot
forge a result), and ends with ``os._exit`` so no learner ``atexit`` hook runs.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import io
import json
import linecache
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

LEARNER_FILE = "<exercise {}>"  # the file name a learner's exercise cell runs under


class TimeUp(BaseException):
    """The time limit of one step ran out (a BaseException: no ``except Exception`` stops it)."""


class ReferenceCalled(Exception):
    """A learner's function called the reference solution."""


_IN_LEARNER = [0]  # > 0 while a learner's function runs
_GRADED: list[str | None] = [None]  # the exercise being re-checked
_REFERENCE_CALLS: list[str] = []
_TWIN_CALLS: list[str] = []


@functools.cache
def _limit_handler() -> None:
    def up(signum: int, frame: Any) -> None:
        raise TimeUp()

    signal.signal(signal.SIGALRM, up)


class _Limit:
    """``with _Limit(seconds):`` raises :class:`TimeUp` inside the block when time runs out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        _limit_handler()
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _guard_reference(chapter: str) -> None:
    """Every reference function, wherever the course holds it (the reference module, the
    mistakes catalog built on it), refuses to run while a learner's function is running; so
    do the library's twins of the chapter's exercises that its checks module names
    (``REFERENCE_TWINS``: modules whose functions and classes count as the reference)."""
    import importlib

    from utils.course.chapter import Chapter

    guarded: dict[int, Callable[..., Any]] = {}
    module = sys.modules.get(Chapter(chapter).reference_module)
    if module is not None:
        guarded.update({id(fn): _refusing(fn) for fn in vars(module).values()
                        if inspect.isfunction(fn) and fn.__module__ == module.__name__})
    checks = sys.modules.get(Chapter(chapter).checks_module)
    for name in getattr(checks, "REFERENCE_TWINS", ()):
        twin = importlib.import_module(name)
        for value in list(vars(twin).values()):
            if getattr(value, "__module__", None) != twin.__name__:
                continue
            if inspect.isfunction(value):
                guarded[id(value)] = _refusing(value)
            elif inspect.isclass(value) and "__init__" in vars(value):
                value.__init__ = _refusing(value.__init__)  # type: ignore[misc]
    if not guarded:
        return
    for name, mod in list(sys.modules.items()):
        if name.startswith(("solutions", "tests", "utils")) and isinstance(mod, ModuleType):
            for attr, value in list(vars(mod).items()):
                if id(value) in guarded:
                    setattr(mod, attr, guarded[id(value)])


def _refusing(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def reference(*args: Any, **kwargs: Any) -> Any:
        if _IN_LEARNER[0]:
            _REFERENCE_CALLS.append(fn.__name__)
            raise ReferenceCalled(f"{fn.__name__} of the reference solution was called from your code")
        return fn(*args, **kwargs)

    del reference.__wrapped__  # type: ignore[attr-defined]  # no way back to the original
    return reference


def _guard_twins(chapter: str) -> None:
    """Each twin of an exercise of ``chapter`` refuses to run while the learner's function for
    that exercise runs (elsewhere, and for other exercises, it runs as usual)."""
    from utils.course.twins import twin_functions, twins

    of: dict[int, tuple[Callable[..., Any], set[str]]] = {}
    for exercise, names in twins(chapter).items():
        for fns in twin_functions(names).values():
            for fn in fns:
                of.setdefault(id(fn), (fn, set()))[1].add(exercise)
    guarded = {key: _refusing_twin(fn, exercises) for key, (fn, exercises) in of.items()}
    for name, mod in list(sys.modules.items()):
        if name.startswith(("solutions", "tests", "utils")) and isinstance(mod, ModuleType):
            for attr, value in list(vars(mod).items()):
                if id(value) in guarded:
                    setattr(mod, attr, guarded[id(value)])


def _refusing_twin(fn: Callable[..., Any], exercises: set[str]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def twin(*args: Any, **kwargs: Any) -> Any:
        if _IN_LEARNER[0] and _GRADED[0] in exercises:
            _TWIN_CALLS.append(fn.__name__)
            raise ReferenceCalled(f"{fn.__name__}, a library function that computes {_GRADED[0]}'s answer, was "
                                  "called from your code")
        return fn(*args, **kwargs)

    del twin.__wrapped__  # type: ignore[attr-defined]
    return twin


def _learner(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, marked as learner code while it runs."""

    @functools.wraps(fn)
    def learner(*args: Any, **kwargs: Any) -> Any:
        _IN_LEARNER[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _IN_LEARNER[0] -= 1

    return learner


def _watched() -> Iterator[tuple[str, Any]]:
    """The namespaces whose functions a check relies on: the course's modules, torch's main
    namespaces, its tensor class, and the builtins."""
    import torch

    for name, module in list(sys.modules.items()):
        if isinstance(module, ModuleType) and (name.split(".")[0] in ("utils", "tests", "solutions", "sae_lens")):
            yield name, module
    yield "torch", torch
    yield "torch.nn.functional", torch.nn.functional
    yield "torch.Tensor", torch.Tensor
    if hasattr(torch._C, "TensorBase"):
        yield "torch._C.TensorBase", torch._C.TensorBase
    yield "builtins", builtins


_MISSING = object()


def _fingerprint() -> dict[str, tuple[Any, str, Any, Any]]:
    """key -> (namespace, attribute, value, the value's code) for every value the checks
    rely on, and every course or torch module in ``sys.modules``; held to be put back."""
    found = {}
    for owner, namespace in _watched():
        for attr, value in list(vars(namespace).items()):
            if attr != "__warningregistry__":
                found[f"{owner}.{attr}"] = (namespace, attr, value, getattr(value, "__code__", None))
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("utils", "tests", "solutions", "torch"):
            found[f"sys.modules[{name!r}]"] = (sys.modules, name, module, None)
    return found


def _undo(before: dict[str, tuple[Any, str, Any, Any]]) -> list[str]:
    """Put back whatever of ``before`` the learner's code replaced (a value, a function's
    code, a module in ``sys.modules``, a torch function mode left on); returns what."""
    import torch

    changed = []
    for key, (namespace, attr, value, code) in before.items():
        current = namespace.get(attr, _MISSING) if isinstance(namespace, dict) else vars(namespace).get(attr, _MISSING)
        if current is value and (code is None or getattr(value, "__code__", None) is code):
            continue
        changed.append(key)
        try:
            if code is not None and getattr(value, "__code__", None) is not code:
                value.__code__ = code
            if current is not value:
                if isinstance(namespace, dict):
                    namespace[attr] = value
                else:
                    setattr(namespace, attr, value)
        except (AttributeError, TypeError):  # a builtin type refuses; the exercise fails anyway
            pass
    while torch._C._len_torch_function_stack():
        changed.append("a torch function mode left on")
        torch._C._pop_torch_function_stack()
    return sorted(changed)


def _load(chapter: str, chunks: list[list[Any]], limit: float, baseline: dict[str, Any]) -> tuple[
        dict[str, Any], dict[str, str], dict[str, list[str]]]:
    """Run the module cells and the learner's exercise cells, in order, in one namespace.
    Returns the namespace, per exercise why its cell could not run, and what its cell
    replaced of ``baseline`` (put back at once, so that it cannot help another exercise)."""
    namespace: dict[str, Any] = {"__name__": "submission", "__builtins__": builtins}
    broken: dict[str, str] = {}
    replaced: dict[str, list[str]] = {}
    for kind, exercise, code in chunks:
        filename = LEARNER_FILE.format(exercise) if kind == "exercise" else f"<course module {chapter}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            compiled = compile(code, filename, "exec")
        except SyntaxError as error:
            broken[exercise] = (f"its exercise cell is not plain Python ({error.msg}, line {error.lineno}); "
                                "IPython magics cannot be re-checked: move them to another cell")
            continue
        try:
            with _Limit(limit):
                exec(compiled, namespace)
        except TimeUp:
            broken[exercise] = f"its exercise cell did not finish in {limit:.0f} s when run on its own"
        except BaseException as error:  # noqa: BLE001 (a learner's cell may raise anything, SystemExit too)
            if kind != "exercise":
                raise
            line = traceback.extract_tb(error.__traceback__)[-1]
            broken[exercise] = (f"its exercise cell raised {type(error).__name__}: {error} (line {line.lineno}) "
                                "when run on its own, with only the module's imports")
        finally:
            if kind == "exercise":
                replaced[exercise] = _undo(baseline)
    return namespace, broken, replaced


def _own(fn: Any) -> str:
    """Why ``fn`` is not a function of the learner's exercise cells ('' when it is)."""
    if not callable(fn):
        return ""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    filename = getattr(code, "co_filename", "")
    if filename.startswith(LEARNER_FILE.split("{")[0]):
        return ""
    origin = getattr(target, "__module__", None) or filename or type(target).__name__
    return f"the function graded is not defined in an exercise cell (it comes from {origin})"


def recheck_all(spec: dict[str, Any], known: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Re-check ``spec['exercises']`` of ``spec['chapter']``; ``emit`` each result."""
    from utils.course import checking, settings
    from utils.course.chapter import Chapter

    os.environ[settings.STRICT] = "1"
    chapter, limit = spec["chapter"], float(spec["limit"])
    checks = Chapter(chapter).registered_checks()
    _guard_reference(chapter)
    _guard_twins(chapter)
    baseline = _fingerprint()
    namespace, broken, loaded = _load(chapter, spec["chunks"], limit, baseline)
    for exercise in spec["exercises"]:
        emit({"exercise": exercise, "started": True})
        result = {"exercise": exercise, "passed": False, "reason": "", "tampered": []}
        fn = namespace.get(exercise)
        calls, twin_calls = len(_REFERENCE_CALLS), len(_TWIN_CALLS)
        _GRADED[0] = exercise
        if exercise in broken:
            result["reason"] = broken[exercise]
        elif fn is None:
            result["reason"] = f"its exercise cell does not define {exercise}"
        elif _own(fn):
            result["tampered"].append(_own(fn))
        else:
            try:
                with _Limit(limit):
                    checking.recheck(checks[exercise], _learner(fn), None, spec["seed_offset"], known=known[exercise])
                result["passed"] = True
            except checking.CheckFailure as failure:
                result["reason"] = str(failure)
            except TimeUp:
                result["reason"] = f"it did not finish in {limit:.0f} s on fresh inputs"
            except BaseException as error:  # noqa: BLE001
                result["reason"] = f"the re-check stopped: {type(error).__name__}: {error}"
        _GRADED[0] = None
        if len(_REFERENCE_CALLS) > calls:
            result["tampered"].append(f"it called the reference solution ({_REFERENCE_CALLS[-1]})")
        if len(_TWIN_CALLS) > twin_calls:
            result["tampered"].append(f"it called {_TWIN_CALLS[-1]}, a library function that computes its answer "
                                      "(its twin, graded like the reference)")
        replaced = loaded.get(exercise, []) + _undo(baseline)
        if replaced:
            result["tampered"].append(f"its code replaced {', '.join(replaced[:3])} (put back)")
        result["passed"] = result["passed"] and not result["tampered"]
        emit(result)


def main() -> None:
    stdin = sys.stdin.buffer
    nonce = stdin.readline().decode().strip()
    spec = json.loads(stdin.readline())
    import torch

    known = torch.load(io.BytesIO(stdin.read()), weights_only=True)
    out = os.fdopen(os.dup(1), "w")  # our own handle on stdout: a learner closing sys.stdout changes nothing

    def emit(record: dict[str, Any]) -> None:
        out.write(f"{nonce} {json.dumps(record)}\n")
        out.flush()

    try:
        recheck_all(spec, known, emit)
    except BaseException as error:  # noqa: BLE001 (report it, whatever it was)
        emit({"fatal": f"{type(error).__name__}: {error}"})
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

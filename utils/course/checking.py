"""Checks: run a learner's function, watch what it does, compare with known outputs.

A chapter's checks live in ``tests/checks/<chapter>.py`` (found through
:class:`utils.course.chapter.Chapter`); each is a plain function::

    @exercise_check("ch00_toolkit")
    def check_top_k_latents(top_k_latents):
        bk = backend()
        values, indices = run(top_k_latents, bk, bk.model, sae, prompt, pos=-1, k=5)
        expect_tensor(values, known("values", values), name="values", dims="k")

* :func:`backend` is the checks' own copy of a backend (never the notebook's), restored to
  its pristine state at the start of every check.
* :func:`run` calls the learner's function and *watches* it: an exception (its line of
  the learner's code is shown, without our frames), a missing return, inputs changed in
  place, grad mode left changed, hooks or SAEs left on the model, model or dictionary
  weights or config flags changed. Each gets its own message, and the harm is undone so the
  next check is not misled.
* :func:`known` returns the stored known output under a key. Known outputs are written only
  by ``python -m utils.course record`` (:func:`record`), which runs each check on the reference; the grader
  instead records them in memory from the reference on fresh inputs (:func:`recheck`).
* :func:`seed` gives the seeds a check draws its inputs with, shifted by the grader.
* Comparisons (:func:`expect_tensor`, :func:`expect_close`, :func:`expect_sparse`) live in
  ``utils.course.compare``: tolerances at the scale of each quantity (the current one is
  :func:`utils.course.compare.tolerance`), diagnoses of likely mistakes.

A failed check raises :class:`CheckFailure` when checks are *strict* (under pytest, nbval,
the grader and the build: ``SAE_CIRCUITS_STRICT=1``, see :mod:`utils.course.settings`); in a notebook a learner runs by hand
it prints the diagnosis in red and returns, so Run All goes on past an unfinished exercise.
When a check passes it prints one line with its margin and remembers the function, so
:func:`checked` can hand later cells the learner's function, or the reference until then.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import sys
import sysconfig
import traceback
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from utils.course import ROOT, compare, settings
from utils.course.chapter import Chapter
from utils.course.compare import (  # noqa: F401 (re-exported)
    CheckFailure,
    expect_close,
    expect_sparse,
    expect_tensor,
    fail,
    python_number,
)

if TYPE_CHECKING:
    from utils.backends import Backend

RECORD_COMMAND = "python -m utils.course record"


# ---------------------------------------------------------------------------------------
# Settings: what the checks compute in (the meta-tests and the grader change them).


@dataclass(frozen=True)
class Settings:
    """``dtype``/``device`` of the checks' backend; ``seed_offset`` shifts every input seed;
    ``signatures=False`` skips recognising catalogued mistakes (a failure then gets a
    generic diagnosis: the meta-tests use it to stay fast)."""

    dtype: torch.dtype = torch.float32
    device: str = "cpu"  # the toy model is tiny: checks run on the CPU wherever the notebook runs
    seed_offset: int = 0
    signatures: bool = True
    tf32_weights: bool = False  # weights rounded to TF32's 10-bit mantissa (a GPU's TF32 matmuls, roughly)


_SETTINGS: contextvars.ContextVar[Settings] = contextvars.ContextVar("check_settings", default=Settings())  # noqa: B039 (frozen)


@contextlib.contextmanager
def check_settings(**changes: Any) -> Iterator[Settings]:
    """Run checks with other settings, e.g. ``check_settings(dtype=torch.float64)``."""
    token = _SETTINGS.set(Settings(**{**_SETTINGS.get().__dict__, **changes}))
    try:
        yield _SETTINGS.get()
    finally:
        _SETTINGS.reset(token)


def seed(n: int) -> int:
    """The seed a check uses for its ``n``-th input draw (shifted when the grader re-checks)."""
    return n + _SETTINGS.get().seed_offset


# ---------------------------------------------------------------------------------------
# The registry: exercises keyed by (chapter, name).


@dataclass
class _Run:
    chapter: str
    exercise: str
    recording: bool
    store: dict[str, Any] = field(default_factory=dict)


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("check_run", default=None)
_RECORDING: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("recording", default=None)
_STORE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("store", default=None)
CHECKS: dict[tuple[str, str], Callable[..., None]] = {}  # (chapter, exercise) -> check
PASSED: dict[tuple[str, str], Callable[..., Any]] = {}  # (chapter, exercise) -> the function that passed
_LAST_CHAPTER: list[str] = []  # chapter of the last check run in this process


TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {}  # (chapter, exercise) -> (atol, rtol), where not the default


def exercise_check(chapter: str, *, atol: float = compare.ATOL, rtol: float = compare.RTOL
                   ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``check_<exercise>(fn)`` under (chapter, exercise); load or record its
    known outputs, report the result, and remember a function that passed. ``atol`` and
    ``rtol`` are the check's tolerance (``utils.course.compare``), set per check from the
    measured float noise of the reference and the smallest conceptual mistake
    (``python -m utils.course bench tolerances``)."""

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        exercise = check.__name__.removeprefix("check_")
        key = (chapter, exercise)
        if key in CHECKS and CHECKS[key].__module__ != check.__module__:
            raise ValueError(f"exercise {key} has two checks ({CHECKS[key].__module__}, {check.__module__})")

        @functools.wraps(check)
        def run_check(fn: Any, *args: Any, **kwargs: Any) -> None:
            _LAST_CHAPTER[:] = [chapter]
            try:
                _run_check(check, chapter, exercise, fn, *args, **kwargs)
            except CheckFailure as failure:
                PASSED.pop(key, None)
                failure = CheckFailure(f"{exercise}: {failure}", header=f"{exercise}: {failure.header}")
                if settings.strict():
                    raise failure from None
                print("\n".join(failure._render_traceback_()), file=sys.stderr)
                return
            PASSED[key] = fn

        run_check.exercise = exercise  # type: ignore[attr-defined]
        run_check.chapter = chapter  # type: ignore[attr-defined]
        if (atol, rtol) != (compare.ATOL, compare.RTOL):
            TOLERANCES[key] = (atol, rtol)
        CHECKS[key] = run_check
        return run_check

    return decorate


def _run_check(check: Callable[..., None], chapter: str, exercise: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    recording = _RECORDING.get()
    if recording is not None and not getattr(fn, "__module__", "").startswith("solutions."):
        raise RuntimeError("known outputs are recorded from the reference solution only")
    state = _Run(chapter, exercise, recording is not None)
    if recording is None:
        given = _STORE.get()
        state.store = given if given is not None else _load_fixture(chapter, exercise)
    token = _RUN.set(state)
    try:
        atol, rtol = TOLERANCES.get((chapter, exercise), (compare.ATOL, compare.RTOL))
        with compare.measuring(_SETTINGS.get().dtype, atol, rtol) as tolerance:
            check(fn, *args, **kwargs)
    except CheckFailure:
        raise
    except Exception as error:  # our own code met something it did not expect
        raise CheckFailure(
            f"the check could not use your result ({type(error).__name__}: {error}). "
            "Compare its type and shape with the docstring."
        ) from None
    finally:
        _RUN.reset(token)
        _restore_backends()
    if recording is not None:
        recording[exercise] = state.store
        if recording.get("__write__", True):
            path = Chapter(chapter).fixture(exercise)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state.store, path)
    margin = max(tolerance.margins, default=0.0)
    print(f"\N{CHECK MARK} {exercise}: all checks passed (largest deviation {100 * margin:.2g}% of the tolerance)")


def _load_fixture(chapter: str, exercise: str) -> dict[str, Any]:
    path = Chapter(chapter).fixture(exercise)
    if not path.exists():
        raise RuntimeError(f"no known outputs at {path.relative_to(ROOT)}: run `{RECORD_COMMAND} {chapter}` "
                           "to record them from the reference")
    return torch.load(path, weights_only=True)


def recording_now() -> bool:
    """True while known outputs are being recorded (the reference is running): a check that
    needs a known output before it has the learner's result computes that result first."""
    state = _RUN.get()
    return state is not None and state.recording


def known(key: str, value: Any) -> Any:
    """The known output stored under ``key`` (recording: store ``value`` and return it)."""
    state = _RUN.get()
    if state is None:
        raise RuntimeError("known() is only meaningful inside a check")
    if state.recording:
        state.store[key] = value.detach().cpu().clone() if isinstance(value, Tensor) else value
        if isinstance(value, Tensor) and value.is_floating_point():
            state.store[key] = state.store[key].float()  # fixtures are float32 whatever the check ran in
        return state.store[key]
    if key not in state.store:
        raise RuntimeError(f"known output {key!r} of {state.exercise} is missing: re-record with "
                           f"`{RECORD_COMMAND} {state.chapter}`")
    return state.store[key]


@contextlib.contextmanager
def recording(write: bool = True) -> Iterator[dict[str, Any]]:
    """Checks store what they see (:func:`record`); yields exercise -> store. With
    ``write=False`` nothing is written to ``tests/fixtures``."""
    stores: dict[str, Any] = {"__write__": write}
    token = _RECORDING.set(stores)
    try:
        yield stores
    finally:
        _RECORDING.reset(token)


def record(ch: Chapter) -> None:
    """Record the known outputs of every check of ``ch`` from its reference: the only way
    files under ``tests/fixtures/`` are written (``python -m utils.course record``). Run it
    deliberately, after changing a reference or a check, and review the diff."""
    reference = ch.reference()
    with recording():
        for name, check in ch.checks().items():
            check(getattr(reference, name))


def recheck(check: Callable[..., None], fn: Any, reference: Callable[..., Any] | None, seed_offset: int,
            known: dict[str, Any] | None = None) -> None:
    """Check ``fn`` on inputs drawn with shifted seeds, against the reference's outputs on
    the same inputs computed here (not read from fixtures); raises :class:`CheckFailure`
    when wrong, whatever the strictness. Used by the grader, which may pass ``known``: those
    outputs, recorded (:func:`recording`) by the reference in another process."""
    with settings.strict_checks(), check_settings(seed_offset=seed_offset):
        if known is None:
            with recording(write=False) as stores:
                check(reference)
            known = stores[check.exercise]  # type: ignore[attr-defined]
        token = _STORE.set(known)
        try:
            check(fn)
        finally:
            _STORE.reset(token)


def checked(fn: Callable[..., Any], chapter: str | None = None) -> Callable[..., Any]:
    """Your ``fn`` if its check passed in this session, else the reference solution.

    Later cells use this, so one unfinished exercise never breaks the rest of a chapter.
    Exercises are keyed by (chapter, name); give ``chapter`` where two chapters share a name.
    """
    name = getattr(fn, "__name__", None)
    if not any(n == name for _, n in CHECKS):
        _import_all_checks()
    chapters = sorted(c for c, n in CHECKS if n == name)
    if not chapters:
        raise ValueError(f"{name!r} is not an exercise of this course")
    for ch in chapters:
        if PASSED.get((ch, name)) is fn and chapter in (None, ch):
            return fn
    chapter = chapter or _chapter_of(fn, chapters)
    print(f"(using the reference {name}: yours has not passed its check yet)")
    return getattr(Chapter(chapter).reference(), name)


def earlier(chapter: str, name: str) -> Callable[..., Any]:
    """Exercise ``name`` of an earlier ``chapter``, for a later chapter to use: your function
    if its check passed in this session, else the reference. Later chapters (their stubs and
    notebooks) reach earlier chapters' functions this way, never by importing ``solutions``.
    Quiet, unlike :func:`checked`: a module binds it once, when it is imported."""
    if (chapter, name) not in CHECKS:
        try:
            Chapter(chapter).registered_checks()  # not Chapter.get: the grader's copy of the course has no sources
        except ModuleNotFoundError:
            raise ValueError(f"{chapter!r} is not a chapter of this course") from None
    if (chapter, name) not in CHECKS:
        raise ValueError(f"{name!r} is not an exercise of {chapter}")
    passed = PASSED.get((chapter, name))
    return passed if passed is not None else getattr(Chapter(chapter).reference(), name)


def _chapter_of(fn: Callable[..., Any], chapters: list[str]) -> str:
    module = getattr(fn, "__module__", "") or ""
    for ch in chapters:
        if module.endswith(f".{ch}"):
            return ch
    if len(chapters) == 1:
        return chapters[0]
    if _LAST_CHAPTER and _LAST_CHAPTER[0] in chapters:
        return _LAST_CHAPTER[0]
    raise ValueError(f"{fn.__name__!r} is an exercise of several chapters {chapters}: "
                     f"call checked({fn.__name__}, chapter=...)")


def _import_all_checks() -> None:
    """Importing every check module registers every exercise (needed before any check ran)."""
    for ch in Chapter.with_checks():
        ch.registered_checks()


# ---------------------------------------------------------------------------------------
# The checks' backend, kept pristine.


@dataclass
class _Pristine:
    backend: Backend
    params: dict[str, Tensor]
    flags: dict[str, tuple[Any, str, Any]]  # description -> (object, attribute, value)


_BACKENDS: dict[tuple[str, torch.dtype, str, bool], _Pristine] = {}
_IN_USE: list[_Pristine] = []
_CFG_FLAGS = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in", "use_attn_in", "use_hook_tokens")


def backend(name: str = "toy") -> Backend:
    """The checks' own copy of backend ``name`` in the current settings, restored to its
    pristine state (no hooks, no SAEs, original weights and flags)."""
    settings = _SETTINGS.get()
    key = (name, settings.dtype, settings.device, settings.tf32_weights)
    if key not in _BACKENDS:
        from utils.backends import load_backend

        bk = load_backend(name, device=settings.device, fresh=True, dtype=settings.dtype)
        if settings.tf32_weights:
            with torch.no_grad():
                for tensor in _parameters(bk).values():
                    tensor.copy_(_round_to_tf32(tensor))
        _BACKENDS[key] = _Pristine(bk, _parameters(bk, clone=True), _flags(bk))
    pristine = _BACKENDS[key]
    _restore(pristine)
    if pristine not in _IN_USE:
        _IN_USE.append(pristine)
    return pristine.backend


def _round_to_tf32(x: Tensor) -> Tensor:
    """``x`` (float32) rounded to the nearest value with a 10-bit mantissa, as TF32 reads it."""
    if x.dtype != torch.float32:
        return x
    bits = x.view(torch.int32)
    rounded = (bits + (1 << 12)) & ~((1 << 13) - 1)  # round half up at bit 13 of the mantissa
    return rounded.view(torch.float32)


def _modules(bk: Backend) -> dict[str, torch.nn.Module]:
    found = {"model": bk.model}
    for kind, group in (("saes", bk.saes), ("attn_saes", bk.attn_saes), ("transcoders", bk.transcoders)):
        found.update({f"{kind}[{key!r}]": module for key, module in group.items()})
    if bk.clt is not None:  # the cross-layer transcoder (chapter 07)
        found["clt"] = bk.clt
    return found


def _parameters(bk: Backend, clone: bool = False) -> dict[str, Tensor]:
    return {f"{m}.{p}": (t.detach().clone() if clone else t) for m, module in _modules(bk).items()
            for p, t in module.state_dict(keep_vars=True).items()}


def _flags(bk: Backend) -> dict[str, tuple[Any, str, Any]]:
    flags = {f"model.cfg.{f}": (bk.model.cfg, f, getattr(bk.model.cfg, f)) for f in _CFG_FLAGS
             if hasattr(bk.model.cfg, f)}
    for m, module in _modules(bk).items():
        flags[f"{m}.training"] = (module, "training", module.training)
        if hasattr(module, "use_error_term"):
            flags[f"{m}.use_error_term"] = (module, "use_error_term", module.use_error_term)
        for p, t in module.named_parameters():
            flags[f"{m}.{p}.requires_grad"] = (t, "requires_grad", t.requires_grad)
    return flags


def _hooks_left(model: Any) -> list[str]:
    left = [f"an SAE at {name}" for name in getattr(model, "acts_to_saes", {})]
    for name, hook_point in model.hook_dict.items():
        if hook_point._forward_hooks or hook_point._backward_hooks or hook_point._forward_pre_hooks:
            left.append(f"a hook on {name}")
    return left


def _dictionary_hooks_left(bk: Backend) -> list[str]:
    """Hooks left on a dictionary's own hook points (an SAE is a HookedRootModule: its
    hook_sae_acts_post and the like keep a hook after it is taken off the model, and
    ``model.reset_hooks()`` does not reach them)."""
    on_model = {id(h) for h in bk.model.hook_dict.values()}  # reported as the model's hooks
    left = []
    for name, module in _modules(bk).items():
        if name == "model":
            continue
        for point, hook_point in getattr(module, "hook_dict", {}).items():
            if id(hook_point) not in on_model and (
                    hook_point._forward_hooks or hook_point._backward_hooks or hook_point._forward_pre_hooks):
                left.append(f"{name}.{point}")
    return left


def _damage(pristine: _Pristine) -> list[str]:
    """What is not as it was: hooks/SAEs, weights, flags."""
    bk = pristine.backend
    problems = []
    hooks = _hooks_left(bk.model)
    if hooks:
        problems.append(f"left {', '.join(hooks[:3])}{' and more' if len(hooks) > 3 else ''} on the model "
                        "(hooks are global state): use `with model.saes(...)`, `with model.hooks(...)`, "
                        "run_with_hooks or run_with_cache_with_saes, which clean up after themselves")
    own = _dictionary_hooks_left(bk)
    if own:
        problems.append(f"left a hook on {', '.join(own[:3])}{' and more' if len(own) > 3 else ''}: a dictionary's own "
                        "hook point, which stays on the SAE object after it leaves the model (model.reset_hooks() does "
                        "not reach it) and changes every later sae.encode/forward: use `with model.hooks(...)` while "
                        "it is spliced, or call sae.reset_hooks()")
    now = _parameters(bk)
    changed = [k for k, v in pristine.params.items() if not torch.equal(now[k].detach(), v)]
    if changed:
        problems.append(f"changed weights in place ({', '.join(changed[:3])}): work on copies "
                        "(e.g. `W.clone()`), never write into the model's or an SAE's parameters")
    flipped = [k for k, (obj, attr, value) in pristine.flags.items() if getattr(obj, attr) != value]
    if flipped:
        problems.append(f"left {', '.join(flipped[:3])} changed (global state): restore it in a `finally`")
    return problems


def _restore(pristine: _Pristine) -> None:
    bk = pristine.backend
    bk.model.reset_saes()
    bk.model.reset_hooks(including_permanent=True)
    for module in _modules(bk).values():
        for sub in module.modules():
            for hooks in (sub._forward_hooks, sub._backward_hooks, sub._forward_pre_hooks):
                hooks.clear()
    now = _parameters(bk)
    with torch.no_grad():
        for k, v in pristine.params.items():
            if not torch.equal(now[k].detach(), v):
                now[k].detach().copy_(v)
    for obj, attr, value in pristine.flags.values():
        if getattr(obj, attr) != value:
            if attr == "training":
                obj.train(value)
            elif attr == "requires_grad":
                obj.requires_grad_(value)
            else:
                setattr(obj, attr, value)


def _restore_backends() -> None:
    for pristine in _IN_USE:
        _restore(pristine)
    _IN_USE.clear()


# ---------------------------------------------------------------------------------------
# Known mistakes.


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong implementation (``tests/mistakes/<chapter>.py``) and its diagnosis.

    With ``signature=True`` the check recognises it by its result (see :func:`signatures`)
    and fails with ``diagnosis``; otherwise the check must catch it another way (a generic
    diagnosis, a side effect it watches) and its message must contain ``diagnosis``. Mistakes
    listed in ``coincides`` give the same result on the check's inputs: the message names
    them all, and may contain their diagnoses too."""

    fn: Callable[..., Any]
    diagnosis: str
    signature: bool = True
    coincides: tuple[str, ...] = ()  # ids of mistakes whose results equal this one's on the check's inputs

    @property
    def id(self) -> str:
        return self.fn.__name__


class Signatures(dict):
    """Diagnosis -> lazy result of a catalogued mistake on the check's inputs (computed at
    most once, and only when the learner's result is wrong)."""

    def select(self, pick: Callable[[Any], Any]) -> dict[str, Callable[[], Any]]:
        """The same results passed through ``pick`` (e.g. one entry of a dict result)."""
        return {d: (lambda thunk=thunk: _pick(pick, thunk())) for d, thunk in self.items()}


def consistent(cases: list[tuple[Callable[[], Any], Any, Signatures | dict[str, Callable[[], Any]]]]
               ) -> list[dict[str, Callable[[], Any]]]:
    """For each case ``(the learner's result, the known result, signatures on that case)``,
    the signatures of the mistakes that also reproduce the learner's result on every other
    case where the learner is wrong: one case alone can match a mistake by coincidence, e.g.
    ablating the error at every position equals splicing without the error term when the
    error sits at one position only. The learner's results are thunks (e.g.
    ``functools.cache``d calls), run only when a result is wrong; a case where both the
    learner's code and the mistake raise agrees."""
    def outcome(thunk: Callable[[], Any]) -> Any:
        try:
            return thunk()
        except Exception:  # includes a CheckFailure from a watched call
            return _RAISED

    def confirmed(i: int, diagnosis: str, thunk: Callable[[], Any]) -> Callable[[], Any]:
        def result() -> Any:
            for j, (got, want, signatures_j) in enumerate(cases):
                if j == i or diagnosis not in signatures_j:
                    continue
                mine = outcome(got)
                if mine is not _RAISED and compare.same_result(mine, want):
                    continue  # right there: nothing to reproduce
                theirs = signatures_j[diagnosis]()
                if (mine is _RAISED) != (theirs is None) or (mine is not _RAISED and not compare.same_result(mine, theirs)):
                    return None
            return thunk()
        return result

    return [{d: confirmed(i, d, thunk) for d, thunk in signatures_i.items()} for i, (_, _, signatures_i) in enumerate(cases)]


_RAISED = object()


def _pick(pick: Callable[[Any], Any], result: Any) -> Any:
    try:
        return None if result is None else pick(result)
    except Exception:
        return None


def signatures(mistakes: list[Mistake], *args: Any, grad: bool = False, **kwargs: Any) -> Signatures:
    """The catalogued ``mistakes`` run lazily on copies of the check's inputs, keyed by their
    diagnosis: the check names a mistake by recognising its result. A mistake's code is thus
    written once, in the catalog, and used both by the check and by the catalog's tests."""

    def thunk(mistake: Mistake) -> Callable[[], Any]:
        @functools.cache
        def result() -> Any:
            a, kw = _clone_tensors((args, kwargs))
            try:
                with torch.set_grad_enabled(grad):
                    return mistake.fn(*a, **kw)
            except Exception:  # a mistake that cannot run on these inputs cannot be the answer
                return None
            finally:
                for pristine in _IN_USE:
                    _restore(pristine)
        return result

    if not _SETTINGS.get().signatures:
        return Signatures()
    return Signatures({m.diagnosis: thunk(m) for m in mistakes if m.signature})


# ---------------------------------------------------------------------------------------
# Running the learner's function.


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; explain stubs, exceptions (with the line of their code
    that raised) and a missing return value."""
    if not callable(fn):
        fail(f"expected a function, got {type(fn).__name__}")
    name = getattr(fn, "__name__", "your function")
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"`{name}` is not implemented yet: replace the `raise NotImplementedError` in its body", header=f"`{name}`")
    except CheckFailure:
        raise
    except Exception as error:
        where = _learner_line(error)
        hint = ""
        if "does not require grad" in str(error) or "element 0 of tensors" in str(error):
            hint = (" (gradients are disabled here, as in the notebook: run your forward and backward "
                    "pass inside `with torch.enable_grad():`)")
        hint += _key_hint(error)
        fail(f"`{name}` raised {type(error).__name__}: {error}{hint}{where}", header=f"`{name}`")
    if result is None:
        fail(f"`{name}` returned None: did you forget a `return`?", header=f"`{name}`")
    return result


_STDLIB = tuple(dict.fromkeys(str(Path(sysconfig.get_paths()[key]).resolve()) + "/" for key in ("stdlib", "platstdlib")))


def _key_hint(error: BaseException) -> str:
    """A KeyError for a hook name: where a dictionary's hook points are."""
    key = error.args[0] if isinstance(error, KeyError) and error.args else None
    if not isinstance(key, str) or not (key.startswith("blocks.") or key.startswith("hook_") or ".hook_" in key):
        return ""
    if ".hook_sae_" in key:
        base = key.split(".hook_sae_")[0]
        reads = " (a transcoder *reads* this hook: its own hook points sit under the hook it writes, " \
                "cfg.metadata.hook_name_out, e.g. blocks.0.hook_mlp_out)" if base.endswith("hook_normalized") else ""
        return (f" (there is no hook point {key!r}: a dictionary's own hook points, `<hook>.hook_sae_acts_post`, "
                f"`<hook>.hook_sae_error` ..., exist only while it is spliced, under the hook it writes{reads})")
    return f" (there is no hook point {key!r} here: check its name against model.hook_dict or the cache's keys)"


def _learner_line(error: BaseException) -> str:
    """`` at <file>, line N: <code>`` for the deepest frame of the learner's own code."""
    ours = (str(ROOT / "utils"), str(ROOT / "tests" / "checks"), str(ROOT / "tests" / "harness.py"), "site-packages",
            "dist-packages", "<frozen", *_STDLIB)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not any(p in f.filename for p in ours)]
    frames = frames[1:] if frames and frames[0].name == "call" else frames
    if not frames:
        return ""
    frame = frames[-1]
    path = Path(frame.filename)
    where = (f"{path.relative_to(ROOT)}, " if path.is_relative_to(ROOT) else
             "" if "ipykernel" in frame.filename or frame.filename.startswith("<") else f"{path.name}, ")
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"\n  at {where}line {frame.lineno} of {frame.name}{code}"


def run(fn: Any, bk: Backend | None, *args: Any, grad: bool = False, twice: bool = False, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` as the notebook would (gradients off unless ``grad``)
    and watch it: inputs changed in place (tensors inside lists, dicts and dataclasses
    too, e.g. a ``NodeBaseline``), gradients or ``requires_grad`` left on an input, grad
    mode left changed, hooks or SAEs left on ``bk``'s model or on a dictionary's own hook
    points, weights or flags changed. The harm is undone before the check fails. With
    ``twice``, ``fn`` is called a second time on the same inputs and must give the same
    result (state kept between calls, such as gradients accumulating in reused leaves).

    The sizes the inputs name (dims of the exercise's annotated tensors, the model's and
    the dictionaries' sizes) are handed to the comparisons that follow, to name a wrong size."""
    compare.tolerance().sizes = _input_sizes(fn, args, kwargs)
    compare.tolerance().indices = _index_arguments(fn, args, kwargs)
    result = _watched(fn, bk, args, kwargs, grad)
    if twice:
        again = _watched(fn, bk, args, kwargs, grad)
        if not compare.same_result(again, result):  # within float noise: a rerun may sum in another order
            name = f"`{getattr(fn, '__name__', 'your function')}`"
            fail(f"{name} gave a different result when called a second time on the same inputs: it keeps state "
                 "between calls (gradients accumulating in leaves or tensors reused across calls, a cache, a "
                 "global?); make fresh leaves in every call", header=name)
    return result


def _watched(fn: Any, bk: Backend | None, args: tuple[Any, ...], kwargs: dict[str, Any], grad: bool) -> Any:
    inputs = _tensors((args, kwargs), _parameter_names(fn, args, kwargs))
    saved = [(path, a, a.detach().clone(), a.requires_grad, a.grad if a.is_leaf else None) for path, a in inputs]
    pristine = next((p for p in _IN_USE if p.backend is bk), None) if bk is not None else None
    with torch.set_grad_enabled(grad):  # restores the mode on exit, whatever fn did
        try:
            result = call(fn, *args, **kwargs)
        finally:
            left_on = torch.is_grad_enabled()  # read inside: the learner may have flipped it
    problems = _damage(pristine) if pristine is not None else []
    if left_on != grad:
        problems.append("left gradients " + ("enabled" if left_on else "disabled") + " (torch.set_grad_enabled "
                        "is global state): use `with torch.enable_grad():` around the backward pass instead")
    mutated = [path for path, a, copy_, _, _ in saved if a.shape != copy_.shape or not torch.equal(a.detach(), copy_)]
    flagged = [path for path, a, _, requires, _ in saved if a.requires_grad != requires]
    graded = [path for path, a, _, _, g in saved if a.is_leaf and a.grad is not g]
    for _, a, copy_, requires, g in saved:
        with torch.no_grad():
            if a.shape == copy_.shape and not torch.equal(a.detach(), copy_):
                a.copy_(copy_)
        if a.is_leaf and a.requires_grad != requires:
            a.requires_grad_(requires)
        if a.is_leaf and a.grad is not g:
            a.grad = g
    if mutated:
        problems.append(f"changed its input {_paths(mutated)} in place (shape {list(dict(inputs)[mutated[0]].shape)}): "
                        "clone an input before writing into it")
    if flagged or graded:
        problems.append(f"left {'requires_grad switched' if flagged else '.grad set'} on its input "
                        f"{_paths(flagged or graded)}: gradients would accumulate there across calls; make your own "
                        "leaves (x.detach().clone().requires_grad_(True)) instead of marking an input")
    if pristine is not None:
        _restore(pristine)
    if problems:
        name = f"`{getattr(fn, '__name__', 'your function')}`"
        fail(f"{name} " + "; it also ".join(problems), header=name)
    return result


def _paths(paths: list[str]) -> str:
    return ", ".join(f"`{p}`" for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _parameter_names(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str] | None:
    """The names ``args`` bind to in the exercise's signature (the reference's, else ``fn``'s)."""
    bound = _bind(fn, args, kwargs)
    return list(bound.arguments)[:len(args)] if bound is not None else None


def _exercise_signature_of(fn: Any) -> Any:
    state = _RUN.get()
    if state is not None:
        try:
            return getattr(Chapter(state.chapter).reference(), state.exercise)
        except Exception:  # no reference here (e.g. a stripped grader image): the learner's own signature
            pass
    return fn


def _bind(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments | None:
    for target in dict.fromkeys([_exercise_signature_of(fn), fn]):
        try:
            return inspect.signature(target).bind(*args, **kwargs)
        except (TypeError, ValueError):
            continue
    return None


def _input_sizes(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, int]]:
    """Sizes the inputs give names to: ``("`n` of `acts`", 600)``, ``("the model's `d_vocab`", 323)``."""
    bound = _bind(fn, args, kwargs)
    if bound is None:
        return []
    target = _exercise_signature_of(fn)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    sizes: list[tuple[str, int]] = []
    for name, value in bound.arguments.items():
        if isinstance(value, Tensor):
            dims = _dim_names(hints.get(name))
            for d, n in enumerate(value.shape):
                label = f"`{dims[d]}` of `{name}`" if len(dims) == value.ndim else f"dim {d} of `{name}`"
                sizes.append((label, int(n)))
        elif isinstance(value, (list, tuple)) and value and not isinstance(value[0], (str, int, float)):
            sizes.append((f"the length of `{name}`", len(value)))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a TaskBatch: its tensors' dims
            for f in dataclasses.fields(value):
                tensor = getattr(value, f.name, None)
                if isinstance(tensor, Tensor):
                    sizes += [(f"dim {d} of `{name}.{f.name}`", int(n)) for d, n in enumerate(tensor.shape)]
        elif isinstance(value, int) and not isinstance(value, bool) and not any(w in name for w in INDEX_ARGUMENTS):
            sizes.append((f"`{name}`", value))  # a count such as k, max_n or steps
        elif isinstance(value, torch.nn.Module) and hasattr(getattr(value, "cfg", None), "d_vocab"):
            sizes += [(f"the model's `{key}`", int(getattr(value.cfg, key))) for key in
                      ("d_vocab", "d_model", "n_heads", "d_head", "d_mlp") if isinstance(getattr(value.cfg, key, None), int)]
        elif isinstance(value, torch.nn.Module) and isinstance(getattr(getattr(value, "cfg", None), "d_sae", None), int):
            sizes.append((f"`{name}.cfg.d_sae`", int(value.cfg.d_sae)))
    return sizes


INDEX_ARGUMENTS = ("pos", "position", "latent", "head", "layer")


def _index_arguments(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, int]]:
    """Integer arguments that index something (a position, a latent, a head): ``("`pos`", -1)``."""
    bound = _bind(fn, args, kwargs)
    if bound is None:
        return []
    return [(f"`{name}`", int(value)) for name, value in bound.arguments.items()
            if isinstance(value, int) and not isinstance(value, bool) and any(w in name for w in INDEX_ARGUMENTS)]


def counted_from_the_end(again: Callable[[int], Any], pos: int, n_pos: int) -> dict[str, Callable[[], Any]]:
    """For ``expect_tensor(retries=...)``: the learner's function called ``again`` with the
    same position counted from the start, when ``pos`` is negative. If that answer is right,
    the negative position was not handled."""
    if pos >= 0:
        return {}
    return {f"wrong for pos={pos}, right for the same position written {pos % n_pos}: a negative position counts from "
            f"the end (use pos % n_pos before slicing `[:pos + 1]` or comparing positions)": lambda: again(pos % n_pos)}


def shifted_positions(again: Callable[[int], Any], pos: int, n_pos: int) -> dict[str, Callable[[], Any]]:
    """For ``expect_tensor(retries=...)``: :func:`counted_from_the_end`, and the learner's
    function called ``again`` one position later and earlier: if that answer is right, the
    function reads a position next to the one asked for."""
    retries = counted_from_the_end(again, pos, n_pos)
    p = pos % n_pos
    if p + 1 < n_pos:
        retries[f"these are the values one position earlier than `pos`={p} (your answer for pos={p + 1} is the right one "
                f"for {p}): an off-by-one position (BOS is position 0; negative positions count from the end)"] = (
            lambda: again(p + 1))
    if p >= 1:
        retries[f"these are the values one position later than `pos`={p} (your answer for pos={p - 1} is the right one "
                f"for {p}): an off-by-one position (BOS is position 0; negative positions count from the end)"] = (
            lambda: again(p - 1))
    return retries


def _dim_names(annotation: Any) -> list[str]:
    for option in (annotation, *typing.get_args(annotation)):
        dims = getattr(option, "dim_str", None)
        if isinstance(dims, str):
            return dims.split()
    return []


def _tensors(obj: Any, names: list[str] | None = None, path: str = "") -> list[tuple[str, Tensor]]:
    """(path, tensor) for every dense tensor in ``obj``: inside tuples, lists, dicts and
    dataclasses (a NodeBaseline, a TaskBatch), never inside modules (a model, an SAE)."""
    if isinstance(obj, Tensor):
        return [(path or "input", obj)] if not obj.is_sparse else []
    if isinstance(obj, torch.nn.Module):
        return []
    if path == "" and isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict):  # (args, kwargs)
        args, kwargs = obj
        labels = names or []
        found = [t for i, a in enumerate(args) for t in _tensors(a, None, labels[i] if i < len(labels) else f"argument {i + 1}")]
        return found + [t for k, v in kwargs.items() for t in _tensors(v, None, k)]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in _tensors(v, None, f"{path}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [t for i, v in enumerate(obj) for t in _tensors(v, None, f"{path}[{i}]")]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name, None), None, f"{path}.{f.name}")]
    return []


def _clone_tensors(obj: Any) -> Any:
    """``obj`` with every tensor in it cloned (models and other objects shared)."""
    if isinstance(obj, Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _clone_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_tensors(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        try:
            return dataclasses.replace(obj, **{f.name: _clone_tensors(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                               if f.init})
        except Exception:  # a dataclass that cannot be rebuilt field by field: shared as it is
            return obj
    return obj

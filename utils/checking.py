"""Checks: compare a learner's result with known outputs and name the likely mistake.

A chapter's checks live in ``tests/checks/<chapter>.py``. Each is a plain function
decorated with :func:`exercise_check`::

    @exercise_check("ch00_toolkit")
    def check_top_k_latents(top_k_latents):
        values, indices = call(top_k_latents, acts, k=5)
        expect_tensor(values, known("values", values), name="values", dims="k")

* :func:`call` runs the learner's function and turns its exceptions (including the stub's
  ``NotImplementedError``) into a :class:`CheckFailure` that says what happened.
* :func:`known` returns the stored known output for a key. Known outputs are written only
  by ``python -m tests.fixtures``, which runs each check on the reference solution.
* :func:`expect_tensor` diagnoses type, dtype, device, shape (with named dims, permuted or
  squeezed dims), NaN/inf, wrong sign, constant factor, then values.
* When a check passes it prints one line and remembers it, so :func:`checked` can hand later
  cells the learner's function, or the reference while the learner's has not passed yet.
"""
from __future__ import annotations

import contextvars
import functools
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


class CheckFailure(AssertionError):
    """A check failed; the message names the problem in plain words."""


# ---------------------------------------------------------------------------------------
# Which exercise is being checked, and its known outputs.


@dataclass
class _Run:
    chapter: str
    exercise: str
    recording: bool
    store: dict[str, Any] = field(default_factory=dict)


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("check_run", default=None)
_RECORDING = contextvars.ContextVar("recording", default=False)
EXERCISES: dict[str, str] = {}  # exercise name -> chapter, filled as checks are defined
PASSED: set[str] = set()  # exercises whose check passed in this process


def fixture_path(chapter: str, exercise: str) -> Path:
    return FIXTURES / chapter / f"{exercise}.pt"


def exercise_check(chapter: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate ``check_<exercise>(fn)`` so it loads (or records) known outputs and reports."""

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        exercise = check.__name__.removeprefix("check_")
        EXERCISES[exercise] = chapter

        @functools.wraps(check)
        def run(fn: Any, *args: Any, **kwargs: Any) -> None:
            recording = _RECORDING.get()
            if recording and not getattr(fn, "__module__", "").startswith("solutions."):
                raise RuntimeError("known outputs are recorded from the reference solution only")
            state = _Run(chapter, exercise, recording)
            if not recording:
                state.store = _load_fixture(chapter, exercise)
            token = _RUN.set(state)
            try:
                check(fn, *args, **kwargs)
            except CheckFailure as failure:
                PASSED.discard(exercise)
                raise CheckFailure(f"{exercise}: {failure}") from None
            except Exception as error:  # our own code met something it did not expect
                PASSED.discard(exercise)
                raise CheckFailure(
                    f"{exercise}: the check could not use your result "
                    f"({type(error).__name__}: {error}). Compare its type and shape with the docstring."
                ) from None
            finally:
                _RUN.reset(token)
            if recording:
                path = fixture_path(chapter, exercise)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(state.store, path)
            PASSED.add(exercise)
            print(f"\N{CHECK MARK} {exercise}: all checks passed")

        run.exercise = exercise  # type: ignore[attr-defined]
        run.chapter = chapter  # type: ignore[attr-defined]
        return run

    return decorate


def _load_fixture(chapter: str, exercise: str) -> dict[str, Any]:
    path = fixture_path(chapter, exercise)
    if not path.exists():
        raise RuntimeError(
            f"no known outputs at {path.relative_to(FIXTURES.parent.parent)}: "
            "run `python -m tests.fixtures` to record them from the reference"
        )
    return torch.load(path, weights_only=True)


def known(key: str, value: Any) -> Any:
    """The known output stored under ``key`` (recording mode: store ``value`` and return it)."""
    state = _RUN.get()
    if state is None:
        raise RuntimeError("known() is only meaningful inside a check")
    if state.recording:
        state.store[key] = value.detach().cpu().clone() if isinstance(value, torch.Tensor) else value
        return state.store[key]
    if key not in state.store:
        raise RuntimeError(f"known output {key!r} is missing: re-record with `python -m tests.fixtures`")
    return state.store[key]


class recording:
    """Context manager used by ``python -m tests.fixtures``: checks store what they see."""

    def __enter__(self) -> "recording":
        self._token = _RECORDING.set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        _RECORDING.reset(self._token)


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Your ``fn`` if its check passed in this session, else the reference solution.

    Later cells use this, so one unfinished exercise never breaks the rest of a chapter.
    """
    name = fn.__name__
    if name not in EXERCISES:
        _import_all_checks()
    if name not in EXERCISES:
        raise ValueError(f"{name!r} is not an exercise of this course")
    if name in PASSED:
        return fn
    print(f"(using the reference {name}: yours has not passed its check yet)")
    return getattr(importlib.import_module(f"solutions.{EXERCISES[name]}"), name)


def _import_all_checks() -> None:
    """Importing every check module registers every exercise (needed before any check ran)."""
    import pkgutil

    import tests.checks

    for module in pkgutil.iter_modules(tests.checks.__path__):
        importlib.import_module(f"tests.checks.{module.name}")


# ---------------------------------------------------------------------------------------
# Running the learner's function.


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; explain stubs, exceptions and a missing return value."""
    if not callable(fn):
        raise CheckFailure(f"expected a function, got {type(fn).__name__}")
    name = getattr(fn, "__name__", "your function")
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailure(
            f"`{name}` is not implemented yet: replace the `raise NotImplementedError` in its body"
        ) from None
    except CheckFailure:
        raise
    except Exception as error:
        raise CheckFailure(f"`{name}` raised {type(error).__name__}: {error}") from error
    if result is None:
        raise CheckFailure(f"`{name}` returned None: did you forget a `return`?")
    return result


def fail(message: str) -> None:
    """Fail the current check with ``message`` (a diagnosis in plain words)."""
    raise CheckFailure(message)


# ---------------------------------------------------------------------------------------
# Comparing results.


def _shape_str(shape: tuple[int, ...], dims: list[str] | None) -> str:
    if dims is not None and len(dims) == len(shape):
        return "[" + ", ".join(f"{d}={n}" for d, n in zip(dims, shape)) + "]"
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _diagnose_shape(got: tuple[int, ...], want: tuple[int, ...], dims: list[str] | None) -> str:
    message = f"expected shape {_shape_str(want, dims)}, got {_shape_str(got, None)}"
    if sorted(got) == sorted(want) and len(got) > 1:
        return message + ": the dims look permuted (check the order of your rearrange/transpose)"
    if [n for n in got if n != 1] == [n for n in want if n != 1]:
        return message + ": a size-1 dim was added or dropped (squeeze/unsqueeze, or keepdim?)"
    if len(got) == len(want) - 1:
        missing = [d for d, n in zip(dims or [], want) if n not in got]
        hint = f" (`{missing[0]}`?)" if missing else ""
        return message + f": one dim is missing{hint}; did you reduce over a dim you should keep?"
    if len(got) == len(want) + 1:
        return message + ": there is one dim too many; did you forget to reduce or index a dim?"
    return message


def expect_tensor(
    got: Any,
    want: torch.Tensor,
    *,
    name: str,
    dims: str | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    mistakes: dict[str, torch.Tensor] | None = None,
) -> None:
    """Compare ``got`` with the known tensor ``want``; fail with a diagnosis if they differ.

    ``dims`` names the dims of ``want`` (e.g. ``"batch pos d_sae"``) for shape messages.
    Floats are compared with ``|got - want| <= atol + rtol * |want|``. ``mistakes`` maps a
    diagnosis to the result a known mistake produces; a match fails with that diagnosis.
    """
    dim_names = dims.split() if dims else None
    if not isinstance(got, torch.Tensor):
        fail(f"{name} should be a torch.Tensor, got {type(got).__name__}")
    got = got.detach().cpu()  # known outputs live on the CPU; any device is fine
    if got.is_floating_point() != want.is_floating_point() or (want.dtype == torch.bool) != (
        got.dtype == torch.bool
    ):
        fail(f"{name} should have dtype {want.dtype}, got {got.dtype}")
    if tuple(got.shape) != tuple(want.shape):
        fail(f"{name}: " + _diagnose_shape(tuple(got.shape), tuple(want.shape), dim_names))
    got = got.detach().to(want.dtype)
    if _same(got, want, rtol, atol):
        return
    for diagnosis, result in (mistakes or {}).items():
        if result.shape == got.shape and _same(got, result.to(got.dtype), rtol, atol):
            fail(f"{name}: {diagnosis}")
    if got.is_floating_point():
        bad = ~torch.isfinite(got)
        if bad.any() and torch.isfinite(want).all():
            fail(f"{name} has NaN or inf in {int(bad.sum())} of {got.numel()} entries")
        _diagnose_values(got, want, name=name, rtol=rtol, atol=atol)
    else:
        wrong = int((got != want).sum())
        fail(f"{name}: {wrong} of {got.numel()} entries differ from the expected values")


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.is_floating_point():
        return torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    return torch.equal(a, b)


def _diagnose_values(got: torch.Tensor, want: torch.Tensor, *, name: str, rtol: float, atol: float) -> None:
    if torch.allclose(-got, want, rtol=rtol, atol=atol):
        fail(f"{name} has the wrong sign everywhere (did you subtract in the wrong order?)")
    scale = (got * want).sum() / (got * got).sum().clamp_min(1e-30)
    if math.isfinite(scale.item()) and torch.allclose(got * scale, want, rtol=rtol * 10, atol=atol * 10):
        fail(f"{name} is off by a constant factor (about {1 / scale.item():.3g}x the expected values)")
    close = torch.isclose(got, want, rtol=rtol, atol=atol)
    where = tuple(int(i) for i in (~close).nonzero()[0])
    fail(
        f"{name}: {int((~close).sum())} of {got.numel()} entries differ "
        f"(max abs diff {(got - want).abs().max().item():.3g}; first at index {list(where)}: "
        f"expected {want[where].item():.4g}, got {got[where].item():.4g})"
    )


def expect_close(got: Any, want: float, *, name: str, rtol: float = 1e-3, atol: float = 1e-5) -> None:
    """Compare a scalar with a known float."""
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail(f"{name} should be a single number, got a tensor of shape {list(got.shape)}")
        got = got.item()
    if not isinstance(got, (int, float)):
        fail(f"{name} should be a number, got {type(got).__name__}")
    if not math.isfinite(got):
        fail(f"{name} is {got}")
    if abs(got - want) > atol + rtol * abs(want):
        if abs(got + want) <= atol + rtol * abs(want):
            fail(f"{name} has the wrong sign: expected {want:.4g}, got {got:.4g}")
        fail(f"{name}: expected {want:.4g}, got {got:.4g}")

"""Compare a learner's result with the known one, at the scale of the quantity, and name the
likely mistake when they differ (used by every check; see ``utils.course.checking``).

Tolerance. Float noise (reduction order, thread count, CPU vector width, GPU TF32 matmuls)
moves every entry of a result by a small fraction of the result's *overall* size, not of
the entry's own size: an attribution that should be 0 comes out as 3e-9 on one machine and
-4e-9 on another. So an entry passes when

    |got - want| <= atol * scale + rtol * |want|,      scale = max |want| over the tensor,

with ``atol = rtol = 5e-3`` by default: wide enough for TF32 on a GPU, two orders of
magnitude below any conceptual mistake in this course (the meta-test in
``tests/test_robustness.py`` shows both). The worst ratio ``|got - want| / tolerance``
is the *margin*; the check prints it so a near miss is visible.

Diagnoses, tried in order when a result differs:

1. type, dtype (a float64 result hints at a mixed-precision bug), shape with dim names;
2. the known mistakes the check supplies (``mistakes={message: tensor or thunk}``, usually
   computed by the catalogued wrong implementations of ``tests/mistakes/``);
3. generic families computed from the expected result itself: non-finite values, all
   zeros, wrong sign, the absolute value, a ReLU too many or missing, a constant factor
   (named when it is a size of the result or of the inputs: a mean instead of a sum; on
   fewer than four numbers only then), shifted by one along a position dim, transposed
   dims, values where the expected result is exactly zero (a missing mask) or zeros where
   it is not (entries left out), and differences confined to one index of a dim;
4. otherwise how many entries differ, by how much, and the first one (all of them when
   there are only a few numbers).

Shapes get the same care: permuted dims, a size-1 dim, two dims flattened into one, a
missing or extra dim, a dim one entry off (BOS only for position dims), and sizes that
equal a size of the inputs (``Tolerance.sizes``, set by ``utils.course.checking.run``).

A message is a *header* (what was compared: ``name``) and a *diagnosis*; see
:class:`CheckFailure`.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

ATOL, RTOL = 5e-3, 5e-3
POSITION_DIMS = ("pos", "n_pos", "seq", "seq_pos", "position")


class CheckFailure(AssertionError):
    """A check failed; the message names the problem in plain words.

    The message is a *header* that says what was compared (the quantity and the check's
    inputs, e.g. ``"mean ablation effects (blocks.0.hook_resid_post, pos -1)"``), then the
    *diagnosis*: what is wrong with it. ``header`` is the message's opening (empty when the
    whole message is a diagnosis); :attr:`diagnosis` is the rest. Tools that judge whether a
    message names a mistake read the diagnosis only, never the header that echoes the inputs.

    In Jupyter (IPython) and Colab only the message is shown, without our traceback."""

    def __init__(self, message: str, header: str = "") -> None:
        super().__init__(message)
        self.header = header if header and message.startswith(header) else ""

    @property
    def diagnosis(self) -> str:
        """The message without its header."""
        return str(self)[len(self.header):].lstrip(":").strip()

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m\N{BALLOT X} {self}\x1b[0m"]


def fail(message: str, header: str = "") -> None:
    """Fail the current check with ``message`` (a diagnosis in plain words), whose opening
    ``header`` (if any) names what was compared."""
    raise CheckFailure(message, header)


@dataclass
class Tolerance:
    """Tolerance of the comparisons in the current check, and the margins seen so far."""

    atol: float = ATOL
    rtol: float = RTOL
    dtype: torch.dtype = torch.float32  # the float dtype the check's backend computes in
    margins: list[float] = field(default_factory=list)
    # Sizes the inputs of the last call give names to, e.g. ("`n` of `acts`", 600) or
    # ("the model's `d_vocab`", 323), set by ``utils.course.checking.run``: a wrong size or a
    # constant factor that equals one of them is named after it.
    sizes: list[tuple[str, int]] = field(default_factory=list)
    # Index arguments of the last call, e.g. ("`pos`", -1): a difference confined to that
    # index (or before / after it) is said to be there.
    indices: list[tuple[str, int]] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)  # |got - want| / tolerance of comparisons that failed


_TOLERANCE: contextvars.ContextVar[Tolerance | None] = contextvars.ContextVar("tolerance", default=None)


def tolerance() -> Tolerance:
    """The tolerance of the check running now (outside a check: the default, float32)."""
    return _TOLERANCE.get() or Tolerance()


_LAST: list[Tolerance] = []


def last_measure() -> Tolerance | None:
    """The tolerance of the last block opened by :func:`measuring` (for benchmarks: its
    margins, and the ratios of the comparisons that failed)."""
    return _LAST[0] if _LAST else None


@contextlib.contextmanager
def measuring(dtype: torch.dtype = torch.float32, atol: float = ATOL, rtol: float = RTOL) -> Iterator[Tolerance]:
    """Compare at ``atol``/``rtol`` for ``dtype`` inside the block; yields the tolerance, to
    read the margins seen (``utils.course.checking`` opens one per check run)."""
    current = Tolerance(atol=atol, rtol=rtol, dtype=dtype)
    _LAST[:] = [current]
    token = _TOLERANCE.set(current)
    try:
        yield current
    finally:
        _TOLERANCE.reset(token)


Mistakes = Mapping[str, "Tensor | Callable[[], Any]"]


# ---------------------------------------------------------------------------------------
# Tensors.


def expect_tensor(
    got: Any,
    want: Tensor,
    *,
    name: str,
    dims: str | None = None,
    mistakes: Mistakes | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    retries: Mistakes | None = None,
    entries: tuple[str, ...] | None = None,
) -> None:
    """Compare ``got`` with the known tensor ``want``; fail with a diagnosis if they differ.

    ``dims`` names the dims of ``want`` (e.g. ``"batch pos d_sae"``). ``mistakes`` maps a
    diagnosis to the result a known mistake produces (or a function computing it, called
    only if ``got`` is wrong). ``retries`` maps a diagnosis to the learner's own result on
    an equivalent input (e.g. the same position counted from the start instead of the end):
    if ``got`` is wrong and that one is right, the diagnosis names what the original input
    had. ``atol`` and ``rtol`` override the check's tolerance. ``entries`` names the entries
    of a result made of a few numbers, e.g. ``("precision", "recall")``.
    """
    dim_names = dims.split() if dims else None
    got = _plain_tensor(got, name)
    _expect_dtype(got, want, name)
    if tuple(got.shape) != tuple(want.shape):
        fail(f"{name}: " + _diagnose_shape(tuple(got.shape), tuple(want.shape), dim_names), header=name)
    got = got.detach().cpu().to(want.dtype)
    want = want.detach().cpu()
    atol = tolerance().atol if atol is None else atol
    rtol = tolerance().rtol if rtol is None else rtol
    if _matches(got, want, atol, rtol, record=True):
        return
    for diagnosis, result in (retries or {}).items():
        result = _evaluate(result)
        if isinstance(result, Tensor) and result.shape == want.shape and not result.is_sparse and (
                result.is_floating_point() == want.is_floating_point()):
            if _matches(result.detach().cpu().to(want.dtype), want, atol, rtol):
                fail(f"{name}: {diagnosis}", header=name)
    for diagnosis, result in (mistakes or {}).items():
        result = _evaluate(result)
        if isinstance(result, Tensor) and result.shape == got.shape:
            result = result.detach().cpu()
            result = result.to_dense() if result.is_sparse else result
            if _matches(got, result.to(got.dtype), atol, rtol):
                fail(f"{name}: {diagnosis}", header=name)
    if got.is_floating_point():
        fail(f"{name}: " + diagnose_values(got, want, dim_names, atol, rtol, entries), header=name)
    if want.ndim == 1 and want.numel() > 1 and torch.equal(got.sort().values, want.sort().values):
        order = "reverse order" if torch.equal(got, want.flip(0)) else "another order"
        fail(f"{name}: holds the expected values in {order} (not sorted as asked?)", header=name)
    wrong = (got != want).nonzero()
    fail(f"{name}: {len(wrong)} of {got.numel()} entries differ from the expected values "
         f"(first at index {wrong[0].tolist()}: expected {want[tuple(wrong[0])].item()}, "
         f"got {got[tuple(wrong[0])].item()})", header=name)


def same_result(got: Any, other: Any) -> bool:
    """``got`` equals ``other`` within the current tolerance (tensors, also nested in tuples,
    lists and dicts, and numbers); False for anything that cannot be compared."""
    try:
        if isinstance(got, Tensor) and isinstance(other, Tensor):
            a, b = (t.detach().cpu() for t in (got, other))
            a, b = (t.to_dense() if t.is_sparse else t for t in (a, b))
            return a.shape == b.shape and _matches(a.to(b.dtype), b, tolerance().atol, tolerance().rtol)
        if isinstance(got, dict) and isinstance(other, dict):
            return got.keys() == other.keys() and all(same_result(got[k], other[k]) for k in got)
        if isinstance(got, (list, tuple)) and isinstance(other, (list, tuple)):
            return len(got) == len(other) and all(same_result(a, b) for a, b in zip(got, other))
        if isinstance(got, (int, float)) and isinstance(other, (int, float)) and not isinstance(got, bool):
            return abs(got - other) <= tolerance().atol * max(abs(other), 1e-12) + tolerance().rtol * abs(other)
        return bool(got == other)
    except Exception:
        return False


def _evaluate(result: Any) -> Any:
    if callable(result) and not isinstance(result, Tensor):
        try:
            return result()
        except Exception:  # a mistake that cannot run on these inputs cannot be the answer
            return None
    return result


def _plain_tensor(got: Any, name: str) -> Tensor:
    if not isinstance(got, Tensor):
        fail(f"{name} should be a torch.Tensor, got {type(got).__name__}", header=name)
    if type(got) not in (Tensor, torch.nn.Parameter):
        fail(f"{name} is a {type(got).__name__}, a subclass of torch.Tensor: return a plain tensor", header=name)
    if got.is_sparse:
        fail(f"{name} is a sparse tensor: return a dense tensor of shape {list(got.shape)}", header=name)
    return got


def _expect_dtype(got: Tensor, want: Tensor, name: str) -> None:
    if want.dtype == torch.bool or got.dtype == torch.bool:
        if got.dtype != want.dtype:
            fail(f"{name} should have dtype {want.dtype}, got {got.dtype}", header=name)
    elif got.is_floating_point() != want.is_floating_point():
        expected = tolerance().dtype if want.is_floating_point() else want.dtype
        fail(f"{name} should have dtype {expected}, got {got.dtype}", header=name)
    elif got.is_floating_point() and got.dtype != tolerance().dtype and not (
            tolerance().dtype == torch.float64 and got.dtype == torch.float32):  # float32 by design is fine
        hint = (" (a float64 result usually means a tensor was made from numpy or Python floats "
                "with dtype float64 and mixed into the computation)") if got.dtype == torch.float64 else ""
        fail(f"{name} should have dtype {tolerance().dtype} like the model, got {got.dtype}{hint}", header=name)


def _tolerance(want: Tensor, atol: float, rtol: float) -> Tensor:
    scale = want.abs().max().item() if want.numel() else 0.0
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    return atol * scale + rtol * want.abs()


def _matches(got: Tensor, want: Tensor, atol: float, rtol: float, record: bool = False) -> bool:
    if not got.is_floating_point():
        return torch.equal(got, want)
    if not torch.equal(torch.isnan(got), torch.isnan(want)):
        return False
    finite = ~torch.isnan(want)
    diff = (got - want).abs()[finite]
    tol = _tolerance(want[finite], atol, rtol)
    ratio = (diff / tol).max().item() if diff.numel() else 0.0
    if record:
        (tolerance().margins if ratio <= 1 else tolerance().failed).append(ratio)
    return ratio <= 1


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and _matches(a, b, atol, rtol)


def diagnose_values(got: Tensor, want: Tensor, dims: list[str] | None, atol: float, rtol: float,
                    entries: tuple[str, ...] | None = None) -> str:
    """A plain-words description of how ``got`` differs from ``want`` (same shape, floats):
    a family of mistakes when one fits exactly, else where and by how much they differ."""
    dims = dims if dims is not None and len(dims) == want.ndim else [f"dim {i}" for i in range(want.ndim)]
    bad = ~torch.isfinite(got)
    if bad.any() and torch.isfinite(want).all():
        return (f"has NaN or inf in {int(bad.sum())} of {got.numel()} entries (e.g. at index "
                f"{bad.nonzero()[0].tolist()}, where {want[tuple(bad.nonzero()[0])].item():.4g} is expected): "
                "a division by zero, or a log of zero?")
    tol = _tolerance(want, atol, rtol)
    nonzero_want = want.abs() > _tolerance(want, atol, 0.0)
    if nonzero_want.any() and not got.abs().max() > 0:
        return f"is all zeros, where the expected values reach {want.abs().max().item():.4g}"
    if _close(-got, want, atol, rtol):
        return "has the wrong sign everywhere (did you subtract in the wrong order?)"
    for message in (_sign_message(got, want, tol), _factor_message(got, want, dims, atol, rtol),
                    _order_message(got, want, dims, atol, rtol), _shift_message(got, want, dims, atol, rtol),
                    _transpose_message(got, want, dims, atol, rtol), _mask_message(got, want, dims, atol, rtol)):
        if message:
            return message
    return _where_message(got, want, dims, atol, rtol, entries)


def _sign_message(got: Tensor, want: Tensor, tol: Tensor) -> str | None:
    """The families of a sign handled wrongly: an abs() or a ReLU too many, a ReLU missing."""
    negative = want < -tol
    if negative.any() and ((got - want.abs()).abs() <= tol).all():
        return (f"matches the absolute value of the expected result: the {int(negative.sum())} negative entries "
                "lost their sign (an abs() too many?)")
    if negative.any() and ((got - want.clamp_min(0)).abs() <= tol).all():
        return (f"is the expected result with its {int(negative.sum())} negative entries set to zero "
                "(a ReLU or clamp(min=0) too many?)")
    if not negative.any():
        agree = (got - want).abs() <= tol
        below = ~agree & (got < -tol) & (want.abs() <= tol)
        if below.any() and (agree | below).all():
            return (f"is negative in {int(below.sum())} entries where the expected result is zero (e.g. at index "
                    f"{below.nonzero()[0].tolist()}: {got[tuple(below.nonzero()[0])].item():.4g}); it is never "
                    "negative and the rest matches: a ReLU is missing (pre-activations instead of activations?)")
    return None


def _order_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str | None:
    """The right values in another order: reversed along a dim, or (1-D) permuted."""
    for d, name in enumerate(dims):
        if want.shape[d] > 1 and _close(got, want.flip(d), atol, rtol):
            return f"holds the expected values in reverse order along `{name}` (sorted the wrong way?)"
    if want.ndim == 1 and want.numel() > 1 and _close(got.sort().values, want.sort().values, atol, rtol):
        return f"holds the expected values in another order along `{dims[0]}` (not sorted as asked?)"
    return None


def factor_value(got: Tensor, want: Tensor) -> float:
    """The least-squares ``c`` with ``c * got ~ want``."""
    return ((got * want).sum() / (got * got).sum().clamp_min(1e-30)).item()


MIN_FACTOR_ENTRIES = 4  # on fewer numbers any error looks like a factor: one is named only after a size


def _factor_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str | None:
    """A constant factor between ``got`` and ``want``: named when it is a size (a dim of the
    result or of the inputs: a sum for a mean, or the reverse); otherwise reported only on
    enough entries for a factor to mean something."""
    c = factor_value(got, want)
    if not math.isfinite(c) or c == 0 or abs(c - 1) < 0.05:  # within noise of 1: not a factor
        return None
    if not _close(got * c, want, atol * 10, rtol * 10):
        return None
    hint = _size_hint(c, want, dims)
    if hint:
        return f"is off by a constant factor (about {1 / c:.3g}x the expected values){hint}"
    if int((want.abs() > _tolerance(want, atol, 0.0)).sum()) >= MIN_FACTOR_ENTRIES:
        return f"is off by a constant factor (about {1 / c:.3g}x the expected values)"
    return None


def _size_hint(c: float, want: Tensor, dims: list[str]) -> str:
    """``c`` (with ``c * got ~ want``) named after a size: a dim of the result or of the inputs."""
    named = [(f"`{name}`", size) for name, size in zip(dims, want.shape) if not name.startswith("dim ")]
    for label, size in [*named, *tolerance().sizes]:
        if size > 1 and abs(c - size) < 1e-3 * size:
            return f": 1/{size} of the expected, and {label} has size {size}: did you average over {label} instead of summing?"
        if size > 1 and abs(c * size - 1) < 1e-3:
            return f": {size}x the expected, and {label} has size {size}: did you sum over {label} where a mean was needed?"
    return ""


def _shift_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str | None:
    for d, name in enumerate(dims):
        n = want.shape[d]
        if name not in POSITION_DIMS or n < 3:
            continue
        for step, words in ((1, "one position later"), (-1, "one position earlier")):
            g = got.narrow(d, max(step, 0), n - 1)  # got[p + step] vs want[p]
            w = want.narrow(d, max(-step, 0), n - 1)
            if w.abs().max() > 0 and _close(g, w, atol, rtol):
                return (f"matches the expected values shifted {words} along `{name}`: an off-by-one "
                        "position (BOS is position 0; the answer is predicted at the last position)")
    return None


def _transpose_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str | None:
    for i in range(want.ndim):
        for j in range(i + 1, want.ndim):
            if want.shape[i] == want.shape[j] > 1 and _close(got, want.transpose(i, j), atol, rtol):
                return f"has `{dims[i]}` and `{dims[j]}` swapped (check the order of your rearrange/transpose)"
    return None


def _mask_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str | None:
    tol = _tolerance(want, atol, rtol)
    agree = (got - want).abs() <= tol
    extra = (~agree) & (want == 0)
    missing = (~agree) & (got == 0) & (want != 0)
    if extra.any() and not (~agree & ~extra).any():
        return (f"has non-zero values in {int(extra.sum())} entries where the expected result is exactly zero "
                f"(e.g. at index {extra.nonzero()[0].tolist()}{localise(extra, want != 0, dims)}); the rest matches: "
                "did you forget to keep only active latents / the positions asked for?")
    if missing.any() and not (~agree & ~missing).any():
        return (f"is zero in {int(missing.sum())} entries where a value is expected (e.g. at index "
                f"{missing.nonzero()[0].tolist()}{localise(missing, want != 0, dims)}); the rest matches: part of the "
                "result was left out")
    return None


def localise(where: Tensor, support: Tensor | None, dims: list[str]) -> str:
    """Where the True entries of ``where`` lie, when that says something: all at one index of
    a dim (named after an index argument it equals, e.g. `pos`), or along a position dim all
    before or after such an argument, or outside ``support`` (where the expected result lives)."""
    found = where.nonzero()
    for d, name in enumerate(dims):
        if where.shape[d] > 1 and len(found[:, d].unique()) == 1:
            i = int(found[0, d])
            return f"; all at {name}={i}{_named_index(i, where.shape[d])}"
    for d, name in enumerate(dims):
        if name not in POSITION_DIMS:
            continue
        low, high = int(found[:, d].min()), int(found[:, d].max())
        for label, value in tolerance().indices:
            n = where.shape[d]
            if -n <= value < n and low > value % n:
                return f"; all at {name} {low}..{high}, after {label}={value % n}"
            if -n <= value < n and high < value % n:
                return f"; all at {name} {low}..{high}, before {label}={value % n}"
        if support is not None and support.any():
            inside = support.nonzero()[:, d].unique().tolist()
            if high < min(inside) or low > max(inside):
                return f"; all at {name} {low}..{high}, where the expected result has nothing"
    if support is not None and support.any():
        for d, name in enumerate(dims):  # extra entries at indices the expected result never uses
            used = set(support.nonzero()[:, d].tolist())
            if where.shape[d] > 1 and len(used) < where.shape[d] and not used & set(found[:, d].tolist()):
                return f"; all at `{name}` indices where the expected result has no entry, e.g. {int(found[0, d])}"
    kept = (~where) & (support if support is not None else torch.ones_like(where))
    for d, name in enumerate(dims):  # what is left is all at one index: the rest was dropped
        if name in POSITION_DIMS and kept.any() and len(kept.nonzero()[:, d].unique()) == 1:
            j = int(kept.nonzero()[0, d])
            return f"; every position but {name}={j}{_named_index(j, where.shape[d])} is missing"
    return ""


def _named_index(i: int, n: int) -> str:
    for label, value in tolerance().indices:
        if -n <= value < n and value % n == i:
            return f" ({label})"
    return ""


def _where_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float,
                   entries: tuple[str, ...] | None = None) -> str:
    tol = _tolerance(want, atol, rtol)
    wrong = (got - want).abs() > tol
    if want.numel() <= MIN_FACTOR_ENTRIES:  # a few numbers: show them all, and what each wrong one looks like
        names = list(entries) if entries and len(entries) == want.numel() else [f"entry {i}" for i in range(want.numel())]
        notes = [note for i, (g, w, t) in enumerate(zip(got.flatten().tolist(), want.flatten().tolist(), tol.flatten().tolist()))
                 if abs(g - w) > t and (note := _entry_note(names[i], g, w, t))]
        return (f"expected {_numbers(want)}, got {_numbers(got)} "
                f"({int(wrong.sum())} of {want.numel()} differ beyond float noise)" + "".join(f"; {n}" for n in notes))
    where = tuple(int(i) for i in wrong.nonzero()[0])
    count = f"{int(wrong.sum())} of {got.numel()} entries differ"
    detail = (f"(max abs diff {(got - want).abs().max().item():.3g}, expected values up to "
              f"{want.abs().max().item():.3g}; first at index {list(where)}: expected "
              f"{want[where].item():.4g}, got {got[where].item():.4g})")
    for d, name in enumerate(dims):
        hit = wrong.any(dim=tuple(k for k in range(want.ndim) if k != d)).nonzero()[:, 0]
        if want.shape[d] > 1 and len(hit) == 1:
            i = int(hit[0])
            bos = " (position 0 is BOS)" if name in POSITION_DIMS and i == 0 else _named_index(i, want.shape[d])
            return f"{count}, all at {name}={i}{bos}; the rest matches {detail}"
    return f"{count} {detail}"


def _entry_note(name: str, got: float, want: float, tol: float) -> str:
    """What one wrong number of a few looks like: the wrong sign, or a size of the inputs as
    a factor (said less firmly than for a whole tensor: one number proves little)."""
    if abs(got + want) <= tol:
        return f"{name} has the wrong sign"
    if got != 0 and want != 0:
        for label, size in tolerance().sizes:
            if size > 1 and abs(want / got - size) < 1e-3 * size:
                return f"{name} is 1/{size} of the expected, and {label} has size {size}: one mean over it too many?"
            if size > 1 and abs(got / want - size) < 1e-3 * size:
                return f"{name} is {size}x the expected, and {label} has size {size}: a sum over it where a mean was needed?"
    return ""


def _numbers(x: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in x.flatten().tolist()) + "]"


def _diagnose_shape(got: tuple[int, ...], want: tuple[int, ...], dims: list[str] | None) -> str:
    message = f"expected shape {shape_str(want, dims)}, got {shape_str(got, None)}"
    names = dims if dims is not None and len(dims) == len(want) else [f"dim {d}" for d in range(len(want))]
    if sorted(got) == sorted(want) and len(got) > 1:
        return message + ": the dims look permuted (check the order of your rearrange/transpose)"
    if [n for n in got if n != 1] == [n for n in want if n != 1]:
        return message + ": a size-1 dim was added or dropped (squeeze/unsqueeze, or keepdim?)"
    if len(got) == len(want) - 1:
        for d in range(len(want) - 1):  # two neighbouring dims merged into one
            if got == want[:d] + (want[d] * want[d + 1],) + want[d + 2:]:
                return (message + f": `{names[d]}` and `{names[d + 1]}` are flattened into one dim of size "
                        f"{want[d] * want[d + 1]}: keep them apart (rearrange/reshape to [..., {want[d]}, {want[d + 1]}])")
        missing = [d for d, n in zip(names, want) if n not in got]
        hint = f" (`{missing[0]}`?)" if missing else ""
        return message + f": one dim is missing{hint}; did you reduce over a dim you should keep?"
    if len(got) == len(want) + 1:
        extra = [n for n in got if n not in want]
        named = {size: label for label, size in reversed(tolerance().sizes)}
        hint = f" (the extra dim has size {extra[0]}, that of {named[extra[0]]})" if extra and extra[0] in named else ""
        return message + f": there is one dim too many{hint}; did you forget to reduce or index a dim?"
    if len(got) == len(want):
        for d, (g, w) in enumerate(zip(got, want)):
            if g != w and abs(g - w) == 1:
                return message + _off_by_one(names[d], g, w)
    return message + _sizes_hint(got, want)


def _off_by_one(name: str, got: int, want: int) -> str:
    more = "one entry too many" if got > want else "one entry too few"
    counts = [f"{label} is {size}" for label, size in tolerance().sizes if size == want and label != f"`{name}`"]
    if counts and name not in POSITION_DIMS:
        more += f" ({counts[0]})"
    if name in POSITION_DIMS:
        return f": `{name}` is off by one, {more} (BOS included or left out?)"
    whole, _, extra = name.partition("_plus_")
    if extra and got < want:
        return f": `{name}` is off by one, {more}: its `{extra}` entry (after the {want - 1} of `{whole}`) is missing"
    return f": `{name}` is off by one, {more} (a boundary case included or left out: < for <=, or a range's end?)"


def _sizes_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """Sizes of ``got`` that are not ``want``'s, named after the inputs' sizes they equal: a
    reduction over the wrong dim, or an index over the wrong thing."""
    named = {}
    for label, size in tolerance().sizes:
        named.setdefault(size, label)
    foreign = [n for n in got if n not in want and n in named and n > 1]
    if not foreign:
        return ""
    lost = [n for n in want if n not in got and n in named and n > 1]
    where = f", where {lost[0]}, the size of {named[lost[0]]}, is expected" if lost else ""
    return (f" ({foreign[0]} is the size of {named[foreign[0]]}{where}): a reduction over the wrong dim, or an index "
            "over the wrong thing?")


def shape_str(shape: tuple[int, ...], dims: list[str] | None) -> str:
    if dims is not None and len(dims) == len(shape):
        return "[" + ", ".join(f"{d}={n}" for d, n in zip(dims, shape)) + "]"
    return "[" + ", ".join(str(n) for n in shape) + "]"


# ---------------------------------------------------------------------------------------
# Sparse tensors and scalars.


def expect_sparse(
    got: Any,
    want_indices: Tensor,
    want_values: Tensor,
    *,
    name: str,
    shape: tuple[int, ...],
    dims: str,
    optional: Tensor | None = None,
    mistakes: Mistakes | None = None,
    retries: Mistakes | None = None,
) -> None:
    """Compare a sparse COO result with the known (indices, values) of ``shape``.

    Values are compared densely (so every diagnosis of :func:`expect_tensor` applies).
    Then the stored entries must be exactly the expected ones, except entries marked in the
    dense Bool ``optional`` (e.g. latents whose activation is within float noise of zero,
    which may be active on one machine and not on another).
    """
    if not isinstance(got, Tensor):
        fail(f"{name} should be a sparse torch.Tensor (torch.sparse_coo_tensor), got {type(got).__name__}", header=name)
    if type(got) is not Tensor:
        fail(f"{name} is a {type(got).__name__}, a subclass of torch.Tensor: return a plain tensor", header=name)
    if not got.is_sparse:
        fail(f"{name} is a dense tensor of shape {list(got.shape)}: return a sparse COO tensor "
             "(torch.sparse_coo_tensor(indices, values, shape)) holding active latents only", header=name)
    if tuple(got.shape) != tuple(shape):
        fail(f"{name}: " + _diagnose_shape(tuple(got.shape), tuple(shape), dims.split()), header=name)
    got = got.detach().cpu().coalesce()
    want = torch.sparse_coo_tensor(want_indices, want_values, shape, check_invariants=True).to_dense()
    _expect_dtype(got.values(), want, name)
    keep = ~optional.cpu() if optional is not None else torch.ones(shape, dtype=torch.bool)
    dense = got.to_dense()
    if not _matches(dense.to(want.dtype) * keep, want * keep, tolerance().atol, tolerance().rtol):
        expect_tensor(dense, want, name=name, dims=dims, mistakes=mistakes, retries=retries)  # diagnose it whole
    expect_tensor(dense * keep, want * keep, name=name, dims=dims)
    stored, expected = _index_set(got.indices()), _index_set(want_indices)
    free = _index_set(optional.nonzero().T) if optional is not None else set()
    extra, missing = stored - expected - free, expected - stored - free
    dim_names = dims.split() if len(dims.split()) == len(shape) else [f"dim {d}" for d in range(len(shape))]
    if extra:
        where = localise(_mask_of(extra, shape), _mask_of(expected, shape), dim_names)
        fail(f"{name} stores {len(extra)} entries where none is expected (e.g. at index {list(min(extra))}{where}): "
             "keep only the entries asked for (active latents, positions up to `pos`)", header=name)
    if missing:
        where = localise(_mask_of(missing, shape), _mask_of(expected, shape), dim_names)
        fail(f"{name} lacks {len(missing)} entries for active latents (e.g. at index {list(min(missing))}{where}): "
             "store every active pair, even where the gradient is zero", header=name)


def _mask_of(indices: set[tuple[int, ...]], shape: tuple[int, ...]) -> Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    if indices:
        mask[tuple(torch.tensor(sorted(indices)).T)] = True
    return mask


def _index_set(indices: Tensor) -> set[tuple[int, ...]]:
    return set(map(tuple, indices.T.tolist()))


def python_number(got: Any, name: str) -> float:
    """``got`` as a float if it is a Python number (an int or a float), else a failure: the
    exercise asks for Python floats, and a 0-dim tensor is not one (it drags its graph and
    device along, and formats and compares differently)."""
    if isinstance(got, Tensor):
        shape = "a 0-dim torch.Tensor" if got.ndim == 0 else f"a torch.Tensor of shape {list(got.shape)}"
        fail(f"{name} should be a Python float, got {shape}" + (": return `.item()` of it" if got.numel() == 1 else ""),
             header=name)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{name} should be a Python float, got {type(got).__name__}", header=name)
    return float(got)


def expect_close(got: Any, want: float, *, name: str, scale: float | None = None,
                 atol: float | None = None, rtol: float | None = None) -> None:
    """Compare a scalar with a known float; ``scale`` (default ``|want|``) is the size float
    noise is relative to: of the quantities it was computed from (a difference of two losses
    is noisy at the scale of the losses), or smaller (explained variance near 1 is noisy at
    the scale of what it leaves unexplained, ``1 - want``)."""
    if isinstance(got, Tensor):
        if got.numel() != 1:
            fail(f"{name} should be a single number, got a tensor of shape {list(got.shape)}", header=name)
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{name} should be a number, got {type(got).__name__}", header=name)
    if not math.isfinite(got):
        fail(f"{name} is {got}", header=name)
    atol = tolerance().atol if atol is None else atol
    rtol = tolerance().rtol if rtol is None else rtol
    tol = atol * max(abs(want) if scale is None else abs(scale), 1e-12) + rtol * abs(want)
    if abs(got - want) <= tol:
        tolerance().margins.append(abs(got - want) / tol)
        return
    tolerance().failed.append(abs(got - want) / tol)
    if abs(got + want) <= tol:
        fail(f"{name} has the wrong sign: expected {want:.4g}, got {got:.4g}", header=name)
    hint = _size_hint(want / got, torch.tensor([want]), []) if want != 0 and got != 0 else ""
    if hint:
        fail(f"{name}: expected {want:.4g}, got {got:.4g}{hint}", header=name)
    if want != 0 and got != 0 and abs(want / got - 1) > 0.05 and abs(round(want / got) - want / got) < 1e-3:
        fail(f"{name}: expected {want:.4g}, got {got:.4g} (exactly 1/{want / got:.3g} of it)", header=name)
    if want != 0 and got != 0 and abs(got / want - 1) > 0.05 and abs(round(got / want) - got / want) < 1e-3:
        fail(f"{name}: expected {want:.4g}, got {got:.4g} (exactly {got / want:.3g}x it)", header=name)
    fail(f"{name}: expected {want:.4g}, got {got:.4g} (a difference of {got - want:.3g}, "
         f"{abs(got - want) / tol:.3g}x the tolerance)", header=name)

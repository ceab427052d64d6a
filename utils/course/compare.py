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
   zeros, wrong sign, a constant factor (named when it is a dim's size: a mean instead of a
   sum), shifted by one along a position dim, transposed dims, values where the expected
   result is exactly zero (a missing mask) or zeros where it is not (entries left out),
   and differences confined to one index of a dim (e.g. only at BOS);
4. otherwise how many entries differ, by how much, and the first one.
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


_TOLERANCE: contextvars.ContextVar[Tolerance | None] = contextvars.ContextVar("tolerance", default=None)


def tolerance() -> Tolerance:
    """The tolerance of the check running now (outside a check: the default, float32)."""
    return _TOLERANCE.get() or Tolerance()


@contextlib.contextmanager
def measuring(dtype: torch.dtype = torch.float32) -> Iterator[Tolerance]:
    """Compare at the tolerance for ``dtype`` inside the block; yields it, to read the
    margins seen (``utils.course.checking`` opens one per check run)."""
    current = Tolerance(dtype=dtype)
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
) -> None:
    """Compare ``got`` with the known tensor ``want``; fail with a diagnosis if they differ.

    ``dims`` names the dims of ``want`` (e.g. ``"batch pos d_sae"``). ``mistakes`` maps a
    diagnosis to the result a known mistake produces (or a function computing it, called
    only if ``got`` is wrong). ``atol`` and ``rtol`` override the check's tolerance.
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
    for diagnosis, result in (mistakes or {}).items():
        result = _evaluate(result)
        if isinstance(result, Tensor) and result.shape == got.shape:
            result = result.detach().cpu()
            result = result.to_dense() if result.is_sparse else result
            if _matches(got, result.to(got.dtype), atol, rtol):
                fail(f"{name}: {diagnosis}", header=name)
    if got.is_floating_point():
        fail(f"{name}: " + diagnose_values(got, want, dim_names, atol, rtol), header=name)
    wrong = (got != want).nonzero()
    fail(f"{name}: {len(wrong)} of {got.numel()} entries differ from the expected values "
         f"(first at index {wrong[0].tolist()}: expected {want[tuple(wrong[0])].item()}, "
         f"got {got[tuple(wrong[0])].item()})", header=name)


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
    if record and ratio <= 1:
        tolerance().margins.append(ratio)
    return ratio <= 1


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and _matches(a, b, atol, rtol)


def diagnose_values(got: Tensor, want: Tensor, dims: list[str] | None, atol: float, rtol: float) -> str:
    """A plain-words description of how ``got`` differs from ``want`` (same shape, floats)."""
    dims = dims if dims is not None and len(dims) == want.ndim else [f"dim {i}" for i in range(want.ndim)]
    bad = ~torch.isfinite(got)
    if bad.any() and torch.isfinite(want).all():
        return f"has NaN or inf in {int(bad.sum())} of {got.numel()} entries"
    nonzero_want = want.abs() > _tolerance(want, atol, 0.0)
    if nonzero_want.any() and not got.abs().max() > 0:
        return ("is all zeros: was the result never written (a hook that returned nothing, "
                "a tensor filled outside the graph, or gradients read before backward)?")
    if _close(-got, want, atol, rtol):
        return "has the wrong sign everywhere (did you subtract in the wrong order?)"
    factor = _constant_factor(got, want, atol, rtol)
    if factor is not None:
        return factor + _dim_size_hint(factor_value(got, want), want, dims)
    for message in (_shift_message(got, want, dims, atol, rtol), _transpose_message(got, want, dims, atol, rtol),
                    _mask_message(got, want, atol, rtol)):
        if message:
            return message
    return _where_message(got, want, dims, atol, rtol)


def factor_value(got: Tensor, want: Tensor) -> float:
    """The least-squares ``c`` with ``c * got ~ want``."""
    return ((got * want).sum() / (got * got).sum().clamp_min(1e-30)).item()


def _constant_factor(got: Tensor, want: Tensor, atol: float, rtol: float) -> str | None:
    c = factor_value(got, want)
    if not math.isfinite(c) or c == 0 or abs(c - 1) < 0.05:  # within noise of 1: not a factor
        return None
    if _close(got * c, want, atol * 10, rtol * 10):
        return f"is off by a constant factor (about {1 / c:.3g}x the expected values)"
    return None


def _dim_size_hint(c: float, want: Tensor, dims: list[str]) -> str:
    for name, size in zip(dims, want.shape):
        if size > 1 and abs(c - size) < 1e-3 * size:
            return f": 1/{size} of the expected, and `{name}` has size {size}: did you average over `{name}` instead of summing?"
        if size > 1 and abs(c * size - 1) < 1e-3:
            return f": {size}x the expected, and `{name}` has size {size}: did you sum over `{name}` where a mean was needed?"
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


def _mask_message(got: Tensor, want: Tensor, atol: float, rtol: float) -> str | None:
    tol = _tolerance(want, atol, rtol)
    agree = (got - want).abs() <= tol
    extra = (~agree) & (want == 0)
    missing = (~agree) & (got == 0) & (want != 0)
    if extra.any() and not (~agree & ~extra).any():
        return (f"has non-zero values in {int(extra.sum())} entries where the expected result is exactly zero "
                f"(e.g. at index {extra.nonzero()[0].tolist()}); the rest matches: did you forget to keep "
                "only active latents / the positions asked for?")
    if missing.any() and not (~agree & ~missing).any():
        return (f"is zero in {int(missing.sum())} entries where a value is expected (e.g. at index "
                f"{missing.nonzero()[0].tolist()}); the rest matches: part of the result was left out")
    return None


def _where_message(got: Tensor, want: Tensor, dims: list[str], atol: float, rtol: float) -> str:
    wrong = (got - want).abs() > _tolerance(want, atol, rtol)
    where = tuple(int(i) for i in wrong.nonzero()[0])
    count = f"{int(wrong.sum())} of {got.numel()} entries differ"
    detail = (f"(max abs diff {(got - want).abs().max().item():.3g}, expected values up to "
              f"{want.abs().max().item():.3g}; first at index {list(where)}: expected "
              f"{want[where].item():.4g}, got {got[where].item():.4g})")
    for d, name in enumerate(dims):
        hit = wrong.any(dim=tuple(k for k in range(want.ndim) if k != d)).nonzero()[:, 0]
        if want.shape[d] > 1 and len(hit) == 1:
            i = int(hit[0])
            bos = " (position 0 is BOS)" if name in POSITION_DIMS and i == 0 else ""
            return f"{count}, all at {name}={i}{bos}; the rest matches {detail}"
    return f"{count} {detail}"


def _diagnose_shape(got: tuple[int, ...], want: tuple[int, ...], dims: list[str] | None) -> str:
    message = f"expected shape {shape_str(want, dims)}, got {shape_str(got, None)}"
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
    for d, (g, w) in enumerate(zip(got, want)):
        if len(got) == len(want) and g != w and abs(g - w) == 1:
            name = dims[d] if dims and len(dims) == len(want) else f"dim {d}"
            return message + f": `{name}` is off by one (BOS included or left out?)"
    return message


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
        expect_tensor(dense, want, name=name, dims=dims, mistakes=mistakes)  # diagnose it whole
    expect_tensor(dense * keep, want * keep, name=name, dims=dims)
    stored, expected = _index_set(got.indices()), _index_set(want_indices)
    free = _index_set(optional.nonzero().T) if optional is not None else set()
    extra, missing = stored - expected - free, expected - stored - free
    if extra:
        fail(f"{name} stores {len(extra)} entries outside the active latents (e.g. at index "
             f"{list(min(extra))}): keep only latents that are active", header=name)
    if missing:
        fail(f"{name} lacks {len(missing)} entries for active latents (e.g. at index {list(min(missing))}): "
             "store every active pair, even where the gradient is zero", header=name)


def _index_set(indices: Tensor) -> set[tuple[int, ...]]:
    return set(map(tuple, indices.T.tolist()))


def expect_close(got: Any, want: float, *, name: str, scale: float | None = None,
                 atol: float | None = None, rtol: float | None = None) -> None:
    """Compare a scalar with a known float; ``scale`` is the size of the quantities it was
    computed from (float noise is relative to them, e.g. a difference of two losses)."""
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
    tol = atol * max(abs(want), abs(scale or 0.0), 1e-12) + rtol * abs(want)
    if abs(got - want) <= tol:
        tolerance().margins.append(abs(got - want) / tol)
        return
    if abs(got + want) <= tol:
        fail(f"{name} has the wrong sign: expected {want:.4g}, got {got:.4g}", header=name)
    if want != 0 and got != 0 and abs(want / got - 1) > 0.05 and abs(round(want / got) - want / got) < 1e-3:
        fail(f"{name}: expected {want:.4g}, got {got:.4g} (off by a factor of {want / got:.3g})", header=name)
    fail(f"{name}: expected {want:.4g}, got {got:.4g}", header=name)

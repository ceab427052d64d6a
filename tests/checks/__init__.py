"""Checks per chapter: ``check_<exercise>(fn)`` compares ``fn`` with known outputs."""
from __future__ import annotations

from typing import Any

from torch import Tensor

# Comparisons shared by several chapters' checks (a module here would be taken for a chapter).


def expect_explained_variance(got: float, want: float, x: Tensor, x_hat: Tensor, var: str) -> None:
    """``got`` = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens after BOS
    (``x`` and ``x_hat`` ``[batch, pos, d]``, BOS included), compared at the scale of the
    unexplained part 1 - EV: float noise moves EV by a share of what is unexplained, and
    the variants a learner may compute instead (BOS in, another centring) differ by less
    than 1% of EV itself. Those variants are named (several when they coincide here)."""
    from utils.course.checking import expect_close, fail
    from utils.course.compare import tolerance

    def ev(x: Tensor, x_hat: Tensor, centre: Tensor | float) -> float:
        return 1 - ((x - x_hat).pow(2).sum() / (x - centre).pow(2).sum()).item()

    body, body_hat = x[:, 1:], x_hat[:, 1:]
    variants = {  # what was done -> its value here
        "includes the BOS position (leave position 0 out: BOS's activation has an outsized norm)":
            ev(x, x_hat, x.mean((0, 1))),
        f"divides by sum ||{var}||^2, uncentred": ev(body, body_hat, 0.0),
        f"centres {var} on one number (the mean of every entry, as {var}.var() does)": ev(body, body_hat, body.mean()),
        f"centres {var} on each position's mean over the batch": ev(body, body_hat, body.mean(0, keepdim=True)),
    }
    scale = abs(1 - want)
    if abs(got - want) > 5e-3 * scale:
        tolerance().failed.append(abs(got - want) / (tolerance().atol * scale))  # the size of the mistake, for benchmarks
        close = [what for what, value in variants.items()
                 if abs(got - value) < 1e-3 * scale and abs(value - want) > 5e-3 * scale]
        if close:
            fail(f"explained_variance {' or '.join(close)}: the denominator is the spread around the mean over "
                 f"tokens, sum ||{var} - mean({var})||^2, with mean({var}) the mean *vector* over every token after BOS")
    expect_close(got, want, name="explained_variance", scale=scale, rtol=0.0)


def loss_entry(out: Any, key: str) -> Any:
    """Entry ``key`` of a training loss's result, a dict with 'loss', 'mse' and 'sparsity'
    0-dim tensors (chapters 06 and 07); a clear failure for any other shape of result."""
    from utils.course.checking import fail

    if not isinstance(out, dict):
        fail(f"expected a dict with keys 'loss', 'mse', 'sparsity', got {type(out).__name__}")
    if key not in out:
        fail(f"the dict lacks the key {key!r} (expected 'loss', 'mse', 'sparsity')")
    if not isinstance(out[key], Tensor):
        fail(f"{key!r} should be a 0-dim tensor (the loss needs its graph for backward()), got {type(out[key]).__name__}")
    return out[key]

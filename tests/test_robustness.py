"""Correct code passes anywhere: every check passes on the reference computed in float64
(model and dictionaries cast), with one and with three threads, with float32-sized noise added to its result,
and with every weight rounded to TF32's 10-bit mantissa (what a GPU's TF32 matmuls do to
one operand: the learner's model may run there); and in float64 every catalogued mistake still fails with its diagnosis.

Each test prints the check's margin (largest deviation as a share of the tolerance); run
with ``-s`` to read them, e.g. ``pytest tests/test_robustness.py -s -q``.
"""
from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from tests.harness import failure_message
from utils.course.chapter import Chapter
from utils.course.checking import check_settings

CASES = [(ch.name, exercise) for ch in Chapter.every() for exercise in ch.checks()]
MISTAKE_CASES = [(chapter, exercise, m) for chapter, exercise in CASES
                 for m in Chapter(chapter).mistakes().get(exercise, [])]
NOISE = 1e-5  # relative to each result's largest entry: several times float32 reduction noise


def perturbed(result: Any, generator: torch.Generator) -> Any:
    """``result`` with noise of size ``NOISE`` times its scale added to every float."""
    if isinstance(result, torch.Tensor) and result.is_sparse:
        result = result.coalesce()
        return torch.sparse_coo_tensor(result.indices(), perturbed(result.values(), generator), result.shape, check_invariants=True).coalesce()
    if isinstance(result, torch.Tensor) and result.is_floating_point():
        scale = result.abs().max() if result.numel() else 0.0
        noise = torch.randn(result.shape, generator=generator, dtype=result.dtype, device="cpu").to(result.device)
        return result + NOISE * scale * noise
    if isinstance(result, float):
        return result * (1 + NOISE * torch.randn((), generator=generator).item())
    if isinstance(result, dict):
        return {k: perturbed(v, generator) for k, v in result.items()}
    if isinstance(result, tuple):
        return tuple(perturbed(v, generator) for v in result)
    return result


def noisy(fn: Any) -> Any:
    generator = torch.Generator().manual_seed(0)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return perturbed(fn(*args, **kwargs), generator)

    return wrapped


def _reference(chapter: str, exercise: str) -> Any:
    return getattr(Chapter(chapter).reference(), exercise)


def _margin(output: str) -> str:
    line = next((x for x in output.splitlines() if "all checks passed" in x), "")
    return line.rpartition("(")[2].rstrip(")")


@pytest.mark.parametrize("variant", ["float64", "one_thread", "three_threads", "noise", "tf32_weights"])
@pytest.mark.parametrize("chapter,exercise", CASES, ids=[f"{c}-{e}" for c, e in CASES])
def test_reference_passes_anywhere(chapter: str, exercise: str, variant: str, meta_tests: None, capsys: Any) -> None:
    check, reference = Chapter(chapter).check(exercise), _reference(chapter, exercise)
    if variant == "float64":
        with check_settings(dtype=torch.float64):
            check(reference)
    elif variant.endswith("thread") or variant.endswith("threads"):
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if variant == "one_thread" else 3)
        try:
            check(reference)
        finally:
            torch.set_num_threads(threads)
    elif variant == "tf32_weights":
        with check_settings(tf32_weights=True):
            check(reference)
    else:
        check(noisy(reference))
    with capsys.disabled():
        print(f"  [{variant}] {chapter}.{exercise}: {_margin(capsys.readouterr().out)}")


@pytest.mark.parametrize("chapter,exercise,mistake", MISTAKE_CASES,
                         ids=[f"{c}-{e}-{m.id}" for c, e, m in MISTAKE_CASES])
def test_mistakes_still_caught_in_float64(chapter: str, exercise: str, mistake: Any, meta_tests: None) -> None:
    """Every mistake still fails; those caught by a generic diagnosis or a watched side
    effect keep their diagnosis (recognising the others by their results is skipped here
    for speed: ``test_<chapter>.py`` covers it in float32)."""
    with check_settings(dtype=torch.float64, signatures=False):
        message = failure_message(Chapter(chapter).check(exercise), mistake.fn)
    if not mistake.signature:
        assert mistake.diagnosis in message, f"expected the diagnosis {mistake.diagnosis!r}, got {message!r}"

"""An independent catalog of learner implementations, written without reading the checks'
internals or the mistake catalogs (``tests/mistakes``), to measure how general the checks are.

Each entry is one implementation of one exercise, registered with :func:`wrong` (a plausible
mistake; ``names`` lists phrases, any one of which in the check's message means the message
*names* this mistake) or :func:`correct` (a correct implementation written differently from
the reference; the check must accept it). ``python -m benchmarks.check_generality --catalog
independent`` runs them and prints caught / named / accepted.

The ``names`` phrases were written with the mistake, before any check was run on it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAPTERS = ("ch00_toolkit", "ch01_attribution", "ch02_error_nodes", "ch03_feature_circuits",
            "ch04_transcoders", "ch05_attribution_graphs", "ch06_training")


@dataclass(frozen=True)
class Impl:
    chapter: str
    exercise: str
    fn: Callable[..., Any]
    correct: bool
    description: str
    names: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.fn.__name__


IMPLEMENTATIONS: list[Impl] = []


def wrong(chapter: str, exercise: str, description: str, names: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a plausible wrong implementation; ``names``: phrases (case-insensitive) that,
    found in the check's message, mean the message names this mistake."""
    if not names:
        raise ValueError("a wrong implementation needs at least one phrase that would name it")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        IMPLEMENTATIONS.append(Impl(chapter, exercise, fn, False, description, tuple(n.lower() for n in names)))
        return fn
    return register


def correct(chapter: str, exercise: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a correct implementation written differently from the reference."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        IMPLEMENTATIONS.append(Impl(chapter, exercise, fn, True, description))
        return fn
    return register


def load_all() -> list[Impl]:
    """Import every chapter's catalog module that exists and return the registered entries."""
    for chapter in CHAPTERS:
        try:
            importlib.import_module(f"benchmarks.independent.{chapter}")
        except ModuleNotFoundError as error:
            if error.name != f"benchmarks.independent.{chapter}":
                raise
    return IMPLEMENTATIONS

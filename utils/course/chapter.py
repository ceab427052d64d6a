"""A chapter and where its parts live: the one place that finds them.

>>> ch = Chapter("ch00_toolkit")
>>> ch.exercise_names                            # doctest: +SKIP
('top_k_latents', 'latent_logit_effects', ...)
>>> ch.checks()["top_k_latents"](my_top_k)       # doctest: +SKIP

=======================  =============================================  ==========================
part                     where                                          how to reach it
=======================  =============================================  ==========================
source                   ``source/<chapter>.py``                        :attr:`Chapter.source`
exercises (parsed)       the source's exercise cells                    :attr:`Chapter.exercises`
learner notebook         ``chapters/<chapter>.ipynb``                   :attr:`Chapter.pristine`
stub module              ``exercises/<chapter>.py``                     :meth:`Chapter.stubs`
reference module         ``solutions/<chapter>.py``                     :meth:`Chapter.reference`
solution notebook        ``solutions/<chapter>.ipynb``                  :attr:`Chapter.solution_notebook`
checks                   ``tests/checks/<chapter>.py``                  :meth:`Chapter.checks`
mistakes catalog         ``tests/mistakes/<chapter>.py``                :meth:`Chapter.mistakes`
known outputs            ``tests/fixtures/<chapter>/<exercise>.pt``     :meth:`Chapter.fixture`
=======================  =============================================  ==========================

A :class:`Chapter` is cheap to make and imports nothing until asked; the grader's snapshot
of the course (no ``source/``) can still reach its checks, reference and fixtures.
"""
from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utils.course import ROOT

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from utils.course.source import Exercise

SOURCE = ROOT / "source"
NOTEBOOKS, STUBS, SOLUTIONS = ROOT / "chapters", ROOT / "exercises", ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures"
CHECKS_PACKAGE, MISTAKES_PACKAGE = "tests.checks", "tests.mistakes"
STUBS_PACKAGE, REFERENCE_PACKAGE = "exercises", "solutions"


def names() -> list[str]:
    """Every chapter of the course, in order (one per source file)."""
    return sorted(p.stem for p in SOURCE.glob("ch*.py"))


@dataclass(frozen=True)
class Chapter:
    name: str

    @classmethod
    def get(cls, name: str) -> Chapter:
        """The chapter called ``name``; refuses a name that is no chapter of the course."""
        if name not in names():
            raise ValueError(f"unknown chapter {name!r}; expected one of {names()}")
        return cls(name)

    @classmethod
    def every(cls) -> list[Chapter]:
        """Every chapter of the course, in order."""
        return [cls(name) for name in names()]

    @classmethod
    def with_checks(cls) -> list[Chapter]:
        """Every chapter that has a checks module (found without the sources, so that it
        works in the grader's snapshot of the course)."""
        import pkgutil

        package = importlib.import_module(CHECKS_PACKAGE)
        return [cls(m.name) for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)]

    # -- the source and its exercises ------------------------------------------------
    @property
    def source_path(self) -> Path:
        return SOURCE / f"{self.name}.py"

    @property
    def source(self) -> NotebookNode:
        return _read_source(self.source_path)

    @property
    def exercises(self) -> dict[str, Exercise]:
        """The exercises, in order, parsed (and validated) from the source."""
        from utils.course.source import find_exercises

        return find_exercises(self.source, self.name)

    @property
    def exercise_names(self) -> tuple[str, ...]:
        """The exercises in order: the grade's denominator."""
        return _exercise_names(self.source_path)

    # -- generated files -----------------------------------------------------------------
    @property
    def notebook_path(self) -> Path:
        return NOTEBOOKS / f"{self.name}.ipynb"

    @property
    def stub_path(self) -> Path:
        return STUBS / f"{self.name}.py"

    @property
    def reference_path(self) -> Path:
        return SOLUTIONS / f"{self.name}.py"

    @property
    def solution_notebook(self) -> Path:
        return SOLUTIONS / f"{self.name}.ipynb"

    def render_notebook(self, learner: bool) -> NotebookNode:
        """The learner notebook (stubs) or the solution notebook (reference), unexecuted."""
        from utils.course.source import render_notebook

        return render_notebook(self.source, self.name, self.checks_module, learner)

    def render_module(self, learner: bool) -> str:
        """The text of the stub module (learner) or of the reference module."""
        from utils.course.source import render_module

        return render_module(self.source, self.name, learner)

    @property
    def pristine(self) -> NotebookNode:
        """The untouched learner notebook, rendered from the source (never read from
        ``chapters/``, where a learner works); a copy, to change as you like."""
        import copy

        return copy.deepcopy(_pristine(self.name, self.source_path.stat().st_mtime_ns))

    def outputs(self) -> dict[Path, str | NotebookNode]:
        """What the build writes: path -> text or (unexecuted) notebook."""
        return {
            self.notebook_path: self.render_notebook(learner=True),
            self.stub_path: self.render_module(learner=True),
            self.reference_path: self.render_module(learner=False),
            self.solution_notebook: self.render_notebook(learner=False),
        }

    # -- modules -----------------------------------------------------------------------
    @property
    def checks_module(self) -> str:
        return f"{CHECKS_PACKAGE}.{self.name}"

    @property
    def mistakes_module(self) -> str:
        return f"{MISTAKES_PACKAGE}.{self.name}"

    @property
    def reference_module(self) -> str:
        return f"{REFERENCE_PACKAGE}.{self.name}"

    def module(self, package: str) -> types.ModuleType:
        """This chapter's module in ``package`` (``solutions``, ``exercises``, ``tests.checks`` ...)."""
        return importlib.import_module(f"{package}.{self.name}")

    def reference(self) -> types.ModuleType:
        return importlib.import_module(self.reference_module)

    def checks(self) -> dict[str, Callable[..., None]]:
        """exercise -> its check, in exercise order; refuses an exercise without a check."""
        found = self.registered_checks()
        missing = [name for name in self.exercise_names if name not in found]
        if missing:
            raise RuntimeError(f"{self.name}: exercises without a check: {missing}")
        return {name: found[name] for name in self.exercise_names}

    def check(self, exercise: str) -> Callable[..., None]:
        """The check of ``exercise`` (needs only the checks module, not the source)."""
        found = self.registered_checks()
        if exercise not in found:
            raise KeyError(f"{self.name} has no check for {exercise!r}")
        return found[exercise]

    def registered_checks(self) -> dict[str, Callable[..., None]]:
        """The checks its module registered (``utils.course.checking.exercise_check``)."""
        module = importlib.import_module(self.checks_module)
        return {f.exercise: f for f in vars(module).values()
                if hasattr(f, "exercise") and getattr(f, "chapter", None) == self.name}

    def twins(self) -> dict[str, tuple[str, ...]]:
        """exercise -> the names of the library functions that compute its answer (its twins,
        listed in :mod:`utils.course.twins`): the grader treats a call to one like a call to
        the reference."""
        from utils.course.twins import twins

        return twins(self.name)

    def mistakes(self) -> dict[str, list[Any]]:
        """exercise -> its catalogued wrong implementations (``utils.course.checking.Mistake``)."""
        return importlib.import_module(self.mistakes_module).MISTAKES

    def stubs(self) -> types.ModuleType:
        """The untouched stub module, built in memory from the source (a learner's edits to
        ``exercises/`` never matter)."""
        module = types.ModuleType(f"{STUBS_PACKAGE}.{self.name}")
        exec(compile(self.render_module(learner=True), f"<stubs of {self.name}>", "exec"), vars(module))
        return module

    # -- known outputs -------------------------------------------------------------------
    @property
    def fixtures(self) -> Path:
        return FIXTURES / self.name

    def fixture(self, exercise: str) -> Path:
        return self.fixtures / f"{exercise}.pt"


@functools.lru_cache(maxsize=16)
def _read_source_at(path: Path, mtime: int) -> NotebookNode:
    from utils.course.source import read_source

    return read_source(path)


def _read_source(path: Path) -> NotebookNode:
    """The parsed source (cached while the file is unchanged; a copy, to change as you like)."""
    import copy

    return copy.deepcopy(_read_source_at(path, path.stat().st_mtime_ns))


@functools.cache
def _exercise_names_at(path: Path, mtime: int) -> tuple[str, ...]:
    from utils.course.source import find_exercises

    return tuple(find_exercises(_read_source_at(path, mtime), path.stem))


def _exercise_names(path: Path) -> tuple[str, ...]:
    return _exercise_names_at(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _pristine(name: str, mtime: int) -> NotebookNode:
    return Chapter(name).render_notebook(learner=True)

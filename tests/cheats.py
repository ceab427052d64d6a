"""Cheats and malformed submissions the grader must see through (``tests/test_cheats.py``).

A :class:`Cheat` edits a learner notebook whose exercises are all unsolved (the stubs), so
an honest grade is 0: whatever it scores is what the cheat gained. Most cheats aim at one
exercise and leave the others alone, so five of them share one notebook (one per exercise
of chapter 00) and the grader's report must blame the right exercise. Cheats whose effect
is global (killing the kernel, writing course files, a cell that never returns) get a
notebook of their own.

:func:`batch` writes every submission of the catalog into a folder, and :func:`graded`
grades it once per test session (the expensive part, shared by the test files).
"""
from __future__ import annotations

import copy
import functools
import shutil
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from utils.course import ROOT, grading
from utils.course import chapter as chapters
from utils.course.chapter import Chapter

CHAPTER = "ch00_toolkit"
SEED_OFFSET = 1000  # the re-check's inputs; fixed so a failure can be replayed
CELL_TIMEOUT = 90  # long enough for a loaded machine's slowest cell, short for the loop below


# ---------------------------------------------------------------------------------------
# Notebooks to start from.


def _imports_only(cell: NotebookNode) -> bool:
    import ast

    try:
        body = ast.parse(cell.source).body
    except SyntaxError:
        return False
    return bool(body) and all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in body)


def slim(nb: NotebookNode) -> NotebookNode:
    """``nb`` with only what grading needs: title, setup, import cells, exercises and their
    checks (deleting cells that no exercise needs is allowed; it only makes it faster)."""
    nb = copy.deepcopy(nb)
    keep = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata
        if i == 0 or "exercise" in meta or "check" in meta or "setup" in meta.get("tags", []) or (
                cell.cell_type == "code" and _imports_only(cell)):
            keep.append(cell)
    nb.cells = keep
    return nb


def untouched(chapter: str = CHAPTER) -> NotebookNode:
    return nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)


def solved(chapter: str = CHAPTER) -> NotebookNode:
    return nbformat.read(ROOT / "solutions" / f"{chapter}.ipynb", as_version=4)


def stripped_counts(nb: NotebookNode) -> NotebookNode:
    """What ``nbstripout --keep-output`` saves of a notebook the learner ran: outputs kept
    (here, the line each passing check prints), execution counts cleared."""
    nb = copy.deepcopy(nb)
    for code in (c for c in nb.cells if c.cell_type == "code"):
        code.execution_count = None
        if "check" in code.metadata and not code.outputs:
            line = f"\N{CHECK MARK} {code.metadata['check']}: all checks passed\n"
            code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line)]
        for output in code.outputs:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = None
    return nb


# ---------------------------------------------------------------------------------------
# Editing helpers.


def cell(nb: NotebookNode, key: str, exercise: str) -> NotebookNode:
    """The code cell whose metadata ``key`` (exercise or check) is ``exercise``."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get(key) == exercise)


def insert(nb: NotebookNode, anchor: NotebookNode, source: str, after: bool = False, **meta: object) -> None:
    i = next(j for j, c in enumerate(nb.cells) if c is anchor)
    nb.cells.insert(i + after, nbformat.v4.new_code_cell(textwrap.dedent(source).strip(), metadata=dict(meta)))


@dataclass(frozen=True)
class Cheat:
    """``apply(nb, exercise, chapter)`` edits ``nb`` to pass ``exercise`` without solving it.
    ``only`` names the exercise it is written for, if it needs a particular one."""

    name: str
    what: str  # what the learner did
    apply: Callable[[NotebookNode, str, str], None]
    only: str | None = None


def _check_source(text: str) -> Callable[[NotebookNode, str, str], None]:
    def apply(nb: NotebookNode, exercise: str, chapter: str) -> None:
        check = cell(nb, "check", exercise)
        check.source = text.format(exercise=exercise, original=check.source,
                                   indented=textwrap.indent(check.source, "    "))
    return apply


def _delete_check(nb: NotebookNode, exercise: str, chapter: str) -> None:
    nb.cells.remove(cell(nb, "check", exercise))


def _nbval_tags(nb: NotebookNode, exercise: str, chapter: str) -> None:
    cell(nb, "check", exercise).metadata["tags"] = ["nbval-skip", "raises-exception"]


def _moved_metadata(nb: NotebookNode, exercise: str, chapter: str) -> None:
    check = cell(nb, "check", exercise)
    del check.metadata["check"]
    check.source = "pass"
    insert(nb, cell(nb, "exercise", exercise), 'print("checked")', check=exercise)


def _exercise_source(text: str) -> Callable[[NotebookNode, str, str], None]:
    def apply(nb: NotebookNode, exercise: str, chapter: str) -> None:
        target = cell(nb, "exercise", exercise)
        target.source = textwrap.dedent(text).strip().format(exercise=exercise, chapter=chapter,
                                                             original=target.source)
    return apply


def _before_exercise(text: str) -> Callable[[NotebookNode, str, str], None]:
    def apply(nb: NotebookNode, exercise: str, chapter: str) -> None:
        insert(nb, cell(nb, "exercise", exercise), text.format(exercise=exercise, chapter=chapter))
    return apply


def _rename(nb: NotebookNode, exercise: str, chapter: str) -> None:
    target = cell(nb, "exercise", exercise)
    target.source = target.source.replace(f"def {exercise}(", f"def {exercise}_draft(")
    insert(nb, target, f"from solutions.{chapter} import {exercise}")


def _edit_setup(nb: NotebookNode, exercise: str, chapter: str) -> None:
    setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    setup.source = textwrap.dedent(f"""
        import tests.checks.{chapter} as _checks
        _checks.check_{exercise} = lambda fn: print("passed")
    """).strip()


CHEATS = [
    Cheat("delete_check", "deleted the check cell", _delete_check),
    Cheat("pass_in_check", "replaced the check cell's body by `pass`", _check_source("pass")),
    Cheat("print_success", "replaced the check by the line a passing check prints",
          _check_source('print("\N{CHECK MARK} {exercise}: all checks passed")')),
    Cheat("try_except_check", "wrapped the check in try/except", _check_source("try:\n{indented}\nexcept Exception:\n    pass")),
    Cheat("nbval_skip_comment", "put `# NBVAL_SKIP` on the check cell", _check_source("# NBVAL_SKIP\n{original}")),
    Cheat("nbval_raises_comment", "put `# NBVAL_RAISES_EXCEPTION` on the check cell",
          _check_source("# NBVAL_RAISES_EXCEPTION\n{original}")),
    Cheat("nbval_tags", "tagged the check cell nbval-skip and raises-exception", _nbval_tags),
    Cheat("moved_check_metadata", "moved the check metadata to a harmless cell, emptied the real check",
          _moved_metadata),
    Cheat("skip_magic", "made the check cell a `%%script true` cell (skipped)", _check_source("%%script true\n{original}")),
    Cheat("replay_known_outputs", "returned the stored known outputs (tests/fixtures) in call order", _exercise_source("""
        _calls = []
        def {exercise}(acts, labels):
            import torch
            from utils.course.chapter import Chapter
            _calls.append(1)
            return torch.load(Chapter("{chapter}").fixture("{exercise}"))[f"aurocs_{{(len(_calls) - 1) % 2}}"]
    """), only="latent_aurocs"),
    Cheat("import_reference", "imported the reference solution", _exercise_source("from solutions.{chapter} import {exercise}")),
    Cheat("wrap_reference", "called the reference from inside the function, import disguised", _exercise_source("""
        def {exercise}(*args, **kwargs):
            module = __import__("sol" + "utions.{chapter}", fromlist=["{exercise}"])
            return getattr(module, "{exercise}")(*args, **kwargs)
    """)),
    Cheat("reference_via_checked", "bound the function to checked(stub), which hands back the reference",
          _exercise_source("{original}\n\nfrom utils.course.checking import checked\n{exercise} = checked({exercise})")),
    Cheat("mistakes_backdoor", "took the reference from the mistakes catalog, which imports it", _exercise_source("""
        def {exercise}(*args, **kwargs):
            from tests.mistakes.{chapter} import {exercise} as reference
            return reference(*args, **kwargs)
    """)),
    Cheat("tensor_subclass", "returned a tensor subclass whose __torch_function__ makes comparisons pass",
          _exercise_source("""
        import torch

        class _Agreeable(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                result = super().__torch_function__(func, types, args, kwargs or {{}})
                return True if func in (torch.allclose, torch.equal) else result

        def {exercise}(model, sae, latent):
            return torch.zeros(model.cfg.d_vocab).as_subclass(_Agreeable)
    """), only="latent_logit_effects"),
    Cheat("rename_function", "renamed the stub and bound the name to the reference in another cell", _rename),
    Cheat("monkeypatch_check", "replaced the check function in the checks module", _before_exercise(
        'import tests.checks.{chapter} as _checks\n_checks.check_{exercise} = lambda fn: print("passed")')),
    Cheat("fake_sys_modules", "put a fake checks module into sys.modules", _before_exercise(textwrap.dedent("""
        import sys, types
        import tests.checks.{chapter} as _real
        _fake = types.ModuleType(_real.__name__)
        _fake.__dict__.update(vars(_real))
        _fake.check_{exercise} = lambda fn: print("passed")
        sys.modules[_real.__name__] = _fake
    """).strip())),
    Cheat("input_transformer", "registered an input transformer that empties the check cell", _before_exercise(
        textwrap.dedent("""
        def _no_check(lines):
            return ["pass\\n"] if any("check_{exercise}(" in line for line in lines) else lines
        get_ipython().input_transformers_cleanup.append(_no_check)
    """).strip())),
    Cheat("edit_setup_cell", "replaced the check function from the setup cell", _edit_setup),
    Cheat("not_strict_checking", "set utils.course.settings.strict to always False in the exercise cell (checks print, never raise)",
          _exercise_source("{original}\n\nimport utils.course.settings as _uc\n_uc.strict = lambda: False"),
          only="latent_aurocs"),
    Cheat("not_strict_env", "set SAE_CIRCUITS_STRICT=0 in the exercise cell", _exercise_source(
        '{original}\n\nimport os\nos.environ["SAE_CIRCUITS_STRICT"] = "0"'), only="latent_aurocs"),
    # Twins: library functions that compute an exercise's answer (utils.course.twins).
    Cheat("twin_import", "delegated to the library's sae_acts, a twin of the exercise", _exercise_source("""
        from utils.explorer import sae_acts

        def {exercise}(model, sae, prompt, pos, k):
            values, indices = sae_acts(model, sae, model.to_tokens(prompt))[0, pos].topk(k)
            return values, indices
    """), only="top_k_latents"),
    Cheat("twin_disguised", "delegated to two twins of the exercise, fetched by getattr with built names",
          _exercise_source("""
        import utils.explorer as _explorer
        import utils.views as _views

        def {exercise}(model, sae, latent, tokens, k=10, batch_size=64):
            acts = getattr(_explorer, "sae" + "_acts")(model, sae, tokens)[..., latent]
            return getattr(_views, "top_" + "positions")(acts, k)
    """), only="max_activating_contexts"),
    Cheat("twin_metric", "returned utils.metrics.auroc, the twin of the exercise", _exercise_source("""
        from utils import metrics

        def {exercise}(acts, labels):
            return metrics.auroc(acts.float(), labels[:, None])[0]
    """), only="latent_aurocs"),
]
BY_NAME = {c.name: c for c in CHEATS}
# Five per notebook, one per exercise of chapter 00 (in exercise order); a cheat that acts
# on every later check comes last in its notebook.
GROUPS = [
    ["delete_check", "pass_in_check", "print_success", "try_except_check", "nbval_skip_comment"],
    ["nbval_raises_comment", "nbval_tags", "moved_check_metadata", "skip_magic", "replay_known_outputs"],
    ["import_reference", "tensor_subclass", "wrap_reference", "reference_via_checked", "mistakes_backdoor"],
    ["rename_function", "monkeypatch_check", "fake_sys_modules", "input_transformer", "not_strict_checking"],
    ["edit_setup_cell", None, "twin_disguised", None, "not_strict_env"],
    ["twin_import", None, None, None, "twin_metric"],
]


def group_notebook(names: list[str | None], chapter: str = CHAPTER,
                   base: NotebookNode | None = None) -> tuple[NotebookNode, dict[str, str]]:
    """The slim untouched notebook (or ``base``, slimmed) with ``names[k]`` applied to the
    k-th exercise; returns it and cheat -> exercise."""
    nb = slim(untouched(chapter) if base is None else base)
    exercises = grading_exercises(chapter)
    targets = {}
    for name, exercise in zip(names, exercises):
        if name is None:
            continue
        cheat = BY_NAME[name]
        assert cheat.only in (None, exercise), f"{name} is written for {cheat.only}, not {exercise}"
        cheat.apply(nb, exercise, chapter)
        targets[name] = exercise
    return nb, targets


def grading_exercises(chapter: str) -> list[str]:
    return list(Chapter(chapter).exercise_names)


# ---------------------------------------------------------------------------------------
# Cheats with a notebook of their own.


def exit_at_top(chapter: str = CHAPTER, base: NotebookNode | None = None) -> NotebookNode:
    """``os._exit(0)`` right after the setup cell of an untouched notebook (or of ``base``)."""
    nb = untouched(chapter) if base is None else copy.deepcopy(base)
    setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    insert(nb, setup, "import os\nos._exit(0)", after=True)
    return nb


OVERWRITE = '''
import pathlib, sys
import utils

_fake = "\\n".join(f"def check_{{n}}(fn):\\n    print('passed')" for n in {exercises!r})
_targets = [pathlib.Path(utils.__file__).parent.parent, pathlib.Path(sys.executable).parents[2]]
for _root in _targets:
    for _path in [_root / "tests" / "checks" / "{chapter}.py", *(_root / "tests" / "fixtures" / "{chapter}").glob("*.pt")]:
        try:
            _path.write_text(_fake) if _path.suffix == ".py" else _path.write_bytes(b"")
        except OSError as error:
            print("refused:", error)
'''


def overwrite_course(chapter: str = CHAPTER, repository: bool = True, base: NotebookNode | None = None) -> NotebookNode:
    """A cell before the first check rewrites the checks module to pass everything and
    empties the known outputs in the course the kernel imports and, with ``repository``,
    in the repository its Python comes from (which would sabotage the next student).
    Only a sandboxed grader may run the latter: unsandboxed, it would do what it says.
    ``base``: the notebook to start from (default: the untouched one)."""
    nb = slim(untouched(chapter) if base is None else base)
    first = cell(nb, "exercise", grading_exercises(chapter)[0])
    source = OVERWRITE.format(exercises=grading_exercises(chapter), chapter=chapter)
    insert(nb, first, source if repository else source.replace(", pathlib.Path(sys.executable).parents[2]", ""))
    return nb


def endless_second_exercise(chapter: str = CHAPTER) -> NotebookNode:
    """The solved notebook whose second exercise never returns (a kernel that hangs)."""
    nb = slim(solved(chapter))
    second = cell(nb, "exercise", grading_exercises(chapter)[1])
    second.source += f"\n\n\ndef {second.metadata['exercise']}(*args, **kwargs):\n    import time\n\n" \
                     "    while True:\n        time.sleep(1)"
    return nb


CONFTEST = '''
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome, report.longrepr = "passed", None
'''


# ---------------------------------------------------------------------------------------
# Malformed submissions: each must get one clear row, and never stop the batch.


def _huge(path: Path) -> None:
    nb = slim(untouched())
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * (grading.MAX_BYTES + 2**20))]
    path.write_text(nbformat.writes(nb))


MALFORMED: dict[str, tuple[Callable[[Path], None], str]] = {  # file name -> (how to make it, what the row says)
    "invalid_json.ipynb": (lambda p: p.write_text('{"cells": [,]}'), "invalid JSON"),
    "empty.ipynb": (lambda p: p.write_text(""), "empty file"),
    "binary.ipynb": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "not UTF-8"),
    "a_list.ipynb": (lambda p: p.write_text("[]"), "not a notebook"),
    "folder.ipynb": (lambda p: (p.mkdir(), (p / "inside.txt").write_text("x")), "a folder"),
    "link.ipynb": (lambda p: p.symlink_to(ROOT / "solutions" / f"{CHAPTER}.ipynb"), "a link"),
    "no_exercises.ipynb": (lambda p: p.write_text(nbformat.writes(nbformat.v4.new_notebook())), "which chapter"),
    f"{CHAPTER}_is_really_ch01.ipynb": (
        lambda p: p.write_text(nbformat.writes(slim(untouched("ch01_attribution")))), "not ch00_toolkit's"),
    "huge_output.ipynb": (_huge, "over the limit"),
}


def batch(folder: Path) -> dict[str, Path]:
    """Write every submission of the catalog under ``folder``; returns label -> path."""
    paths: dict[str, Path] = {}

    def save(label: str, relative: str, nb: NotebookNode) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(nbformat.writes(nb))
        paths[label] = path

    # The longest first, so that they overlap the rest: a cell that sleeps until its time
    # limit, then the course's own notebooks.
    save("endless", f"cheats/endless/{CHAPTER}.ipynb", endless_second_exercise())
    for chapter in sorted(chapters.names(), reverse=True):
        for kind, source in (("solved", "solutions"), ("untouched", "chapters")):
            path = _at(folder / kind / f"{chapter}.ipynb")
            shutil.copy(ROOT / source / f"{chapter}.ipynb", path)
            paths[f"{kind}/{chapter}"] = path
    for k, names in enumerate(GROUPS):
        nb, _ = group_notebook(names)
        # The first under a name pytest cannot take as a path ("::" separates test ids).
        save(f"group{k}", f"cheats/group{k}/{CHAPTER}{' [1]::x' if k == 0 else ''}.ipynb", nb)
    (folder / "cheats" / "group0" / "conftest.py").write_text(CONFTEST)  # beside a notebook, as a learner would
    save("overwrite_course", f"cheats/overwrite/{CHAPTER}.ipynb", overwrite_course(repository=_sandboxed()))
    # Two names that become one once dots are read as folders, as pytest's JUnit class
    # names do: an honest notebook saved by nbstripout --keep-output, and a kernel exit.
    save("honest_stripped", f"names/a.b/{CHAPTER}.ipynb", stripped_counts(slim(solved())))
    save("exit_at_top", f"names/a/b/{CHAPTER}.ipynb", exit_at_top())
    for name, (make, _) in MALFORMED.items():
        path = folder / "malformed" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        paths[name] = path
    paths["missing.ipynb"] = folder / "malformed" / "missing.ipynb"  # given, but not there
    return paths


def _at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _sandboxed() -> bool:
    from utils.course import sandbox

    return sandbox.landlock_abi() >= 1


@functools.cache
def graded() -> tuple[dict[str, grading.Score], dict[str, Path], float]:
    """Grade the whole catalog and the course's own notebooks once, in one batch (the
chapter of each from its path): label -> score, label -> path, seconds."""
    import time

    folder = Path(tempfile.mkdtemp(prefix="sae-cheats-"))
    paths = batch(folder)
    started = time.perf_counter()
    scores = grading.grade(list(paths.values()), jobs=3, cell_timeout=CELL_TIMEOUT, timeout=900,
                           seed_offset=SEED_OFFSET)
    seconds = time.perf_counter() - started
    print(grading.table(scores))
    by_path = {str(s.notebook): s for s in scores}
    shutil.rmtree(folder, ignore_errors=True)
    return {label: by_path[str(path)] for label, path in paths.items()}, paths, seconds


# ---------------------------------------------------------------------------------------
# The capstone (chapter 08): its answer key is in the repository (the generator, the
# derived ground truth, the hunt's README), and the library holds twins of its exercises
# (``utils.hunt.mechanism``). Cheats that use them, each an exercise cell of its own.

HUNT_CHAPTER = "ch08_hunt"
HUNT_CHEATS: dict[str, tuple[str, str]] = {  # name -> (exercise, the learner's exercise cell)
    "hunt_truth_reader": ("hunt_submission", """
        def hunt_submission(bk, seed):
            from utils.course.hunt import variant_truth
            from utils.hunt import HuntSubmission

            truth = variant_truth(seed)
            circuit = truth["circuit"]
            return HuntSubmission(truth["rules"][0]["rule"], truth["positions"]["answer_positions"], circuit["nodes"],
                                  circuit["faithfulness"], [n for n in circuit["nodes"] if not n.is_error][:5])
    """),
    "hunt_truth_json": ("hunt_submission", """
        import json

        def hunt_submission(bk, seed):
            from utils.hunt import HuntSubmission, pool_size
            from utils.nodes import Node

            with open("../utils/hunt/artifacts/truth.json") as file:
                truth = json.load(file)["variants"][seed % pool_size()]
            nodes = [Node.parse(n) for n in truth["circuit"]["nodes"]]
            return HuntSubmission(truth["rules"][0]["rule"], truth["positions"]["answer_positions"], nodes,
                                  truth["circuit"]["faithfulness"], [n for n in nodes if not n.is_error][:5])
    """),
    "hunt_planted_rules": ("hunt_submission", """
        def hunt_submission(bk, seed):
            import utils.hunt as hunt

            task = ("copy", "hometown", "count")[seed % 3]
            return hunt.HuntSubmission(hunt.planted.RULES[task][0], [], [], 0.0, [])
    """),
    "hunt_labelled_prompts": ("patch_positions", """
        def patch_positions(model, batch, hooks):
            from utils.hunt.truth import labelled_prompts
            raise NotImplementedError(labelled_prompts)
    """),
    "hunt_library_twin": ("smallest_faithful_circuit", """
        def smallest_faithful_circuit(faithfulness, ranking, target, sizes):
            from types import SimpleNamespace
            from utils.hunt.mechanism import smallest_faithful

            size, f = smallest_faithful(SimpleNamespace(faithfulness=faithfulness), list(ranking), target, list(sizes))
            return list(ranking[:size]), f
    """),
}


def hunt_cheat_notebook(name: str) -> tuple[NotebookNode, str]:
    """The slim untouched chapter-08 notebook with cheat ``name`` in its exercise cell;
    returns it and the exercise it aims at."""
    exercise, text = HUNT_CHEATS[name]
    nb = slim(untouched(HUNT_CHAPTER))
    cell(nb, "exercise", exercise).source = textwrap.dedent(text).strip()
    return nb, exercise

"""Every chapter's GPT-2 scale-up cells, run against a simulated hub (``tests/hub.py``).

A scale-up cell carries the cell tag ``scaleup`` (conventions in ``utils/course/source.py``). For each
one found in a solution notebook, the test writes the hub files its ``load_gpt2(layers=...,
kinds=...)`` call reads, then runs the cell in a fresh kernel with ``HF_HUB_OFFLINE=1`` and
``HF_HOME`` pointing at that cache, after the earlier cells that define the names it uses
(and, in turn, the names those use). The cell must neither raise nor print ``skipped``.
Both failure branches are run too: offline with an empty cache, each cell prints exactly
one ``skipped (...)`` line; with a damaged file on the simulated hub (a transcoder whose
config pickles a numpy scalar, an SAE whose weights have the wrong shape), the cell raises
``LoadFailed`` naming the file and the fix, never a skip. Chapters added later are covered
without touching this file.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import shutil
import symtable
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbformat import NotebookNode

from tests import hub
from utils.backends import gpt2

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "solutions").glob("ch*.ipynb"))
TAG = "scaleup"


def code_cells(path: Path) -> list[NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def scaleups() -> list[tuple[Path, int]]:
    """(solution notebook, index among its code cells) of every scale-up cell."""
    return [(path, i) for path in NOTEBOOKS for i, cell in enumerate(code_cells(path))
            if TAG in cell.metadata.get("tags", [])]


def python_of(cell: NotebookNode) -> str:
    """A cell's source as plain Python (IPython magics turned into calls)."""
    return TransformerManager().transform_cell(cell.source)


# ------------------------------------------------------------------ dependencies
def bound_and_needed(source: str) -> tuple[set[str], set[str]]:
    """Names a cell binds at top level, and names it reads from earlier cells.

    Read from earlier cells: a top-level name first met as a read, or a name a function or
    comprehension in the cell reads as a global and the cell never binds.
    """
    table = symtable.symtable(source, "<cell>", "exec")
    bound = {s.get_name() for s in table.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_namespace()}
    first_use: dict[str, type] = {}
    for node in sorted(top_level_names(ast.parse(source)), key=lambda n: (n.lineno, n.col_offset)):
        first_use.setdefault(node.id, type(node.ctx))
    needed = {name for name, ctx in first_use.items() if ctx is ast.Load}
    needed |= nested_globals(table) - bound
    return bound, needed - set(dir(builtins))


def top_level_names(tree: ast.AST) -> list[ast.Name]:
    """``Name`` nodes the cell itself evaluates: not those inside functions, lambdas, class
    bodies or comprehensions (``nested_globals`` covers those), but their decorators,
    defaults, bases and first iterables, which run at top level."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            found.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack += [*getattr(node, "decorator_list", []), *node.args.defaults,
                      *filter(None, node.args.kw_defaults)]
        elif isinstance(node, ast.ClassDef):
            stack += [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            stack.append(node.generators[0].iter)
        else:
            stack += ast.iter_child_nodes(node)
    return found


def nested_globals(table: symtable.SymbolTable) -> set[str]:
    """Names that functions, lambdas, classes and comprehensions below ``table`` read as globals."""
    names = set()
    for child in table.get_children():
        names |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        names |= nested_globals(child)
    return names


def dependency_slice(cells: list[NotebookNode], target: int) -> list[int]:
    """Indices of ``target`` and every earlier cell it needs, in notebook order.

    Walking back from ``target``, the latest earlier cell binding a needed name is taken,
    and what it needs is needed in turn. Side effects without a name (like
    ``torch.set_grad_enabled``) ride along with the cells that bind names.
    """
    chosen = [target]
    needed = bound_and_needed(python_of(cells[target]))[1]
    for i in range(target - 1, -1, -1):
        bound, wants = bound_and_needed(python_of(cells[i]))
        if bound & needed:
            chosen.append(i)
            needed = (needed - bound) | wants
    return sorted(chosen)


# ------------------------------------------------------------------ what a cell reads
def gpt2_loads(source: str) -> list[ast.Call]:
    """The calls in ``source`` that load the ``gpt2`` backend: ``load_gpt2(...)`` or
    ``load_backend("gpt2", ...)``."""
    def loads_gpt2(node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
        return name == "load_gpt2" or (
            name == "load_backend" and isinstance(first, ast.Constant) and first.value == "gpt2")

    return [node for node in ast.walk(ast.parse(source)) if loads_gpt2(node)]


def dictionaries_read(source: str) -> list[hub.Dictionary]:
    """(kind, layer) of every dictionary the cell's ``load_gpt2`` calls read.

    ``layers`` and ``kinds`` must be literals: the test (and a learner's download) then
    covers just those.
    """
    wanted = []
    for call in gpt2_loads(source):
        args = {k.arg: k.value for k in call.keywords}
        assert getattr(call.func, "id", None) == "load_gpt2" and {"layers", "kinds"} <= set(args), (
            "a scale-up cell loads GPT-2 with load_gpt2(..., layers=[...], kinds=(...)), both "
            "literal, so it downloads only what it uses and this test can provide exactly that"
        )
        layers, kinds = ast.literal_eval(args["layers"]), ast.literal_eval(args["kinds"])
        wanted += [(kind, layer) for kind in kinds for layer in layers]
    return wanted


# ------------------------------------------------------------------ tests
def handlers(source: str) -> list[str]:
    """What each ``except`` clause of ``source`` catches, as written ('' for a bare ``except:``)."""
    return [ast.unparse(node.type) if node.type is not None else ""
            for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ExceptHandler)]


def test_scaleup_cells_are_tagged_and_catch_only_an_unreachable_hub():
    found = scaleups()
    assert found, "no cell tagged scaleup in any solution notebook"
    for path in NOTEBOOKS:
        for i, cell in enumerate(code_cells(path)):
            tagged = TAG in cell.metadata.get("tags", [])
            where = f"{path.name}, code cell {i}"
            if gpt2_loads(python_of(cell)) and not tagged:
                pytest.fail(f"{where} loads GPT-2 but lacks the cell tag {TAG!r}")
            if tagged:
                assert gpt2_loads(python_of(cell)), f"{where} is tagged {TAG!r} but loads no GPT-2"
                assert handlers(python_of(cell)) == ["HubUnavailable"] and "skipped (" in cell.source, (
                    f"{where}: wrap the load in try/except HubUnavailable (and nothing broader) and print "
                    f"one 'skipped (...)' line; it catches {handlers(python_of(cell))}")


def run_cell(source: str) -> str:
    """Run a scale-up cell's code in this process and return what it printed. Offline, or
    when loading fails, only the ``try`` and its ``except`` run, which need ``torch`` alone."""
    import torch

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<scale-up cell>", "exec"), {"__name__": "__main__", "torch": torch})
    return out.getvalue()


@pytest.mark.parametrize("path,index", scaleups(), ids=lambda v: getattr(v, "stem", str(v)))
def test_scaleup_cell_skips_offline_in_one_line(path: Path, index: int, tmp_path: Path):
    with hub.reading(tmp_path):  # offline, with an empty hub cache
        printed = run_cell(python_of(code_cells(path)[index]))
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped (") and "not in the local hub cache" in lines[0], printed


def damaged_hub(target: Path, dictionaries: list[hub.Dictionary]) -> Path:
    """A hub cache at ``target`` that links every file of the simulated hub (written for
    ``dictionaries``), so that one of them can be replaced without harming the shared cache."""
    source = hub.write_hub(hub.HOME, dictionaries)
    shutil.copytree(source / "hub", target / "hub", copy_function=os.symlink)
    return target


def unlinked(home: Path, repo: str, name: str) -> Path:
    """The path of ``name`` in ``repo``'s snapshot under ``home``, its link removed (the
    shared file it pointed to is left alone)."""
    path = home / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / hub.COMMITS[repo] / name
    path.unlink()
    return path


def transcoder_with_numpy_config(home: Path, layer: int) -> Path:
    """The layer's transcoder file, its weights kept, its config carrying a numpy scalar."""
    import numpy as np

    (repo, name), = gpt2.dictionary_files("transcoder", layer)
    state = gpt2.read_dunefsky_checkpoint(hub.snapshot_file(hub.HOME, repo, name))
    cfg = hub.LanguageModelSAERunnerConfig(hook_point=gpt2.TRANSCODER_IN_HOOK.format(layer=layer),
                                           hook_point_layer=layer)
    cfg.l1_coefficient = np.float64(cfg.l1_coefficient)
    path = unlinked(home, repo, name)
    hub.save_transcoder(path, cfg, state)
    return path


def sae_with_wrong_shape(home: Path, layer: int) -> Path:
    """The layer's residual SAE weights, its encoder cut to half its latents."""
    from safetensors.torch import load_file, save_file

    repo, name = gpt2.dictionary_files("resid_sae", layer)[1]
    weights = load_file(hub.snapshot_file(hub.HOME, repo, name))
    weights["W_enc"] = weights["W_enc"][:, : weights["W_enc"].shape[1] // 2].contiguous()
    path = unlinked(home, repo, name)
    save_file(weights, path)
    return path


DAMAGES = {"transcoder": transcoder_with_numpy_config, "resid_sae": sae_with_wrong_shape}


def damage_cases() -> list[tuple[Path, int, str]]:
    """One scale-up cell per kind of damage: the first that reads such a dictionary."""
    cases = {}
    for path, index in scaleups():
        for kind, _ in dictionaries_read(python_of(code_cells(path)[index])):
            cases.setdefault(kind, (path, index, kind))
    return [case for kind, case in cases.items() if kind in DAMAGES]


@pytest.mark.parametrize("path,index,kind", damage_cases(), ids=lambda v: getattr(v, "stem", str(v)))
def test_a_damaged_file_is_an_error_that_names_it(path: Path, index: int, kind: str, tmp_path: Path):
    source = python_of(code_cells(path)[index])
    wanted = dictionaries_read(source)
    layer = max(layer for k, layer in wanted if k == kind)
    home = damaged_hub(tmp_path, wanted)
    damaged = DAMAGES[kind](home, layer)
    with hub.reading(home), pytest.raises(gpt2.LoadFailed) as raised:
        printed = run_cell(source)
        pytest.fail(f"the cell went on with a damaged {damaged.name}; it printed:\n{printed}")
    message = str(raised.value)
    assert f"layer-{layer} {gpt2.KIND_NAMES[kind]}" in message and str(damaged) in message, message
    assert "delete" in message and "run the cell again" in message, message
    assert "skipped" not in message


def test_dependency_slice_follows_names_through_functions():
    cells = [nbformat.v4.new_code_cell(s) for s in [
        "import math",
        "scale = 2.0",
        "def grow(x):\n    return math.sqrt(x) * scale",
        "unrelated = grow(9)\nk = 1",
        "y = grow(4)\nz = [scale * k for k in range(3)]\nk = 0",
    ]]
    assert dependency_slice(cells, 4) == [0, 1, 2, 4]


@pytest.mark.parametrize("path,index", scaleups(), ids=lambda v: getattr(v, "stem", str(v)))
def test_scaleup_cell_runs_on_the_simulated_hub(path: Path, index: int):
    from utils.course.build import execute

    cells = code_cells(path)
    home = hub.write_hub(hub.HOME, dictionaries_read(python_of(cells[index])))
    chosen = dependency_slice(cells, index)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cells[i].source) for i in chosen])
    with hub.reading(home):  # the kernel inherits HF_HOME and HF_HUB_OFFLINE=1
        executed = execute(nb, path)
    text = "".join(o.get("text", "") for o in executed.cells[-1].outputs if o.output_type == "stream")
    assert "skipped" not in text, f"the scale-up cell skipped on the simulated hub:\n{text}"
    assert text.strip(), "the scale-up cell printed nothing"


def test_every_scaleup_reads_files_the_backend_knows():
    for path, index in scaleups():
        for kind, layer in dictionaries_read(python_of(code_cells(path)[index])):
            assert gpt2.dictionary_files(kind, layer), (kind, layer)

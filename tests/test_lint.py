"""Tooling a reader expects, with rules that follow the folders:

* the code passes ruff (config in pyproject.toml) and the library passes a type checker
  (mypy, config in pyproject.toml);
* ``utils/`` outside ``utils/course/`` is the library: it imports nothing of the course
  machinery (``utils/course/``), ``tests``, ``solutions``, ``exercises`` or ``benchmarks``;
* no module of ``utils/`` imports itself back through others (no import circles);
* every package the course imports is declared in a requirements file, and what a chapter's
  kernel imports (the library, the chapters' sources, and every module they reach at import
  time, such as the checks) in requirements-core.txt: it is all a Colab notebook installs;
* what a learner works in (the chapters' sources, the stubs in ``exercises/``, the learner
  notebooks) imports neither ``solutions`` nor ``exercises``: earlier chapters' functions come
  through the course (``utils.course.checking.earlier``), and only from earlier chapters;
* every exercise's twin (``utils.course.twins``) names one library function, and every
  library docstring that calls a function "chapter NN's ``name`` exercise" is listed as its twin.

A new module or package lands under one of these folders and the rules apply to it unchanged.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from utils.course import ROOT

LOCAL = {"utils", "tests", "solutions", "exercises", "benchmarks", "conftest"}
PREINSTALLED = {"torch", "google"}  # torch: course.sh installs it first (pinned); google.colab: Colab's own
LIBRARY, MACHINERY = ROOT / "utils", ROOT / "utils" / "course"
NOT_FOR_THE_LIBRARY = ("utils.course", "tests", "solutions", "exercises", "benchmarks")


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def _library_files() -> list[Path]:
    return [p for p in _python_files("utils") if not p.is_relative_to(MACHINERY)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST, top_level_only: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run (``if TYPE_CHECKING:`` blocks left out); with
    ``top_level_only``, only those that run when the module is imported (not in functions)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names of what ``path`` imports: ``from a.b import c`` is ``a.b.c`` when that is
    a module of this repository, else ``a.b``."""
    names = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), top_level_only):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if _local_path(full) is not None else node.module)
    return names


def _local_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _third_party(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules} - LOCAL - PREINSTALLED - set(sys.stdlib_module_names)


def _declared(*files: str) -> set[str]:
    names = set()
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.\-]+)", line.strip())
            if match and not line.strip().startswith(("#", "-r")):
                names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def _undeclared(modules: set[str], declared: set[str]) -> list[str]:
    dists = packages_distributions()
    missing = []
    for module in sorted(modules):
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(module, [module])}
        if not owners & declared:
            missing.append(f"{module} (from {sorted(owners)})")
    return missing


# ---------------------------------------------------------------------------------------
# Linters.


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_library_type_checks():
    """mypy on the library (``[tool.mypy]`` in pyproject.toml: the folders and the settings)."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert "No module named mypy" not in result.stderr, "mypy is in requirements.txt: `bash course.sh` installs it"
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Which code may import what.


def test_the_library_imports_no_course_machinery_tests_or_solutions():
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in _library_files()
             for module in sorted(_imported_modules(path))
             if any(module == banned or module.startswith(banned + ".") for banned in NOT_FOR_THE_LIBRARY)]
    assert not wrong, "the library must not depend on the course machinery or the tests:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_no_import_circles():
    """Imports anywhere in a module count, inside functions too: a circle broken by a lazy
    import is still a circle. (A package's ``__init__`` that a submodule runs first is not an
    import of the submodule's.)"""
    modules = {_module_name(p): p for p in _python_files("utils")}
    graph = {name: {m for m in _imported_modules(path) if m in modules and m != name}
             for name, path in modules.items()}
    assert not _cycles(graph), f"import circles: {_cycles(graph)}"


def test_the_circle_finder_finds_circles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------------------------------
# Declared dependencies.


def _reached_at_import(start: list[Path]) -> list[Path]:
    """``start`` and every module of this repository they import when imported, transitively."""
    seen: dict[Path, None] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        for module in _imported_modules(path, top_level_only=path not in start):
            found = _local_path(module)
            if found is not None and found not in seen:
                todo.append(found)
    return list(seen)


def test_what_chapters_import_is_in_requirements_core():
    kernel = _reached_at_import(_python_files("source") + _library_files())
    modules = {m for path in kernel for m in _imported_modules(path, top_level_only=path.is_relative_to(MACHINERY)
                                                                  or path.is_relative_to(ROOT / "tests"))}
    assert ROOT / "utils" / "course" / "checking.py" in kernel  # the check cells reach the checks
    assert not _undeclared(_third_party(modules), _declared("requirements-core.txt"))


# Runs in circuit-tracer's own venv (benchmarks/circuit_tracer/venv.py installs circuit-tracer,
# which brings these), never in the course's.
CIRCUIT_TRACER_RUNNER = ROOT / "benchmarks" / "circuit_tracer" / "runner.py"


def test_every_import_is_declared():
    everything = _python_files("utils", "tests", "source", "benchmarks") + [ROOT / "conftest.py"]
    everything.remove(CIRCUIT_TRACER_RUNNER)
    modules = {m for path in everything for m in _imported_modules(path)}
    assert not _undeclared(_third_party(modules), _declared("requirements.txt", "requirements-core.txt"))
    runner = _third_party(set(_imported_modules(CIRCUIT_TRACER_RUNNER)))
    assert runner <= {"circuit_tracer", "transformer_lens", "transformers", "safetensors", "torch"}, runner


# ---------------------------------------------------------------------------------------
# What learners work in, and exercises' twins.


def _learner_code() -> list[tuple[str, str]]:
    """(where, Python) for each chapter source, stub module and learner notebook cell."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    found = [(str(p.relative_to(ROOT)), p.read_text()) for p in _python_files("source", "exercises")]
    for path in sorted((ROOT / "chapters").glob("ch*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                found.append((f"{path.relative_to(ROOT)}, code cell {i}", TransformerManager().transform_cell(cell.source)))
    return found


def test_learners_reach_earlier_chapters_through_the_course():
    wrong = []
    for where, code in _learner_code():
        for node in _import_nodes(ast.parse(code)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            wrong += [f"{where} imports {n}" for n in names if n.split(".")[0] in ("solutions", "exercises")]
    assert not wrong, ("take an earlier chapter's function with utils.course.checking.earlier(chapter, name), "
                       "never from solutions/ or exercises/:\n" + "\n".join(wrong))


def test_earlier_takes_exercises_of_earlier_chapters_only():
    from utils.course.chapter import Chapter

    calls = 0
    for path in _python_files("source"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "earlier":
                args = [a.value for a in node.args if isinstance(a, ast.Constant)]
                assert len(args) == 2 == len(node.args), f"{path.name}: earlier() takes two literal names"
                chapter, name = args
                assert chapter < path.stem, f"{path.name}: earlier({chapter!r}, ...) is not an earlier chapter"
                assert name in Chapter.get(chapter).exercise_names, f"{path.name}: {name} is no exercise of {chapter}"
                calls += 1
    assert calls, "no chapter uses earlier(): is this test still needed?"


def test_every_twin_names_one_library_function():
    from utils.course.chapter import Chapter
    from utils.course.twins import TWINS, _defining_modules

    for (chapter, exercise), names in TWINS.items():
        assert exercise in Chapter.get(chapter).exercise_names, f"{exercise} is no exercise of {chapter}"
        for name in names:
            modules = _defining_modules(name)
            assert len(modules) == 1, f"twin {name} of {chapter}/{exercise} is defined in {modules or 'no module'}"


def test_library_functions_that_name_their_exercise_are_listed_as_twins():
    from utils.course.twins import TWINS

    said = re.compile(r"chapter (\d\d)'s ``(\w+)`` exercise")
    chapters = {name[2:4]: name for name in {ch for ch, _ in TWINS} | {p.stem for p in (ROOT / "source").glob("ch*.py")}}
    missing, found = [], 0
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                for number, exercise in said.findall(" ".join((ast.get_docstring(node) or "").split())):
                    found += 1
                    if node.name not in TWINS.get((chapters[number], exercise), ()):
                        missing.append(f"{path.relative_to(ROOT)}: {node.name} ({chapters[number]}/{exercise})")
    assert found, "no library docstring names its exercise any more: is this test still needed?"
    assert not missing, "list these in utils/course/twins.py:\n" + "\n".join(missing)

"""What the grader executes of a submission, and what in it looks like tampering.

:func:`prepare` rebuilds a submitted notebook from the instructor's side (as nbgrader
restores locked cells), before anything runs:

* the setup cell and every check cell come from the pristine learner notebook (rendered
  from the course's source), each check right after the learner's exercise cell; a check
  cell the learner deleted, edited, emptied, wrapped in ``try`` or moved is thus restored;
* nbval's markers (``# NBVAL_*`` comments, ``nbval-*``/``raises-exception`` tags) are
  dropped, and so are all other cell metadata, stored outputs and execution counts;
* the learner's code cells are kept in their order, and every cell the learner wrote or
  changed is screened (:class:`_Screen`) for code that subverts grading: importing the
  reference, naming an exercise's twin in its exercise cell (a library function that
  computes its answer, :mod:`utils.course.twins`) or fetching a library function there by a
  name built at run time, monkeypatching the course, torch or
  ``sys.modules``, reading known outputs, input transformers and other kernel hooks, ending
  the kernel, tensor subclasses, changing the environment, writing course files.

Each :class:`Finding` names the exercises it concerns. ``tampering=True`` findings zero
those exercises; the others (a restored check cell, an ignored marker) are only reported,
since restoring the cell undid them.
"""
from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

from utils.course.chapter import Chapter, names

_NBVAL_COMMENT = re.compile(r"^\s*#+\s*(NBVAL_[A-Z_]+|PYTEST_VALIDATE_[A-Z_]+)\s*$")
_NBVAL_TAGS = {"nbval-ignore-output", "nbval-check-output", "nbval-raises-exception", "nbval-skip",
               "raises-exception", "pytest-validate-ignore-output"}
_SAFE_CELL_MAGICS = {"time", "timeit", "capture"}  # their body is screened like any code
_SAFE_LINE_MAGICS = {"time", "timeit", "matplotlib", "pip", "who", "whos", "pwd", "autoreload"}
# Roots of the modules a learner must not assign into (the course, torch and its libraries,
# the interpreter); assignments under these prefixes are fine.
_PATCHABLE_ROOTS = {"utils", "tests", "solutions", "exercises", "torch", "sae_lens", "transformer_lens", "einops",
                    "jaxtyping", "numpy", "builtins", "__builtins__", "sys", "os", "importlib", "IPython",
                    "ipykernel", "nbval", "pytest", "functools", "jupyter_client"}
_PATCH_ALLOWED = ("torch.backends.",)
_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "append", "extend", "insert", "remove",
             "__setitem__", "__delitem__"}
# Modules an exercise cell may not import: it is re-run on its own by the grader, next to the checks.
_EXERCISE_FORBIDDEN_IMPORTS = ("tests", "solutions", "utils.course", "gc", "inspect", "ctypes",
                               "builtins", "importlib", "signal", "subprocess", "sys", "os", "pickle", "marshal",
                               "atexit", "threading", "multiprocessing", "IPython", "ipykernel", "nbval", "pytest",
                               "unittest", "shutil", "pathlib", "glob", "io", "types")
# The capstone's answer key (chapter 08): the generator's rules and labels, the derived ground
# truth and its file, the hunt's README. Reading them is tampering in any cell.
ANSWER_KEY = ("utils.hunt.planted", "utils.hunt.truth", "utils.hunt.build", "utils.hunt.ARTIFACTS", "utils.hunt.TRUTH")
_ANSWER_KEY_FILES = ("truth.json", "planted.py", "hunt/README", "hunt/truth.py", "hunt/artifacts")
# Library functions that compute what a chapter-08 exercise asks for: an exercise cell may not use them.
TWINS = ("utils.hunt.mechanism",)
_EXITS = {"exit", "quit", "os._exit", "os.kill", "os.killpg", "os.abort", "sys.exit", "os.fork", "os.forkpty"}
_DYNAMIC = {"exec", "eval", "compile", "__import__", "breakpoint"}
_INTERNALS = {"__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__", "__defaults__", "__wrapped__",
              "__kwdefaults__", "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
              "_getframe", "get_objects", "get_referrers", "get_referents", "currentframe", "getouterframes",
              "meta_path", "path_hooks", "path_importer_cache", "settrace", "setprofile", "addaudithook"}
_TORCH_OVERRIDES = {"__torch_function__", "__torch_dispatch__", "as_subclass", "_make_subclass",
                    "_make_wrapper_subclass", "TorchFunctionMode", "TorchDispatchMode", "overrides", "_python_dispatch"}
MACHINERY = "utils.course"  # the course machinery: a learner's cell may take only what is public
PUBLIC = ("utils.course.checking.checked", "utils.course.checking.earlier")  # what a learner's cell may use of it
_FILE_WRITERS = {"write_text", "write_bytes", "unlink", "rmdir", "chmod", "touch", "symlink_to", "hardlink_to",
                 "mkdir", "rename"}
_OS_WRITERS = {"remove", "unlink", "rename", "replace", "chmod", "rmdir", "removedirs", "link", "symlink",
               "truncate", "system", "popen", "makedirs", "mkdir", "utime", "chown"}
_COURSE_PATH_WORDS = ("tests", "utils", "solutions", "fixtures", "chapters", "exercises", "source", "site-packages",
                      ".venv", "__file__", "FIXTURES", "ROOT", "executable", "prefix")


@dataclass(frozen=True)
class Finding:
    """Something the grader noticed. ``tampering`` findings zero ``exercises``."""

    exercises: tuple[str, ...]
    reason: str
    tampering: bool


@dataclass
class Prepared:
    """A submission as the grader runs it."""

    notebook: NotebookNode
    roles: list[tuple[str, str | None]]  # per code cell: (setup|check|exercise|course|learner, exercise)
    sources: dict[str, str]  # exercise -> the learner's exercise cell (what the recheck imports)
    missing: list[str]  # exercises without an exercise cell
    findings: list[Finding] = field(default_factory=list)


def _machinery(path: str) -> bool:
    """Is ``path`` (a dotted module or attribute path) inside the course machinery, and not
    what a learner may use (``utils.course.checking.checked`` and the modules above it)?"""
    inside = path == MACHINERY or path.startswith(MACHINERY + ".")
    return inside and not any(public == path or public.startswith(path + ".") for public in PUBLIC)


def _defines(source: str) -> set[str]:
    """Names of the functions a cell defines at top level (empty if it does not parse)."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def identify_chapter(nb: NotebookNode) -> str | None:
    """The chapter whose exercises this notebook holds (by cell metadata or ``def``), if one."""
    found: set[str] = set()
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            meta = cell.get("metadata", {})
            found |= {str(meta[k]) for k in ("exercise", "check") if k in meta} | _defines(cell.get("source", ""))
    counts = {chapter: len(found & set(Chapter(chapter).exercise_names)) for chapter in names()}
    best = max(counts.values(), default=0)
    winners = [c for c, n in counts.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _strip_markers(source: str) -> tuple[str, list[str]]:
    kept, markers = [], []
    for line in source.splitlines():
        match = _NBVAL_COMMENT.match(line)
        if match:
            markers.append(match.group(1))
        else:
            kept.append(line)
    return "\n".join(kept), markers


def prepare(nb: NotebookNode, chapter: str) -> Prepared:
    """Rebuild ``nb`` (a submission of ``chapter``) for grading; see the module docstring."""
    course = Chapter(chapter).pristine
    order = Chapter(chapter).exercise_names
    p_code = [c for c in course.cells if c.cell_type == "code"]
    p_setup = next(c for c in p_code if "setup" in c.metadata.get("tags", []))
    p_checks = {c.metadata["check"]: c for c in p_code if "check" in c.metadata}
    course_sources = {_normal(c.source) for c in p_code}
    check_sources = {_normal(c.source): e for e, c in p_checks.items()}
    cells = [c for c in nb.cells if c.get("cell_type") in ("code", "markdown", "raw")]
    code = [c for c in cells if c.cell_type == "code"]
    findings: list[Finding] = []

    def note(exercises: tuple[str, ...], reason: str, tampering: bool = False) -> None:
        findings.append(Finding(exercises, reason, tampering))

    def is_check(cell: NotebookNode) -> str | None:
        meta = cell.get("metadata", {})
        if "exercise" in meta:
            return None
        if "check" in meta:
            return str(meta["check"])
        return check_sources.get(_normal(cell.source))

    def is_setup(cell: NotebookNode) -> bool:
        return "setup" in (cell.get("metadata", {}).get("tags") or []) or _normal(cell.source) == _normal(p_setup.source)

    # The learner's exercise cell of each exercise: the last one carrying its metadata, else
    # the last one defining it (Jupyter drops no metadata, but a re-typed cell has none).
    chosen: dict[str, NotebookNode] = {}
    for name in order:
        tagged = [c for c in code if c.get("metadata", {}).get("exercise") == name]
        defining = [c for c in code if name in _defines(c.source) and is_check(c) is None and not is_setup(c)]
        if len(tagged) > 1:
            note((name,), f"{len(tagged)} cells are marked as its exercise cell; the last one was graded")
        if tagged:
            chosen[name] = tagged[-1]
        elif defining:
            chosen[name] = defining[-1]
            note((name,), "its exercise cell lost its metadata; the last cell defining it was graded")
    missing = [name for name in order if name not in chosen]
    role_of = {id(cell): name for name, cell in chosen.items()}

    seen_checks: dict[str, int] = {}
    for cell in code:
        name = is_check(cell)
        if name is not None and id(cell) not in role_of:
            seen_checks[name] = seen_checks.get(name, 0) + 1
            if name in p_checks and _normal(cell.source) != _normal(p_checks[name].source):
                note((name,), "its check cell was edited; the course's check ran instead")
            elif name not in p_checks:
                note((), f"a cell claims to check {name!r}, which is no exercise of {chapter}; it was dropped")
            if name in p_checks and set(cell.get("metadata", {}).get("tags") or []) & _NBVAL_TAGS:
                note((name,), "its check cell's nbval tags were ignored")
    for name in order:
        if name in chosen and name not in seen_checks:
            note((name,), "its check cell was deleted; the course's check was put back")
    setups = [c for c in code if is_setup(c) and id(c) not in role_of]
    if not setups:
        note((), "the setup cell was deleted; the course's was put back")
    for edited in (c for c in setups if _normal(c.source) != _normal(p_setup.source)):
        note(mentioned(edited.source, chapter), "the setup cell was edited; the course's ran instead")

    out: list[NotebookNode] = []
    roles: list[tuple[str, str | None]] = []
    sources: dict[str, str] = {}
    aliases: dict[str, str] = {}  # imports seen so far: later cells use them
    setup_placed = False

    def add(cell: NotebookNode, role: str, exercise: str | None) -> None:
        nonlocal setup_placed
        if cell.cell_type == "code" and not setup_placed:
            out.append(_fresh(p_setup))
            roles.append(("setup", None))
            setup_placed = True
        out.append(cell)
        if cell.cell_type == "code":
            roles.append((role, exercise))

    for cell in cells:
        if cell.cell_type != "code":
            add(_markdown(cell), "", None)
            continue
        if id(cell) not in role_of and (is_check(cell) is not None or is_setup(cell)):
            continue  # replaced by the course's
        source, markers = _strip_markers(cell.source)
        tags = set(cell.get("metadata", {}).get("tags") or []) & _NBVAL_TAGS
        name = role_of.get(id(cell))
        written = _normal(cell.source) not in course_sources
        if (markers or tags) and written:
            note((name,) if name else (), f"nbval markers ({', '.join(sorted({*markers, *tags}))}) were ignored")
        if name is not None:
            sources[name] = source
            add(_fresh_code(source, exercise=name), "exercise", name)
            add(_fresh(p_checks[name]), "check", name)
        else:
            add(_fresh_code(source), "learner" if written else "course", None)
        reasons = screen(source, chapter, exercise=name, aliases=aliases)
        if written:
            findings += reasons
    if not setup_placed:
        out.insert(0, _fresh(p_setup))
        roles.insert(0, ("setup", None))
    graded = nbformat.v4.new_notebook(cells=out, metadata=copy.deepcopy(course.metadata))
    for j, cell in enumerate(graded.cells):
        cell["id"] = f"graded-{j:03d}"
    return Prepared(graded, roles, sources, missing, findings)


def _fresh(cell: NotebookNode) -> NotebookNode:
    """A copy of a course cell, without outputs."""
    return _fresh_code(_strip_markers(cell.source)[0], **{k: v for k, v in cell.metadata.items() if k != "tags"})


def _fresh_code(source: str, **meta: object) -> NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata=dict(meta))


def _markdown(cell: NotebookNode) -> NotebookNode:
    make = nbformat.v4.new_markdown_cell if cell.cell_type == "markdown" else nbformat.v4.new_raw_cell
    return make(cell.get("source", ""))


# ---------------------------------------------------------------------------------------
# Screening what the learner wrote.


@functools.cache
def _transformer():  # noqa: ANN202 (IPython's type)
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def _python(source: str) -> str:
    """The cell as the kernel runs it: IPython's magics and ``!`` turned into Python calls."""
    try:
        return _transformer().transform_cell(source)
    except Exception:  # IPython could not read it: the kernel will fail on it anyway
        return source


def screen(source: str, chapter: str, exercise: str | None, aliases: dict[str, str] | None = None) -> list[Finding]:
    """What in a cell the learner wrote subverts grading. In ``exercise``'s own cell a
    finding concerns that exercise; elsewhere the exercises the cell names, or all.
    ``aliases`` carries the imports of earlier cells (and receives this cell's)."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []  # it cannot run, so it cannot cheat; the kernel reports the error
    twins = {name: exercise for name in Chapter(chapter).twins().get(exercise, ())} if exercise else {}
    visitor = _Screen(in_exercise=exercise is not None, aliases={} if aliases is None else aliases, twins=twins)
    visitor.bound = _bound(tree)
    visitor.visit(tree)
    if not visitor.reasons:
        return []
    concerned = (exercise,) if exercise is not None else mentioned(source, chapter) or Chapter(chapter).exercise_names
    where = "its exercise cell" if exercise else "a cell of the notebook"
    return [Finding(concerned, f"{where} {reason}", True) for reason in dict.fromkeys(visitor.reasons)]


def _bound(tree: ast.AST) -> set[str]:
    """Names a cell binds other than by importing: assigned, arguments, functions, classes."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return bound


def mentioned(source: str, chapter: str) -> tuple[str, ...]:
    """The exercises of ``chapter`` a cell names (in a name, an attribute, a string or an import)."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return ()
    words = {w for node in ast.walk(tree) for w in _words(node)}
    return tuple(n for n in Chapter(chapter).exercise_names if any(n in w for w in words))


def _words(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.alias):
        yield node.asname or node.name.split(".")[-1]


class _Screen(ast.NodeVisitor):
    """Collects the reasons a cell looks like tampering (see the module docstring)."""

    def __init__(self, in_exercise: bool, aliases: dict[str, str], twins: dict[str, str] | None = None) -> None:
        self.in_exercise = in_exercise
        self.aliases = aliases  # local name -> the dotted module path it was imported as
        self.twins = twins or {}  # name of a twin of the cell's exercise -> that exercise
        self.bound: set[str] = set()  # names the cell binds itself (they shadow an import)
        self.reasons: list[str] = []

    def twin(self, name: str) -> None:
        """Flag ``name``, a library function the cell reaches, if it is a twin of the cell's exercise."""
        if name in self.twins:
            self.flag(f"uses {name}, a library function that computes {self.twins[name]}'s answer (its twin, "
                      "graded like the reference): write it yourself")

    def flag(self, reason: str) -> None:
        self.reasons.append(reason)

    def dotted(self, node: ast.AST) -> str:
        """``a.b.c`` for a name or attribute chain, with import aliases resolved ('' otherwise)."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else ""
        return ""

    def module_rooted(self, node: ast.AST) -> str:
        """The dotted path of ``node`` if it starts at an imported module we protect."""
        while isinstance(node, (ast.Subscript, ast.Call)):
            if isinstance(node, ast.Subscript):
                node = node.value
            elif self.dotted(node.func) in ("vars", "getattr") and node.args:
                node = node.args[0]  # vars(torch)[...] = ..., getattr(torch, name).x = ...
            else:
                return ""
        path = self.dotted(node)
        if path.split(".")[0] not in _PATCHABLE_ROOTS or path == "sys.path":
            return ""
        return "" if path.startswith(_PATCH_ALLOWED) else path

    # imports ------------------------------------------------------------------------
    def _answer_key(self, path: str) -> bool:
        """Flag ``path`` (a dotted module or attribute path) if it reaches the hunt's answer key."""
        parts = path.split(".")
        private = len(parts) >= 3 and parts[:2] == ["utils", "hunt"] and parts[2].startswith("_")
        if private or any(path == key or path.startswith(key + ".") for key in ANSWER_KEY):
            self.flag(f"reads the hunt's answer key ({path})")
            return True
        if self.in_exercise and any(path == twin or path.startswith(twin + ".") for twin in TWINS):
            self.flag(f"uses {path}, the library's twin of the chapter's exercises (the grader counts it as the "
                      "reference)")
            return True
        return False

    def _imported(self, module: str) -> None:
        if self._answer_key(module):
            return
        if module == "solutions" or module.startswith("solutions."):
            self.flag("imports the reference solutions")
        elif module.startswith("tests.fixtures"):
            self.flag("reads the course's known outputs")
        elif self.in_exercise and any(module == m or module.startswith(m + ".") for m in _EXERCISE_FORBIDDEN_IMPORTS):
            self.flag(f"imports {module}, which an exercise does not need (it is re-run on its own)")
        elif module == "ctypes" or module.startswith("ctypes."):
            self.flag("uses ctypes")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._imported(alias.name)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if module.split(".")[0] == "utils":
                self.twin(alias.name)
            self._imported(f"{module}.{alias.name}" if module else alias.name)
            if _machinery(f"{module}.{alias.name}"):
                self.flag(f"takes {alias.name} from {module} (the course machinery)")
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name

    # assignments ----------------------------------------------------------------------
    def _target(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t)
        elif isinstance(target, ast.Starred):
            self._target(target.value)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            path = self.module_rooted(target)
            if path:
                self.flag(_patch_reason(path))
            if isinstance(target, ast.Attribute) and target.attr in ("__class__", "__dict__", "__code__"):
                self.flag(f"assigns {target.attr}")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(target)
        self.generic_visit(node)

    # classes, names, attributes, strings ---------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if self.dotted(base).split(".")[-1] in ("Tensor", "Parameter", "TensorBase"):
                self.flag("defines a tensor subclass")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        path = self.dotted(node)
        if path.startswith("utils."):
            self.twin(node.attr)
        if node.attr in _INTERNALS:
            self.flag(f"reaches into the interpreter ({node.attr})")
        elif node.attr in _TORCH_OVERRIDES:
            self.flag("overrides torch's functions (a tensor subclass or mode)")
        elif path in ("sys.modules",) or path.startswith("sys.modules."):
            self.flag("touches sys.modules")
        elif _machinery(path):
            self.flag(f"uses {path} (the course machinery)")
            return  # the chain's shorter paths say nothing more
        elif self._answer_key(path):
            return
        elif node.attr in ("FIXTURES", "fixture_path", "known", "PASSED", "CHECKS", "_STORE", "_load_fixture"):
            self.flag(f"uses {node.attr} (the checks' known outputs or state)")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        imported = self.aliases.get(node.id, "")
        if isinstance(node.ctx, ast.Load) and imported.startswith("utils.") and node.id not in self.bound:
            self.twin(imported.split(".")[-1])
        if node.id in _INTERNALS | _TORCH_OVERRIDES:
            self.flag(f"reaches into the interpreter ({node.id})")
        elif node.id in ("__builtins__", "get_ipython"):
            self.flag(f"uses {node.id}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            if "fixtures" in node.value:
                self.flag("names the course's known outputs (tests/fixtures)")
            if any(name in node.value for name in _ANSWER_KEY_FILES):
                self.flag("names a file of the hunt's answer key")
            if re.search(r"\bsolutions\b", node.value) and ("import" in node.value or "." in node.value or "/" in node.value):
                self.flag("names the reference solutions")

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.exc is not None and self.dotted(node.exc.func if isinstance(node.exc, ast.Call) else node.exc) in (
                "SystemExit", "KeyboardInterrupt"):
            self.flag("ends the kernel")
        self.generic_visit(node)

    # calls ----------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = self.dotted(node.func)
        short = func.split(".")[-1]
        if _is_ipython_call(node):
            self._ipython(node)
            for arg in node.args[2:3]:  # a safe cell magic's body: screen it as code
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    try:
                        self.visit(ast.parse(_python(arg.value)))
                    except SyntaxError:
                        pass
            return
        if func in _EXITS or func.startswith("signal."):
            self.flag(f"ends or signals the kernel ({func})")
        elif func in _DYNAMIC or func.startswith("importlib."):
            self.flag(f"runs code built at run time ({func})")
        elif func.startswith("os.environ.") and short in _MUTATORS or func in ("os.putenv", "os.unsetenv"):
            self.flag("changes environment variables (such as the grader's SAE_CIRCUITS_STRICT)")
        elif func == "getattr" and len(node.args) >= 2 and self.dotted(node.args[0]).split(".")[0] == "utils":
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self.twin(name.value)
            elif self.in_exercise:
                self.flag("fetches a function of the course's library by a name built at run time (getattr)")
        elif func in ("setattr", "delattr") and node.args and self.module_rooted(node.args[0]):
            self.flag(_patch_reason(self.module_rooted(node.args[0])))
        elif short in _MUTATORS and isinstance(node.func, ast.Attribute) and self.module_rooted(node.func.value):
            root = self.module_rooted(node.func.value)
            if root.split(".")[0] in ("utils", "tests", "sys", "builtins", "torch"):
                self.flag(_patch_reason(root))
        elif func.startswith(("subprocess.", "shutil.")) or func.startswith("os.") and short in _OS_WRITERS:
            self.flag(f"runs programs or changes files ({func})")
        elif self.in_exercise and func in ("torch.load", "torch.save", "open", "numpy.load"):
            self.flag(f"reads or writes files ({func})")
        elif self._writes_course_file(node, func, short):
            self.flag(f"writes into the course's files ({func or short})")
        elif self.in_exercise and short in ("checked", "earlier"):
            self.flag(f"calls {short}(), which hands back the reference solution")
        self.generic_visit(node)

    def _writes_course_file(self, node: ast.Call, func: str, short: str) -> bool:
        writes = (func == "open" and _write_mode(node)) or func == "torch.save" or (
            isinstance(node.func, ast.Attribute) and short in _FILE_WRITERS)
        if not writes:
            return False
        words = [w for n in ast.walk(node) for w in _words(n)]
        return any(word in w for w in words for word in _COURSE_PATH_WORDS) or any(w.startswith("/") for w in words)

    def _ipython(self, node: ast.Call) -> None:
        method = node.func.attr  # type: ignore[attr-defined]
        first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if method == "run_cell_magic" and first in _SAFE_CELL_MAGICS:
            return
        if method == "run_line_magic" and first in _SAFE_LINE_MAGICS:
            return
        if method == "run_line_magic" and first == "load_ext" and _arg(node, 1) == "autoreload":
            return
        if method in ("system", "getoutput") and str(first).split()[:1] == ["pip"]:
            return
        what = f"%{first}" if method == "run_line_magic" else f"%%{first}" if method == "run_cell_magic" else (
            f"!{first}" if method in ("system", "getoutput") else f"get_ipython().{method}")
        self.flag(f"changes how the kernel runs cells or runs commands ({what})")


def _patch_reason(path: str) -> str:
    if path.startswith("sys.modules"):
        return "touches sys.modules"
    if path.startswith("os.environ"):
        return "changes environment variables (such as the grader's SAE_CIRCUITS_STRICT)"
    return f"monkeypatches {path}"


def _is_ipython_call(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name) and func.value.func.id == "get_ipython")


def _arg(node: ast.Call, i: int) -> object:
    return node.args[i].value if len(node.args) > i and isinstance(node.args[i], ast.Constant) else None


def _write_mode(node: ast.Call) -> bool:
    mode = _arg(node, 1)
    for kw in node.keywords:
        if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
            mode = kw.value.value
    return isinstance(mode, str) and any(ch in mode for ch in "wax+")

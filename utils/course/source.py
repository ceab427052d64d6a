"""A chapter's source: its conventions, its exercises, and what the build renders from it.

A chapter's source is a jupytext percent script, ``source/<chapter>.py``. Rendered from it
(by :class:`utils.course.chapter.Chapter`, written by ``python -m utils.course build``): the
learner notebook, the stub module, the reference module and the solution notebook.

Source conventions
------------------
``# %% [markdown] exercise="NAME" title="Verb-first title" difficulty=2 importance=4 minutes=10``
    describes exercise NAME; the build puts the standard header above it. An optional
    ``skip="..."`` says when skipping it is fine; an optional ``check_args="X, Y"`` hands
    the check the notebook's ``X`` and ``Y`` after the function (the capstone's learner
    seed): ``check_NAME(NAME, X, Y)``. A check must also run without them (tests and the
    grader's re-check call it with the function alone).
The next code cell defines ``def NAME(...)`` with the reference between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; stubs replace that block with
``raise NotImplementedError``. The build adds a check cell calling
``tests.checks.<chapter>.check_NAME``.
``# %% [markdown] hint="NAME"``
    a hint for NAME, shown collapsed after its check cell (as many as you like).
``# %% tags=["module"]``
    code that also goes into both modules (imports, helpers the exercises use).
``# %% tags=["scaleup"]``
    a GPT-2 scale-up cell (the tag is kept in both notebooks). It loads through
    ``utils.backends.gpt2.load_gpt2(device, layers=[...], kinds=(...))``, with ``layers`` and
    ``kinds`` written as literals (a learner downloads only those), inside
    ``try: ... except HubUnavailable as error: print(f"skipped ({error})")`` and nothing
    broader: where the hub cannot be reached (or, offline, the files are not cached) it prints
    one line and moves on; any other failure (a damaged file, a wrong shape, memory) raises
    ``LoadFailed``, which names the file and what to do, and shows as an error.
    ``tests/test_scaleups.py`` finds every such cell in every solution notebook and runs it,
    with the earlier cells it needs, against a simulated hub; offline; and against a hub
    holding a damaged file.
Every other cell appears in both notebooks only.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
from nbformat import NotebookNode

from utils.course import ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_SOLUTION_BLOCK = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}[ \t]*\n?", re.M | re.S)


# The value the repository setting held before the course had a public home. While it still
# holds it, the Colab install cell says so in one line instead of failing inside git clone.
PLACEHOLDER_REPOSITORY = "https://github.com/sae-circuits/sae-circuits"
SETTING = "[tool.sae-circuits] repository"
COLAB_CONTENT = "/content"  # Colab's working folder; the course is cloned into it


def repository_url() -> str:
    """The course's public repository: the one setting used by every badge and install cell."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    url = config["tool"]["sae-circuits"]["repository"].removesuffix("/").removesuffix(".git")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"{SETTING} in pyproject.toml must be https://github.com/OWNER/NAME "
                         f"(Colab opens notebooks from GitHub); got {url!r}")
    return url


# ---------------------------------------------------------------------------------------
# Parsing a source into exercises and cells.


@dataclass
class Exercise:
    name: str
    title: str
    difficulty: int
    importance: int
    minutes: int
    skip: str | None = None
    check_args: str | None = None
    hints: list[str] = field(default_factory=list)
    code: str = ""


def read_source(path: Path) -> NotebookNode:
    return jupytext.read(path, fmt="py:percent")


def find_exercises(nb: NotebookNode, chapter: str) -> dict[str, Exercise]:
    """Collect the exercises of a source notebook, validating the conventions."""
    exercises: dict[str, Exercise] = {}
    cells = nb.cells
    for i, cell in enumerate(cells):
        meta = cell.metadata
        if cell.cell_type == "markdown" and "exercise" in meta:
            name = meta["exercise"]
            missing = {"title", "difficulty", "importance", "minutes"} - set(meta)
            if missing:
                raise ValueError(f"{chapter}: exercise {name!r} lacks {sorted(missing)}")
            if re.search(r"\(\d+/\d+\)", meta["title"]):
                raise ValueError(f"{chapter}: exercise {name!r}: the build numbers exercises; drop the (k/n) from its title")
            if "check_args" in meta and not re.fullmatch(r"\s*[A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*\s*", str(meta["check_args"])):
                raise ValueError(f"{chapter}: exercise {name!r}: check_args names notebook variables, comma-separated; "
                                 f"got {meta['check_args']!r}")
            code = cells[i + 1] if i + 1 < len(cells) else None
            if code is None or code.cell_type != "code" or f"def {name}(" not in code.source:
                raise ValueError(f"{chapter}: the cell after exercise {name!r} must define `def {name}(`")
            if BEGIN not in code.source:
                raise ValueError(f"{chapter}: exercise {name!r} has no `{BEGIN}` block")
            exercises[name] = Exercise(
                name, meta["title"], meta["difficulty"], meta["importance"], meta["minutes"],
                meta.get("skip"), meta.get("check_args"), code=code.source,
            )
        elif cell.cell_type == "markdown" and "hint" in meta:
            if meta["hint"] not in exercises:
                raise ValueError(f"{chapter}: hint for unknown or later exercise {meta['hint']!r}")
            exercises[meta["hint"]].hints.append(cell.source)
    return exercises


def stub(code: str, name: str) -> str:
    """Replace every solution block with ``raise NotImplementedError``."""

    def replace(match: re.Match[str]) -> str:
        indent = match.group(1)
        return f'{indent}raise NotImplementedError("{name}: your code here")\n'

    return _SOLUTION_BLOCK.sub(replace, code)


def strip_markers(code: str) -> str:
    """The reference: the solution blocks without their marker lines."""
    return "\n".join(
        line for line in code.splitlines() if line.strip() not in (BEGIN, END)
    ) + ("\n" if code.endswith("\n") else "")


# ---------------------------------------------------------------------------------------
# Rendering.


def _dots(n: int, full: str) -> str:
    return full * n + "\N{MEDIUM WHITE CIRCLE}" * (5 - n)


def exercise_header(ex: Exercise, k: int, n: int) -> str:
    lines = [
        f"### Exercise ({k}/{n}): {ex.title}",
        "",
        f"> **Difficulty** {_dots(ex.difficulty, chr(0x1F534))} &nbsp; "
        f"**Importance** {_dots(ex.importance, chr(0x1F535))}",
        ">",
        f"> Spend up to {ex.minutes} minutes on this exercise.",
    ]
    if ex.skip:
        lines += [">", f"> *Fine to skip:* {ex.skip}"]
    return "\n".join(lines)


def details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body.strip()}\n\n</details>"


def setup_cell(url: str | None = None, content: str = COLAB_CONTENT) -> str:
    """The first code cell: in Colab, clone the course from ``url`` into ``content`` and install
    its packages; elsewhere, nothing. ``url`` defaults to the repository setting.

    A stamp written after the install lets the cell be rerun after a failure or an
    interruption (it starts over) and skips the work once done. Failures say in one sentence
    what failed; a clone failure names the URL and the setting that holds it.
    """
    url = url or repository_url()
    if url == PLACEHOLDER_REPOSITORY:
        return f'''# Setup: in Colab this cell would fetch and install the course; on your machine it does nothing.
import sys

if "google.colab" in sys.modules:
    raise RuntimeError("This copy of the course has no public repository yet: {SETTING} in pyproject.toml still holds the placeholder {url}; set it and rebuild with python -m utils.course build.")'''
    return f'''# Setup: just run this cell. In Colab it fetches the course and installs its packages next to
# Colab's own torch: 2 to 10 minutes, once per session (rerun it if it stops). On your machine
# it does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import shutil
    import subprocess

    URL = "{url}"  # the {SETTING} setting of the course's pyproject.toml
    REPO = "{content}/sae-circuits"
    DONE = f"{{REPO}}/.colab-setup-done"  # written last, so a failed or interrupted setup starts over
    if not os.path.exists(DONE):
        shutil.rmtree(REPO, ignore_errors=True)
        git = subprocess.run(["git", "clone", "--quiet", "--depth=1", URL, REPO], capture_output=True,
                             text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
        if git.returncode != 0:
            raise RuntimeError(f"Could not fetch the course from {{URL}} (git: {{' '.join(git.stderr.split())}}); that URL is the {SETTING} setting in the course's pyproject.toml.")
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{{REPO}}/requirements-core.txt"],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(f"Installing the course's packages failed (pip: {{' '.join(pip.stderr.split())[-500:]}}); run this cell again to retry.")
        open(DONE, "w").close()
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    os.chdir(f"{{REPO}}/chapters")'''


def colab_link(chapter: str) -> str:
    owner_repo = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/chapters/{chapter}.ipynb"


def badge(chapter: str) -> str:
    """README's Colab badge (an image from colab.research.google.com: README is read online)."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_link(chapter)})"


def text_badge(chapter: str) -> str:
    """The notebooks' Colab link, as text: a notebook is read offline too, where the badge's
    image would be broken (and the one request leaving the machine)."""
    return f"[Open in Colab ↗]({colab_link(chapter)})"


def _md(source: str, **meta: object) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(source, metadata=dict(meta))


def _code(source: str, **meta: object) -> NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata=dict(meta))


def render_notebook(src: NotebookNode, chapter: str, checks_module: str, learner: bool) -> NotebookNode:
    """The learner notebook (stubs) or the solution notebook (reference) of the source
    ``src`` of ``chapter``, unexecuted; check cells import from ``checks_module``."""
    exercises = find_exercises(src, chapter)
    order = list(exercises)
    cells: list[NotebookNode] = []
    pending: Exercise | None = None  # exercise whose code cell comes next
    for i, cell in enumerate(src.cells):
        meta = cell.metadata
        if i == 0:
            if cell.cell_type != "markdown":
                raise ValueError(f"{chapter}: the first cell must be the markdown title")
            cells += [_md(cell.source + "\n\n" + text_badge(chapter)), _code(setup_cell(), tags=["setup"])]
        elif cell.cell_type == "markdown" and "exercise" in meta:
            pending = exercises[meta["exercise"]]
            k = order.index(pending.name) + 1
            cells.append(_md(exercise_header(pending, k, len(order)) + "\n\n" + cell.source))
        elif cell.cell_type == "markdown" and "hint" in meta:
            continue  # rendered with the exercise's check cell
        elif pending is not None and cell.cell_type == "code":
            ex, pending = pending, None
            body = stub(ex.code, ex.name) if learner else strip_markers(ex.code)
            cells.append(_code(body.rstrip(), exercise=ex.name))
            args = "".join(f", {a.strip()}" for a in ex.check_args.split(",")) if ex.check_args else ""
            check = (
                f"# Check {ex.name}: one line if it is right, else the likely mistake.\n"
                f"from {checks_module} import check_{ex.name}\n\ncheck_{ex.name}({ex.name}{args})"
            )
            cells.append(_code(check, check=ex.name))
            folded = [details("Hint" if len(ex.hints) == 1 else f"Hint {j + 1}", h) for j, h in enumerate(ex.hints)]
            if learner:
                folded.append(details("Solution", f"```python\n{strip_markers(ex.code).strip()}\n```"))
            if folded:
                cells.append(_md("\n\n".join(folded)))
        elif cell.cell_type == "code":
            tags = [t for t in meta.get("tags", []) if t != "module"]
            cells.append(_code(cell.source.rstrip(), **({"tags": tags} if tags else {})))
        else:
            cells.append(_md(cell.source))
    for j, cell in enumerate(cells):
        cell["id"] = f"cell-{j:03d}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    return nb


def render_module(src: NotebookNode, chapter: str, learner: bool) -> str:
    """The stub module (learner) or the reference module: module cells + exercise functions."""
    exercises = find_exercises(src, chapter)
    kind = "Exercise stubs" if learner else "Reference solutions"
    parts = [
        f'"""{kind} for chapter {chapter}.\n\nGenerated from source/{chapter}.py by '
        f'`python -m utils.course build`: edit the source, not this file."""'
    ]
    pending = False
    for cell in src.cells:
        if cell.cell_type == "markdown":
            pending = "exercise" in cell.metadata
            continue
        if pending:
            name = next(n for n, e in exercises.items() if e.code == cell.source)
            parts.append(stub(cell.source, name) if learner else strip_markers(cell.source))
            pending = False
        elif "module" in cell.metadata.get("tags", []):
            parts.append(cell.source)
    return "\n\n\n".join(p.strip() for p in parts) + "\n"

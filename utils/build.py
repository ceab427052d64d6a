"""Build every chapter from its one source: ``python -m utils.build [CHAPTER ...] [--check]``.

A chapter's source is a jupytext percent script, ``source/<chapter>.py``. From it the build
writes four files, which nobody edits by hand:

* ``chapters/<chapter>.ipynb``  the learner notebook: exercise stubs, check cells, hints;
* ``exercises/<chapter>.py``    the same stubs as an importable module;
* ``solutions/<chapter>.py``    the reference module;
* ``solutions/<chapter>.ipynb`` the solution notebook, executed (skip with ``--no-execute``).

``--check`` rebuilds in memory and fails if any committed file differs (outputs of the
executed notebook are not compared, only its cells' sources).

Source conventions
------------------
``# %% [markdown] exercise="NAME" title="Verb-first title" difficulty=2 importance=4 minutes=10``
    describes exercise NAME; the build puts the standard header above it. An optional
    ``skip="..."`` says when skipping it is fine.
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
    ``try: ... except RuntimeError as error: print(f"skipped ({error})")``, so that offline it
    prints one line and moves on. ``tests/test_scaleups.py`` finds every such cell in every
    solution notebook and runs it, with the earlier cells it needs, against a simulated hub.
Every other cell appears in both notebooks only.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source"
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


def chapters() -> list[str]:
    return sorted(p.stem for p in SOURCE.glob("ch*.py"))


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
    hints: list[str] = field(default_factory=list)
    code: str = ""


def read_source(chapter: str) -> NotebookNode:
    return jupytext.read(SOURCE / f"{chapter}.py", fmt="py:percent")


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
            code = cells[i + 1] if i + 1 < len(cells) else None
            if code is None or code.cell_type != "code" or f"def {name}(" not in code.source:
                raise ValueError(f"{chapter}: the cell after exercise {name!r} must define `def {name}(`")
            if BEGIN not in code.source:
                raise ValueError(f"{chapter}: exercise {name!r} has no `{BEGIN}` block")
            exercises[name] = Exercise(
                name, meta["title"], meta["difficulty"], meta["importance"], meta["minutes"],
                meta.get("skip"), code=code.source,
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
    raise RuntimeError("This copy of the course has no public repository yet: {SETTING} in pyproject.toml still holds the placeholder {url}; set it and rebuild with python -m utils.build.")'''
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


def badge(chapter: str) -> str:
    owner_repo = repository_url().removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/main/chapters/{chapter}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def _md(source: str, **meta: object) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(source, metadata=dict(meta))


def _code(source: str, **meta: object) -> NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata=dict(meta))


def render_notebook(chapter: str, learner: bool) -> NotebookNode:
    """The learner notebook (stubs) or the solution notebook (reference), unexecuted."""
    src = read_source(chapter)
    exercises = find_exercises(src, chapter)
    order = list(exercises)
    cells: list[NotebookNode] = []
    pending: Exercise | None = None  # exercise whose code cell comes next
    for i, cell in enumerate(src.cells):
        meta = cell.metadata
        if i == 0:
            if cell.cell_type != "markdown":
                raise ValueError(f"{chapter}: the first cell must be the markdown title")
            cells += [_md(cell.source + "\n\n" + badge(chapter)), _code(setup_cell(), tags=["setup"])]
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
            check = (
                f"# Check {ex.name}: one line if it is right, else the likely mistake.\n"
                f"from tests.checks.{chapter} import check_{ex.name}\n\ncheck_{ex.name}({ex.name})"
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


def render_module(chapter: str, learner: bool) -> str:
    """The stub module (learner) or the reference module: module cells + exercise functions."""
    src = read_source(chapter)
    exercises = find_exercises(src, chapter)
    kind = "Exercise stubs" if learner else "Reference solutions"
    parts = [
        f'"""{kind} for chapter {chapter}.\n\nGenerated from source/{chapter}.py by '
        f'`python -m utils.build`: edit the source, not this file."""'
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


README_START, README_END = "<!-- chapters: generated by python -m utils.build -->", "<!-- end of chapters -->"


def chapter_table() -> str:
    """README's chapter table: title, exercises and Colab badge of every chapter."""
    rows = ["| chapter | exercises | open |", "|---|---|---|"]
    for chapter in chapters():
        src = read_source(chapter)
        title = src.cells[0].source.splitlines()[0].lstrip("# ").strip()
        exercises = "; ".join(e.title for e in find_exercises(src, chapter).values())
        rows.append(f"| [{title}](chapters/{chapter}.ipynb) | {exercises} | {badge(chapter)} |")
    return "\n".join(rows)


def render_readme() -> str:
    text = (ROOT / "README.md").read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[:start] + "\n" + chapter_table() + "\n" + text[end:]


# ---------------------------------------------------------------------------------------
# Writing, executing, checking.


def outputs(chapter: str) -> dict[Path, str | NotebookNode]:
    return {
        ROOT / "chapters" / f"{chapter}.ipynb": render_notebook(chapter, learner=True),
        ROOT / "exercises" / f"{chapter}.py": render_module(chapter, learner=True),
        ROOT / "solutions" / f"{chapter}.py": render_module(chapter, learner=False),
        ROOT / "solutions" / f"{chapter}.ipynb": render_notebook(chapter, learner=False),
    }


def _text(content: str | NotebookNode) -> str:
    return content if isinstance(content, str) else nbformat.writes(content) + "\n"


def _sources_only(nb: NotebookNode) -> NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def execute(nb: NotebookNode, path: Path) -> NotebookNode:
    """Run a notebook top to bottom in a fresh kernel whose working folder is ``path``'s."""
    from nbclient import NotebookClient

    os.environ["TQDM_DISABLE"] = "1"  # progress bars are widgets with random ids: keep them out
    os.environ["SAE_CIRCUITS_STRICT"] = "1"  # a reference that fails its check stops the build
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    metadata = copy.deepcopy(nb.metadata)
    client.execute()
    nb.metadata = metadata  # the kernel adds its own language_info; keep ours, deterministic
    return nb


def build(chapter: str, run: bool = True) -> None:
    for path, content in outputs(chapter).items():
        if path.suffix == ".ipynb" and path.parent.name == "solutions" and run:
            started = time.perf_counter()
            content = execute(content, path)
            print(f"executed {path.relative_to(ROOT)} in {time.perf_counter() - started:.1f} s")
        elif path.suffix == ".ipynb" and path.exists() and path.parent.name == "solutions":
            old = nbformat.read(path, as_version=4)
            if _text(_sources_only(old)) == _text(content):
                continue  # keep the executed outputs of an unchanged notebook
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_text(content))
        print(f"wrote {path.relative_to(ROOT)}")


def out_of_sync(chapter: str, include_exercises: bool = True) -> list[str]:
    """Generated files of ``chapter`` that differ from what the build would write now."""
    stale = []
    for path, content in outputs(chapter).items():
        if not include_exercises and path.parent.name == "exercises":
            continue
        if not path.exists():
            stale.append(f"{path.relative_to(ROOT)} (missing)")
            continue
        if path.suffix == ".ipynb":
            current = _text(_sources_only(nbformat.read(path, as_version=4)))
            wanted = _text(_sources_only(content))
        else:
            current, wanted = path.read_text(), _text(content)
        if current != wanted:
            stale.append(str(path.relative_to(ROOT)))
    return stale


def readme_in_sync() -> bool:
    return (ROOT / "README.md").read_text() == render_readme()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.build", description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    parser.add_argument("--check", action="store_true", help="fail if generated files are out of sync")
    parser.add_argument("--no-execute", action="store_true", help="do not execute the solution notebooks")
    args = parser.parse_args(argv)
    names = args.chapters or chapters()
    unknown = sorted(set(names) - set(chapters()))
    if unknown:
        parser.error(f"unknown chapter(s) {unknown}; expected some of {chapters()}")
    if args.check:
        stale = [s for c in names for s in out_of_sync(c)] + ([] if readme_in_sync() else ["README.md (chapter table)"])
        for s in stale:
            print(f"out of sync: {s}")
        if stale:
            print("run `python -m utils.build` and commit what it writes")
        return 1 if stale else 0
    for chapter in names:
        build(chapter, run=not args.no_execute)
    (ROOT / "README.md").write_text(render_readme())
    return 0


if __name__ == "__main__":
    sys.exit(main())

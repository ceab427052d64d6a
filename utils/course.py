"""Run every chapter headless: ``python -m utils.course [CHAPTER ...]`` (``bash course.sh --headless``).

Each learner notebook in ``chapters/`` is executed top to bottom offline, errors allowed (a
failing check stops nothing), and written as HTML beside it. The notebooks themselves are not
modified. A summary lists, per chapter, the exercises whose checks passed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from utils.build import ROOT, chapters


def run_chapter(path: Path) -> tuple[dict[str, bool], int, float]:
    """Execute ``path``; return exercise -> check passed, other failed cells, seconds."""
    nb = nbformat.read(path, as_version=4)
    # Figures as HTML too (plotly.js inlined once), so the HTML export shows them offline.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    os.environ["SAE_CIRCUITS_STRICT"] = "1"  # a failed check is an error cell: counted below
    started = time.perf_counter()
    NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    seconds = time.perf_counter() - started
    html, _ = HTMLExporter().from_notebook_node(nb)
    path.with_suffix(".html").write_text(html)
    failed = lambda c: any(o.get("output_type") == "error" for o in c.get("outputs", []))  # noqa: E731
    code = [c for c in nb.cells if c.cell_type == "code"]
    checks = {c.metadata["check"]: not failed(c) for c in code if "check" in c.metadata}
    others = sum(failed(c) for c in code if "check" not in c.metadata)
    return checks, others, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.course", description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    names = parser.parse_args(argv).chapters or chapters()
    total = 0.0
    for name in names:
        path = ROOT / "chapters" / f"{name}.ipynb"
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        checks, others, seconds = run_chapter(path)
        total += seconds
        done = [e for e, ok in checks.items() if ok]
        print(
            f"  {seconds:.0f} s; exercises passed {len(done)}/{len(checks)}"
            + (f" ({', '.join(done)})" if done else "")
            + (f"; {others} other cell(s) raised an error" if others else "")
            + f"\n  wrote {path.with_suffix('.html').relative_to(ROOT)}"
        )
    print(f"all chapters ran in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every chapter headless: ``python -m utils.course headless [CHAPTER ...]`` (``bash course.sh --headless``).

Each learner notebook in ``chapters/`` is executed top to bottom offline, errors allowed (a
failing check stops nothing), and written as HTML beside it. The notebooks themselves are not
modified. A summary lists, per chapter, the exercises whose checks passed.

The HTML loads nothing from the network: formulas are converted to MathML (which browsers
draw natively) instead of loading MathJax from a CDN; figures are drawn by plotly.js inlined
once; widgets, which need a kernel, show their static summary; remote images (the Colab badge)
become their alt text; large views sit in ``chapters/_views/`` beside the page.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import time
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from latex2mathml.converter import convert as tex_to_mathml
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from traitlets.config import Config

from utils.course import ROOT, settings
from utils.course.chapter import Chapter

# The lab template without the scripts it would fetch from CDNs (require.js, MathJax and the
# widget manager): nothing in our pages needs them once math is MathML.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
# Widgets last: without a kernel the static summary beside a widget is what can be shown.
OUTPUT_PRIORITY = ["application/javascript", "text/html", "text/markdown", "image/svg+xml",
                   "text/latex", "image/png", "image/jpeg", "text/plain",
                   "application/vnd.jupyter.widget-view+json"]
REMOTE_IMAGE = re.compile(r'<img\b[^>]*\bsrc="https?://[^>]*>')
ALT = re.compile(r'\balt="([^"]*)"')
PLOTLY = "application/vnd.plotly.v1+json"
# Code (fenced or inline) is left alone; math is $$...$$ (display) or $...$ (inline).
CODE_OR_MATH = re.compile(r"(```.*?```|`[^`\n]*`)|\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)


def math_to_mathml(markdown: str, found: dict[str, str]) -> str:
    """``markdown`` with each formula replaced by a placeholder word, recorded in ``found``
    with the MathML it stands for (a placeholder passes through markdown untouched)."""

    def swap(match: re.Match) -> str:
        code, display, inline = match.groups()
        if code is not None:
            return code
        key = f"MATHPLACEHOLDER{len(found)}X{os.getpid()}X"
        found[key] = tex_to_mathml(display or inline, display="block" if display else "inline")
        return key

    return CODE_OR_MATH.sub(swap, markdown)


def figures_as_html(nb: nbformat.NotebookNode) -> None:
    """Give each plotly figure output an HTML form, with plotly.js inlined in the first only."""
    import plotly.io as pio

    first = True
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY in data and "text/html" not in data:
                data["text/html"] = pio.to_html(data[PLOTLY], include_plotlyjs=first, full_html=False)
                first = False


def offline_html(nb: nbformat.NotebookNode) -> str:
    """The notebook as one HTML page that loads nothing from the network."""
    nb = nbformat.from_dict(copy.deepcopy(nb))  # placeholders must not reach the notebook
    mathml: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = math_to_mathml(cell.source, mathml)
    figures_as_html(nb)
    config = Config({"NbConvertBase": {"display_data_priority": OUTPUT_PRIORITY}})
    exporter = HTMLExporter(config=config, template_name="lab", template_file="offline.html.j2",
                            extra_loaders=[DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})])
    html, _ = exporter.from_notebook_node(nb)
    for key, math in mathml.items():
        html = html.replace(key, math)
    # Remote images (the Colab badge) become their alt text.
    return REMOTE_IMAGE.sub(lambda m: (ALT.findall(m.group(0)) or ["(image)"])[0], html)


def run_chapter(path: Path) -> tuple[dict[str, bool], int, float]:
    """Execute ``path``; return exercise -> check passed, other failed cells, seconds."""
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    with settings.strict_checks():  # a failed check is an error cell: counted below
        # Widget state is kept (nbclient's default): its stand-in for an Output widget records the
        # widget's outputs into that state, and without it a cell that clears an Output widget
        # (chapter 00's explorer) raises KeyError inside nbclient and stops the run.
        NotebookClient(
            nb, timeout=600, kernel_name="python3", allow_errors=True, store_widget_state=True,
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    seconds = time.perf_counter() - started
    path.with_suffix(".html").write_text(offline_html(nb), encoding="utf-8")
    failed = lambda c: any(o.get("output_type") == "error" for o in c.get("outputs", []))  # noqa: E731
    code = [c for c in nb.cells if c.cell_type == "code"]
    checks = {c.metadata["check"]: not failed(c) for c in code if "check" in c.metadata}
    others = sum(failed(c) for c in code if "check" not in c.metadata)
    return checks, others, seconds


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")


def run(args: argparse.Namespace) -> int:
    """Run the chapters; exit status 1 when a cell other than a check raised (a check that
    fails on an unfinished exercise is expected, and counted instead)."""
    chapters = [Chapter.get(name) for name in args.chapters] or Chapter.every()
    total, broken = 0.0, 0
    for ch in chapters:
        path = ch.notebook_path
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        checks, others, seconds = run_chapter(path)
        total, broken = total + seconds, broken + others
        done = [e for e, ok in checks.items() if ok]
        print(
            f"  {seconds:.0f} s; exercises passed {len(done)}/{len(checks)}"
            + (f" ({', '.join(done)})" if done else "")
            + (f"; {others} other cell(s) raised an error" if others else "")
            + f"\n  wrote {path.with_suffix('.html').relative_to(ROOT)}"
        )
    print(f"all chapters ran in {total:.0f} s" + (f"; {broken} cell(s) other than checks raised an error" if broken else ""))
    return 1 if broken else 0

"""What the browser test drives: a JupyterLab server on 127.0.0.1 and headless Chromium.

:func:`lab_server` serves a folder of notebooks (a free port, token auth, every cell kept in
the page); :class:`Session` is one Chromium page on it that opens a notebook, runs it as a
learner would, and records console errors, failed responses and every request that would
leave the machine (answered empty, as offline). :func:`inspect_figures` reads every plotly
figure of the open notebook from the DOM (text boxes, label overlaps, legends, log-axis
ticks, style, width) and keeps a screenshot of each; :func:`click_graph_node` clicks a
node of the course's graph view as a learner would.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from utils.course.settings import STRICT

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"  # git-ignored: screenshots of the last run
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 950}
# JupyterLab settings: every cell kept in the page (no virtual scrolling), no news prompt.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}
RUN_TIMEOUT_MS = 600_000  # per notebook: the slowest runs in about a minute on an idle 2-core machine


def chapters() -> list[str]:
    """Every learner notebook's name, ``chNN_*``: new chapters are covered without a change here."""
    return sorted(p.stem for p in (ROOT / "chapters").glob("ch[0-9]*.ipynb"))


def folder(name: str) -> Path:
    """A fresh temporary folder of our own (pytest's basetemp keeps only its last 3 runs)."""
    return Path(tempfile.mkdtemp(prefix=f"sae-browser-{name}-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def lab_server(root: Path, learner: bool = True) -> Iterator[SimpleNamespace]:
    """JupyterLab serving ``root`` on 127.0.0.1; yields its ``base`` URL, ``token`` and ``root``.
    ``learner``: as a learner's (checks print, progress bars show); else as the test suite's
    (strict checks, no progress bars)."""
    settings = folder("lab-settings")
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"))
    env.pop("VSCODE_PID", None)
    if learner:
        env.pop(STRICT, None)  # a learner's JupyterLab: a failed check prints its diagnosis, Run All goes on
        env.pop("TQDM_DISABLE", None)  # and shows progress bars (the test suite turns them off)
    else:
        env["TQDM_DISABLE"] = "1"
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: see {root / 'server.log'}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"jupyter lab did not answer in 60 s: see {root / 'server.log'}")
        yield SimpleNamespace(base=base, token=token, root=root)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(settings, ignore_errors=True)


class Session:
    """One Chromium page on the server, recording console errors, failed responses and
    requests to anywhere but the server."""

    viewport = VIEWPORT
    ready = ".jp-Notebook .jp-Cell"  # the selector that says an opened notebook is drawn

    def __init__(self, context: Any, lab: SimpleNamespace, shots: Path):
        self.lab, self.shots, self.errors, self.outside = lab, shots, [], []
        context.route(lambda url: not url.startswith(lab.base), self._offline)
        self.page = context.new_page()
        self.page.set_viewport_size(self.viewport)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))

    def _offline(self, route: Any) -> None:
        """The machine is offline: record the request and answer it with nothing."""
        self.outside.append(route.request.url)
        route.fulfill(status=200, content_type="image/svg+xml",
                      body='<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')

    def open(self, notebook: str) -> None:
        """Open ``notebook`` alone (``reset``: no other tab), its kernel idle; stop earlier kernels."""
        if self.page.url.startswith(self.lab.base):
            self.page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
        self.page.goto(f"{self.lab.base}/lab/tree/{notebook}?reset&token={self.lab.token}")
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k && k.status === 'idle'; }", timeout=90_000)
        self.page.wait_for_selector(self.ready)

    def run_all(self) -> float:
        """Run All, as a learner would; returns the seconds until the last cell finished."""
        started = time.perf_counter()
        # Done when the command has returned and the kernel has stayed idle for 3 s (between
        # two cells it is idle only for an instant).
        self.page.evaluate(
            "() => { const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
            " window.ranAll = false; window.lastBusy = Date.now();"
            " kernel.statusChanged.connect((_, status) => { if (status !== 'idle') window.lastBusy = Date.now(); });"
            " window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => { window.ranAll = true; }); }")
        try:
            self.page.wait_for_function(
                "() => window.ranAll && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                ".status === 'idle' && Date.now() - window.lastBusy > 3000", timeout=RUN_TIMEOUT_MS, polling=500)
        except PlaywrightTimeout:
            self.page.screenshot(path=str(self.shots / "run_all_timeout.png"))
            state = self.page.evaluate(
                "() => [window.ranAll, window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status,"
                " Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(p => p.textContent)]")
            raise AssertionError(f"Run All did not finish in {RUN_TIMEOUT_MS // 1000} s: (done, kernel, "
                                 f"prompts) = {state}; see {self.shots / 'run_all_timeout.png'}") from None
        return time.perf_counter() - started

    def raised(self) -> list[dict]:
        """Code cells of the open notebook whose output is an error: ``cell`` (index),
        ``check`` (the exercise a check cell checks, else null), ``error`` (name: value)."""
        return self.page.evaluate(
            "() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells, found = [];"
            " for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;"
            "  for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();"
            "   if (o.output_type === 'error') found.push({cell: i, check: c.getMetadata('check') || null,"
            "                                              error: `${o.ename}: ${o.evalue}`}); } }"
            " return found; }")

    def executed(self) -> tuple[int, int]:
        """(code cells run, code cells) of the open notebook."""
        return self.page.evaluate(
            "() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells; let run = 0, all = 0;"
            " for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;"
            "  all++; if (c.executionCount) run++; } return [run, all]; }")

    def cell(self, needle: str) -> Any:
        """The code cell whose source contains ``needle``."""
        cell = self.page.locator(".jp-CodeCell").filter(has=self.page.locator(".jp-InputArea", has_text=needle))
        assert cell.count() == 1, f"{cell.count()} cells contain {needle!r}"
        cell.scroll_into_view_if_needed()
        return cell

    def shot(self, locator: Any, name: str) -> Path:
        locator.scroll_into_view_if_needed()
        path = self.shots / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(path))
        return path

    def progress_bars(self) -> list[dict]:
        """Progress bars left in the open notebook's outputs (tqdm's widget: label, bar,
        counts): their text, height and whether the bar is red (``danger``: closed unfinished)."""
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-OutputArea .widget-hbox'))"
            ".filter(b => b.querySelector('.widget-hprogress, .widget-progress'))"
            ".map(b => ({text: b.innerText.replace(/\\s+/g, ' ').trim(), height: b.getBoundingClientRect().height,"
            " danger: !!b.querySelector('[class*=danger]')}))")

    def wide_outputs(self) -> list[str]:
        """Outputs of the open notebook wider than the notebook's column (a horizontal scroll)."""
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
            ".filter(o => o.scrollWidth > o.clientWidth + 1)"
            ".map(o => `${o.scrollWidth} px in ${o.clientWidth} px: ${o.innerText.slice(0, 60)}`)")


# ---------------------------------------------------------------------------------------
# Figures, read from the DOM.

# Run on one `.js-plotly-plot` element: what a reader would see wrong with it.
FIGURE_JS = r"""
(gd) => {
  const box = gd.querySelector('.svg-container').getBoundingClientRect();
  const shown = el => {
    for (let e = el; e && e !== gd; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0) return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const rect = el => { const r = el.getBoundingClientRect();
    return {left: r.left - box.left, right: r.right - box.left, top: r.top - box.top, bottom: r.bottom - box.top}; };
  const texts = Array.from(gd.querySelectorAll('svg text'))
    .filter(t => !t.closest('.hoverlayer') && t.textContent.trim() && shown(t));
  const outside = texts.filter(t => { const r = rect(t);
      return r.left < -1 || r.top < -1 || r.right > box.width + 1 || r.bottom > box.height + 1; })
    .map(t => ({text: t.textContent, box: rect(t)}));
  const labels = Array.from(gd.querySelectorAll('.scatterlayer .textpoint text')).filter(shown)
    .map(t => ({text: t.textContent, box: rect(t)}));
  const overlaps = [];
  for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
    const a = labels[i].box, b = labels[j].box;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) overlaps.push([labels[i].text, labels[j].text]);
  }
  const legend = gd.querySelector('.legend');
  const bar = legend && legend.querySelector('.scrollbar');
  const fl = gd._fullLayout;
  const logTicks = [];
  for (const key of Object.keys(fl)) {
    if (!/^[xy]axis\d*$/.test(key) || fl[key].type !== 'log') continue;
    const id = fl[key]._id;
    logTicks.push({axis: id, ticks: Array.from(gd.querySelectorAll(`.${id}tick text`)).filter(shown).map(t => t.textContent)});
  }
  const output = gd.closest('.jp-OutputArea-output') || gd.parentElement;
  const title = gd.querySelector('.gtitle');
  const axisTitle = c => { const t = gd.querySelector(c); return t ? t.textContent : ''; };
  return {
    title: title ? title.textContent : '',
    x_title: axisTitle('.g-xtitle'), y_title: axisTitle('.g-ytitle'),
    marks: gd.querySelectorAll('.barlayer .point, .scatterlayer .point, .scatterlayer .js-line, .heatmaplayer .hm, .boxlayer .box').length,
    width: box.width, height: box.height, column: output.clientWidth,
    outside: outside, label_count: labels.length, overlaps: overlaps,
    legend_scrolls: !!(bar && bar.getBoundingClientRect().height > 0),
    legend_entries: legend ? legend.querySelectorAll('.traces').length : 0,
    log_ticks: logTicks,
    background: fl.plot_bgcolor, font: fl.font.family,
    meta: fl.meta || null,
  };
}
"""


def number(text: str) -> float | None:
    """A tick label as a number (plotly's SI suffixes and unicode minus read), or None."""
    text = text.strip().replace("\u2212", "-").replace(",", "")
    scale = {"k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3, "\u00b5": 1e-6, "\u03bc": 1e-6, "n": 1e-9}
    factor = 1.0
    if text and text[-1] in scale:
        text, factor = text[:-1], scale[text[-1]]
    try:
        return float(text) * factor
    except ValueError:
        return None


def log_tick_problems(figure: dict) -> list[str]:
    """Log axes whose tick labels are not full numbers in increasing order ("2 3 ... 9 100 2 3")."""
    problems = []
    for axis in figure["log_ticks"]:
        values = [number(t) for t in axis["ticks"]]
        if None in values or any(b <= a for a, b in zip(values, values[1:])):
            problems.append(f"{axis['axis']}: {axis['ticks']}")
    return problems


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "untitled"


def inspect_figures(s: Session, prefix: str) -> list[dict]:
    """Every plotly figure of the open notebook, read from the DOM, with a screenshot each."""
    figures = []
    plots = s.page.locator(".jp-OutputArea .js-plotly-plot")
    for i in range(plots.count()):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        marks = plot.locator(".barlayer .point, .scatterlayer .point, .scatterlayer .js-line, .heatmaplayer .hm")
        try:
            marks.first.wait_for(timeout=15_000)  # plotly draws after the output is attached
        except PlaywrightTimeout:
            pass  # counted as no marks below
        record = plot.evaluate(FIGURE_JS)
        record["shot"] = s.shot(plot, f"{prefix}/{i:02d}-{slug(record['title'])}")
        figures.append(record)
    return figures


# ---------------------------------------------------------------------------------------
# The course's graph view (utils.graphs.view), used as a learner would.


NODE_JS = r"""
(gd) => {
  // The graph view names its node trace "nodes"; pick the node with the longest detail text.
  const fl = gd._fullLayout, t = gd._fullData.findIndex(d => d.name === 'nodes' && d.visible === true);
  const trace = gd._fullData[t];
  const notes = fl.annotations.map((a, k) => [a, k]).filter(([a]) => a.clicktoshow);
  let best = null;
  for (const [a] of notes) {
    const ax = a.xclick !== undefined ? a.xclick : a.x, ay = a.yclick !== undefined ? a.yclick : a.y;
    const j = trace.x.findIndex((x, j) => Math.abs(x - ax) < 1e-6 && Math.abs(trace.y[j] - ay) < 1e-6);
    if (j >= 0 && (!best || a.text.length > best.text.length)) best = {j, text: a.text};
  }
  if (!best) return null;
  const box = gd.querySelector('.svg-container').getBoundingClientRect();
  return {x: box.left + fl._size.l + fl.xaxis.l2p(trace.x[best.j]),
          y: box.top + fl._size.t + fl.yaxis.l2p(trace.y[best.j]), text: best.text,
          shown: notes.filter(([a]) => a.visible).length};
}
"""
SHOWN_NOTES_JS = r"""
(gd) => {
  const box = gd.querySelector('.svg-container').getBoundingClientRect();
  return Array.from(gd.querySelectorAll('.annotation')).map(a => { const r = a.getBoundingClientRect();
    return {text: a.textContent, inside: r.left >= box.left - 1 && r.right <= box.right + 1
            && r.top >= box.top - 1 && r.bottom <= box.bottom + 1}; });
}
"""


def click_graph_node(s: Session, plot: Any, name: str) -> dict:
    """Click the node with the most to say; return the notes shown before and after, and a screenshot."""
    plot.scroll_into_view_if_needed()
    before = plot.evaluate(SHOWN_NOTES_JS)
    node = plot.evaluate(NODE_JS)
    assert node is not None, "no node of the graph view has a note to show on click"
    s.page.mouse.move(node["x"], node["y"])
    time.sleep(0.3)
    s.page.mouse.click(node["x"], node["y"])
    time.sleep(0.5)
    after = plot.evaluate(SHOWN_NOTES_JS)
    return {"before": before, "after": after, "expected": node["text"], "shot": s.shot(plot, name)}

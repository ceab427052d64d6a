"""Browser smoke test: what a learner sees when running the solution notebooks in JupyterLab.

A JupyterLab server on 127.0.0.1 (a free port, token auth) serves a temporary copy of the
solution notebooks of chapters 00 and 01; headless Chromium (Debian's ``chromium`` package,
driven by Playwright) opens each one, first as saved (the static fallbacks must be
readable), then runs all its cells and checks the views: no console errors, a drawn plot in
the dashboard's iframe, the log-prob view and the explorer rendered, a click on a latent
changing the explorer's text, titled axes on every figure. Screenshots go to a temporary
folder whose path is printed. Requests to anything but the server are answered empty, as
offline. Without Chromium the test skips, except in CI (``CI`` set), where it fails.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = ["ch00_toolkit.ipynb", "ch01_attribution.ipynb"]
# JupyterLab settings: every cell kept in the page (no virtual scrolling), no news prompt.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}
RUN_TIMEOUT_MS = 600_000  # per notebook: each runs in about a minute on an idle 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder(name: str) -> Path:
    """A fresh temporary folder of our own (pytest's basetemp keeps only its last 3 runs)."""
    return Path(tempfile.mkdtemp(prefix=f"sae-browser-{name}-"))


@pytest.fixture(scope="module")
def lab():
    """A JupyterLab server over a copy of the solution notebooks; yields its URL and token."""
    if not Path(CHROMIUM).exists():
        message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run installs it")
        pytest.skip(message)
    root = folder("notebooks")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "solutions" / name, root / name)
    settings = folder("lab-settings")
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"))
    env.pop("VSCODE_PID", None)
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
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(settings, ignore_errors=True)


class Session:
    """One Chromium page on the server, recording console errors and failed responses."""

    def __init__(self, context, lab, shots: Path):
        self.lab, self.shots, self.errors, self.outside = lab, shots, [], []
        context.route(lambda url: not url.startswith(lab.base), self._offline)
        self.page = context.new_page()
        self.page.set_viewport_size({"width": 1400, "height": 1000})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))

    def _offline(self, route) -> None:
        """The machine is offline: answer requests to elsewhere (the Colab badge) with nothing."""
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
        self.page.wait_for_selector(".jp-Notebook .jp-Cell .jp-OutputArea-output")

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

    def raised(self) -> list[str]:
        """Code cells of the open notebook whose output is an error (Run All stops there)."""
        return self.page.evaluate(
            "() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells, found = [];"
            " for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;"
            "  for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();"
            "   if (o.output_type === 'error') found.push(`cell ${i}: ${o.ename}: ${o.evalue}`); } }"
            " return found; }")

    def cell(self, needle: str):
        """The code cell whose source contains ``needle``."""
        cell = self.page.locator(".jp-CodeCell").filter(has=self.page.locator(".jp-InputArea", has_text=needle))
        assert cell.count() == 1, f"{cell.count()} cells contain {needle!r}"
        cell.scroll_into_view_if_needed()
        return cell

    def shot(self, locator, name: str) -> Path:
        locator.scroll_into_view_if_needed()
        path = self.shots / f"{name}.png"
        locator.screenshot(path=str(path))
        return path


@pytest.fixture(scope="module")
def seen(lab, request):
    """Open, screenshot, run and inspect both notebooks once; the tests below read the record."""
    from playwright.sync_api import sync_playwright

    shots = folder("screenshots")
    record: dict = {"shots": {}}
    started = time.perf_counter()
    with sync_playwright() as p:
        profile = folder("chromium-profile")  # a fresh user-data-dir
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=FLAGS,
                                                       headless=True)
        try:
            s = Session(context, lab, shots)
            s.open("ch00_toolkit.ipynb")  # as committed, not run: the static fallbacks
            for key, needle in [("static_dashboard", "latent_dashboard(model"),
                                ("static_explorer", "explorer = latent_explorer"),
                                ("static_logprobs", "token_logprob_view(model")]:
                record[key] = s.cell(needle).locator(".jp-OutputArea").inner_text()
                record["shots"][key] = s.shot(s.cell(needle), key)
            record["ch00_seconds"] = s.run_all()
            record["raised"] = s.raised()
            record.update(inspect_ch00(s, record["shots"]))
            s.open("ch01_attribution.ipynb")
            record["ch01_seconds"] = s.run_all()
            record["raised"] += s.raised()
            record["figures"] = inspect_figures(s, record["shots"])
            record["errors"], record["outside"] = s.errors, s.outside
            # The export in a browser of its own: opened in the context that ran JupyterLab,
            # the file:// page came up as an empty 1x1 SVG document.
            record["export"] = inspect_export(p, lab, record["shots"])
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    record["seconds"] = time.perf_counter() - started
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")  # shown even when captured
    terminal.write_line(f"\nbrowser test: {record['seconds']:.0f} s (Run All: ch00 {record['ch00_seconds']:.0f} s, "
                        f"ch01 {record['ch01_seconds']:.0f} s); screenshots:")
    for path in record["shots"].values():
        terminal.write_line(f"  {path}")
    return record


def inspect_ch00(s: Session, shots: dict) -> dict:
    out: dict = {}
    logprobs = s.cell("token_logprob_view(model").locator(".sae-logprobs")
    logprobs.locator("span[title]").nth(3).hover()
    shots["logprobs"] = s.shot(s.cell("token_logprob_view(model"), "logprobs")
    out["logprob_tokens"] = logprobs.locator("span[title]").all_inner_texts()
    out["logprob_text"] = logprobs.inner_text()

    contexts = s.cell("show_contexts(model").locator("table")
    out["context_shades"] = contexts.locator("span[title]").evaluate_all(
        "spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    shots["contexts"] = s.shot(s.cell("show_contexts(model"), "contexts")

    dashboard = s.cell("latent_dashboard(model")
    frame = dashboard.locator("iframe").element_handle().content_frame()
    frame.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    out["dashboard_plots"] = frame.locator(".js-plotly-plot").count()
    out["dashboard_bars"] = frame.locator(".js-plotly-plot .bars path").count()
    out["dashboard_summary_visible"] = dashboard.locator(".sae-view-summary").is_visible()
    out["dashboard_text"] = frame.locator("body").inner_text()
    time.sleep(0.5)
    shots["dashboard"] = s.shot(dashboard, "dashboard")

    explorer = s.cell("explorer = latent_explorer")
    buttons = explorer.locator(".widget-button")
    out["explorer_buttons"] = buttons.count()
    out["explorer_cut_labels"] = buttons.evaluate_all(
        "bs => bs.filter(b => b.scrollWidth > b.clientWidth + 1).map(b => b.textContent)")
    detail = explorer.locator(".widget-output").last
    out["explorer_before"] = detail.inner_text()
    shots["explorer_before"] = s.shot(explorer, "explorer_before")
    current = out["explorer_before"].split("latent #")[1].split()[0] if "latent #" in out["explorer_before"] else None
    target = next(b for b in buttons.all() if b.inner_text().split()[0] != f"#{current}")
    out["explorer_clicked"] = target.inner_text().split()[0]
    target.click()
    s.page.wait_for_function("([el, before]) => el.innerText !== before",
                             arg=[detail.element_handle(), out["explorer_before"]], timeout=30_000)
    out["explorer_after"] = detail.inner_text()
    shots["explorer_after"] = s.shot(explorer, "explorer_after")
    return out


def inspect_figures(s: Session, shots: dict) -> list[dict]:
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
        figures.append({
            "title": plot.locator(".gtitle").first.text_content() if plot.locator(".gtitle").count() else "",
            "x_title": plot.locator(".g-xtitle").first.text_content() if plot.locator(".g-xtitle").count() else "",
            "y_title": plot.locator(".g-ytitle").first.text_content() if plot.locator(".g-ytitle").count() else "",
            "marks": marks.count(),
        })
        shots[f"ch01_figure{i}"] = s.shot(plot, f"ch01_figure{i}")
    return figures


def inspect_export(playwright, lab, shots: dict) -> dict:
    """The committed ch00 solution notebook exported as ``course.sh --headless`` does, opened
    over file:// beside the ``_views/`` that the run above wrote."""
    import nbformat

    from utils.course.headless import offline_html

    path = lab.root / "ch00_toolkit.html"
    path.write_text(offline_html(nbformat.read(ROOT / "solutions" / "ch00_toolkit.ipynb", as_version=4)))
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    page, out = browser.new_page(), {"requests": [], "errors": []}
    page.on("request", lambda r: r.url.startswith("file://") or r.url.startswith("data:")
            or out["requests"].append(r.url))
    page.on("console", lambda m: m.type == "error" and out["errors"].append(m.text))
    page.on("pageerror", lambda e: out["errors"].append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(path.as_uri(), timeout=120_000)  # about 6 MB: plotly.js is inlined
    formula = page.locator(".jp-MarkdownOutput:has(math)").nth(1)  # reconstruction metrics
    formula.wait_for(timeout=60_000)
    out["math"] = page.locator(".jp-MarkdownOutput math").count()
    out["raw_tex"] = [t for t in page.locator(".jp-MarkdownOutput").all_inner_texts() if "$" in t]
    folder = shots["logprobs"].parent
    shots["export_math"] = folder / "export_math.png"
    formula.screenshot(path=str(shots["export_math"]))
    frame = page.locator("iframe").first
    frame.scroll_into_view_if_needed()
    frame.element_handle().content_frame().wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    out["figures"] = page.locator(".jp-OutputArea .js-plotly-plot .main-svg").count()
    shots["export_dashboard"] = folder / "export_dashboard.png"
    frame.screenshot(path=str(shots["export_dashboard"]))
    browser.close()
    return out


# ---------------------------------------------------------------------------------------


def test_all_cells_run(seen):
    assert seen["raised"] == [], "\n".join(seen["raised"])


def test_no_console_errors(seen):
    assert seen["errors"] == [], "\n".join(seen["errors"])


def test_saved_notebook_shows_static_fallbacks(seen):
    assert "VBox(" not in seen["static_explorer"] and "Run the cell to explore it." in seen["static_explorer"]
    assert "active latents at" in seen["static_explorer"]
    assert "sae-vis dashboard of" in seen["static_dashboard"] and "Run the cell" in seen["static_dashboard"]
    assert "log-prob of each token" in seen["static_logprobs"]


def test_dashboard_iframe_draws_its_plots(seen):
    assert seen["dashboard_plots"] >= 2 and seen["dashboard_bars"] > 5
    assert not seen["dashboard_summary_visible"]  # hidden once the frame loaded


def test_logprob_view_renders_words_apart(seen):
    tokens = seen["logprob_tokens"]  # each token's own span, shaded; the spaces sit between them
    assert len(tokens) > 5 and " ".join(tokens) in seen["logprob_text"]


def test_contexts_shade_more_than_the_centre_token(seen):
    shaded = [c for c in seen["context_shades"] if c not in ("rgba(255, 110, 0, 0)", "rgba(0, 0, 0, 0)")]
    assert len(shaded) > len(seen["context_shades"]) // 8  # context tokens too, not one per row


def test_explorer_renders_and_a_click_changes_it(seen):
    assert seen["explorer_buttons"] > 10 and seen["explorer_cut_labels"] == []
    assert f"latent {seen['explorer_clicked']}" in seen["explorer_after"]
    assert seen["explorer_after"] != seen["explorer_before"]


def test_every_figure_has_titled_axes(seen):
    assert len(seen["figures"]) >= 5
    for figure in seen["figures"]:
        assert figure["title"] and figure["marks"] > 0, figure
        if "edges" not in figure["title"]:  # the graph's axes are its columns
            assert figure["x_title"] and figure["y_title"], figure


def test_exported_html_loads_nothing_from_the_network(seen):
    export = seen["export"]
    assert export["requests"] == [] and export["errors"] == [], export
    assert export["math"] >= 10 and export["raw_tex"] == []  # formulas drawn as MathML, no "$...$" left
    assert export["figures"] >= 1  # the AUROC histogram, plotly.js inlined once

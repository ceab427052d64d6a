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

import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests import browser
from tests.browser import CHROMIUM, FLAGS, folder, lab_server

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["ch00_toolkit.ipynb", "ch01_attribution.ipynb"]


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
    try:
        with lab_server(root, learner=False) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Session(browser.Session):
    """The solution notebooks' page: a taller window, opened once outputs are drawn, errors
    as text lines."""

    viewport = {"width": 1400, "height": 1000}
    ready = ".jp-Notebook .jp-Cell .jp-OutputArea-output"

    def raised(self) -> list[str]:  # type: ignore[override]  # text lines, not the dicts of the base
        return [f"cell {r['cell']}: {r['error']}" for r in super().raised()]


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

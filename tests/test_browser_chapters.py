"""What a learner sees in every chapter: Run All on each learner notebook in JupyterLab, then
every figure read from the DOM (issue 24).

A JupyterLab server on 127.0.0.1 serves a temporary copy of ``chapters/``; headless Chromium
(Debian's ``chromium``, driven by Playwright; machinery in ``tests/browser.py``) at
1400×950 opens each learner notebook ``chNN_*.ipynb`` (found by glob: a new chapter is
covered without a change here), runs all its cells as a learner would (the exercise stubs
raise, the checks print "not implemented yet" and later cells fall back to the reference),
and checks, for every plotly figure, that

* no text element's box leaves the figure (titles, tick labels, legends, annotations),
* node labels (text drawn at points) do not overlap,
* the legend does not scroll,
* log axes label their ticks in full ("10 100 1,000", not "2 3 … 9 100 2 3"),
* the figure fits the notebook's column and uses the course's white style;

and for the notebook, that no cell raised, no output (an iframe's page included) scrolls
sideways, and no request left 127.0.0.1. The course's graph views (``meta.view ==
"sae-graph"``) are used too: the edge slider moved to its last step leaves fewer edges.
A screenshot of every figure is kept under ``$SAE_BROWSER_ARTIFACTS`` (default
``tests/artifacts/browser/``, git-ignored), one folder per chapter.

Cost: Run All is the chapter's own run time (about a minute each on an idle 2-core
machine, several times that on a shared one). ``SAE_BROWSER_CHAPTERS`` picks the chapters
(``all``, or names/prefixes separated by commas, ``ch03,ch05``); by default, and in CI,
every chapter (about 6 minutes for nine). Run-All seconds per chapter are written to
``timings.json`` beside the screenshots.
Without Chromium the test skips, except in CI (``CI`` set), where it fails.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.browser import (
    ARTIFACTS,
    CHROMIUM,
    FLAGS,
    Session,
    chapters,
    click_graph_node,
    folder,
    inspect_figures,
    lab_server,
    log_tick_problems,
)

def chosen() -> list[str]:
    """Every chapter, unless ``SAE_BROWSER_CHAPTERS`` names some (CI runs them all)."""
    wanted = os.environ.get("SAE_BROWSER_CHAPTERS", "all").strip()
    names = chapters()
    if wanted in ("", "all"):
        return names
    prefixes = [w.strip() for w in wanted.split(",") if w.strip()]
    return [n for n in names if any(n.startswith(p) for p in prefixes)]


CHAPTERS = chosen()


@pytest.fixture(scope="module")
def browser():
    """JupyterLab over a copy of ``chapters/`` and one Chromium page on it."""
    if not Path(CHROMIUM).exists():
        message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run installs it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    root = folder("chapters")
    for name in CHAPTERS:
        shutil.copy(ROOT_CHAPTERS / f"{name}.ipynb", root / f"{name}.ipynb")
    artifacts = Path(os.environ.get("SAE_BROWSER_ARTIFACTS", ARTIFACTS))
    artifacts.mkdir(parents=True, exist_ok=True)
    with lab_server(root) as lab, sync_playwright() as p:
        profile = folder("chromium-profile")  # a fresh user-data-dir
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=FLAGS,
                                                       headless=True)
        try:
            yield Session(context, lab, artifacts)
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)


ROOT_CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"

# The page of an iframe (the sae-vis dashboard): what scrolls sideways inside it.
FRAME_JS = r"""
() => Array.from(document.querySelectorAll('body, body *'))
  .filter(e => e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
  .map(e => `${e.tagName.toLowerCase()}.${e.className}: ${e.scrollWidth} px in ${e.clientWidth} px`)
  .concat(document.documentElement.scrollWidth > window.innerWidth + 1
          ? [`page: ${document.documentElement.scrollWidth} px in ${window.innerWidth} px`] : [])
"""

EDGES_JS = r"""
(gd) => gd._fullData.filter(d => d.visible === true && /^edges/.test(d.name || ''))
          .reduce((n, d) => n + d.x.filter(x => x !== null).length / 2, 0)
"""


def slide_to_strongest(s: Session, plot) -> tuple[int, int]:
    """Edges shown before and after a click at the far end of the graph view's slider."""
    plot.scroll_into_view_if_needed()
    before = plot.evaluate(EDGES_JS)
    rail = plot.locator(".slider-container .slider-rail-rect").first
    box = rail.bounding_box()
    assert box is not None, "the graph view has no slider"
    s.page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    time.sleep(0.5)
    return before, plot.evaluate(EDGES_JS)


def run_chapter(s: Session, name: str) -> dict:
    s.outside.clear()
    s.errors.clear()
    s.open(f"{name}.ipynb")
    record: dict = {"seconds": s.run_all(), "raised": s.raised(), "executed": s.executed()}
    record["diagnosed"] = s.page.locator(".jp-OutputArea-output", has_text="not implemented yet").count()
    record["figures"] = inspect_figures(s, name)
    record["wide"] = s.wide_outputs()
    record["bars"] = s.progress_bars()
    for k, frame in enumerate(s.page.locator(".jp-OutputArea iframe").all()):
        frame.scroll_into_view_if_needed()
        page = frame.element_handle().content_frame()
        page.wait_for_load_state()
        time.sleep(1.0)  # plotly inside draws after load
        record["wide"] += [f"iframe {k}: {w}" for w in page.evaluate(FRAME_JS)]
        s.shot(frame, f"{name}/iframe-{k}")
    record["sliders"] = []
    plots = s.page.locator(".jp-OutputArea .js-plotly-plot")
    for i, figure in enumerate(record["figures"]):
        if (figure["meta"] or {}).get("view") == "sae-graph" and figure["meta"].get("edges", 0) > 1:
            record["sliders"].append((figure["title"], *slide_to_strongest(s, plots.nth(i))))
        if (figure["meta"] or {}).get("view") == "sae-graph":
            record.setdefault("clicks", []).append(click_graph_node(s, plots.nth(i), f"{name}/{i:02d}-clicked"))
    record["outside"] = list(s.outside)
    record["errors"] = list(s.errors)
    return record


@pytest.fixture(scope="module")
def seen(browser, request):
    """Every chosen chapter run and inspected once; the tests read the record."""
    record, started = {}, time.perf_counter()
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")  # shown even when captured
    for name in CHAPTERS:
        try:
            record[name] = run_chapter(browser, name)
        except Exception as error:  # one chapter's failure is reported by its tests, not all of them
            record[name] = {"failed": f"{type(error).__name__}: {error}"}
        seconds = record[name].get("seconds")
        terminal.write_line(f"\n{name}: Run All {seconds:.0f} s" if seconds else f"\n{name}: {record[name]['failed']}")
    seconds = time.perf_counter() - started
    terminal.write_line(f"browser test: {seconds:.0f} s for {len(CHAPTERS)} chapters; screenshots in {browser.shots}")
    timings = {name: r.get("seconds") for name, r in record.items()}
    (browser.shots / "timings.json").write_text(json.dumps({"run_all_seconds": timings, "total_seconds": seconds}, indent=1))
    return record


def ran(seen: dict, name: str) -> dict:
    assert "failed" not in seen[name], seen[name].get("failed")
    return seen[name]


def problems(figure: dict) -> list[str]:
    """What a reader would see wrong with one figure."""
    found = [f"text leaves the figure: {o['text'][:40]!r} at {o['box']}" for o in figure["outside"]]
    found += [f"labels overlap: {a!r} and {b!r}" for a, b in figure["overlaps"]]
    found += ["the legend scrolls"] * figure["legend_scrolls"]
    found += [f"log axis ticks not in full: {p}" for p in log_tick_problems(figure)]
    if figure["width"] > figure["column"] + 1:
        found.append(f"{figure['width']:.0f} px wide in a {figure['column']} px column")
    if figure["background"] not in ("white", "#fff", "#ffffff", "rgba(0,0,0,0)"):
        found.append(f"not the course's style: plot background {figure['background']}")
    return found


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_cell_runs(seen, name):
    """Run All reaches the last cell and no cell raises: on the stubs the checks print their
    "not implemented yet" (checks are not strict in a learner's JupyterLab) and later cells
    use the reference."""
    record = ran(seen, name)
    run, cells = record["executed"]
    assert run == cells, f"Run All ran {run} of {cells} code cells"
    assert record["raised"] == [], "\n".join(f"cell {r['cell']}: {r['error']}" for r in record["raised"])
    assert record["diagnosed"], "no check printed 'not implemented yet': are these the learner notebooks?"


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_figure_fits_and_reads(seen, name):
    record = ran(seen, name)
    bad = {f"{i} {f['title'][:60]!r} ({f['shot']})": problems(f) for i, f in enumerate(record["figures"])}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "\n".join(f"{k}: {'; '.join(v)}" for k, v in bad.items())
    assert all(f["marks"] > 0 for f in record["figures"]), [f["title"] for f in record["figures"] if not f["marks"]]


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_output_scrolls_sideways(seen, name):
    assert ran(seen, name)["wide"] == [], "\n".join(seen[name]["wide"])


@pytest.mark.parametrize("name", CHAPTERS)
def test_nothing_leaves_the_machine(seen, name):
    assert ran(seen, name)["outside"] == [], "\n".join(seen[name]["outside"])


@pytest.mark.parametrize("name", CHAPTERS)
def test_graph_views_slide_to_the_strongest_edges(seen, name):
    sliders = ran(seen, name)["sliders"]
    for title, before, after in sliders:
        assert 0 < after <= before, f"{title!r}: {before} edges, then {after} at the slider's last step"
    assert not sliders or any(after < before for _, before, after in sliders), f"no slider hid an edge: {sliders}"


# Chapters whose graph views give each latent a card (``utils.graphs.node_card``): a click on
# a latent shows its top activating contexts and top logits.
CARDS = ("ch05",)


@pytest.mark.parametrize("name", CHAPTERS)
def test_graph_views_show_a_node_on_click(seen, name):
    """A click on a node of the graph view shows its note (label, effect or influence,
    hover text) inside the figure; none is shown before. In the chapters of ``CARDS`` a
    clicked latent's note shows its top contexts and top logits, and some click is on a latent
    (the test clicks the node with the longest note)."""
    latents = 0
    for click in ran(seen, name).get("clicks", []):
        node = re.search(r"<b>(.*?)</b>", click["expected"]).group(1)  # the clicked node's short name
        before = [n for n in click["before"] if node in n["text"]]  # the list under the figure may name it
        shown = [n for n in click["after"] if node in n["text"] and n not in before]
        assert shown, f"a click on {node} showed no note ({click['shot']})"
        assert all(n["inside"] for n in shown), f"the note leaves the figure: {shown} ({click['shot']})"
        if name.startswith(CARDS) and re.fullmatch(r"(tc|clt|attn|resid)\d+\.\d+@\d+", node):  # a latent (not err, not a supernode S1)
            latents += 1
            text = " ".join(n["text"] for n in shown)
            assert "top contexts:" in text and "top logits:" in text, f"the note of latent {node} lacks its card: {text!r}"
    if name.startswith(CARDS) and ran(seen, name).get("clicks"):
        assert latents, f"no click landed on a latent: {[c['expected'][:60] for c in seen[name]['clicks']]}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_progress_bars_end_at_100_percent_on_one_line(seen, name):
    """A finished run's bar (SAELens's training bar in chapter 06) is not red, reads 100 %
    and keeps to one line."""
    for bar in ran(seen, name)["bars"]:
        assert not bar["danger"] and "100%" in bar["text"] and bar["height"] < 40, bar

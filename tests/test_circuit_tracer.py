"""The course side by side with circuit-tracer, from circuit-tracer's own venv.

1. ``test_graphs_agree_with_circuit_tracer``: the organism's fact prompt exported
   (``benchmarks.circuit_tracer.export``), circuit-tracer's graph built by its own
   ``attribute`` in its venv (``runner``), and the course's graph built with circuit-tracer's
   conventions: the same nodes, every edge within 1e-5 of the largest, the same influence
   ranking (what ``python -m utils.course bench attribution_graphs --against circuit-tracer`` times).
   ``test_clt_graphs_agree_with_circuit_tracer``: the same with the organism's cross-layer
   transcoder, exported in circuit-tracer's CLT format and loaded by its ``load_clt``.

2. ``test_viewer_draws_the_course_graph``: a course graph opened in circuit-tracer's own
   viewer, in a real browser. ``benchmarks.circuit_tracer.viewer`` serves chapter 05's pruned
   graph of the organism's fact prompt (``utils.graphs.circuit_tracer``) with circuit-tracer's local
   server from its venv; headless Chromium (Debian's package, driven by Playwright) opens it
   and the test checks what a learner sees: every exported node drawn in the link graph, the
   prompt's tokens along its axis, the top logit's token, the clicked logit's input latents
   listed with the course's labels, the pinned latents in the subgraph panel, and no script
   error. A screenshot goes to a temporary folder whose path is printed.

The viewer page loads d3 (with Anthropic's fork of d3-jetpack), dagre and pako from public
CDNs. Where those cannot be reached (offline, as on the course's build machines) the test
answers those requests with stand-ins from npm, fetched by
``python -m benchmarks.circuit_tracer.venv --browser-libs``: d3 7, d3-collection, gka's
d3-jetpack 2.1.0 and :data:`GLUE` (the one helper of Anthropic's fork the page uses that
gka's lacks), dagre, pako. Which scripts were used is printed.

Both skip, with the reason, when circuit-tracer's venv is absent (``python -m
benchmarks.circuit_tracer.venv`` makes it, about 3 minutes). The viewer test also skips when
the CDNs are unreachable and the stand-ins absent, and without Chromium, except in CI (``CI``
set), where that fails.
"""
from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

import pytest

from benchmarks.circuit_tracer import venv, viewer

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CDN_PROBE = "https://unpkg.com/pako@2.1.0/dist/pako.min.js"
# What Anthropic's d3-jetpack adds to gka's and the page calls: ``c.drawAxis(svg)`` on the
# object ``d3.conventions`` returns (gka's has it as ``d3.drawAxis(c)``).
GLUE = b"""
;(function () {
  var conventions = d3.conventions
  d3.conventions = function (c) {
    c = conventions(c)
    c.drawAxis = function (svg) { return d3.drawAxis(Object.assign({}, c, {svg: svg || c.svg})) }
    return c
  }
})();
"""


def cdn_reachable() -> bool:
    try:
        urllib.request.urlopen(CDN_PROBE, timeout=5).read(1)
        return True
    except OSError:
        return False


def stand_ins() -> dict[str, bytes]:
    """URL endings of the page's CDN scripts -> the npm stand-ins' text."""
    libs = venv.browser_libs_dir()

    def read(*names: str) -> bytes:
        return b"\n;\n".join((libs / name).read_bytes() for name in names)

    return {"/static_js/lib/d3.js": read("d3.min.js", "d3-collection.min.js"),
            "/static_js/lib/jetpack_2024-07-20.js": read("d3-jetpack.js") + GLUE,
            "/dagre.min.js": read("dagre.min.js"), "/pako.min.js": read("pako.min.js")}


@pytest.fixture(scope="module")
def ct_venv():
    """circuit-tracer's venv, or a skip that says how to make it."""
    reason = venv.missing_reason()
    if reason:
        pytest.skip(reason)
    return venv.venv_python()


def test_graphs_agree_with_circuit_tracer(ct_venv):
    from benchmarks.circuit_tracer.side_by_side import measure, toy_case

    case = toy_case()
    case.prompts = case.prompts[:1]
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(case, threads=1, repeats=1, batch=64, python=ct_venv, workdir=Path(workdir))
    facts = result["prompts"]["facts"]
    assert facts["same_nodes"], f"node sets differ: {facts}"
    assert facts["circuit_tracer_logit_error"] < 1e-5, "circuit-tracer's copy of the model computes other logits"
    assert facts["max_edge_difference"] < 1e-5
    assert facts["influence_spearman"] > 0.999
    print(f"{facts['n_nodes']} nodes, max edge difference {facts['max_edge_difference']:.2g}, "
          f"circuit-tracer {result['circuit_tracer']['versions']}")


def test_clt_graphs_agree_with_circuit_tracer(ct_venv):
    """The organism's cross-layer transcoder (chapter 07) exported in circuit-tracer's CLT
    format and loaded with its ``load_clt``: the same nodes and edges as the course's CLT graph."""
    from benchmarks.circuit_tracer.side_by_side import measure, toy_clt_case

    case = toy_clt_case()
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(case, threads=1, repeats=1, batch=64, python=ct_venv, workdir=Path(workdir))
    for name, prompt in result["prompts"].items():
        assert prompt["same_nodes"], f"{name}: node sets differ: {prompt}"
        assert prompt["circuit_tracer_logit_error"] < 1e-5
        assert prompt["max_edge_difference"] < 1e-5, name
        assert prompt["influence_spearman"] > 0.999, name
        print(f"{name}: {prompt['n_nodes']} nodes, max edge difference {prompt['max_edge_difference']:.2g}")


@pytest.fixture(scope="module")
def served(ct_venv):
    """circuit-tracer's server on chapter 05's fact graph; yields the page's URL, the graph and
    the stand-in scripts (None where the CDNs answer)."""
    if not Path(CHROMIUM).exists():
        message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run installs it")
        pytest.skip(message)
    scripts = None
    if not cdn_reachable():
        if not venv.has_browser_libs():
            pytest.skip("the viewer's CDNs cannot be reached and no stand-in scripts are there: run "
                        "`python -m benchmarks.circuit_tracer.venv --browser-libs`")
        scripts = stand_ins()
    print(f"viewer scripts: {'npm stand-ins from ' + str(venv.browser_libs_dir()) if scripts else 'the public CDNs'}")
    data = viewer.toy_graph("facts")
    folder = Path(tempfile.mkdtemp(prefix="sae-ct-viewer-"))
    slug = viewer.stage(data, folder)
    port = viewer.free_port()
    server = viewer.start(folder, port)
    try:
        yield viewer.url(port, slug), port, data, scripts, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_viewer_draws_the_course_graph(served):
    from playwright.sync_api import sync_playwright

    url, port, data, scripts, folder = served
    errors: list[str] = []

    def route(request_route) -> None:
        address = request_route.request.url
        if address.startswith((f"http://localhost:{port}/", f"http://127.0.0.1:{port}/")) or scripts is None:
            return request_route.continue_()
        body = next((text for end, text in scripts.items() if address.endswith(end)), b"")
        request_route.fulfill(body=body, content_type="application/javascript")  # the rest (live reload, .npy reader) unused

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", route)
            page.goto(url)
            page.wait_for_selector(".link-graph text.node", state="attached", timeout=60_000)
            page.wait_for_selector(".node-connections .section-title, .node-connections div", timeout=30_000)
            shot = folder / "viewer.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            drawn = page.locator(".link-graph text.node").count()
            tokens = page.locator(".link-graph .prompt-token text").all_text_contents()
            axis = page.locator(".link-graph g.axis text").all_text_contents()
            connections = page.locator(".node-connections").inner_text()
            subgraph = page.locator(".subgraph").inner_text()
        finally:
            browser.close()
    assert not errors, f"script errors in the viewer: {errors}"
    assert drawn == len(data["nodes"]), f"{drawn} nodes drawn, {len(data['nodes'])} exported"
    assert tokens == data["metadata"]["prompt_tokens"]
    top = next(n for n in data["nodes"] if n["is_target_logit"])
    assert top["clerp"].split('"')[1] in axis  # the logit's token over the graph
    assert top["clerp"] in connections  # the clicked (top) logit's card
    inputs = {link["source"] for link in data["links"] if link["target"] == top["node_id"]}
    labels = [n["clerp"] for n in data["nodes"] if n["node_id"] in inputs and n["feature_type"] == "cross layer transcoder"]
    assert labels and all(label[:25] in connections for label in labels), "the top logit's input latents are not listed"
    pinned = [n["clerp"] for n in data["nodes"] if n["node_id"] in data["qParams"]["pinnedIds"]]
    assert all(label.split()[0] in subgraph for label in pinned), "pinned nodes missing from the subgraph panel"

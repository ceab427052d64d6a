"""Open a course attribution graph in circuit-tracer's own graph viewer.

    python -m benchmarks.circuit_tracer.viewer GRAPH.json [--port 8041]
    python -m benchmarks.circuit_tracer.viewer --toy facts [--port 8041]   # the organism's fact prompt

``GRAPH.json`` is a graph written by ``utils.graphs.circuit_tracer`` (``viewer_json`` +
``write_viewer_graph``, or ``json.dump`` of ``viewer_json``). With ``--toy TASK`` the command
builds chapter 05's graph of the organism's first ``TASK`` prompt (``facts``, ``ioi``, ...),
prunes it with the chapter's thresholds, labels its latents from the explanation table and
opens that. It copies the graph into a fresh folder with its ``graph-metadata.json`` and runs
circuit-tracer's local server (``python -m circuit_tracer start-server``) from circuit-tracer's
venv (``benchmarks.circuit_tracer.venv``, created on first use), then prints the address to
open; Ctrl+C stops it. The frontend is circuit-tracer's, served from its installed package:
nothing of it is copied here. Its page loads d3, dagre and pako from public CDNs, so the
*browser* needs the internet (the Python side does not). The server listens on every
interface of the machine, as circuit-tracer's does.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.circuit_tracer import venv

DEFAULT_PORT = 8041


def stage(data: dict[str, Any], folder: Path) -> str:
    """Write ``data`` where circuit-tracer's server finds it (``folder/<slug>.json`` listed in
    ``folder/graph-metadata.json``); returns the slug."""
    from utils.graphs.circuit_tracer import write_viewer_graph

    return write_viewer_graph(data, folder).stem


def start(data_dir: Path, port: int, python: Path | None = None, timeout: float = 60.0) -> subprocess.Popen:
    """circuit-tracer's local server on ``data_dir``, started from its venv and answering on
    ``port`` before this returns (``RuntimeError`` with its log otherwise)."""
    python = python or venv.ensure()
    log = open(data_dir / "server.log", "w")
    server = subprocess.Popen([str(python), "-m", "circuit_tracer", "start-server", "--graph_file_dir", str(data_dir),
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/graph-metadata.json", timeout=2).read()
            return server
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise RuntimeError(f"circuit-tracer's server did not answer on port {port}:\n{(data_dir / 'server.log').read_text()}")


def url(port: int, slug: str) -> str:
    return f"http://localhost:{port}/index.html?slug={slug}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_graph(task: str, seed: int = 0, pinned: int = 6) -> dict[str, Any]:
    """Chapter 05's pruned graph of the organism's ``task`` prompt, in the viewer's schema, its
    latents labelled from the explanation table, the ``pinned`` most influential latents and
    the most probable logit pinned in the subgraph panel."""
    import torch

    from benchmarks.circuit_tracer.side_by_side import course_graph
    from utils.backends import load_backend
    from utils.graphs.circuit_tracer import viewer_json
    from utils.graphs import node_label, prune, salient_logit_ids

    bk = load_backend("toy")
    tcs = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    tokens = bk.world.task_batch(task, 1, seed=seed).tokens
    with torch.no_grad():
        logit_ids = salient_logit_ids(bk.model(tokens)[0, -1])[0]
    graph = course_graph(bk.model, tcs, tokens, logit_ids)
    pruned = prune(graph)
    labels = {n: node_label(bk, n) for n, k in zip(graph.nodes, pruned.nodes.tolist()) if k and n.kind == "transcoder"}
    latents = graph.mask("transcoder", error=False) & pruned.nodes
    top = torch.where(latents, pruned.node_influence, -1.0).argsort(descending=True)[: min(pinned, int(latents.sum()))]
    logit = graph.nodes[int(torch.where(graph.mask("logit"), graph.activation, -1.0).argmax())]
    return viewer_json(graph, pruned, slug=f"toy-{task}-{seed}", scan="sae-circuits-toy", labels=labels,
                       pinned=[graph.nodes[j] for j in top.tolist()] + [logit], tokenizer=bk.model.tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("graph", nargs="?", type=Path, help="a graph JSON written by utils.graphs.circuit_tracer")
    parser.add_argument("--toy", metavar="TASK", help="build and open the organism's graph of this task's prompt")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ct-venv", help="circuit-tracer's venv (default: benchmarks.circuit_tracer.venv's)")
    args = parser.parse_args()
    if (args.graph is None) == (args.toy is None):
        parser.error("give either GRAPH.json or --toy TASK")
    if args.graph is not None:
        try:
            data = json.loads(args.graph.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read a graph from {args.graph}: {exc}")
        if not {"metadata", "nodes", "links"} <= set(data):
            parser.error(f"{args.graph} is not a viewer graph: expected keys metadata, nodes, links; got {sorted(data)}")
    else:
        data = toy_graph(args.toy)
    python = venv.ensure(args.ct_venv)
    folder = Path(tempfile.mkdtemp(prefix="sae-circuits-viewer-"))
    slug = stage(data, folder)
    server = start(folder, args.port, python)
    print(f"circuit-tracer's viewer: {url(args.port, slug)}  (Ctrl+C stops it; graphs in {folder})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Chapter 05's attribution graphs side by side with circuit-tracer's, in one run.

    python -m utils.course bench attribution_graphs --against circuit-tracer [--backends toy,toy-clt,gpt2-shaped] [--threads N]

For each backend (``toy``: the organism with its per-layer transcoders on its fact and IOI
prompts; ``toy-clt``: the organism with its cross-layer transcoder, chapter 07, on the same
prompts; ``gpt2-shaped``: the GPT-2-shaped backend cut to its first ``--shaped-layers``
blocks on a seeded random prompt of ``--shaped-pos`` tokens) this exports the model, its
tokenizer and its transcoders or CLT (``export``), builds the course's
graph here and circuit-tracer's in circuit-tracer's own venv (``runner``, a subprocess),
both for the same target logits, with the same number of torch threads and rows per backward
pass, and prints one line per backend::

    BACKEND: course S s, circuit-tracer S s, ratio R, max edge difference D

``S``: the process CPU time of building the backend's graphs from the prompt's tokens (the
course: ``local_replacement`` + ``build_graph``; circuit-tracer: ``attribute``), the sum over
the backend's prompts of each prompt's median over ``--repeats`` (at least 5) runs after a
warm-up. ``R = course / circuit-tracer``. ``D``: the largest ``|A_course - A_circuit-tracer|``
over every (target, source) pair of the aligned adjacency matrices, over the largest
``|A_circuit-tracer|``. A line per prompt follows with the graph's size, each side's time
in forward passes and the Spearman correlation of the two node-influence vectors.

Conventions matched for the comparison (circuit-tracer's; see :func:`match_circuit_tracer`):
position 0 (BOS) has no latent nodes and zero error nodes, and an embedding node is the token
embedding alone (the positional embedding, like a bias, belongs to no node).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.clt import CrossLayerTranscoder

from benchmarks.circuit_tracer import venv
from benchmarks.circuit_tracer.export import Prompt, export
from benchmarks.circuit_tracer.runner import KIND_EMBED, KIND_ERROR, KIND_LATENT, KIND_LOGIT
from utils.metrics import spearman
from utils.graphs import (
    Graph,
    LocalReplacement,
    build_graph,
    influence,
    local_replacement,
    normalized_adjacency,
    salient_logit_ids,
)
from utils.nodes import Node

RUNNER = Path(__file__).with_name("runner.py")
MIN_REPEATS = 5


# ---------------------------------------------------------------------------------------
# The course's side: the one call into the course's graph builder.


def course_graph(model: HookedSAETransformer, transcoders: Sequence[SAE] | CrossLayerTranscoder, tokens: Int[Tensor, "1 pos"],
                 logit_ids: Int[Tensor, " k"], *, batch: int = 128, conventions: str = "course") -> Graph:
    """The course's attribution graph of one prompt, from its tokens: every call this benchmark
    makes into the course's graph builder goes through here (to time a new engine, change
    this function). ``conventions="circuit-tracer"`` builds the graph circuit-tracer builds
    (:func:`match_circuit_tracer`)."""
    rm = local_replacement(model, transcoders, tokens)
    if conventions == "circuit-tracer":
        match_circuit_tracer(rm)
    elif conventions != "course":
        raise ValueError(f"conventions is 'course' or 'circuit-tracer', got {conventions!r}")
    return build_graph(rm, logit_ids, batch=batch)


def match_circuit_tracer(rm: LocalReplacement) -> None:
    """Give ``rm`` circuit-tracer's node conventions, in place.

    circuit-tracer sets every latent and error vector at position 0 to zero (the BOS position,
    whose huge activations it leaves out of the graph) and takes the *token* embedding
    ``W_E[t]`` as an embedding node's value, where the course takes the whole residual stream
    entering layer 0 (token plus position). In the frozen replacement model every target is
    an affine function of the leaves, so its gradient with respect to a leaf does not depend on
    the leaves' values: changing the values changes no gradient, and each edge
    ``value . gradient`` becomes exactly circuit-tracer's. (The targets' own values move, but no
    edge reads them.)"""
    rm.embed = rm.model.W_E[rm.tokens[0]].detach().clone()
    for layer in rm.acts:
        rm.acts[layer] = rm.acts[layer].clone()
        rm.acts[layer][0] = 0.0
        rm.errors[layer] = rm.errors[layer].clone()
        rm.errors[layer][0] = 0.0


# ---------------------------------------------------------------------------------------
# What is compared.


@dataclass
class Case:
    """One backend's model, transcoders (or cross-layer transcoder) and prompts."""

    backend: str
    model: HookedSAETransformer
    transcoders: list[SAE] | CrossLayerTranscoder
    prompts: list[Prompt]


def toy_case() -> Case:
    """The organism on its fact and IOI prompts (seed 0), with chapter 05's salient logits."""
    from utils.backends import load_backend

    bk = load_backend("toy")
    tcs = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    prompts = [_prompt(bk.model, task, bk.world.task_batch(task, 1, seed=0).tokens) for task in ("facts", "ioi")]
    return Case("toy", bk.model, tcs, prompts)


def toy_clt_case() -> Case:
    """The organism with its cross-layer transcoder (``bk.clt``) on the same prompts."""
    case = toy_case()
    from utils.backends import load_backend

    clt = load_backend("toy").clt
    if clt is None:
        raise SystemExit("the organism has no cross-layer transcoder: python -m utils.toy build --only clt")
    return Case("toy-clt", case.model, clt, case.prompts)


def shaped_case(layers: int, n_pos: int) -> Case:
    """The GPT-2-shaped backend cut after ``layers`` blocks (a replacement model needs a
    transcoder at every layer) on a seeded random prompt of ``n_pos`` tokens, BOS first."""
    from utils.backends.gpt2 import load_gpt2_shaped

    shaped = load_gpt2_shaped(layers=range(layers), kinds=("transcoder",))
    model = shaped.model
    model.cfg.n_layers = layers
    model.blocks = model.blocks[:layers]
    tokens = torch.randint(1000, 20000, (1, n_pos), generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = model.tokenizer.bos_token_id
    tcs = [shaped.dictionary("transcoder", layer) for layer in range(layers)]
    return Case("gpt2-shaped", model, tcs, [_prompt(model, f"random-{n_pos}", tokens)])


def _prompt(model: HookedSAETransformer, name: str, tokens: Int[Tensor, "1 pos"]) -> Prompt:
    with torch.no_grad():
        logits = model(tokens)[0, -1]
    return Prompt(name, tokens, salient_logit_ids(logits)[0])


# ---------------------------------------------------------------------------------------
# Timing and comparing.


def cpu_seconds(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Process CPU times of ``repeats`` calls of ``fn`` after a warm-up (counted as a run when
    it took over 30 s), and the last result: the runner's rule, on this side."""
    start = time.process_time()
    result = fn()
    first = time.process_time() - start
    times = [first] if first > 30 else []
    while len(times) < repeats:
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return times, result


def node_key(node: Node) -> tuple[int, int, int, int]:
    """A course node as the runner writes circuit-tracer's: (kind, layer, pos, index)."""
    if node.kind == "embed":
        return (KIND_EMBED, -1, node.pos, int(node.index))
    if node.kind == "logit":
        return (KIND_LOGIT, node.layer, node.pos, int(node.index))
    if node.is_error:  # a transcoder's or a CLT's: circuit-tracer's error nodes are per layer either way
        return (KIND_ERROR, node.layer, node.pos, -1)
    return (KIND_LATENT, node.layer, node.pos, int(node.index))


def compare(graph: Graph, theirs: dict) -> dict:
    """Align the course's graph with circuit-tracer's (``theirs``: one prompt of the runner's
    output) node by node and compare adjacency and influence."""
    their_index = {tuple(k): i for i, k in enumerate(theirs["nodes"].tolist())}
    ours = [node_key(n) for n in graph.nodes]
    only_ours = [k for k in ours if k not in their_index]
    only_theirs = sorted(set(their_index) - set(ours))
    if only_ours or only_theirs:
        return {"same_nodes": False, "only_course": only_ours[:5], "only_circuit_tracer": only_theirs[:5]}
    at = torch.tensor([their_index[k] for k in ours])
    n = len(at)
    aligned = torch.zeros(n, n, dtype=torch.float64)
    aligned[at[:, None], at[None, :]] = graph.adjacency.double()
    a_theirs = theirs["adjacency"].double()
    ours_inf = torch.zeros(n, dtype=torch.float64)
    ours_inf[at] = influence(normalized_adjacency(graph.adjacency.double()), graph.logit_weights.double())
    theirs_inf = theirs["influence"].double()
    ranked = (ours_inf != 0) | (theirs_inf != 0)  # nodes with no influence on either side are ties
    return {"same_nodes": True, "n_nodes": n, "n_edges": int((a_theirs != 0).sum()),
            "max_edge_difference": float((aligned - a_theirs).abs().max() / a_theirs.abs().max()),
            "influence_spearman": spearman(ours_inf[ranked], theirs_inf[ranked]), "n_ranked": int(ranked.sum())}


def run_circuit_tracer(export_dir: Path, out: Path, threads: int, repeats: int, batch: int,
                       python: Path) -> dict:
    """The runner in circuit-tracer's venv, with ``threads`` threads; returns its output."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TQDM_DISABLE="1", PYTHONPATH="")
    cmd = [str(python), str(RUNNER), str(export_dir), str(out), "--threads", str(threads),
           "--repeats", str(repeats), "--batch", str(batch)]
    subprocess.run(cmd, env=env, check=True)
    return torch.load(out, weights_only=True)


def measure(case: Case, threads: int, repeats: int, batch: int, python: Path, workdir: Path) -> dict:
    """Both sides' graphs of every prompt of ``case``: timings and agreement."""
    export_dir = export(workdir / case.backend, case.model, case.transcoders, case.prompts, scan=f"sae-circuits-{case.backend}")
    theirs = run_circuit_tracer(export_dir, workdir / f"{case.backend}.pt", threads, repeats, batch, python)
    shutil.rmtree(export_dir)
    result = {"circuit_tracer": {k: v for k, v in theirs.items() if k != "prompts"}, "prompts": {}}
    for prompt in case.prompts:
        with torch.no_grad():
            forward, _ = cpu_seconds(lambda: case.model(prompt.tokens), max(repeats, 20))
        times, graph = cpu_seconds(lambda: course_graph(case.model, case.transcoders, prompt.tokens, prompt.logit_ids,
                                                        batch=batch, conventions="circuit-tracer"), repeats)
        ct = theirs["prompts"][prompt.name]
        result["prompts"][prompt.name] = {
            "n_pos": prompt.tokens.shape[1], "course_s": statistics.median(times), "course_runs": times,
            "circuit_tracer_s": statistics.median(ct["seconds"]), "circuit_tracer_runs": ct["seconds"],
            "forward_s": statistics.median(forward), "circuit_tracer_forward_s": ct["forward_seconds"],
            "circuit_tracer_logit_error": ct["logit_error"], **compare(graph, ct)}
    return result


def backend_line(backend: str, r: dict) -> str:
    """``BACKEND: course S s, circuit-tracer S s, ratio R, max edge difference D``."""
    prompts = r["prompts"].values()
    ours, theirs = sum(p["course_s"] for p in prompts), sum(p["circuit_tracer_s"] for p in prompts)
    if not all(p["same_nodes"] for p in prompts):
        diff = "n/a (node sets differ)"
    else:
        diff = f"{max(p['max_edge_difference'] for p in prompts):.2g}"
    return f"{backend}: course {ours:.3g} s, circuit-tracer {theirs:.3g} s, ratio {ours / theirs:.3g}, max edge difference {diff}"


def prompt_line(backend: str, name: str, p: dict) -> str:
    line = (f"  {backend}/{name} ({p['n_pos']} tokens): course {p['course_s']:.3g} s = "
            f"{p['course_s'] / p['forward_s']:.3g} forward passes ({p['forward_s'] * 1e3:.3g} ms), circuit-tracer "
            f"{p['circuit_tracer_s']:.3g} s = {p['circuit_tracer_s'] / p['circuit_tracer_forward_s']:.3g} of its "
            f"forward passes ({p['circuit_tracer_forward_s'] * 1e3:.3g} ms); ")
    if not p["same_nodes"]:
        return line + f"node sets differ: only the course's {p['only_course']}, only circuit-tracer's {p['only_circuit_tracer']}"
    return line + (f"{p['n_nodes']} nodes, {p['n_edges']} edges, max edge difference {p['max_edge_difference']:.2g}, "
                   f"influence Spearman {p['influence_spearman']:.4f} over {p['n_ranked']} nodes; circuit-tracer's "
                   f"model's logits within {p['circuit_tracer_logit_error']:.2g} of the course's")


def main(args: argparse.Namespace) -> None:
    """Run the comparison for ``args.backends`` (from ``benchmarks.attribution_graphs``)."""
    if args.device != "cpu":
        raise SystemExit(f"the side-by-side comparison times both sides on the CPU (--device cpu), "
                         f"not on {args.device!r}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    python = venv.ensure(args.ct_venv)
    repeats = max(args.repeats, MIN_REPEATS)
    cases: list[Callable[[], Case]] = []
    backends = args.backends.split(",")
    unknown = set(backends) - {"toy", "toy-clt", "gpt2-shaped"}
    if unknown:
        raise SystemExit(f"unknown backends {sorted(unknown)}: expected some of toy, toy-clt, gpt2-shaped")
    if "toy" in backends:
        cases.append(toy_case)
    if "toy-clt" in backends:
        cases.append(toy_clt_case)
    if "gpt2-shaped" in backends:
        cases.append(lambda: shaped_case(args.shaped_layers, args.shaped_pos or 12))
    results = {}
    workdir = Path(tempfile.mkdtemp(prefix="sae-circuits-ct-"))
    try:
        for make in cases:
            case = make()
            results[case.backend] = measure(case, args.threads, repeats, args.batch, python, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=1))
    info = next(iter(results.values()))["circuit_tracer"]
    print(f"# {args.threads} torch thread(s) on both sides, {args.batch} rows per backward pass, process CPU time, "
          f"median of {repeats} runs; circuit-tracer {info['versions']['circuit-tracer']} with TransformerLens "
          f"{info['versions']['transformer-lens']} (ln2.hook_normalized "
          f"{'after' if info['hook_normalized_after_affine'] else 'before'} ln2's scale and bias; "
          f"ln2 folded into the MLP: {info['ln2_folded']}), torch {info['versions']['torch']} on both sides",
          file=sys.stderr)
    for backend, r in results.items():
        print(backend_line(backend, r))
        for name, p in r["prompts"].items():
            print(prompt_line(backend, name, p))

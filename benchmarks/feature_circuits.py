"""Chapter 03's methods at work: what a sparse feature circuit costs, and how exact its edges are.

    python -m utils.course bench feature_circuits                 # toy backend, 32 IOI prompts
    python -m utils.course bench feature_circuits --prompts 64

Prints one JSON object, then readable lines. Figures, on the toy model with all six
dictionaries (attention SAE, transcoder, residual SAE at each of two layers):

- ``cost``: wall and CPU seconds (medians after a warm-up) of one plain forward pass without
  gradients; of node attribution to every latent and error node at every position
  (``utils.circuits.node_attribution``, one forward and one backward pass); of edge
  attribution for the circuit at the chapter's node threshold (``edge_effects`` over the nine
  consecutive dictionary pairs, one vector-Jacobian product per downstream node of the
  circuit); and of the ablation cognition graph over the same circuit's latents
  (``ablation_edges`` into each following dictionary: two forward passes per (latent,
  dictionary) pair). Each as a multiple of the forward pass, with the counts of backward
  passes and forward passes behind it.
- ``memory``: the process's peak resident memory (``ru_maxrss``) after each stage, a coarse
  upper bound (the toy model is small; most of it is the Python process and torch).
- ``agreement``: edge attribution against edge ablation (set the upstream node to its mean,
  hold every other dictionary at its clean output, error terms kept, and multiply the
  downstream node's change by the metric's gradient there), for the six strongest edges into
  each of up to four circuit nodes per dictionary pair: Spearman, Pearson and sign agreement.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable

import torch

from solutions.ch01_attribution import logit_diff
from solutions.ch03_feature_circuits import ablation_edges, edge_effects
from utils.metrics import agreement
from utils.backends import load_backend
from utils.circuits import mean_baseline, node_attribution, rank_nodes
from utils.graphs import direct_change, node_gradients
from utils.nodes import Node, dictionary_key

CONSECUTIVE = [(("attn_sae", 0), ("transcoder", 0)), (("attn_sae", 0), ("resid_sae", 0)), (("transcoder", 0), ("resid_sae", 0)),
               (("resid_sae", 0), ("attn_sae", 1)), (("resid_sae", 0), ("transcoder", 1)), (("resid_sae", 0), ("resid_sae", 1)),
               (("attn_sae", 1), ("transcoder", 1)), (("attn_sae", 1), ("resid_sae", 1)), (("transcoder", 1), ("resid_sae", 1))]


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` runs, after one warm-up run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--node-threshold", type=float, default=0.1)


def main(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)
    bk = load_backend("toy")
    model, world = bk.model, bk.world
    for module in [model, *bk.dictionaries.values()]:
        module.requires_grad_(False)
    dictionaries = list(bk.dictionaries.values())
    batch = world.task_batch("ioi", args.prompts, seed=0)
    means = mean_baseline(model, dictionaries, world.task_batch("ioi", 64, seed=1).tokens)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, batch.answer_ids, batch.distractor_ids)

    memory = {"start_mb": peak_mb()}
    scores = {h: a.mean(0) for h, a in node_attribution(model, dictionaries, batch.tokens, metric, means).items()}
    ranked = rank_nodes(scores, dictionaries)

    def effect(node: Node) -> float:
        return scores[bk.dictionary(node.kind, node.layer).cfg.metadata.hook_name][node.pos, -1 if node.is_error else node.index].item()

    circuit = [n for n in ranked if abs(effect(n)) >= args.node_threshold]

    def edges_all() -> None:
        for up, down in CONSECUTIVE:
            targets = [n for n in circuit if (n.kind, n.layer) == down]
            if targets and any((n.kind, n.layer) == up for n in circuit):
                edge_effects(model, dictionaries, bk.dictionary(*up), bk.dictionary(*down), batch.tokens, metric, targets, means)

    following = {key: [d for u, d in CONSECUTIVE if u == key] for key in bk.dictionaries}
    latents = [n for n in circuit if not n.is_error]

    def cognition_all() -> None:
        for node in latents:
            for key in following[node.kind, node.layer]:
                ablation_edges(model, dictionaries, bk.dictionary(node.kind, node.layer), bk.dictionary(*key), batch.tokens, node, -2)

    forward = timed(lambda: model(batch.tokens), args.repeats)
    nodes_cost = timed(lambda: node_attribution(model, dictionaries, batch.tokens, metric, means), args.repeats)
    memory["after_node_attribution_mb"] = peak_mb()
    edges_cost = timed(edges_all, args.repeats)
    memory["after_edge_attribution_mb"] = peak_mb()
    cognition_cost = timed(cognition_all, 1)
    memory["after_cognition_graph_mb"] = peak_mb()
    n_vjp = sum(sum((n.kind, n.layer) == down for n in circuit) for up, down in CONSECUTIVE
                if any((n.kind, n.layer) == up for n in circuit))
    pairs_expanded = sum(len(following[n.kind, n.layer]) for n in latents)
    cost = {"prompts": args.prompts, "circuit_nodes": len(circuit), "circuit_latents": len(latents),
            "forward": forward, "node_attribution": nodes_cost, "edge_attribution": edges_cost, "cognition_graph": cognition_cost,
            "edge_vjps": n_vjp, "edge_attribution_passes": {"forward": 1 + sum(1 for _ in CONSECUTIVE), "backward": 1 + n_vjp},
            "cognition_forward_passes": 2 * pairs_expanded}
    for clock in ("wall_s", "cpu_s"):
        tag = clock.removesuffix("_s")
        for name in ("node_attribution", "edge_attribution", "cognition_graph"):
            cost[f"{name}_x_forward_{tag}"] = cost[name][clock] / forward[clock]
        cost[f"nodes_plus_edges_x_forward_{tag}"] = (nodes_cost[clock] + edges_cost[clock]) / forward[clock]

    grads = node_gradients(model, dictionaries, batch.tokens, metric)
    estimate, truth = [], []
    for up_key, down_key in CONSECUTIVE:
        upstream, downstream = bk.dictionary(*up_key), bk.dictionary(*down_key)
        up_hook, down_hook = upstream.cfg.metadata.hook_name, downstream.cfg.metadata.hook_name
        targets = [n for n in circuit if (n.kind, n.layer) == down_key][:4]
        if not targets:
            continue
        edges = edge_effects(model, dictionaries, upstream, downstream, batch.tokens, metric, targets, means)
        for t, target in enumerate(targets):
            for flat in edges[t].abs().flatten().topk(6).indices.tolist():
                p, j = divmod(flat, edges.shape[-1])
                source = Node(*dictionary_key(upstream), p, "error" if j == upstream.cfg.d_sae else j)
                value = means.errors[up_hook][p] if source.is_error else means.latents[up_hook][p, j]
                d_latents, d_error = direct_change(model, dictionaries, upstream, downstream, batch.tokens, source, value)
                if target.is_error:
                    moved = (grads[f"{down_hook}.error"].grad[:, target.pos] * d_error[:, target.pos]).flatten(1).sum(-1)
                else:
                    moved = grads[f"{down_hook}.latents"].grad[:, target.pos, target.index] * d_latents[:, target.pos, target.index]
                estimate.append(edges[t, p, j].item())
                truth.append(moved.mean().item())
    fit = agreement(torch.tensor(estimate), torch.tensor(truth))
    report = {"cost": cost, "memory": memory, "agreement": {"edges": len(estimate), **fit}}
    print(json.dumps(report, default=float))
    print(readable(report))


def readable(report: dict) -> str:
    c, m, a = report["cost"], report["memory"], report["agreement"]
    return "\n".join([
        f"toy IOI, {c['prompts']} prompts; circuit at the node threshold: {c['circuit_nodes']} nodes ({c['circuit_latents']} latents)",
        f"forward pass: {c['forward']['wall_s'] * 1e3:.3g} ms wall, {c['forward']['cpu_s'] * 1e3:.3g} ms CPU",
        f"node attribution (every node): {c['node_attribution_x_forward_wall']:.3g}x forward wall, {c['node_attribution_x_forward_cpu']:.3g}x CPU",
        f"edge attribution ({c['edge_vjps']} VJPs): {c['edge_attribution_x_forward_wall']:.3g}x forward wall, {c['edge_attribution_x_forward_cpu']:.3g}x CPU",
        f"nodes + edges: {c['nodes_plus_edges_x_forward_wall']:.3g}x forward wall, {c['nodes_plus_edges_x_forward_cpu']:.3g}x CPU",
        f"ablation cognition graph ({c['cognition_forward_passes']} spliced forward passes): {c['cognition_graph_x_forward_wall']:.3g}x forward wall, "
        f"{c['cognition_graph_x_forward_cpu']:.3g}x CPU",
        f"peak memory (RSS, MB): start {m['start_mb']:.0f}, after nodes {m['after_node_attribution_mb']:.0f}, "
        f"after edges {m['after_edge_attribution_mb']:.0f}, after cognition graph {m['after_cognition_graph_mb']:.0f}",
        f"edge attribution vs edge ablation, {a['edges']} edges: Spearman {a['spearman']:.3g}, Pearson {a['pearson']:.3g}, "
        f"sign agreement {a['sign_agreement']:.3g}",
    ])

"""Chapter 05's attribution graphs: cost and exactness.

    python -m benchmarks.attribution_graphs                      # toy + gpt2-shaped (2 layers)
    python -m benchmarks.attribution_graphs --shaped-layers 12 --device cuda

Prints one JSON object, then readable lines. Figures, per backend:

- ``graph_x_forward``: time of ``build_graph`` (every active transcoder latent and the
  salient logits as targets, ``--batch`` targets per backward pass) over the time of one
  plain forward pass of the same prompt without gradients (batch 1). ``replacement_s`` is
  the time of ``local_replacement`` (one forward pass with a cache), not included.
- ``n_nodes``, ``n_targets``, ``n_edges``: the graph's size (edges: nonzero entries).
- ``max_edge_error``: the largest ``|removal effect - edge weight|`` over every (target,
  source) pair, where the removal effect is the change of the target when the source's leaf
  is zeroed in the frozen replacement model (``edge_errors``), and ``relative_edge_error``
  the same over the largest ``|edge|``. Target: below 1e-4 relative (float32 rounding).
- ``peak_mb`` / ``extra_mb``: peak memory while building the graph (CUDA allocator, or
  sampled RSS on the CPU) and its excess over the memory held before.

The toy prompts are the organism's fact and IOI prompts; on ``gpt2-shaped`` (random
weights, transcoders with about 50 active latents per token) a random prompt of
``--shaped-pos`` tokens through the first ``--shaped-layers`` blocks (a replacement model
needs a transcoder at every layer, so the model is cut after the last one built).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.attribution import seconds
from benchmarks.gpt2_shaped import peak_memory
from utils.backends import load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.graphs import build_graph, edge_errors, local_replacement, salient_logit_ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128, help="targets per backward pass")
    parser.add_argument("--shaped-layers", type=int, default=2, help="gpt2-shaped transcoders at layers 0..N-1 (the model is cut there)")
    parser.add_argument("--shaped-pos", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="toy,gpt2-shaped", help="comma-separated: toy, gpt2-shaped")
    return parser.parse_args()


def measure(model, transcoders, tokens, batch: int, repeats: int, device: str, check_edges: bool = True) -> dict:
    """Timings, size, memory and edge exactness of one prompt's graph."""
    start = time.perf_counter()
    rm = local_replacement(model, transcoders, tokens)
    replacement_s = time.perf_counter() - start
    ids = salient_logit_ids(rm.logits[-1])[0]
    with torch.no_grad():
        forward_s = seconds(lambda: model(tokens), repeats, device)
    graph_s = seconds(lambda: build_graph(rm, ids, batch=batch), repeats, device)
    with peak_memory(device) as memory:
        graph = build_graph(rm, ids, batch=batch)
    peak, extra = memory["peak_mb"], memory["extra_mb"]
    out = {"n_pos": tokens.shape[1], "n_nodes": len(graph.nodes),
           "n_targets": int(sum(1 for n in graph.nodes if n.kind == "logit" or (n.kind == "transcoder" and not n.is_error))),
           "n_edges": int((graph.adjacency != 0).sum()), "forward_s": forward_s, "replacement_s": replacement_s,
           "graph_s": graph_s, "graph_x_forward": graph_s / forward_s, "peak_mb": peak, "extra_mb": extra}
    if check_edges:
        errors = edge_errors(rm, graph, batch=batch)
        out["max_edge_error"] = errors.abs().max().item()
        out["relative_edge_error"] = out["max_edge_error"] / graph.adjacency.abs().max().item()
    return out


def shaped_figures(args: argparse.Namespace) -> dict[str, dict]:
    """The figures on the gpt2-shaped backend, cut after ``--shaped-layers`` blocks."""
    shaped = load_gpt2_shaped(args.device, layers=range(args.shaped_layers), kinds=("transcoder",))
    model = shaped.model
    model.cfg.n_layers = args.shaped_layers  # the replacement model needs a transcoder at every layer: cut the model there
    model.blocks = model.blocks[: args.shaped_layers]
    tokens = torch.randint(1000, 20000, (1, args.shaped_pos), device=args.device)
    tokens[0, 0] = model.tokenizer.bos_token_id
    tcs = [shaped.dictionary("transcoder", layer) for layer in range(args.shaped_layers)]
    return {f"gpt2-shaped/{args.shaped_layers}-layers": measure(model, tcs, tokens, args.batch, args.repeats, args.device)}


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    results: dict[str, dict] = {}
    backends = args.backends.split(",")
    if "toy" in backends:
        bk = load_backend("toy", device=args.device)
        toy_tcs = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
        for task in ("facts", "ioi"):
            tokens = bk.world.task_batch(task, 1, seed=0).tokens.to(args.device)
            results[f"toy/{task}"] = measure(bk.model, toy_tcs, tokens, args.batch, args.repeats, args.device)
    if "gpt2-shaped" in backends:
        results.update(shaped_figures(args))
    print(json.dumps(results, indent=1))
    for name, r in results.items():
        line = (f"{name}: {r['n_nodes']} nodes ({r['n_targets']} targets, {r['n_pos']} tokens), {r['n_edges']} edges; "
                f"graph in {r['graph_s']:.3g} s = {r['graph_x_forward']:.3g}x a forward pass ({r['forward_s'] * 1e3:.3g} ms); "
                f"peak {r['peak_mb']:.4g} MB (+{r['extra_mb']:.3g} MB)")
        if "max_edge_error" in r:
            line += f"; max edge error {r['max_edge_error']:.2g} ({r['relative_edge_error']:.2g} of the largest edge)"
        print(line)


if __name__ == "__main__":
    main()

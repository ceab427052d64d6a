"""Chapter 05's attribution graphs: cost and exactness of the engine against the first builder.

    python -m utils.course bench attribution_graphs         # toy fact + IOI, gpt2-shaped (2 layers, 12 tokens)
    python -m utils.course bench attribution_graphs --backends gpt2-shaped --shaped-layers 12 --reference-repeats 0
    python -m utils.course bench attribution_graphs --device cuda
    python -m utils.course bench attribution_graphs --against circuit-tracer [--threads N]   # side by side

With ``--against circuit-tracer`` it builds the course's graphs and circuit-tracer's on the
same prompts and prints, per backend, ``BACKEND: course S s, circuit-tracer S s, ratio R,
max edge difference D`` (``benchmarks.circuit_tracer.side_by_side``; one thread count, the
first of ``--threads``); otherwise it prints what follows.

Prints one JSON object, then one line per case and thread count, then a closing note with
the ratios. Timings are process CPU time (all threads together; wall time beside it), the
median of ``--repeats`` runs after one warm-up run, with ``torch.set_num_threads`` at each
of ``--threads`` (``1`` and ``default``, the count torch starts with). Per case:

- ``forward``: one forward pass of the prompt without gradients (batch 1), with the
  course's unembedding (``utils.backends.Unembed``) and with TransformerLens 3.9's, which
  copies ``W_U`` on every call (``forward_tl``);
- ``engine``: ``utils.graphs.build_graph`` (every active latent and the salient logits as
  targets, ``--batch`` per backward pass), and ``engine_x_forward``, its ratio to the forward;
- ``reference``: ``build_graph_reference``, the first builder (``--reference-repeats`` runs,
  no warm-up for a single run: on gpt2-shaped one run takes minutes; ``0`` skips it), and
  ``reference_x_engine``;
- ``n_nodes``, ``n_targets``, ``n_edges`` (nonzero entries);
- ``engine_vs_reference``: the largest ``|engine - reference|`` over the largest edge;
  ``removal_error``: the largest ``|removal effect - edge|`` over the largest edge, where the
  removal effect is the change of a target when one source's leaf is zeroed in the frozen
  replacement model (``edge_errors``; on gpt2-shaped every embedding and error node and
  every tenth latent as sources, 32 at a time). The engine is held to 1e-5;
- ``peak_mb`` / ``extra_mb``: peak memory while the engine builds the graph (CUDA
  allocator, or sampled RSS on the CPU), and its excess over the memory held before.

The toy prompts are the organism's fact and IOI prompts (seed 0); on ``gpt2-shaped``
(random weights, transcoders with about 50 active latents per token) a random prompt of
``--shaped-pos`` tokens through the first ``--shaped-layers`` blocks (a replacement model
needs a transcoder at every layer, so the model is cut after the last one built).

Other scripts (the side-by-side with circuit-tracer) build the course's graph with
:func:`course_graph` and time it with :func:`cpu_seconds`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformer_lens.components
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from benchmarks.gpt2_shaped import peak_memory
from utils.backends import Unembed, load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.clt import CrossLayerTranscoder
from utils.graphs import (
    Graph,
    attribute,
    build_graph,
    build_graph_reference,
    edge_errors,
    local_replacement,
    salient_logit_ids,
)

Case = tuple[str, HookedSAETransformer, "list[SAE] | CrossLayerTranscoder", Int[Tensor, "1 pos"]]


def course_graph(model: HookedSAETransformer, transcoders: list[SAE], tokens: Int[Tensor, "1 pos"], batch: int = 256,
                 max_feature_nodes: int | None = None, coverage: float = 0.95, max_n_logits: int = 10) -> Graph:
    """The course's attribution graph of one prompt: local replacement model, salient logits
    (``coverage``, at most ``max_n_logits``), :func:`utils.graphs.build_graph`."""
    with torch.no_grad():
        return attribute(model, transcoders, tokens, coverage, max_n_logits, batch, max_feature_nodes=max_feature_nodes)


def cpu_seconds(fn: Callable[[], object], repeats: int, device: str = "cpu", warm_up: bool = True) -> tuple[float, float]:
    """Median process CPU time and median wall time of ``fn`` over ``repeats`` runs, after one
    warm-up run (unless ``warm_up`` is False)."""
    if warm_up:
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        c, w = time.process_time(), time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


@contextmanager
def transformer_lens_unembed(model: HookedSAETransformer) -> Iterator[None]:
    """TransformerLens 3.9's own ``Unembed`` (a copy of ``W_U`` per call) for the block."""
    model.unembed.__class__ = transformer_lens.components.Unembed
    try:
        yield
    finally:
        model.unembed.__class__ = Unembed


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256, help="targets per backward pass of the engine")
    parser.add_argument("--threads", default="1,default", help="comma-separated torch thread counts ('default': torch's own)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=None,
                        help="runs of the first builder (default: --repeats on the toy, 1 on gpt2-shaped; 0 skips it)")
    parser.add_argument("--shaped-layers", type=int, default=2, help="gpt2-shaped transcoders at layers 0..N-1 (the model is cut there)")
    parser.add_argument("--shaped-pos", type=int, default=12)
    parser.add_argument("--backends", default="toy,gpt2-shaped",
                        help="comma-separated: toy, toy-clt (the organism's cross-layer transcoder), gpt2-shaped")
    parser.add_argument("--against", choices=["circuit-tracer"], help="time and compare with circuit-tracer's graphs")
    parser.add_argument("--ct-venv", help="circuit-tracer's venv (default: benchmarks.circuit_tracer.venv's)")


def cases(args: argparse.Namespace) -> Iterator[Case]:
    """``(name, model, transcoders, tokens)`` for every case of ``args.backends``."""
    backends = args.backends.split(",")
    if "toy" in backends:
        bk = load_backend("toy", device=args.device)
        transcoders = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
        for task in ("facts", "ioi"):
            yield f"toy/{task}", bk.model, transcoders, bk.world.task_batch(task, 1, seed=0).tokens.to(args.device)
    if "toy-clt" in backends:
        bk = load_backend("toy", device=args.device)
        for task in ("facts", "ioi"):
            yield f"toy-clt/{task}", bk.model, bk.clt, bk.world.task_batch(task, 1, seed=0).tokens.to(args.device)
    if "gpt2-shaped" in backends:
        layers = args.shaped_layers
        shaped = load_gpt2_shaped(args.device, layers=range(layers), kinds=("transcoder",))
        model = shaped.model
        model.cfg.n_layers = layers  # the replacement model needs a transcoder at every layer: cut the model there
        model.blocks = model.blocks[:layers]
        tokens = torch.randint(1000, 20000, (1, args.shaped_pos), generator=torch.Generator().manual_seed(0)).to(args.device)
        tokens[0, 0] = model.tokenizer.bos_token_id
        yield (f"gpt2-shaped/{layers}-layers", model, [shaped.dictionary("transcoder", layer) for layer in range(layers)], tokens)


def measure(name: str, model: HookedSAETransformer, transcoders: list[SAE] | CrossLayerTranscoder, tokens: Tensor, args: argparse.Namespace,
            exactness: bool) -> dict[str, Any]:
    """Timings of one case at the current thread count; sizes, memory and exactness if ``exactness``."""
    rm = local_replacement(model, transcoders, tokens)
    ids = salient_logit_ids(rm.logits[-1])[0]
    shaped = name.startswith("gpt2-shaped")
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "n_pos": tokens.shape[1]}
    with torch.no_grad():
        out["forward_s"], out["forward_wall_s"] = cpu_seconds(lambda: model(tokens), args.repeats, args.device)
        with transformer_lens_unembed(model):
            out["forward_tl_s"], out["forward_tl_wall_s"] = cpu_seconds(lambda: model(tokens), args.repeats, args.device)
        out["engine_s"], out["engine_wall_s"] = cpu_seconds(lambda: build_graph(rm, ids, args.batch), args.repeats, args.device)
        out["engine_x_forward"] = out["engine_s"] / out["forward_s"]
        repeats = args.reference_repeats if args.reference_repeats is not None else (1 if shaped else args.repeats)
        if repeats:
            out["reference_repeats"] = repeats
            # one run of minutes needs no warm-up
            out["reference_s"], out["reference_wall_s"] = cpu_seconds(lambda: build_graph_reference(rm, ids), repeats, args.device,
                                                                      warm_up=repeats > 1)
            out["reference_x_engine"] = out["reference_s"] / out["engine_s"]
        if not exactness:
            return out
        with peak_memory(args.device) as memory:
            graph = build_graph(rm, ids, args.batch)
        out.update(peak_mb=memory["peak_mb"], extra_mb=memory["extra_mb"], n_nodes=len(graph.nodes),
                   n_targets=int(graph.dictionary_mask(error=False).sum() + graph.mask("logit").sum()),
                   n_edges=int((graph.adjacency != 0).sum()))
        largest = graph.adjacency.abs().max().item()
        if repeats:
            out["engine_vs_reference"] = (graph.adjacency - build_graph_reference(rm, ids).adjacency).abs().max().item() / largest
        latents = [n for j, n in enumerate(graph.nodes) if graph.dictionary_mask(error=False)[j]]
        sources = [n for n in graph.nodes if n.kind == "embed" or n.is_error] + latents[::10] if shaped else None
        # the removal test runs the replacement model with d_sae-wide leaves: fewer rows at once on gpt2-shaped
        out["removal_error"] = edge_errors(rm, graph, batch=32 if shaped else 256, sources=sources).abs().max().item() / largest
    return out


def line(name: str, r: dict[str, Any], sizes: dict[str, Any]) -> str:
    text = (f"{name}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}: {sizes['n_nodes']} nodes ({sizes['n_targets']} targets, "
            f"{r['n_pos']} tokens), {sizes['n_edges']} edges; forward {r['forward_s'] * 1e3:.3g} ms (TransformerLens's "
            f"Unembed {r['forward_tl_s'] * 1e3:.3g} ms); engine {r['engine_s']:.3g} s = {r['engine_x_forward']:.3g}x a forward")
    if "reference_s" in r:
        text += f"; first builder {r['reference_s']:.3g} s = {r['reference_x_engine']:.3g}x the engine ({r['reference_repeats']} runs)"
    return text + f" [wall: forward {r['forward_wall_s'] * 1e3:.3g} ms, engine {r['engine_wall_s']:.3g} s]"


def main(args: argparse.Namespace) -> None:
    default_threads = torch.get_num_threads()
    threads = [default_threads if t == "default" else int(t) for t in args.threads.split(",")]
    if args.against == "circuit-tracer":
        from benchmarks.circuit_tracer.side_by_side import main as side_by_side

        args.threads = threads[0]
        return side_by_side(args)
    results: dict[str, dict[str, Any]] = {}
    for name, model, transcoders, tokens in cases(args):
        for k, n in enumerate(threads):
            torch.set_num_threads(n)
            results[f"{name}/{n}-threads"] = measure(name, model, transcoders, tokens, args, exactness=k == 0)
        torch.set_num_threads(default_threads)
    print(json.dumps(results, indent=1))
    sizes = {key.rsplit("/", 1)[0]: r for key, r in results.items() if "n_nodes" in r}
    for key, r in results.items():
        print(line(key.rsplit("/", 1)[0], r, sizes[key.rsplit("/", 1)[0]]))
    for name, r in sizes.items():
        exact = f"engine vs first builder {r['engine_vs_reference']:.2g}, " if "engine_vs_reference" in r else ""
        print(f"{name}: {exact}removal test {r['removal_error']:.2g} of the largest edge; "
              f"peak {r['peak_mb']:.4g} MB (+{r['extra_mb']:.3g} MB)")
    print("closing note (CPU time ratios):")
    for key, r in results.items():
        reference = f"first builder / engine {r['reference_x_engine']:.3g}, " if "reference_x_engine" in r else ""
        print(f"  {key}: {reference}engine / forward {r['engine_x_forward']:.3g}, "
              f"TransformerLens's Unembed / ours (forward) {r['forward_tl_s'] / r['forward_s']:.3g}")


if __name__ == "__main__":  # the chapters name `python -m utils.course bench attribution_graphs`
    from utils.course.__main__ import bench_alias

    bench_alias("attribution_graphs")

"""Chapter 02's methods at work: cost and faithfulness of error-node attribution, and
faithfulness of circuits with and without error nodes.

    python -m utils.course bench error_nodes                        # toy + gpt2-shaped (1 layer)
    python -m utils.course bench error_nodes --shaped-layers 0      # toy only

Prints one JSON object, then readable lines. Figures:

- ``cost``: time of attribution to every latent *and* every error node of every dictionary
  (residual SAEs, attention SAEs and transcoders of every layer) at every position, from one
  forward and one backward pass (``utils.circuits.node_attribution``), over the time of one
  plain forward pass without gradients (``attribution_x_forward``) and over a no-grad forward
  pass with every dictionary spliced by SAELens with its error term
  (``attribution_x_spliced_forward``). Medians of repeated runs, in wall time and in CPU time
  of this process (the CPU figure is the steadier one on a shared machine). Parameters are
  frozen: attribution needs activation gradients only. ``error_sweep_forward_passes``: what
  exact error-node ablation would cost instead, one forward pass per error node (dictionaries
  times positions). Also on ``gpt2-shaped`` (GPT-2 small's shapes, 24,576-latent
  dictionaries) at ``--shaped-layers`` layers.
- ``agreement``: on the toy model, for each dictionary and for zero and mean (position-wise,
  over 64 other prompts) ablation, error-node attribution ``grad . (e' - e)`` (the chapter's
  ``error_attribution``, SAELens splice with the error made a leaf) against the true effect of
  ablating that error node alone (``ablate_nodes``): Spearman, sign agreement and Pearson over
  (prompt, position) pairs whose true effect exceeds 1e-3 of the largest, pooled over
  dictionaries and per dictionary, on IOI and induction.
- ``faithfulness``: on IOI and induction (``--prompts`` prompts, means from 64 others), nodes
  ranked by the mean attribution of mean-ablating each alone; faithfulness and completeness
  (Marks et al. 2024) of the top 10, 50, 100 and 1000 nodes with error nodes allowed and
  excluded, and the smallest size on the chapter's grid that reaches F >= 0.9.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from solutions.ch01_attribution import logit_diff
from solutions.ch02_error_nodes import ablate_nodes, completeness, error_attribution, faithfulness
from utils.backends import load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.metrics import agreement
from utils.circuits import mean_baseline, node_attribution, rank_nodes
from utils.nodes import Node

SIZES = (10, 50, 100, 1000)
GRID = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 1500, 2000, 5000)  # the chapter's circuit sizes


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--toy-batch", type=int, default=256, help="IOI prompts for the toy cost figures")
    parser.add_argument("--prompts", type=int, default=32, help="prompts for agreement and faithfulness")
    parser.add_argument("--shaped-layers", type=int, default=1, help="gpt2-shaped dictionaries at layers 0..N-1 (0: skip)")
    parser.add_argument("--shaped-batch", type=int, default=2)
    parser.add_argument("--shaped-pos", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)


def timed(fn: Callable[[], object], repeats: int, device: str) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` runs, after one warm-up run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def cost(model: HookedSAETransformer, dictionaries: list[SAE], tokens: Tensor, answer_ids: Tensor, distractor_ids: Tensor,
         repeats: int, device: str) -> dict[str, float]:
    """Attribution to every node (latents and error nodes) against one forward pass."""
    for module in [model, *dictionaries]:
        module.requires_grad_(False)
    with torch.no_grad():
        forward = timed(lambda: model(tokens), repeats, device)
        spliced = timed(lambda: model.run_with_saes(tokens, saes=dictionaries, use_error_term=True), repeats, device)
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids)  # noqa: E731
    attribution = timed(lambda: node_attribution(model, dictionaries, tokens, metric), repeats, device)
    figures = {"forward": forward, "spliced_forward": spliced, "attribution": attribution,
               "error_sweep_forward_passes": len(dictionaries) * tokens.shape[1]}
    for clock in ("wall_s", "cpu_s"):
        tag = clock.removesuffix("_s")
        figures[f"attribution_x_forward_{tag}"] = attribution[clock] / forward[clock]
        figures[f"attribution_x_spliced_forward_{tag}"] = attribution[clock] / spliced[clock]
    return figures


def toy_agreement(n: int) -> dict[str, object]:
    """Error-node attribution against true error-node ablation, per dictionary, zero and mean."""
    bk = load_backend("toy")
    model, dictionaries = bk.model, bk.dictionaries
    report: dict[str, object] = {}
    for task in ("ioi", "induction"):
        batch = bk.world.task_batch(task, n, seed=0)
        means = mean_baseline(model, list(dictionaries.values()), bk.world.task_batch(task, 64, seed=1).tokens)
        args = (batch.tokens, batch.answer_ids, batch.distractor_ids)
        clean = ablate_nodes(model, [], *args, [])
        n_pos = batch.tokens.shape[1]
        for kind in ("zero", "mean"):
            baseline = None if kind == "zero" else means
            estimates, truths, per_dictionary = [], [], {}
            for (dkind, layer), d in dictionaries.items():
                hook = d.cfg.metadata.hook_name
                estimate = error_attribution(model, d, *args, None if baseline is None else baseline.errors[hook])
                truth = torch.stack([ablate_nodes(model, [d], *args, [Node(dkind, layer, p, "error")], baseline) - clean
                                     for p in range(n_pos)], dim=-1)  # [batch, pos]
                estimates.append(estimate.flatten())
                truths.append(truth.flatten())
                moved = truth.abs().flatten() > 1e-3 * truth.abs().max()
                per_dictionary[f"{dkind}{layer}"] = {"pairs": int(moved.sum()), "largest_effect": truth.abs().max().item(),
                                                    **agreement(estimate.flatten()[moved], truth.flatten()[moved])}
            estimate, truth = torch.cat(estimates), torch.cat(truths)
            moved = truth.abs() > 1e-3 * truth.abs().max()
            report[f"{task}_{kind}"] = {"pairs": int(moved.sum()), **agreement(estimate[moved], truth[moved]),
                                        "per_dictionary": per_dictionary}
    return report


def toy_faithfulness(n: int) -> dict[str, object]:
    """Faithfulness and completeness of top-attributed circuits, with and without error nodes."""
    bk = load_backend("toy")
    model, dictionaries = bk.model, list(bk.dictionaries.values())
    report: dict[str, object] = {}
    for task in ("ioi", "induction"):
        batch = bk.world.task_batch(task, n, seed=0)
        means = mean_baseline(model, dictionaries, bk.world.task_batch(task, 64, seed=1).tokens)
        metric = lambda logits, b=batch: logit_diff(logits, b.answer_ids, b.distractor_ids)  # noqa: E731
        scores = {hook: a.mean(0) for hook, a in node_attribution(model, dictionaries, batch.tokens, metric, means).items()}
        args = (batch.tokens, batch.answer_ids, batch.distractor_ids, means)
        for errors in (True, False):
            ranking = rank_nodes(scores, dictionaries, errors=errors, k=max(GRID))
            F = {size: faithfulness(model, dictionaries, ranking[:size], *args) for size in sorted(set(GRID) | set(SIZES))}
            C = {size: completeness(model, dictionaries, ranking[:size], *args) for size in SIZES}
            reached = [size for size in GRID if F[size] >= 0.9]
            report[f"{task}_{'with' if errors else 'without'}_errors"] = {
                "faithfulness": {size: F[size] for size in SIZES}, "completeness": C,
                "smallest_size_f_0.9": reached[0] if reached else None,
                "faithfulness_at_5000": F[5000], "nodes": sum(s.numel() for s in scores.values()),
            }
    return report


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    report: dict[str, object] = {}
    bk = load_backend("toy", device=args.device)
    batch = bk.world.task_batch("ioi", args.toy_batch, seed=0)
    on = lambda t: t.to(args.device)  # noqa: E731
    report["toy"] = {"batch": args.toy_batch, "pos": batch.tokens.shape[1], "dictionaries": len(bk.dictionaries),
                     "cost": cost(bk.model, list(bk.dictionaries.values()), on(batch.tokens), on(batch.answer_ids),
                                  on(batch.distractor_ids), args.repeats, args.device)}
    if args.device == "cpu":
        report["toy"]["agreement"] = toy_agreement(args.prompts)
        report["toy"]["faithfulness"] = toy_faithfulness(args.prompts)
    if args.shaped_layers:
        shaped = load_gpt2_shaped(device=args.device, layers=range(args.shaped_layers))
        tokens = torch.randint(0, shaped.model.cfg.d_vocab, (args.shaped_batch, args.shaped_pos), device=args.device)
        report["gpt2_shaped"] = {
            "layers": args.shaped_layers, "batch": args.shaped_batch, "pos": args.shaped_pos,
            "dictionaries": len(shaped.dictionaries), "d_sae": next(iter(shaped.dictionaries.values())).cfg.d_sae,
            "cost": cost(shaped.model, list(shaped.dictionaries.values()), tokens, tokens[:, 1], tokens[:, 2],
                         max(1, args.repeats // 2), args.device),
        }
    print(json.dumps(report, default=float))
    print(readable(report))


def readable(report: dict) -> str:
    lines = []
    for name in ("toy", "gpt2_shaped"):
        if name not in report:
            continue
        r, c = report[name], report[name]["cost"]
        lines.append(f"{name} ({r['dictionaries']} dictionaries, batch {r['batch']} x {r['pos']} tokens): attribution to every "
                     f"latent and error node = {c['attribution_x_forward_cpu']:.2f}x one forward pass in CPU time "
                     f"({c['attribution_x_forward_wall']:.2f}x in wall time; {c['attribution_x_spliced_forward_cpu']:.2f}x a "
                     f"forward pass with the dictionaries spliced); exact error ablation would take "
                     f"{c['error_sweep_forward_passes']} forward passes")
    toy = report["toy"]
    for key, a in toy.get("agreement", {}).items():
        lines.append(f"toy {key}: error-node attribution vs true ablation over {a['pairs']} (prompt, node) pairs: "
                     f"Spearman {a['spearman']:.3f}, sign agreement {a['sign_agreement']:.3f}, Pearson {a['pearson']:.3f}")
        lines.append("    per dictionary (Spearman / sign / Pearson): " + "; ".join(
            f"{d} {g['spearman']:.2f} / {g['sign_agreement']:.2f} / {g['pearson']:.2f}" for d, g in a["per_dictionary"].items()))
    for key, f in toy.get("faithfulness", {}).items():
        row = ", ".join(f"{size}: {f['faithfulness'][size]:.3f} / {f['completeness'][size]:.3f}" for size in SIZES)
        lines.append(f"toy {key}: faithfulness / completeness at {row}; F >= 0.9 first at "
                     f"{f['smallest_size_f_0.9']} of {f['nodes']} nodes; F at 5000 nodes {f['faithfulness_at_5000']:.3f}")
    return "\n".join(lines)

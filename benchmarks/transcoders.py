"""Chapter 04's approximations at work, over every planted task: how far the transcoder
connections of the toy model are from true ablations, and what de-embeddings capture.

    python -m utils.course bench transcoders

Prints one JSON object, then readable lines. Figures:

- ``de_embedding``: median over live latents of Pearson r between a latent's de-embedding
  (read at each corpus token) and its actual pre-activation there: direct at layers 0 and
  1, extended (through transcoder 0) with the typical layer-0 scale and with the
  embeddings' own scale.
- ``agreement[task]``: on 16 prompts of each task, for the 3 transcoder-1 latents most
  active at the last position and every transcoder-0 latent active in those prompts, Pearson
  r over (prompt, downstream, upstream) triples between the true ablation effect (upstream
  latent zeroed everywhere, error term kept) and (a) the direct connection (pullback times
  activation), (b) direct plus attention paths; ``attention_share``: the share of the total
  absolute ablation effect carried by upstream latents with no direct connection (inactive
  at the last position); ``frozen_max_error``: the largest difference, relative to the
  largest effect, between ablation with layer 1's scales and patterns frozen and (b),
  which should be float noise.
- ``seconds``: wall time of the whole run (one thread).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from utils.backends import load_backend
from utils.transcoders import (
    de_embeddings,
    extended_de_embeddings,
    upstream_ablations,
    upstream_contributions,
)

FROZEN = ["blocks.1.ln1.hook_scale", "blocks.1.ln2.hook_scale", "blocks.1.attn.hook_pattern"]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([x.flatten().double(), y.flatten().double()]))[0, 1].item()


def de_embedding_quality(bk) -> dict[str, float]:
    model, tc0, tc1 = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.corpus(128, 48, seed=0).tokens
    _, cache = model.run_with_cache(tokens)
    flat = tokens[:, 1:].flatten()
    scales = [cache[f"blocks.{layer}.ln2.hook_scale"][:, 1:].mean().item() for layer in (0, 1)]
    own = (model.W_E - model.W_E.mean(-1, keepdim=True)).pow(2).mean(-1).add(model.cfg.eps).sqrt().mean().item()

    def median_r(layer: int, table: torch.Tensor) -> float:
        tc = bk.dictionary("transcoder", layer)
        actual = (cache[f"blocks.{layer}.ln2.hook_normalized"][:, 1:] @ tc.W_enc + tc.b_enc).flatten(0, 1)
        live = actual.relu().sum(0) > 0
        est, actual = table[flat][:, live], actual[:, live]
        est, actual = est - est.mean(0), actual - actual.mean(0)
        return ((est * actual).sum(0) / (est.norm(dim=0) * actual.norm(dim=0))).nanmedian().item()

    return {
        "direct_layer0": median_r(0, de_embeddings(model, tc0, scales[0])),
        "direct_layer1": median_r(1, de_embeddings(model, tc1, scales[1])),
        "extended_typical_scale": median_r(1, extended_de_embeddings(model, [tc0], tc1, scales)),
        "extended_own_scale": median_r(1, extended_de_embeddings(model, [tc0], tc1, [own, scales[1]])),
    }


def agreement(bk, task: str, n_prompts: int = 16, n_down: int = 3) -> dict[str, float]:
    model, tc0, tc1 = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.task_batch(task, n_prompts, seed=11).tokens
    last = torch.full((n_prompts,), tokens.shape[1] - 1)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("ln2.hook_normalized") or name in FROZEN)
    down = tc1.encode(cache["blocks.1.ln2.hook_normalized"][:, -1]).mean(0).topk(n_down).indices
    candidates = (tc0.encode(cache["blocks.0.ln2.hook_normalized"]) > 0).any(1).any(0).nonzero()[:, 0]
    rows = {"ablation": [], "direct": [], "linear": [], "frozen": []}

    def freeze(x: torch.Tensor, hook) -> torch.Tensor:  # upstream_ablations stacks len(candidates) + 1 copies
        return cache[hook.name].repeat(len(candidates) + 1, *[1] * (x.ndim - 1))

    for latent in down.tolist():
        rows["ablation"].append(-upstream_ablations(model, tc0, tc1, latent, tokens, last, candidates))
        rows["direct"].append(upstream_contributions(model, tc0, tc1, latent, tokens, last, attention=False)[:, candidates])
        rows["linear"].append(upstream_contributions(model, tc0, tc1, latent, tokens, last)[:, candidates])
        with model.hooks(fwd_hooks=[(name, freeze) for name in FROZEN]):
            rows["frozen"].append(-upstream_ablations(model, tc0, tc1, latent, tokens, last, candidates))
    ablation, direct, linear, frozen = (torch.stack(rows[key]) for key in ("ablation", "direct", "linear", "frozen"))
    no_direct = direct.abs() < 1e-9
    return {
        "n_triples": ablation.numel(),
        "r_direct": pearson(direct, ablation),
        "r_direct_plus_attention": pearson(linear, ablation),
        "attention_share": (ablation.abs() * no_direct).sum().item() / ablation.abs().sum().item(),
        "frozen_max_error": ((frozen - linear).abs().max() / linear.abs().max()).item(),
    }


def main(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    started = time.perf_counter()
    bk = load_backend("toy")
    figures = {"de_embedding": de_embedding_quality(bk),
               "agreement": {task: agreement(bk, task) for task in bk.world.tasks}}
    figures["seconds"] = time.perf_counter() - started
    print(json.dumps(figures, indent=1))
    print("de-embeddings, median r with the actual pre-activation:",
          ", ".join(f"{k} {v:.3g}" for k, v in figures["de_embedding"].items()))
    for task, a in figures["agreement"].items():
        print(f"{task:>13}: r(direct, ablation) {a['r_direct']:.3g}, r(direct + attention, ablation) "
              f"{a['r_direct_plus_attention']:.3g}, attention-only share {a['attention_share']:.3g}, "
              f"frozen model exact to {a['frozen_max_error']:.1e} ({a['n_triples']} triples)")
    print(f"{figures['seconds']:.1f} s")



if __name__ == "__main__":  # the chapters name `python -m utils.course bench transcoders`
    from utils.course.__main__ import bench_alias

    bench_alias("transcoders")

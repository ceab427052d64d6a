"""Chapter 01's methods at work: cost and faithfulness of attribution patching and IG.

    python -m utils.course bench attribution                       # toy + gpt2-shaped (2 layers)
    python -m utils.course bench attribution --shaped-layers 12 --device cuda

Prints one JSON object, then readable lines. Figures:

- ``attribution_x_forward``: time of all-latent attribution patching (every latent of every
  residual SAE at every position: one forward + one backward pass through
  ``splice_for_gradients``, times ``patched - clean``) over the time of one plain forward
  pass without gradients. Target <= 3.5 (forward + backward is about 3).
  ``attribution_x_spliced_forward``: the same over a no-grad forward pass with every SAE
  spliced in (SAELens, with error terms).
- ``sweep_over_attribution``: a full zero-ablation sweep (one forward pass per latent active
  at the last position of some prompt, for every SAE) over the attribution time.
- ``agreement``: on the toy model's planted IOI circuit, the ``top_k`` latents (by the size
  of their true zero- or mean-ablation effect at the last position, mean over prompts) of the SAE with
  the most active latents there: Spearman, sign agreement and Pearson of attribution patching
  and of integrated gradients against true ablation (targets: Spearman >= 0.9, sign >= 0.95),
  both on the mean effect per latent (a ranking of k numbers, fragile where effects are close)
  and per (prompt, latent) pair where the latent is active (each pair one true ablation).
  Not computed on gpt2-shaped, whose random weights carry no circuit.
- ``peak_mb`` / ``extra_mb``: peak memory during attribution (CUDA allocator, or sampled
  RSS on the CPU) and its excess over the memory held before.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from benchmarks.gpt2_shaped import peak_memory
from solutions.ch01_attribution import ablation_effects, attribution_patching, integrated_gradients
from utils.metrics import pearson, spearman
from utils.backends import load_backend
from utils.backends.gpt2 import load_gpt2_shaped


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shaped-layers", type=int, default=2, help="gpt2-shaped SAEs at layers 0..N-1")
    parser.add_argument("--shaped-batch", type=int, default=2)
    parser.add_argument("--shaped-pos", type=int, default=32)
    parser.add_argument("--toy-batch", type=int, default=256, help="IOI prompts for the toy cost figures")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)


def seconds(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clean_latents(model: HookedSAETransformer, saes: list[SAE], tokens: Int[Tensor, "batch pos"]) -> dict[str, Tensor]:
    names = [f"{s.cfg.metadata.hook_name}.hook_sae_acts_post" for s in saes]
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=saes, names_filter=names, use_error_term=True)
    return {s.cfg.metadata.hook_name: cache[n] for s, n in zip(saes, names)}


def last_position_zero_patch(acts: Float[Tensor, "batch pos d_sae"]) -> Float[Tensor, "batch pos d_sae"]:
    patched = acts.clone()
    patched[:, -1] = 0.0
    return patched


def cost(model: HookedSAETransformer, saes: list[SAE], tokens: Tensor, answer_ids: Tensor, distractor_ids: Tensor,
         repeats: int, device: str, sweep: bool) -> dict[str, float]:
    """Forward, attribution and (optionally) full-sweep times, and attribution's peak memory.

    Parameters are frozen first: attribution needs gradients with respect to activations
    only, and weight gradients would double the backward pass.
    """
    for module in [model, *saes]:
        module.requires_grad_(False)
    clean = clean_latents(model, saes, tokens)
    patched = {hook: last_position_zero_patch(acts) for hook, acts in clean.items()}
    with torch.no_grad():
        forward_s = seconds(lambda: model(tokens), repeats, device)
        spliced_s = seconds(lambda: model.run_with_saes(tokens, saes=saes, use_error_term=True), repeats, device)
    def attribute() -> dict[str, Tensor]:
        return attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched)

    attribution_s = seconds(attribute, repeats, device)
    with peak_memory(device) as memory:
        attribute()
    figures = {"forward_s": forward_s, "spliced_forward_s": spliced_s, "attribution_s": attribution_s,
               "attribution_x_forward": attribution_s / forward_s,
               "attribution_x_spliced_forward": attribution_s / spliced_s, **memory}
    if sweep:
        start = time.perf_counter()
        n_forward = 0
        with torch.no_grad():
            for sae in saes:
                active = (clean[sae.cfg.metadata.hook_name][:, -1] > 0).any(0).nonzero()[:, 0]
                if len(active):
                    ablation_effects(model, sae, tokens, answer_ids, distractor_ids, active)
                n_forward += len(active) + 1
        figures.update(sweep_s=time.perf_counter() - start, sweep_forward_passes=n_forward,
                       sweep_over_attribution=(time.perf_counter() - start) / attribution_s)
    return figures


def agreement(estimate: Tensor, truth: Tensor) -> dict[str, float]:
    return {"spearman": spearman(estimate, truth), "pearson": pearson(estimate, truth),
            "sign_agreement": float((estimate.sign() == truth.sign()).double().mean())}


def toy_agreement(top_k: int, steps: int) -> dict[str, object]:
    """Attribution and IG against true ablation (zero and mean) on the IOI circuit's top latents."""
    bk = load_backend("toy")
    model, batch = bk.model, bk.world.task_batch("ioi", 32, seed=0)
    clean = clean_latents(model, list(bk.saes.values()), batch.tokens)
    hook = max(clean, key=lambda h: int((clean[h][:, -1] > 0).any(0).sum()))
    sae, acts = bk.saes[hook], clean[hook]
    active = (acts[:, -1] > 0).any(0).nonzero()[:, 0]
    corpus = bk.world.corpus(n_seqs=64, seq_len=32, seed=0).tokens
    baselines = {"zero": torch.zeros(sae.cfg.d_sae), "mean": clean_latents(model, [sae], corpus)[hook][:, 1:].mean((0, 1))}
    report: dict[str, object] = {"sae": hook, "top_k": top_k, "ig_steps": steps}
    for kind, baseline in baselines.items():
        with torch.no_grad():
            per_prompt = ablation_effects(model, sae, batch.tokens, batch.answer_ids, batch.distractor_ids, active,
                                          baseline=None if kind == "zero" else baseline)  # [batch, n_active]
        truth = per_prompt.mean(0)
        top = truth.abs().topk(min(top_k, len(active))).indices
        patched = acts.clone()
        patched[:, -1] = baseline
        attr = attribution_patching(model, [sae], batch.tokens, batch.answer_ids, batch.distractor_ids, {hook: patched})
        ig = integrated_gradients(model, sae, batch.tokens, batch.answer_ids, batch.distractor_ids, patched, steps=steps)
        attr_top, ig_top = attr[hook][:, -1, active[top]].mean(0), ig[:, -1, active[top]].mean(0)
        report[kind] = {
            "latents": active[top].tolist(), "ablation": truth[top].tolist(), "attribution": attr_top.tolist(),
            "integrated_gradients": ig_top.tolist(),
            "attribution_vs_ablation": agreement(attr_top, truth[top]), "ig_vs_ablation": agreement(ig_top, truth[top]),
        }
        # The same latents, one ablation per (prompt, latent) where the latent is active.
        on = acts[:, -1, active[top]] > 0
        pairs = lambda x: x[:, -1, active[top]][on]  # noqa: E731
        report[kind]["per_prompt"] = {
            "pairs": int(on.sum()),
            "attribution_vs_ablation": agreement(pairs(attr[hook]), per_prompt[:, top][on]),
            "ig_vs_ablation": agreement(pairs(ig), per_prompt[:, top][on]),
        }
    return report


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    report: dict[str, object] = {}

    bk = load_backend("toy", device=args.device)
    batch = bk.world.task_batch("ioi", args.toy_batch, seed=0)
    report["toy"] = {
        "cost": cost(bk.model, list(bk.saes.values()), batch.tokens.to(args.device), batch.answer_ids.to(args.device),
                     batch.distractor_ids.to(args.device), args.repeats, args.device, sweep=True),
        "agreement": toy_agreement(args.top_k, args.ig_steps) if args.device == "cpu" else None,
    }

    shaped = load_gpt2_shaped(device=args.device, layers=range(args.shaped_layers), kinds=("resid_sae",))
    tokens = torch.randint(0, shaped.model.cfg.d_vocab, (args.shaped_batch, args.shaped_pos), device=args.device)
    answer, distractor = tokens[:, 1], tokens[:, 2]  # any two tokens: the metric's value is meaningless here
    report["gpt2_shaped"] = {
        "layers": args.shaped_layers, "batch": args.shaped_batch, "pos": args.shaped_pos,
        "d_sae": next(iter(shaped.saes.values())).cfg.d_sae,
        "cost": cost(shaped.model, list(shaped.saes.values()), tokens, answer, distractor, max(1, args.repeats // 2),
                     args.device, sweep=False),
    }
    print(json.dumps(report, default=float))
    print(readable(report))


def readable(report: dict) -> str:
    lines = []
    for name in ("toy", "gpt2_shaped"):
        c = report[name]["cost"]
        line = (f"{name}: attribution over all latents = {c['attribution_x_forward']:.2f}x one forward pass "
                f"({c['attribution_s'] * 1e3:.1f} ms vs {c['forward_s'] * 1e3:.1f} ms; "
                f"{c['attribution_x_spliced_forward']:.2f}x a forward pass with the SAEs spliced in); peak {c['peak_mb']:.0f} MB "
                f"(+{c['extra_mb']:.0f} MB)")
        if "sweep_over_attribution" in c:
            line += (f"; full ablation sweep ({c['sweep_forward_passes']} forward passes) = "
                     f"{c['sweep_over_attribution']:.1f}x attribution")
        lines.append(line)
    a = report["toy"]["agreement"]
    if a:
        for kind in ("zero", "mean"):
            for method in ("attribution", "ig"):
                g = a[kind][f"{method}_vs_ablation"]
                lines.append(f"toy {a['sae']}, top {a['top_k']} IOI latents, {kind} ablation, {method} vs truth: "
                             f"Spearman {g['spearman']:.3f}, sign agreement {g['sign_agreement']:.3f}, "
                             f"Pearson {g['pearson']:.3f} (mean effect per latent)")
                p = a[kind]["per_prompt"]
                g = p[f"{method}_vs_ablation"]
                lines.append(f"    per (prompt, latent) over {p['pairs']} active pairs: Spearman {g['spearman']:.3f}, "
                             f"sign agreement {g['sign_agreement']:.3f}, Pearson {g['pearson']:.3f}")
    return "\n".join(lines)



if __name__ == "__main__":  # the chapters name `python -m utils.course bench attribution`
    from utils.course.__main__ import bench_alias

    bench_alias("attribution")

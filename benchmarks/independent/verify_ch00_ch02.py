"""Show that each catalog entry of chapters 00-02 is what it claims, without any check:
every wrong entry differs from the reference (in its output, or in state it leaves changed)
on at least one input, every correct entry equals it to float rounding on every input.

    python -m benchmarks.independent.verify_ch00_ch02 ch01_attribution [EXERCISE_OR_ENTRY ...]

Prints ``[ok]`` or ``[PROBLEM]`` per entry with what each input gave. Known, accepted
``PROBLEM`` lines: ``top_k_sort_and_slice`` orders tied zero activations differently when k
exceeds the active latents (any order of ties is correct), and the two correct
``attn_latent_path_effects`` entries differ by ~3e-6 on effects of ~0.007 (float rounding
from another order of operations; the strict tolerance here is 1e-4 of the largest value).
This is how the catalog was checked before its first run against the checks.
"""
from __future__ import annotations

import importlib
import math
import sys
from typing import Any

import einops
import torch

from benchmarks.independent import IMPLEMENTATIONS
from utils.backends import load_backend
from utils.circuits import mean_baseline
from utils.nodes import Node


def _acts(model, sae, tokens):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    return model.run_with_cache_with_saes(tokens, saes=[sae], names_filter=name)[1][name]


def cases_ch00(bk) -> dict[str, list[tuple]]:
    model, world = bk.model, bk.world
    sae0, sae1 = bk.saes["blocks.0.hook_resid_post"], bk.saes["blocks.1.hook_resid_post"]
    attn0, attn1 = bk.attn_saes["blocks.0.attn.hook_z"], bk.attn_saes["blocks.1.attn.hook_z"]
    ioi, other = world.task_batch("ioi", n=4, seed=0), world.task_batch("ioi", n=3, seed=5)
    corpus = world.corpus(n_seqs=100, seq_len=24, seed=3)
    flat = einops.rearrange(_acts(model, sae1, corpus.tokens)[:, 1:], "b p d -> (b p) d")
    label = corpus.labels["name_repeated"][:, 1:].flatten()
    small = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    return {
        "top_k_latents": [(model, sae1, ioi.prompts[0], -1, 5), (model, sae0, ioi.prompts[1], 3, 10),
                          (model, sae1, ioi.prompts[2], 2, 60), (model, attn0, other.prompts[0], -1, 5),
                          (model, attn1, other.prompts[1], 4, 8), (model, attn1, other.prompts[2], -3, 3)],
        "latent_logit_effects": [(model, sae1, 5), (model, sae0, 200)],
        "max_activating_contexts": [(model, sae1, 7, corpus.tokens, 6, 32), (model, sae0, 100, corpus.tokens[:50], 10, 64)],
        "reconstruction_metrics": [(model, sae1, corpus.tokens[:16]), (model, sae0, corpus.tokens[16:40])],
        "latent_aurocs": [(flat, label), (small, torch.tensor([True, True, False, False, True]))],
    }


def cases_ch01(bk) -> dict[str, list[tuple]]:
    model, world = bk.model, bk.world
    sae0, sae1 = bk.saes["blocks.0.hook_resid_post"], bk.saes["blocks.1.hook_resid_post"]
    ioi, facts, ind = (world.task_batch("ioi", n=4, seed=0), world.task_batch("facts", n=3, seed=0),
                       world.task_batch("induction", n=4, seed=0))
    logits = model(ioi.tokens)
    a1 = _acts(model, sae1, ioi.tokens)
    zero1 = a1.clone()
    zero1[:, -1] = 0
    corrupted0, corrupted1 = _acts(model, sae0, ioi.corrupted_tokens), _acts(model, sae1, ioi.corrupted_tokens)
    active = (a1[:, -1] > 0).any(0).nonzero()[:, 0][:6]
    active3 = (a1[:, 3] > 0).any(0).nonzero()[:, 0][:4]
    means = _acts(model, sae1, world.corpus(n_seqs=16, seq_len=20, seed=0).tokens)[:, 1:].mean((0, 1))
    args = (ioi.tokens, ioi.answer_ids, ioi.distractor_ids)
    attn0 = bk.attn_saes["blocks.0.attn.hook_z"]
    span = ind.tokens.shape[1] // 2
    z_active = (_acts(model, attn0, ind.tokens)[:, span] > 0).float().mean(0).topk(3).indices
    iargs = (ind.tokens, ind.answer_ids, ind.distractor_ids)
    r0, r1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
    return {
        "logit_diff": [(logits, ioi.answer_ids, ioi.distractor_ids), (logits[:1], ioi.answer_ids[:1], ioi.answer_ids[:1]),
                       (model(facts.tokens), facts.answer_ids, facts.distractor_ids),
                       (logits, ioi.distractor_ids, ioi.answer_ids)],
        "ablation_effects": [(model, sae1, *args, active), (model, sae1, *args, active3, 3, means),
                             (model, sae1, *args, active, -1, means)],
        "attribution_patching": [(model, [sae1], *args, {r1: zero1}),
                                 (model, [sae0, sae1], *args, {r0: corrupted0, r1: corrupted1})],
        "integrated_gradients": [(model, sae1, *args, zero1, 4), (model, sae0, *args, corrupted0, 3)],
        "latent_to_latent_gradients": [(model, sae0, sae1, facts.tokens[:1], -1), (model, sae0, sae1, ioi.tokens[:1], 5)],
        "latent_to_logit_gradients": [(model, sae1, facts.tokens[:1], facts.answer_ids[:3]),
                                      (model, sae0, ioi.tokens[1:2], torch.tensor([5, 9]))],
        "token_to_latent_gradients": [(model, sae0, facts.tokens[:1], -1), (model, sae1, ioi.tokens[:1], 6)],
        "attn_latent_path_effects": [(model, attn0, *iargs, 1, 0, z_active, "k"), (model, attn0, *iargs, 1, 2, z_active[:2], "q"),
                                     (model, attn0, *iargs, 1, 1, z_active[:2], "v")],
    }


def cases_ch02(bk) -> dict[str, list[tuple]]:
    model, world, d = bk.model, bk.world, bk.dictionaries
    r0, a0, t0, r1, t1 = d["resid_sae", 0], d["attn_sae", 0], d["transcoder", 0], d["resid_sae", 1], d["transcoder", 1]
    every = list(d.values())
    ioi, ind, gt = (world.task_batch("ioi", n=4, seed=0), world.task_batch("induction", n=4, seed=0),
                    world.task_batch("greater_than", n=8, seed=0))
    means = mean_baseline(model, every, world.task_batch("ioi", n=16, seed=1).tokens)
    imeans = mean_baseline(model, every, world.task_batch("induction", n=16, seed=1).tokens)
    args = (ioi.tokens, ioi.answer_ids, ioi.distractor_ids)
    iargs = (ind.tokens, ind.answer_ids, ind.distractor_ids)
    nodes = [Node("resid_sae", 0, -1, 5), Node("attn_sae", 0, -1, "error"), Node("transcoder", 0, 3, 17),
             Node("attn_sae", 0, 2, 9), Node("resid_sae", 0, 4, "error")]
    inodes = [Node("attn_sae", 0, -1, "error"), Node("attn_sae", 0, -1, 3), Node("transcoder", 1, -1, "error"),
              Node("resid_sae", 1, 6, 40)]
    circuit = [Node("attn_sae", 0, -1, "error"), Node("resid_sae", 1, -1, "error"), Node("transcoder", 1, -1, "error"),
               Node("resid_sae", 0, -1, "error"), Node("transcoder", 0, -1, 2)]
    circuit_cases = [(model, every, circuit, *iargs, imeans), (model, every, circuit[:2], *args, means),
                     (model, [a0, t1], [circuit[0], circuit[2]], *iargs)]

    def hook(x):
        return x.cfg.metadata.hook_name

    return {
        "error_term": [(model, x, ioi.tokens) for x in every],
        "spliced_task_scores": [(model, [r0], ioi), (model, [a0, t1], gt, False), (model, every, ind, True), (model, [], ioi),
                                (model, [a0, r1], ind)],
        "ablate_nodes": [(model, [r0, a0, t0], *args, nodes), (model, [r0, a0, t0], *args, nodes, means),
                         (model, [r0, a0, t0], *args, nodes, means, True), (model, [a0, t1, r1], *iargs, inodes, imeans, False),
                         (model, [a0, t1, r1], *iargs, inodes, None, True), (model, [], *args, [])],
        "error_attribution": [(model, a0, *iargs), (model, t1, *args), (model, r1, *args, means.errors[hook(r1)]),
                              (model, a0, *args, means.errors[hook(a0)]), (model, t0, *iargs, imeans.errors[hook(t0)])],
        "faithfulness": circuit_cases,
        "completeness": circuit_cases,
        "position_precision_recall": [(nodes, torch.tensor([False, True, False, True, True, False, False, True])),
                                      (inodes + [Node("resid_sae", 1, 6, 41)], torch.tensor([False] * 6 + [True] * 5)),
                                      ([], torch.tensor([True, False])), (nodes, torch.zeros(8, dtype=torch.bool))],
    }


def differences(a: Any, b: Any, path: str = "out") -> list[str]:
    """How ``a`` (the entry's result) differs from ``b`` (the reference's); [] when equal to float rounding."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{path}: type {type(a).__name__} vs {type(b).__name__}"]
        if a.is_sparse or b.is_sparse:
            if not (a.is_sparse and b.is_sparse):
                return [f"{path}: sparse {a.is_sparse} vs {b.is_sparse}"]
            if a.shape != b.shape:
                return [f"{path}: shape {tuple(a.shape)} vs {tuple(b.shape)}"]
            a, b = a.coalesce(), b.coalesce()
            if a.indices().shape != b.indices().shape or not torch.equal(a.indices(), b.indices()):
                return [f"{path}: sparse pattern nnz {a._nnz()} vs {b._nnz()}"]
            a, b = a.values(), b.values()
        if a.shape != b.shape:
            return [f"{path}: shape {tuple(a.shape)} vs {tuple(b.shape)}"]
        if a.dtype != b.dtype:
            return [f"{path}: dtype {a.dtype} vs {b.dtype}"]
        if a.requires_grad != b.requires_grad:
            return [f"{path}: requires_grad {a.requires_grad} vs {b.requires_grad}"]
        if not a.is_floating_point():
            return [] if torch.equal(a, b) else [f"{path}: integer entries differ ({(a != b).sum().item()})"]
        if not torch.equal(a.isnan(), b.isnan()):
            return [f"{path}: NaN pattern differs"]
        scale = b.nan_to_num().abs().max().item() if b.numel() else 0.0
        gap = (a.double() - b.double()).nan_to_num().abs().max().item() if a.numel() else 0.0
        return [f"{path}: max abs diff {gap:.3g} (scale {scale:.3g})"] if gap > 1e-4 * max(scale, 1e-6) + 1e-6 else []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in b for d in differences(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        kinds = [] if isinstance(a, tuple) == isinstance(b, tuple) else [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
        if len(a) != len(b):
            return kinds + [f"{path}: len {len(a)} vs {len(b)}"]
        return kinds + [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if type(a) is not type(b):
        return [f"{path}: type {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, float):
        if math.isnan(a) and math.isnan(b):
            return []
        return [] if abs(a - b) <= 1e-4 * max(abs(b), 1e-6) + 1e-6 else [f"{path}: {a:.6g} vs {b:.6g}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main() -> None:
    chapter, only = sys.argv[1], sys.argv[2:]
    importlib.import_module(f"benchmarks.independent.{chapter}")
    reference = importlib.import_module(f"solutions.{chapter}")
    bk = load_backend("toy")
    model = bk.model
    torch.set_grad_enabled(False)
    cases = {"ch00_toolkit": cases_ch00, "ch01_attribution": cases_ch01, "ch02_error_nodes": cases_ch02}[chapter](bk)

    def state() -> tuple:
        return (tuple(model.acts_to_saes), sum(len(h.fwd_hooks) + len(h.bwd_hooks) for h in model.hook_dict.values()),
                torch.is_grad_enabled(), model.cfg.use_split_qkv_input,
                tuple(getattr(s, "use_error_term", None) for s in bk.dictionaries.values()))

    def restore() -> None:
        model.reset_saes()
        model.reset_hooks(including_permanent=True)
        torch.set_grad_enabled(False)
        model.set_use_split_qkv_input(False)
        for dictionary in bk.dictionaries.values():
            dictionary.use_error_term = False

    def copies(args: tuple) -> list:
        return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]

    for impl in IMPLEMENTATIONS:
        if impl.chapter != chapter or (only and impl.exercise not in only and impl.name not in only):
            continue
        notes = []
        for i, args in enumerate(cases[impl.exercise]):
            restore()
            expected = getattr(reference, impl.exercise)(*copies(args))
            restore()
            before, given = state(), copies(args)
            try:
                got = impl.fn(*given)
            except Exception as error:
                notes.append(f"case {i}: RAISES {type(error).__name__}: {str(error)[:100]}")
                restore()
                continue
            found = differences(got, expected)[:2]
            if state() != before:
                found.append(f"state left changed: {before} -> {state()}")
            if any(isinstance(a, torch.Tensor) and not torch.equal(a, b) for a, b in zip(given, args)):
                found.append("input mutated")
            restore()
            notes.append(f"case {i}: " + ("; ".join(found) if found else "EQUAL"))
        equal = all(n.endswith("EQUAL") for n in notes)
        print(f"[{'ok' if impl.correct == equal else 'PROBLEM'}] {'correct' if impl.correct else 'wrong  '} "
              f"{impl.exercise}.{impl.name}")
        for note in notes:
            print("      ", note)


if __name__ == "__main__":
    main()

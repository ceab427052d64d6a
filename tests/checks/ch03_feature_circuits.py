"""Checks of chapter 03 (Sparse feature circuits). Each runs your function on the checks' own
toy backend, watches what it does, and compares with known outputs recorded from the
reference; a failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or
a generic family of ``utils.course.compare``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tests.mistakes.ch03_feature_circuits import MISTAKES
from utils.backends import Backend
from utils.course.checking import backend, exercise_check, expect_tensor, fail, known, run, seed, signatures
from utils.circuits import dictionary_values, mean_baseline, node_attribution, rank_nodes
from utils.metrics import auroc
from utils.nodes import Node, output_hook

CHAPTER = "ch03_feature_circuits"


def _metric(batch: Any):
    from solutions.ch01_attribution import logit_diff

    return lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids)


def _targets(bk: Backend, dictionaries: list, downstream: Any, batch: Any, baseline: Any, k: int, key: str) -> list[Node]:
    """The k nodes of ``downstream`` with the largest attribution: drawn from the backend when
    known outputs are recorded, then stored, so near-ties cannot reorder them elsewhere."""
    with torch.no_grad():
        scores = node_attribution(bk.model, dictionaries, batch.tokens, _metric(batch), baseline)
    hook = downstream.cfg.metadata.hook_name
    ranked = rank_nodes({h: (s.mean(0) if h == hook else torch.zeros_like(s.mean(0))) for h, s in scores.items()},
                        dictionaries, k=k)
    return [Node.parse(text) for text in known(key, [str(node) for node in ranked])]


# ---------------------------------------------------------------------------------------
# 1. edge_effects


@exercise_check(CHAPTER)
def check_edge_effects(edge_effects: Any) -> None:
    bk = backend()
    model = bk.model
    every = list(bk.dictionaries.values())
    configs = [  # (upstream, downstream, dictionaries spliced, task, prompts, mean baseline?)
        (("resid_sae", 0), ("resid_sae", 1), every, "ioi", 3, True),
        (("attn_sae", 0), ("transcoder", 0), every, "induction", 2, False),
        (("transcoder", 1), ("resid_sae", 1), every, "facts", 1, True),
        (("attn_sae", 0), ("resid_sae", 0), [bk.dictionary("attn_sae", 0), bk.dictionary("transcoder", 0),
                                              bk.dictionary("resid_sae", 0)], "ioi", 2, True),
    ]
    for i, (up_key, down_key, dictionaries, task, n, mean) in enumerate(configs):
        upstream, downstream = bk.dictionary(*up_key), bk.dictionary(*down_key)
        batch = bk.world.task_batch(task, n, seed=seed(1 + i))
        baseline = mean_baseline(model, dictionaries, bk.world.task_batch(task, 16, seed=seed(11 + i)).tokens) if mean else None
        targets = _targets(bk, dictionaries, downstream, batch, baseline, 3, f"targets_{i}")
        if i == 0:  # a negative position and an error node
            targets = [Node(t.kind, t.layer, t.pos - batch.tokens.shape[1], t.index) for t in targets]
            targets.append(Node(*down_key, -1, "error"))
        args = (model, dictionaries, upstream, downstream, batch.tokens, _metric(batch), targets)
        got = run(edge_effects, bk, *args, baseline=baseline)
        what = f"edge effects {up_key[0]}{up_key[1]} -> {down_key[0]}{down_key[1]} ({task}, {n} prompts, " \
               f"{'mean' if mean else 'zero'} baseline, {len(targets)} targets)"
        expect_tensor(got, known(f"edges_{i}", got), name=what, dims="target pos d_up_plus_error",
                      mistakes=signatures(MISTAKES["edge_effects"], *args, baseline=baseline))


# ---------------------------------------------------------------------------------------
# 2. ablation_edges


def _raw_change(bk: Backend, dictionaries: list, upstream: Any, downstream: Any, tokens: Tensor, node: Node) -> Tensor:
    """The unthresholded mean change (the check's own computation, to find entries near the threshold)."""
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"

    def zero(acts: Tensor, hook: Any) -> Tensor:
        acts = acts.clone()
        acts[:, node.pos, node.index] = 0.0
        return acts

    with torch.no_grad(), bk.model.saes(saes=list(dictionaries), use_error_term=True):
        _, clean = bk.model.run_with_cache(tokens, names_filter=down_name)
        with bk.model.hooks(fwd_hooks=[(up_name, zero)]):
            _, ablated = bk.model.run_with_cache(tokens, names_filter=down_name)
    return (ablated[down_name] - clean[down_name]).mean(0)


@exercise_check(CHAPTER)
def check_ablation_edges(ablation_edges: Any) -> None:
    bk = backend()
    model = bk.model
    every = list(bk.dictionaries.values())
    configs = [  # (upstream, downstream, dictionaries, task, prompts, position of the ablated latent, k)
        (("resid_sae", 0), ("resid_sae", 1), every, "ioi", 3, -1, -3),
        (("attn_sae", 0), ("transcoder", 0), [bk.dictionary("attn_sae", 0), bk.dictionary("transcoder", 0)], "induction", 2, 8, -4),
        (("transcoder", 0), ("attn_sae", 1), every, "facts", 1, 2, -2),
    ]
    for i, (up_key, down_key, dictionaries, task, n, pos, k) in enumerate(configs):
        upstream, downstream = bk.dictionary(*up_key), bk.dictionary(*down_key)
        tokens = bk.world.task_batch(task, n, seed=seed(21 + i)).tokens
        acts, _ = dictionary_values(model, [upstream], tokens)[upstream.cfg.metadata.hook_name]
        latent = known(f"latent_{i}", int(acts[:, pos].mean(0).argmax()))  # the most active latent there
        node = Node(*up_key, pos, latent)
        args = (model, dictionaries, upstream, downstream, tokens, node, k)
        got = run(ablation_edges, bk, *args)
        want = known(f"change_{i}", got)
        if isinstance(got, Tensor) and got.shape == want.shape:  # entries at the threshold may fall either side
            near = ((_raw_change(bk, dictionaries, upstream, downstream, tokens, node).abs() - 2.0 ** k).abs()
                    < 1e-3 * 2.0 ** k)
            got = torch.where(near.to(got.device), want.to(got.device, got.dtype), got)
        expect_tensor(got, want, name=f"downstream changes {up_key[0]}{up_key[1]} -> {down_key[0]}{down_key[1]} "
                      f"({task}, latent at position {pos}, threshold 2**{k})", dims="pos d_down",
                      mistakes=signatures(MISTAKES["ablation_edges"], *args))


# ---------------------------------------------------------------------------------------
# 3. probe_latent_effects and gender_latents


def _pooled_latents(bk: Backend, dictionary: Any, bios: Any) -> Tensor:
    """Each bio's latents averaged over the positions after BOS, as in the notebook."""
    acts, _ = dictionary_values(bk.model, [dictionary], bios.tokens)[dictionary.cfg.metadata.hook_name]
    return acts[:, 1:].mean(1)


@exercise_check(CHAPTER)
def check_probe_latent_effects(probe_latent_effects: Any) -> None:
    bk = backend()
    configs = [(("resid_sae", 1), 8, True), (("resid_sae", 0), 1, False), (("transcoder", 1), 4, True), (("resid_sae", 1), 6, False)]
    for i, (key, n, mean) in enumerate(configs):
        dictionary = bk.dictionary(*key)
        bios = bk.world.bios(n, correlation=1.0, seed=seed(31 + i))
        generator = torch.Generator().manual_seed(seed(41 + i))
        weight = torch.randn(bk.model.cfg.d_model, generator=generator).to(dictionary.W_dec)
        latents = _pooled_latents(bk, dictionary, bios)
        baseline = _pooled_latents(bk, dictionary, bk.world.bios(16, 1.0, seed=seed(61 + i))).mean(0) if mean else None
        got = run(probe_latent_effects, bk, weight, dictionary, latents, baseline)
        none = {} if mean else {"this sets each latent to its mean over the batch: baseline=None means zero, a change of -f_i":
                                (latents.mean(0) - latents) * (dictionary.W_dec @ weight)}
        expect_tensor(got, known(f"effects_{i}", got), dims="batch d_sae",
                      name=f"probe effects ({key[0]}{key[1]}, {n} bios, {'mean' if mean else 'zero'} baseline)",
                      mistakes={**signatures(MISTAKES["probe_latent_effects"], weight, dictionary, latents, baseline), **none})


@exercise_check(CHAPTER)
def check_gender_latents(gender_latents: Any) -> None:
    bk = backend()
    for i, (key, n) in enumerate([(("resid_sae", 1), 200), (("resid_sae", 0), 120)]):
        dictionary = bk.dictionary(*key)
        bios = bk.world.bios(n, correlation=0.0, seed=seed(51 + i))
        latents = _pooled_latents(bk, dictionary, bios)
        # candidates: the 12 latents most active on average, plus the 4 best at gender
        scores = auroc(latents, torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1))
        pool = set(latents.mean(0).topk(12).indices.tolist()) | set((scores[0] - 0.5).abs().topk(4).indices.tolist())
        candidates = known(f"candidates_{i}", sorted(pool))
        shuffle = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed(81 + i))).tolist()
        candidates = [candidates[j] for j in shuffle]  # in no order: the answer must still be sorted
        got = run(gender_latents, bk, latents, bios, candidates)
        if not isinstance(got, (list, tuple)) or not all(isinstance(j, int) and not isinstance(j, bool) for j in got):
            fail(f"return a list of latent ids (ints), got {type(got).__name__}"
                 + (f" of {type(got[0]).__name__}" if isinstance(got, (list, tuple)) and got else ""))
        want = set(known(f"marked_{i}", sorted(got)))
        gender, profession = (scores[:, candidates] - 0.5).abs()
        margin = torch.minimum((gender - 0.2).abs(), (gender - profession).abs())
        unsure = {c for c, m in zip(candidates, margin.tolist()) if m < 0.02}  # at the boundary: either is right
        if (set(got) ^ want) - unsure and all(0 <= j < len(candidates) for j in got) and \
                not ({candidates[j] for j in got} ^ want) - unsure:
            fail(f"{key[0]}{key[1]}: you returned positions in `candidates` ({sorted(got)}): return the latent ids "
                 f"themselves, candidates[j]")
        outside = sorted(set(got) - set(candidates))
        if outside:
            fail(f"{key[0]}{key[1]}: you marked latents that are not candidates ({outside[:5]}): judge only `candidates`")
        if list(got) != sorted(got) and not (set(got) ^ want) - unsure:
            fail(f"{key[0]}{key[1]}: the right latents, but not in increasing order ({list(got)[:6]}...): return them sorted")
        if (set(got) ^ want) - unsure:
            for diagnosis, result in signatures(MISTAKES["gender_latents"], latents, bios, candidates).items():
                if result() is not None and set(result()) == set(got):
                    fail(diagnosis)

            def show(ids: set[int]) -> str:
                return ", ".join(f"{j} (gender AUROC {scores[0, j].item():.2f}, profession {scores[1, j].item():.2f}{why(j)})"
                                 for j in sorted(ids)) or "none"

            def why(j: int) -> str:  # the rule a wrongly marked latent breaks
                g, p = abs(scores[0, j].item() - 0.5), abs(scores[1, j].item() - 0.5)
                if j in want:
                    return ""
                return f": |AUROC_gender - 0.5| = {g:.2f} < 0.2" if g < 0.2 else f": profession separates it as well ({p:.2f} >= {g:.2f})"
            fail(f"{key[0]}{key[1]}, {n} balanced bios: you marked {show(set(got) - want)} wrongly and missed "
                 f"{show(want - set(got))}", header=f"{key[0]}{key[1]}, {n} balanced bios")

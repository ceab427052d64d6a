"""Checks of chapter 01 (Latent attribution). Each runs your function on the toy backend and
compares with known outputs recorded from the reference; a failure names the likely mistake."""
from __future__ import annotations

from typing import Any, Callable

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.attribution import splice_for_gradients
from utils.backends import Backend, load_backend
from utils.checking import CheckFailure, call, exercise_check, expect_tensor, fail, known

CHAPTER = "ch01_attribution"
RESID = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def _toy() -> Backend:
    bk = load_backend("toy")
    bk.model.reset_saes()
    bk.model.reset_hooks()
    return bk


def _expect_detached(model: HookedSAETransformer) -> None:
    if model.acts_to_saes:
        model.reset_saes()
        fail("your function left an SAE attached to the model (hooks are global state): "
             "call model.reset_saes() in a `finally` before returning")


def _call_without_grad(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with gradients disabled, as in the notebook; explain a missing enable_grad."""
    try:
        with torch.no_grad():
            return call(fn, *args, **kwargs)
    except CheckFailure as failure:
        if "does not require grad" in str(failure):
            fail("gradients are disabled here (the notebook turns them off): run your forward and "
                 "backward pass inside `with torch.enable_grad():`")
        raise


def _metric(logits: Tensor, answer_ids: Tensor, distractor_ids: Tensor) -> Tensor:
    final = logits[:, -1]
    return final[torch.arange(len(answer_ids)), answer_ids] - final[torch.arange(len(answer_ids)), distractor_ids]


def _answer_logit(logits: Tensor, answer_ids: Tensor, distractor_ids: Tensor) -> Tensor:
    return logits[:, -1][torch.arange(len(answer_ids)), answer_ids]


def _latents(model: HookedSAETransformer, sae: SAE, tokens: Tensor) -> Float[Tensor, "batch pos d_sae"]:
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=[sae], names_filter=name)
    return cache[name]


# ---------------------------------------------------------------------------------------
# 1. logit_diff


@exercise_check(CHAPTER)
def check_logit_diff(logit_diff: Any) -> None:
    bk = _toy()
    batch = bk.world.task_batch("ioi", 6, seed=1)
    with torch.no_grad():
        logits = bk.model(batch.tokens)
    got = call(logit_diff, logits.clone(), batch.answer_ids.clone(), batch.distractor_ids.clone())
    first = logits[:, :1]
    mistakes = {
        "wrong position: this reads the logits at position 0 (BOS); the answer is predicted at the last position":
            _metric(first, batch.answer_ids, batch.distractor_ids),
        "these are differences of probabilities: use the logits themselves":
            _metric(logits.softmax(-1), batch.answer_ids, batch.distractor_ids),
        "this is the answer's logit alone: subtract the distractor's logit":
            _answer_logit(logits, batch.answer_ids, batch.distractor_ids),
    }
    expect_tensor(got, known("metric", got), name="logit difference", dims="batch", mistakes=mistakes)


# ---------------------------------------------------------------------------------------
# 2. ablation_effects


def _ablate(model: HookedSAETransformer, sae: SAE, batch: Any, latents: Tensor, pos: int, values: Tensor,
            error_term: bool = True, every_pos: bool = False) -> Tensor:
    """Effects of setting each latent to ``values[latent]``; options reproduce mistakes."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    model.add_sae(sae, use_error_term=error_term)
    try:
        with torch.no_grad():
            clean = _metric(model(batch.tokens), batch.answer_ids, batch.distractor_ids)
            effects = []
            for latent in latents.tolist():
                def hook(acts: Tensor, hook: Any) -> Tensor:
                    if every_pos:
                        acts[:, :, latent] = values[latent]
                    else:
                        acts[:, pos, latent] = values[latent]
                    return acts
                logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(name, hook)])
                effects.append(_metric(logits, batch.answer_ids, batch.distractor_ids) - clean)
    finally:
        model.reset_saes()
    return torch.stack(effects, -1)


@exercise_check(CHAPTER)
def check_ablation_effects(ablation_effects: Any) -> None:
    bk = _toy()
    model, sae = bk.model, bk.saes[RESID[0]]
    batch = bk.world.task_batch("ioi", 4, seed=2)
    acts = _latents(model, sae, batch.tokens)
    latents = acts[:, -1].sum(0).topk(6).indices.sort().values
    corpus = bk.world.corpus(n_seqs=16, seq_len=24, seed=2).tokens
    mean = _latents(model, sae, corpus)[:, 1:].mean((0, 1))
    zeros = torch.zeros_like(mean)
    for i, (pos, baseline) in enumerate([(-1, None), (-1, mean), (3, mean)]):
        got = _call_without_grad(ablation_effects, model, sae, batch.tokens, batch.answer_ids,
                                 batch.distractor_ids, latents.clone(), pos=pos, baseline=baseline)
        _expect_detached(model)
        values = zeros if baseline is None else baseline
        mistakes = {
            "forgot the error term: splice with add_sae(sae, use_error_term=True) so the clean run is the model's own":
                _ablate(model, sae, batch, latents, pos, values, error_term=False),
            f"this ablates the latents at every position; only position {pos} should change":
                _ablate(model, sae, batch, latents, pos, values, every_pos=True),
        }
        if baseline is not None:
            mistakes["this ablates to zero although a baseline was given: set each latent to baseline[latent]"] = (
                _ablate(model, sae, batch, latents, pos, zeros))
        kind = "zero" if baseline is None else "mean"
        expect_tensor(got, known(f"effects_{i}", got), name=f"{kind} ablation effects (pos {pos})",
                      dims="batch n_latents", mistakes=mistakes)


# ---------------------------------------------------------------------------------------
# 3. attribution_patching


def _gradients(model: HookedSAETransformer, saes: list[SAE], batch: Any, metric: Callable[..., Tensor] = _metric,
               repaired: bool = True, scale: float = 1.0) -> dict[str, Tensor]:
    """Gradient of ``scale * sum(metric)`` w.r.t. every SAE's latents; SAELens default if not ``repaired``."""
    hooks = [s.cfg.metadata.hook_name for s in saes]
    with torch.enable_grad():
        if repaired:
            with splice_for_gradients(model, saes) as nodes:
                (scale * metric(model(batch.tokens), batch.answer_ids, batch.distractor_ids).sum()).backward()
            return {h: nodes[f"{h}.latents"].grad for h in hooks}
        kept = {}

        def keep(acts: Tensor, hook: Any) -> None:
            acts.retain_grad()
            kept[hook.name] = acts
        for s in saes:
            model.add_sae(s, use_error_term=True)
        try:
            logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(f"{h}.hook_sae_acts_post", keep) for h in hooks])
            (scale * metric(logits, batch.answer_ids, batch.distractor_ids).sum()).backward()
        finally:
            model.reset_saes()
        return {h: kept[f"{h}.hook_sae_acts_post"].grad for h in hooks}


@exercise_check(CHAPTER)
def check_attribution_patching(attribution_patching: Any) -> None:
    bk = _toy()
    model = bk.model
    saes = [bk.saes[h] for h in RESID]
    batch = bk.world.task_batch("ioi", 4, seed=3)
    clean = {h: _latents(model, bk.saes[h], batch.tokens) for h in RESID}
    patched = {h: _latents(model, bk.saes[h], batch.corrupted_tokens) for h in RESID}
    got = _call_without_grad(attribution_patching, model, saes, batch.tokens, batch.answer_ids,
                             batch.distractor_ids, {h: p.clone() for h, p in patched.items()})
    _expect_detached(model)
    if not isinstance(got, dict):
        fail(f"expected a dict from hook name to attributions, got {type(got).__name__}")
    missing = [h for h in RESID if h not in got]
    if missing:
        fail(f"the dict lacks the hooks {missing}: return one entry per SAE, keyed by its hook name")
    right = _gradients(model, saes, batch)
    variants = {
        "gradient stopped at the error term: SAELens computes it under no_grad, so the earlier SAE's latents "
        "got the gradient of the reconstruction only; use splice_for_gradients": _gradients(model, saes, batch, repaired=False),
        "gradient of the wrong metric: backpropagate the logit difference, not the answer's logit alone":
            _gradients(model, saes, batch, metric=_answer_logit),
        "divided by the batch size: backpropagate the metric's sum over prompts, not its mean":
            _gradients(model, saes, batch, scale=1 / len(batch.tokens)),
    }
    for hook in reversed(RESID):  # the last SAE first: its gradient does not depend on the error path
        delta = patched[hook] - clean[hook]
        mistakes = {message: grads[hook] * delta for message, grads in variants.items()}
        mistakes["forgot to multiply the gradient by (patched - clean)"] = right[hook]
        mistakes["multiplied by the patched latents alone: multiply by (patched - clean)"] = right[hook] * patched[hook]
        expect_tensor(got[hook], known(hook, got[hook]), name=f"attributions[{hook!r}]",
                      dims="batch pos d_sae", mistakes=mistakes, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# 4. integrated_gradients


def _ig(model: HookedSAETransformer, sae: SAE, batch: Any, clean: Tensor, patched: Tensor,
        alphas: list[float]) -> Tensor:
    """Mean gradient of the metric along the path from clean to patched, at ``alphas``."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    total = torch.zeros_like(clean)
    model.add_sae(sae, use_error_term=True)
    try:
        for alpha in alphas:
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(name, lambda acts, hook: point)])
                _metric(logits, batch.answer_ids, batch.distractor_ids).sum().backward()
            total += point.grad
    finally:
        model.reset_saes()
    return total / len(alphas)


@exercise_check(CHAPTER)
def check_integrated_gradients(integrated_gradients: Any) -> None:
    bk = _toy()
    model, sae = bk.model, bk.saes[RESID[1]]
    batch = bk.world.task_batch("ioi", 3, seed=4)
    clean = _latents(model, sae, batch.tokens)
    patched = torch.zeros_like(clean)  # a large move, where the path matters
    steps = 2
    got = _call_without_grad(integrated_gradients, model, sae, batch.tokens, batch.answer_ids,
                             batch.distractor_ids, patched.clone(), steps=steps)
    _expect_detached(model)
    midpoints = [(k + 0.5) / steps for k in range(steps)]
    mean_grad = _ig(model, sae, batch, clean, patched, midpoints)
    delta = patched - clean
    mistakes = {
        "these are left endpoints alpha = k/steps: use the midpoints (k + 1/2)/steps":
            delta * _ig(model, sae, batch, clean, patched, [k / steps for k in range(steps)]),
        "this equals attribution patching (all gradients at the clean point, alpha = 0): move along the path":
            delta * _ig(model, sae, batch, clean, patched, [0.0]),
        "summed the gradients over steps without dividing by steps": delta * mean_grad * steps,
        "forgot to multiply the averaged gradient by (patched - clean)": mean_grad,
    }
    expect_tensor(got, known("ig", got), name="integrated gradients", dims="batch pos d_sae",
                  mistakes=mistakes, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# 5-7. Sparse gradients over active latents


def _expect_sparse(got: Any, name: str, shape: tuple[int, ...], dims: str) -> Tensor:
    """``got`` as a coalesced sparse COO tensor of ``shape``; diagnose dense or malformed results."""
    if not isinstance(got, Tensor):
        fail(f"{name} should be a sparse torch.Tensor (torch.sparse_coo_tensor), got {type(got).__name__}")
    if not got.is_sparse:
        fail(f"{name} is a dense tensor of shape {list(got.shape)}: return a sparse COO tensor "
             "(torch.sparse_coo_tensor(indices, values, shape)) holding active latents only")
    if tuple(got.shape) != shape:
        dim_names = dims.split()
        fail(f"{name}: expected shape [{', '.join(f'{d}={n}' for d, n in zip(dim_names, shape))}], got {list(got.shape)}")
    return got.detach().cpu().coalesce()


def _expect_sparse_values(got: Tensor, key: str, name: str, dims: str, mistakes: dict[str, Tensor]) -> None:
    """Compare the sparse ``got`` with the known (indices, values), via dense tensors for diagnoses."""
    want_indices = known(f"{key}_indices", got.indices())
    want_values = known(f"{key}_values", got.values())
    want = torch.sparse_coo_tensor(want_indices, want_values, got.shape, check_invariants=True).to_dense()
    dense = got.to_dense()
    if not torch.allclose(dense, want, rtol=1e-4, atol=1e-6):
        expect_tensor(dense, want, name=name, dims=dims, mistakes=mistakes, rtol=1e-4, atol=1e-6)
    extra = set(map(tuple, got.indices().T.tolist())) - set(map(tuple, want_indices.T.tolist()))
    if extra:
        fail(f"{name} stores {len(extra)} entries outside the active latents (e.g. at index {list(sorted(extra)[0])}): "
             "keep only latents that are active")


def _dense_jacobian(model: HookedSAETransformer, up_sae: SAE, down_sae: SAE, tokens: Tensor, pos: int,
                    down_pos: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Dense d f_down(down_pos) / d f_up: [d_down, n_pos, d_up], with the up and down activations."""
    down_pos = pos if down_pos is None else down_pos
    kept = {}

    def keep(x: Tensor, hook: Any) -> None:
        kept["x"] = x
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(down_sae.cfg.metadata.hook_name, keep)])
        up = nodes[f"{up_sae.cfg.metadata.hook_name}.latents"]
        down = down_sae.encode(kept["x"][0, down_pos])
        rows = [torch.autograd.grad(down[i], up, retain_graph=True)[0][0] for i in range(down.shape[0])]
    return torch.stack(rows), up.detach()[0], down.detach()


@exercise_check(CHAPTER)
def check_latent_to_latent_gradients(latent_to_latent_gradients: Any) -> None:
    bk = _toy()
    model, up_sae, down_sae = bk.model, bk.saes[RESID[0]], bk.attn_saes["blocks.1.attn.hook_z"]
    tokens = bk.world.task_batch("facts", 2, seed=5).tokens[:1]
    down_acts = _latents(model, down_sae, tokens)[0, 1:-1]  # a middle position with active latents
    n_pos, pos = tokens.shape[1], known("pos", int((down_acts > 0).sum(-1).argmax()) + 1)
    shape = (down_sae.cfg.d_sae, n_pos, up_sae.cfg.d_sae)
    got = _call_without_grad(latent_to_latent_gradients, model, up_sae, down_sae, tokens.clone(), pos)
    _expect_detached(model)
    got = _expect_sparse(got, "J", shape, "d_sae_down n_pos d_sae_up")
    full, up, down = _dense_jacobian(model, up_sae, down_sae, tokens, pos)
    down_active = (down > 0)[:, None, None]
    up_active = (up > 0) & (torch.arange(n_pos) <= pos)[:, None]
    right = full * down_active * up_active
    same_pos = torch.zeros_like(right)
    same_pos[:, pos] = right[:, pos]
    mistakes = {
        "J has gradients for inactive upstream latents: keep only latents j active at p": full * down_active * (torch.arange(n_pos) <= pos)[None, :, None],
        f"J only holds upstream position {pos}: latents at every earlier position p <= pos feed the downstream one": same_pos,
        "J's dims look swapped: index it [downstream latent, position, upstream latent]": right.permute(2, 1, 0),
    }
    _expect_sparse_values(got, "J", "J", "d_sae_down n_pos d_sae_up", mistakes)


@exercise_check(CHAPTER)
def check_latent_to_logit_gradients(latent_to_logit_gradients: Any) -> None:
    bk = _toy()
    model, sae = bk.model, bk.saes[RESID[0]]
    batch = bk.world.task_batch("facts", 2, seed=6)
    tokens = batch.tokens[:1]
    token_ids = torch.stack([batch.answer_ids[0], batch.distractor_ids[0], batch.answer_ids[1]])
    shape = (len(token_ids), tokens.shape[1], sae.cfg.d_sae)
    got = _call_without_grad(latent_to_logit_gradients, model, sae, tokens.clone(), token_ids.clone())
    _expect_detached(model)
    got = _expect_sparse(got, "G", shape, "k n_pos d_sae")
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        logits = model(tokens)[0, -1]
        latents = nodes[f"{sae.cfg.metadata.hook_name}.latents"]
        grads = torch.stack([torch.autograd.grad(logits[t], latents, retain_graph=True)[0][0] for t in token_ids.tolist()])
        logprobs = logits.log_softmax(-1)
        lp_grads = torch.stack([torch.autograd.grad(logprobs[t], latents, retain_graph=True)[0][0] for t in token_ids.tolist()])
    active = latents.detach()[0] > 0
    direct = einops.einsum(sae.W_dec.detach(), model.W_U[:, token_ids], "d_sae d_model, d_model k -> k d_sae")
    mistakes = {
        "G has gradients for inactive latents: keep only latents active at each position": grads,
        "this is the gradient of log-probabilities: differentiate the logits": lp_grads * active,
        "this is the direct path W_dec @ W_U only: backpropagate through every later layer": direct[:, None] * active,
    }
    _expect_sparse_values(got, "G", "G", "k n_pos d_sae", mistakes)


def _token_grads(model: HookedSAETransformer, sae: SAE, tokens: Tensor, pos: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """d f(pos) / d input for every latent: [d_sae, n_pos, d_model], the embeddings, and the mask of A."""
    kept = {}

    def leaf(x: Tensor, hook: Any) -> Tensor:
        kept[hook.name] = x.detach().requires_grad_(True)
        return kept[hook.name]

    def keep(x: Tensor, hook: Any) -> None:
        kept["x"] = x
    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", leaf), ("hook_pos_embed", leaf),
                                                (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])
        grads = torch.stack([torch.autograd.grad(latents[i], kept["hook_embed"], retain_graph=True)[0][0]
                             for i in range(latents.shape[0])])  # the same for hook_pos_embed: they are summed
    mask = (latents.detach() > 0)[:, None] * (torch.arange(tokens.shape[1]) <= pos % tokens.shape[1])[None]
    return grads, kept["hook_embed"].detach()[0], kept["hook_pos_embed"].detach()[0], mask


@exercise_check(CHAPTER)
def check_token_to_latent_gradients(token_to_latent_gradients: Any) -> None:
    bk = _toy()
    model, sae = bk.model, bk.saes[RESID[0]]
    tokens = bk.world.task_batch("facts", 2, seed=7).tokens[1:]
    n_pos, pos = tokens.shape[1], 3
    got = _call_without_grad(token_to_latent_gradients, model, sae, tokens.clone(), pos)
    _expect_detached(model)
    got = _expect_sparse(got, "A", (sae.cfg.d_sae, n_pos), "d_sae n_pos")
    g, embed, pos_embed, mask = _token_grads(model, sae, tokens, pos)
    g_last, _, _, mask_last = _token_grads(model, sae, tokens, -1)
    mistakes = {
        "A uses the token embedding alone: the model's input at p is hook_embed + hook_pos_embed (blocks.0.hook_resid_pre)":
            (g * embed).sum(-1) * mask,
        "A holds the gradient's norm: multiply the gradient by the input e(p) and sum over d_model (gradient x input)":
            g.norm(dim=-1) * mask,
        f"wrong position: A explains the latents at the last position; explain those at pos={pos}":
            (g_last * (embed + pos_embed)).sum(-1) * mask_last,
    }
    _expect_sparse_values(got, "A", "A", "d_sae n_pos", mistakes)


# ---------------------------------------------------------------------------------------
# 8. attn_latent_path_effects


def _path_effects(model: HookedSAETransformer, attn_sae: SAE, batch: Any, layer: int, head: int, latents: Tensor,
                  input: str, heads: slice | int | None = None, scale: bool = True, sign: float = -1.0,
                  all_paths: bool = False) -> Tensor:
    """Path-patching effects; options reproduce mistakes."""
    name = f"{attn_sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(batch.tokens, saes=[attn_sae], names_filter=name)
        acts = cache[name]
        clean = _metric(model(batch.tokens), batch.answer_ids, batch.distractor_ids)
        source = int(attn_sae.cfg.metadata.hook_name.split(".")[1])
        model.set_use_split_qkv_input(True)
        try:
            effects = []
            for latent in latents.tolist():
                f = acts[..., latent, None] if scale else (acts[..., latent, None] > 0).float()
                z = einops.rearrange(f * attn_sae.W_dec[latent], "b p (n h) -> b p n h", n=model.cfg.n_heads)
                contribution = einops.einsum(z, model.W_O[source], "b p n h, n h d -> b p d")

                def patch(x: Tensor, hook: Any) -> Tensor:
                    if all_paths:
                        return x + sign * contribution
                    if heads is None:
                        x[:, :, head] += sign * contribution
                    else:
                        x[:, :, heads] += sign * contribution[:, :, None]
                    return x
                hook = f"blocks.{layer}.hook_resid_pre" if all_paths else f"blocks.{layer}.hook_{input}_input"
                logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(hook, patch)])
                effects.append(_metric(logits, batch.answer_ids, batch.distractor_ids) - clean)
        finally:
            model.set_use_split_qkv_input(False)
    return torch.stack(effects, -1)


@exercise_check(CHAPTER)
def check_attn_latent_path_effects(attn_latent_path_effects: Any) -> None:
    bk = _toy()
    model, attn_sae = bk.model, bk.attn_saes["blocks.0.attn.hook_z"]
    batch = bk.world.task_batch("induction", 3, seed=8)
    name = "blocks.0.attn.hook_z.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(batch.tokens, saes=[attn_sae], names_filter=name)
    latents = cache[name].sum((0, 1)).topk(4).indices.sort().values
    for i, (head, inp) in enumerate([(0, "k"), (model.cfg.n_heads - 1, "v")]):
        got = _call_without_grad(attn_latent_path_effects, model, attn_sae, batch.tokens, batch.answer_ids,
                                 batch.distractor_ids, 1, head, latents.clone(), input=inp)
        _expect_detached(model)
        if model.cfg.use_split_qkv_input:
            model.set_use_split_qkv_input(False)
            fail("your function left use_split_qkv_input on (global state): restore it in a `finally`")
        mistakes = {
            "this removes the latent from every head's input: patch head `head` only":
                _path_effects(model, attn_sae, batch, 1, head, latents, inp, heads=slice(None)),
            "this removes the unscaled decoder direction: scale d_j by the latent's activation f_j":
                _path_effects(model, attn_sae, batch, 1, head, latents, inp, scale=False),
            "this removes the latent from the residual stream, i.e. from every path: patch one head's input only":
                _path_effects(model, attn_sae, batch, 1, head, latents, inp, all_paths=True),
            "this adds the latent's contribution instead of removing it":
                _path_effects(model, attn_sae, batch, 1, head, latents, inp, sign=1.0),
        }
        expect_tensor(got, known(f"effects_{i}", got), name=f"path effects (head 1.{head}, {inp})",
                      dims="batch n_latents", mistakes=mistakes)

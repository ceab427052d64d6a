"""Checks of chapter 01 (Latent attribution). Each runs your function on the checks' own toy
backend, watches what it does, and compares with known outputs recorded from the reference;
a failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or a generic
family of ``utils.course.compare``)."""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from tests.mistakes.ch01_attribution import MISTAKES
from utils.course.checking import (
    backend,
    counted_from_the_end,
    exercise_check,
    expect_sparse,
    expect_tensor,
    fail,
    known,
    run,
    seed,
    signatures,
)
from utils.course.compare import tolerance

CHAPTER = "ch01_attribution"
RESID = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def _latents(model: HookedSAETransformer, sae: SAE, tokens: Tensor) -> Float[Tensor, "batch pos d_sae"]:
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=[sae], names_filter=name)
    return cache[name]


def _near_zero(acts: Tensor) -> Tensor:
    """Latents within float noise of zero: active on one machine, off on another."""
    return (acts > 0) & (acts < tolerance().atol * acts.abs().max())


# ---------------------------------------------------------------------------------------
# 1. logit_diff


@exercise_check(CHAPTER)
def check_logit_diff(logit_diff: Any) -> None:
    bk = backend()
    for i, (n, corrupted) in enumerate([(6, False), (1, False), (5, True)]):
        batch = bk.world.task_batch("ioi", n, seed=seed(1 + i))
        with torch.no_grad():  # on corrupted prompts the model often prefers the distractor: negative differences
            logits = bk.model(batch.corrupted_tokens if corrupted else batch.tokens)
        args = (logits, batch.answer_ids, batch.distractor_ids)
        got = run(logit_diff, bk, *args)
        expect_tensor(got, known(f"metric_{i}", got), dims="batch",
                      name=f"logit difference ({n} {'corrupted ' if corrupted else ''}prompts)",
                      mistakes=signatures(MISTAKES["logit_diff"], *args))


# ---------------------------------------------------------------------------------------
# 2. ablation_effects


@exercise_check(CHAPTER)
def check_ablation_effects(ablation_effects: Any) -> None:
    bk = backend()
    model = bk.model
    corpus = bk.world.corpus(n_seqs=16, seq_len=24, seed=seed(2)).tokens
    # The first three share prompts and latents: zero and mean baseline at the last position, then
    # the mean baseline at position 3, so that an ignored `pos` or `baseline` shows.
    configs = [(bk.saes[RESID[0]], 4, -1, False, 2), (bk.saes[RESID[0]], 4, -1, True, 2), (bk.saes[RESID[0]], 4, 3, True, 2),
               (bk.attn_saes["blocks.1.attn.hook_z"], 1, -1, False, 5)]
    results, wants = [], []
    for i, (sae, n, pos, mean_baseline, draw) in enumerate(configs):
        batch = bk.world.task_batch("ioi", n, seed=seed(draw))
        acts = _latents(model, sae, batch.tokens)
        if i < 3:  # the strongest latents at the last position and at position 3: each case moves some
            latents = torch.cat([acts[:, -1].sum(0).topk(3).indices, acts[:, 3].sum(0).topk(4).indices]).unique()[:6].sort().values
        else:
            latents = acts[:, pos].sum(0).topk(6).indices.sort().values
        baseline = _latents(model, sae, corpus)[:, 1:].mean((0, 1)) if mean_baseline else None
        args = (model, sae, batch.tokens, batch.answer_ids, batch.distractor_ids, latents)
        got = run(ablation_effects, bk, *args, pos=pos, baseline=baseline)
        results.append(got)
        wants.append(known(f"effects_{i}", got))
        others = {"this is the zero-ablation answer although a baseline was given: set each latent to baseline[latent]":
                  wants[0]} if i == 1 else {
                  "this is the answer at the last position: `pos` was ignored (ablate position `pos` only)": wants[1]} if i == 2 else {}
        kind = "mean" if mean_baseline else "zero"
        expect_tensor(got, wants[i], name=f"{kind} ablation effects ({sae.cfg.metadata.hook_name}, pos {pos})", dims="batch n_latents",
                      mistakes={**signatures(MISTAKES["ablation_effects"], *args, pos=pos, baseline=baseline), **others},
                      retries=counted_from_the_end(lambda p: run(ablation_effects, bk, *args, pos=p, baseline=baseline),
                                                   pos, batch.tokens.shape[1]))


# ---------------------------------------------------------------------------------------
# 3. attribution_patching


@exercise_check(CHAPTER)
def check_attribution_patching(attribution_patching: Any) -> None:
    bk = backend()
    model = bk.model
    configs = [([bk.saes[h] for h in RESID], 4, "corrupted", 3), ([bk.attn_saes["blocks.0.attn.hook_z"], bk.saes[RESID[1]]], 1, "zero", 4),
               ([bk.saes[h] for h in RESID], 4, "zero", 3)]  # the first prompts, patched with zeros
    wants: list[dict[str, Tensor]] = []
    for i, (saes, n, patch, draw) in enumerate(configs):
        batch = bk.world.task_batch("ioi", n, seed=seed(draw))
        hooks = [s.cfg.metadata.hook_name for s in saes]
        clean = {h: _latents(model, s, batch.tokens) for h, s in zip(hooks, saes)}
        patched = ({h: _latents(model, s, batch.corrupted_tokens) for h, s in zip(hooks, saes)} if patch == "corrupted"
                   else {h: torch.zeros_like(c) for h, c in clean.items()})
        args = (model, saes, batch.tokens, batch.answer_ids, batch.distractor_ids, patched)
        got = run(attribution_patching, bk, *args)
        if not isinstance(got, dict):
            fail(f"expected a dict from hook name to attributions, got {type(got).__name__}")
        missing = [h for h in hooks if h not in got]
        if missing:
            fail(f"the dict lacks the hooks {missing}: return one entry per SAE, keyed by its hook name")
        mistakes = signatures(MISTAKES["attribution_patching"], *args)
        wants.append({hook: known(f"{hook}_{i}", got[hook]) for hook in hooks})
        for hook in reversed(hooks):  # the last SAE first: its gradient does not depend on the error path
            ignored = {"this is the attribution for patched = 0 (zero ablation): use the `patched` latents you were given":
                       lambda hook=hook: known(f"{hook}_2", None)} if i == 0 else {}  # the third case's answer
            expect_tensor(got[hook], wants[i][hook], name=f"attributions[{hook!r}] ({n} prompts, {patch})",
                          dims="batch pos d_sae", mistakes={**mistakes.select(lambda out, hook=hook: out[hook]), **ignored})



# ---------------------------------------------------------------------------------------
# 4. integrated_gradients


@exercise_check(CHAPTER)
def check_integrated_gradients(integrated_gradients: Any) -> None:
    bk = backend()
    model = bk.model
    for i, (hook, n, steps, patch) in enumerate([(RESID[1], 3, 2, "zero"), (RESID[0], 1, 3, "corrupted")]):
        sae = bk.saes[hook]
        batch = bk.world.task_batch("ioi", n, seed=seed(4 + i))
        clean = _latents(model, sae, batch.tokens)
        patched = torch.zeros_like(clean) if patch == "zero" else _latents(model, sae, batch.corrupted_tokens)
        args = (model, sae, batch.tokens, batch.answer_ids, batch.distractor_ids, patched)
        got = run(integrated_gradients, bk, *args, steps=steps)
        expect_tensor(got, known(f"ig_{i}", got), name=f"integrated gradients ({hook}, {steps} steps, {patch})",
                      dims="batch pos d_sae", mistakes=signatures(MISTAKES["integrated_gradients"], *args, steps=steps))


# ---------------------------------------------------------------------------------------
# 5-7. Sparse gradients over active latents


def _expect_sparse_known(got: Any, key: str, name: str, shape: tuple[int, ...], dims: str,
                         optional: Tensor | None, mistakes: Any, retries: Any = None) -> None:
    """``got`` against the known sparse result under ``key`` (recorded from the reference)."""
    if isinstance(got, Tensor) and got.is_sparse:
        got_c = got.detach().cpu().coalesce()
        want_indices, want_values = known(f"{key}_indices", got_c.indices()), known(f"{key}_values", got_c.values())
    else:
        want_indices, want_values = known(f"{key}_indices", None), known(f"{key}_values", None)
    dense_retries = {d: (lambda thunk=thunk: _dense(thunk())) for d, thunk in (retries or {}).items()}
    expect_sparse(got, want_indices, want_values, name=name, shape=shape, dims=dims, optional=optional, mistakes=mistakes,
                  retries=dense_retries)


def _dense(result: Any) -> Any:
    return result.detach().cpu().to_dense() if isinstance(result, Tensor) and result.is_sparse else None


def _down_acts(model: HookedSAETransformer, down_sae: SAE, tokens: Tensor, pos: int) -> Tensor:
    return _latents(model, down_sae, tokens)[0, pos]


@exercise_check(CHAPTER)
def check_latent_to_latent_gradients(latent_to_latent_gradients: Any) -> None:
    bk = backend()
    model = bk.model
    pairs = [(bk.saes[RESID[0]], bk.attn_saes["blocks.1.attn.hook_z"], "middle"), (bk.attn_saes["blocks.0.attn.hook_z"], bk.saes[RESID[1]], -1)]
    for i, (up_sae, down_sae, where) in enumerate(pairs):
        tokens = bk.world.task_batch("facts", 2, seed=seed(5 + i)).tokens[:1]
        n_pos = tokens.shape[1]
        if where == "middle":  # the middle position with the most active downstream latents
            pos = known(f"pos_{i}", int((_latents(model, down_sae, tokens)[0, 1:-1] > 0).sum(-1).argmax()) + 1)
        else:
            pos = where
        up_acts = _latents(model, up_sae, tokens)[0]  # [n_pos, d_up]
        down_acts = _down_acts(model, down_sae, tokens, pos)
        optional = _near_zero(down_acts)[:, None, None] | _near_zero(up_acts)[None]
        args = (model, up_sae, down_sae, tokens, pos)
        got = run(latent_to_latent_gradients, bk, *args)
        shape = (down_sae.cfg.d_sae, n_pos, up_sae.cfg.d_sae)
        again = counted_from_the_end(lambda p: run(latent_to_latent_gradients, bk, model, up_sae, down_sae, tokens, p), pos, n_pos)
        _expect_sparse_known(got, f"J_{i}", f"J ({up_sae.cfg.metadata.hook_name} -> {down_sae.cfg.metadata.hook_name}, pos {pos})",
                             shape, "d_sae_down n_pos d_sae_up", optional, signatures(MISTAKES["latent_to_latent_gradients"], *args),
                             again)


@exercise_check(CHAPTER)
def check_latent_to_logit_gradients(latent_to_logit_gradients: Any) -> None:
    bk = backend()
    model = bk.model
    for i, hook in enumerate(RESID):
        sae = bk.saes[hook]
        batch = bk.world.task_batch("facts", 2, seed=seed(6 + i))
        tokens = batch.tokens[:1]
        token_ids = torch.stack([batch.answer_ids[0], batch.distractor_ids[0], batch.answer_ids[1]])
        acts = _latents(model, sae, tokens)[0]
        args = (model, sae, tokens, token_ids)
        got = run(latent_to_logit_gradients, bk, *args)
        _expect_sparse_known(got, f"G_{i}", f"G ({hook})", (len(token_ids), tokens.shape[1], sae.cfg.d_sae), "k n_pos d_sae",
                             _near_zero(acts)[None].expand(len(token_ids), -1, -1), signatures(MISTAKES["latent_to_logit_gradients"], *args))


@exercise_check(CHAPTER)
def check_token_to_latent_gradients(token_to_latent_gradients: Any) -> None:
    bk = backend()
    model = bk.model
    for i, (hook, pos) in enumerate([(RESID[0], 3), (RESID[1], -1)]):
        sae = bk.saes[hook]
        tokens = bk.world.task_batch("facts", 2, seed=seed(7 + i)).tokens[1:]
        acts = _down_acts(model, sae, tokens, pos)
        args = (model, sae, tokens, pos)
        got = run(token_to_latent_gradients, bk, *args)
        again = counted_from_the_end(lambda p: run(token_to_latent_gradients, bk, model, sae, tokens, p), pos, tokens.shape[1])
        _expect_sparse_known(got, f"A_{i}", f"A ({hook}, pos {pos})", (sae.cfg.d_sae, tokens.shape[1]), "d_sae n_pos",
                             _near_zero(acts)[:, None].expand(-1, tokens.shape[1]), signatures(MISTAKES["token_to_latent_gradients"], *args),
                             again)


# ---------------------------------------------------------------------------------------
# 8. attn_latent_path_effects


@exercise_check(CHAPTER)
def check_attn_latent_path_effects(attn_latent_path_effects: Any) -> None:
    bk = backend()
    model, attn_sae = bk.model, bk.attn_saes["blocks.0.attn.hook_z"]
    batch = bk.world.task_batch("induction", 3, seed=seed(8))
    latents = _latents(model, attn_sae, batch.tokens).sum((0, 1)).topk(4).indices.sort().values
    for i, (head, inp) in enumerate([(0, "k"), (model.cfg.n_heads - 1, "v"), (1, "q")]):
        args = (model, attn_sae, batch.tokens, batch.answer_ids, batch.distractor_ids, 1, head, latents)
        got = run(attn_latent_path_effects, bk, *args, input=inp)
        expect_tensor(got, known(f"effects_{i}", got), name=f"path effects (head 1.{head}, {inp})", dims="batch n_latents",
                      mistakes=signatures(MISTAKES["attn_latent_path_effects"], *args, input=inp))


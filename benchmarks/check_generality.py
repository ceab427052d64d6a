"""How general are the checks? Run them on plausible wrong implementations that are NOT in the
mistake catalogs (``tests/mistakes``), and count how many are caught and how many get a
message that names the mistake (anything more specific than "N of M entries differ").

    python -m utils.course bench check_generality          # prints one line per mistake, then totals

The catalog's own mistakes are tested in ``tests/``; these are written separately, as a
learner might get things wrong, to measure the generic diagnoses of ``utils.course.compare`` and
the watched side effects of ``utils.course.checking.run``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import torch

import solutions.ch00_toolkit as s0
import solutions.ch01_attribution as s1
from utils.course import settings
from utils.course.chapter import Chapter
from utils.course.checking import CheckFailure

UNSEEN: list[tuple[str, str, Callable[..., Any]]] = []


def unseen(chapter: str, exercise: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        UNSEEN.append((chapter, exercise, fn))
        return fn
    return register


def _acts(model, sae, tokens):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    return cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"]


# --- chapter 00 ----------------------------------------------------------------------
C0 = "ch00_toolkit"


@unseen(C0, "top_k_latents")
def top_k_ascending(model, sae, prompt, pos, k):
    values, indices = _acts(model, sae, prompt)[0, pos].sort()
    return values[-k:], indices[-k:]


@unseen(C0, "top_k_latents")
def top_k_next_position(model, sae, prompt, pos, k):
    n = model.to_tokens(prompt).shape[1]
    return s0.top_k_latents(model, sae, prompt, (pos + 1) % n, k)


@unseen(C0, "top_k_latents")
def top_k_float_indices(model, sae, prompt, pos, k):
    values, indices = s0.top_k_latents(model, sae, prompt, pos, k)
    return values, indices.float()


@unseen(C0, "top_k_latents")
def top_k_keepdim(model, sae, prompt, pos, k):
    values, indices = s0.top_k_latents(model, sae, prompt, pos, k)
    return values[None], indices[None]


@unseen(C0, "top_k_latents")
def top_k_bos(model, sae, prompt, pos, k):
    return s0.top_k_latents(model, sae, prompt, 0, k)


@unseen(C0, "latent_logit_effects")
def effects_normalised(model, sae, latent):
    direction = sae.W_dec[latent] / sae.W_dec[latent].norm()
    return direction @ model.W_U


@unseen(C0, "latent_logit_effects")
def effects_column(model, sae, latent):
    return sae.W_dec[:, latent] @ model.W_U


@unseen(C0, "latent_logit_effects")
def effects_softmax(model, sae, latent):
    return (sae.W_dec[latent] @ model.W_U).softmax(-1)


@unseen(C0, "latent_logit_effects")
def effects_normalises_in_place(model, sae, latent):
    with torch.no_grad():
        sae.W_dec[latent] /= 1.0 + 1e-2
    return sae.W_dec[latent] @ model.W_U


@unseen(C0, "max_activating_contexts")
def contexts_batch_relative_sequence(model, sae, latent, tokens, k=10, batch_size=64):
    best = []
    for start in range(0, tokens.shape[0], batch_size):
        acts = _acts(model, sae, tokens[start:start + batch_size])[..., latent]
        values, flat = acts.flatten().topk(min(k, acts.numel()))
        best += [(v, f // acts.shape[1], f % acts.shape[1]) for v, f in zip(values.tolist(), flat.tolist())]
    best = sorted(best, reverse=True)[:k]
    return torch.tensor([v for v, _, _ in best]), torch.tensor([[s, p] for _, s, p in best])


@unseen(C0, "max_activating_contexts")
def contexts_ascending(model, sae, latent, tokens, k=10, batch_size=64):
    values, seq_pos = s0.max_activating_contexts(model, sae, latent, tokens, k, batch_size)
    return values.flip(0), seq_pos.flip(0)


@unseen(C0, "max_activating_contexts")
def contexts_without_bos_offset(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _acts(model, sae, tokens)[:, 1:, latent]
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[1], flat % acts.shape[1]], -1)


@unseen(C0, "reconstruction_metrics")
def metrics_variance_per_token(model, sae, tokens):
    m = s0.reconstruction_metrics(model, sae, tokens)
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    m["explained_variance"] = (1 - (x - x_hat).pow(2).sum(-1) / (x - x.mean((0, 1))).pow(2).sum(-1)).mean().item()
    return m


@unseen(C0, "reconstruction_metrics")
def metrics_l0_with_pre(model, sae, tokens):
    m = s0.reconstruction_metrics(model, sae, tokens)
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    m["l0"] = (cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_pre"][:, 1:] > 0).float().sum(-1).mean().item() + 0.5
    return m


@unseen(C0, "reconstruction_metrics")
def metrics_leaves_sae(model, sae, tokens):
    out = s0.reconstruction_metrics(model, sae, tokens)
    model.add_sae(sae)
    return out


@unseen(C0, "latent_aurocs")
def aurocs_normalised_by_positives(acts, labels):
    return s0.latent_aurocs(acts, labels) * (~labels).sum() / labels.sum()


@unseen(C0, "latent_aurocs")
def aurocs_ranks_without_ties(acts, labels):
    ranks = acts.argsort(0).argsort(0).float() + 1
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@unseen(C0, "latent_aurocs")
def aurocs_sorted_in_place(acts, labels):
    acts.copy_(acts.sort(0).values)
    return s0.latent_aurocs(acts, labels)


# --- chapter 01 ----------------------------------------------------------------------
C1 = "ch01_attribution"


@unseen(C1, "logit_diff")
def diff_second_to_last(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits[:, :-1], answer_ids, distractor_ids)


@unseen(C1, "logit_diff")
def diff_keepdim(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits, answer_ids, distractor_ids)[:, None]


@unseen(C1, "logit_diff")
def diff_batch_sum(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits, answer_ids, distractor_ids).sum()


@unseen(C1, "ablation_effects")
def ablation_next_position(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos - 1, baseline)


@unseen(C1, "ablation_effects")
def ablation_forgets_clean(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    with model.saes(saes=[sae], use_error_term=True):
        clean = s1.logit_diff(model(tokens), answer_ids, distractor_ids)
    return s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline) + clean[:, None]


@unseen(C1, "ablation_effects")
def ablation_mean_over_batch(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    out = s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline)
    return out.mean(0, keepdim=True).expand_as(out).clone()


@unseen(C1, "attribution_patching")
def attribution_clean_minus_patched(model, saes, tokens, answer_ids, distractor_ids, patched):
    with s1.splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        s1.logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    return {s.cfg.metadata.hook_name: nodes[f"{s.cfg.metadata.hook_name}.latents"].grad
            * (nodes[f"{s.cfg.metadata.hook_name}.latents"].detach() - patched[s.cfg.metadata.hook_name]) for s in saes}


@unseen(C1, "attribution_patching")
def attribution_leaves_grad_on(model, saes, tokens, answer_ids, distractor_ids, patched):
    torch.set_grad_enabled(True)
    return s1.attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched)


@unseen(C1, "attribution_patching")
def attribution_first_sae_only(model, saes, tokens, answer_ids, distractor_ids, patched):
    out = s1.attribution_patching(model, saes[:1], tokens, answer_ids, distractor_ids, patched)
    out.update({s.cfg.metadata.hook_name: torch.zeros_like(patched[s.cfg.metadata.hook_name]) for s in saes[1:]})
    return out


@unseen(C1, "integrated_gradients")
def ig_trapezoid(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    from tests.mistakes.ch01_attribution import _ig
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [k / steps for k in range(steps + 1)])


@unseen(C1, "integrated_gradients")
def ig_without_error_term(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=False):
        clean = model.run_with_cache(tokens, names_filter=name)[1][name]
        total = torch.zeros_like(clean)
        for k in range(steps):
            point = (clean + (k + 0.5) / steps * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                s1.logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: point)]), answer_ids, distractor_ids).sum().backward()
            total += point.grad
    return (patched - clean) * total / steps


@unseen(C1, "latent_to_latent_gradients")
def l2l_non_causal(model, up_sae, down_sae, tokens, pos):
    J = s1.latent_to_latent_gradients(model, up_sae, down_sae, tokens, tokens.shape[1] - 1)
    return J if pos % tokens.shape[1] == tokens.shape[1] - 1 else s1.latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos + 1)


@unseen(C1, "latent_to_logit_gradients")
def logit_probabilities(model, sae, tokens, token_ids):
    hook = sae.cfg.metadata.hook_name
    with s1.splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        probs = model(tokens)[0, -1].softmax(-1)
        latents = nodes[f"{hook}.latents"]
        where = (latents[0].detach() > 0).nonzero(as_tuple=True)
        values = torch.stack([torch.autograd.grad(probs[t], latents, retain_graph=True)[0][0][where] for t in token_ids.tolist()])
    k, n = values.shape
    indices = torch.stack([torch.arange(k).repeat_interleave(n), where[0].repeat(k), where[1].repeat(k)])
    return torch.sparse_coo_tensor(indices, values.flatten(), (k, tokens.shape[1], sae.cfg.d_sae)).coalesce()


@unseen(C1, "token_to_latent_gradients")
def token_strictly_before(model, sae, tokens, pos):
    A = s1.token_to_latent_gradients(model, sae, tokens, pos).coalesce()
    keep = A.indices()[1] < pos % tokens.shape[1]
    return torch.sparse_coo_tensor(A.indices()[:, keep], A.values()[keep], A.shape).coalesce()


@unseen(C1, "attn_latent_path_effects")
def path_layer_zero(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return s1.attn_latent_path_effects(model, attn_sae, tokens, answer_ids, distractor_ids, 0, head, latents, input)


GENERIC = ("entries differ (max abs diff", "the check could not use your result")


def main(args: argparse.Namespace) -> None:
    rows, caught, named = [], 0, 0
    for chapter, exercise, fn in UNSEEN:
        try:
            with settings.strict_checks():
                Chapter(chapter).check(exercise)(fn)
            message, ok = "PASSED (not caught)", False
        except CheckFailure as failure:
            message, ok = str(failure), True
        is_named = ok and not any(g in message for g in GENERIC)
        caught += ok
        named += is_named
        rows.append({"exercise": f"{chapter}.{exercise}", "mistake": fn.__name__, "caught": ok, "named": is_named,
                     "message": message[:160]})
        print(f"{'named ' if is_named else 'caught' if ok else 'MISSED'}  {exercise}.{fn.__name__}: {message[:140]}")
    print(json.dumps({"unseen_mistakes": len(UNSEEN), "caught": caught, "named": named}))

"""Plausible wrong implementations of chapter 01's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis or a watched side effect."""
from __future__ import annotations

import einops
import torch

from solutions.ch01_attribution import (
    ablation_effects,
    attn_latent_path_effects,
    attribution_patching,
    integrated_gradients,
    latent_to_latent_gradients,
    latent_to_logit_gradients,
    logit_diff,
    token_to_latent_gradients,
)
from utils.attribution import splice_for_gradients
from utils.course.checking import Mistake

# --- logit_diff ----------------------------------------------------------------------


def diff_negated(logits, answer_ids, distractor_ids):
    return logit_diff(logits, distractor_ids, answer_ids)


def diff_first_position(logits, answer_ids, distractor_ids):
    return logit_diff(logits[:, :1], answer_ids, distractor_ids)


def diff_probabilities(logits, answer_ids, distractor_ids):
    return logit_diff(logits.softmax(-1), answer_ids, distractor_ids)


def diff_batch_mean(logits, answer_ids, distractor_ids):
    return logit_diff(logits, answer_ids, distractor_ids).mean()


def diff_answer_only(logits, answer_ids, distractor_ids):
    return logits[:, -1].gather(-1, answer_ids[:, None])[:, 0]


def diff_magnitude(logits, answer_ids, distractor_ids):
    return (logit_diff(logits, answer_ids, distractor_ids) ** 2).sqrt()  # "how far apart the two logits are"


def diff_mean_over_positions(logits, answer_ids, distractor_ids):
    rows = torch.arange(len(answer_ids))
    return (logits[rows, :, answer_ids] - logits[rows, :, distractor_ids]).mean(-1)


# --- ablation_effects ----------------------------------------------------------------


def _sweep(model, sae, tokens, answer_ids, distractor_ids, latents, baseline, positions, use_error_term):
    """The reference's loop with two knobs a learner might get wrong: which positions are
    ablated, and whether the SAE keeps its error term."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=use_error_term):
        clean = logit_diff(model(tokens), answer_ids, distractor_ids)
        effects = []
        for latent in latents.tolist():
            value = 0.0 if baseline is None else baseline[latent].item()

            def ablate(acts, hook):
                acts[:, positions, latent] = value
                return acts
            effects.append(logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)]), answer_ids, distractor_ids) - clean)
    return torch.stack(effects, -1)


def ablation_without_error_term(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _sweep(model, sae, tokens, answer_ids, distractor_ids, latents, baseline, pos, use_error_term=False)


def ablation_negated(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return -ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline)


def ablation_every_position(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _sweep(model, sae, tokens, answer_ids, distractor_ids, latents, baseline, slice(None), use_error_term=True)


def ablation_ignores_baseline(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, None)


def ablation_leaves_sae(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    out = ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline)
    model.add_sae(sae, use_error_term=True)
    return out


def ablation_last_position_always(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, -1, baseline)


def ablation_position_mask(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    at = torch.arange(tokens.shape[1]) == pos  # never true for a negative pos
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=True):
        clean = logit_diff(model(tokens), answer_ids, distractor_ids)
        columns = []
        for latent in latents.tolist():
            value = 0.0 if baseline is None else baseline[latent].item()

            def ablate(acts, hook, latent=latent, value=value):
                acts = acts.clone()
                acts[:, at, latent] = value
                return acts
            columns.append(logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)]), answer_ids, distractor_ids) - clean)
    return torch.stack(columns, -1)


def ablation_unspliced_clean(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    """The clean metric from the plain model, the ablated runs without the error term."""
    clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    spliced = _sweep(model, sae, tokens, answer_ids, distractor_ids, latents, baseline, pos, use_error_term=False)
    with model.saes(saes=[sae], use_error_term=False):
        spliced_clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    return spliced + (spliced_clean - clean)[:, None]


# --- attribution_patching ------------------------------------------------------------


def attribution_saelens_default(model, saes, tokens, answer_ids, distractor_ids, patched):
    kept = {}

    def keep(acts, hook):
        acts.retain_grad()
        kept[hook.name.removesuffix(".hook_sae_acts_post")] = acts
    with model.saes(saes=saes, use_error_term=True), torch.enable_grad():
        hooks = [(f"{s.cfg.metadata.hook_name}.hook_sae_acts_post", keep) for s in saes]
        logit_diff(model.run_with_hooks(tokens, fwd_hooks=hooks), answer_ids, distractor_ids).sum().backward()
    return {h: acts.grad * (patched[h] - acts.detach()) for h, acts in kept.items()}


def _attribution(model, saes, tokens, patched, metric, multiplier):
    with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        metric(model(tokens)).backward()
    out = {}
    for sae in saes:
        hook = sae.cfg.metadata.hook_name
        latents = nodes[f"{hook}.latents"]
        out[hook] = latents.grad * multiplier(patched[hook], latents.detach())
    return out


def attribution_answer_logit(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logits[:, -1].gather(-1, answer_ids[:, None]).sum()  # noqa: E731
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p - c)


def attribution_mean_metric(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).mean()  # noqa: E731
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p - c)


def attribution_gradient_only(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).sum()  # noqa: E731
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: torch.ones_like(p))


def attribution_times_patched(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).sum()  # noqa: E731
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p)


def attribution_negated(model, saes, tokens, answer_ids, distractor_ids, patched):
    out = attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched)
    return {h: -a for h, a in out.items()}


def attribution_no_enable_grad(model, saes, tokens, answer_ids, distractor_ids, patched):
    with splice_for_gradients(model, saes) as nodes:
        logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    return {h.removesuffix(".latents"): n.grad for h, n in nodes.items()}


# --- integrated_gradients ------------------------------------------------------------


def _ig(model, sae, tokens, answer_ids, distractor_ids, patched, alphas, multiply=True, divide=True, error_term=True):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=error_term):
        _, cache = model.run_with_cache(tokens, names_filter=name)
        clean = cache[name]
        total = torch.zeros_like(clean)
        for alpha in alphas:
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda acts, hook: point)])
                logit_diff(logits, answer_ids, distractor_ids).sum().backward()
            total += point.grad
    mean = total / len(alphas) if divide else total
    return (patched - clean) * mean if multiply else mean


def ig_left_endpoints(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [k / steps for k in range(steps)])


def ig_right_endpoints(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 1) / steps for k in range(steps)])


def ig_clean_point_only(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [0.0] * steps)


def ig_no_average(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)], divide=False)


def ig_no_delta(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)], multiply=False)


def attribution_zero_patch(model, saes, tokens, answer_ids, distractor_ids, patched):
    return attribution_patching(model, saes, tokens, answer_ids, distractor_ids,
                                {hook: torch.zeros_like(p) for hook, p in patched.items()})


def ig_reconstruction_only(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)],
               error_term=False)


def ig_negated(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return -integrated_gradients(model, sae, tokens, answer_ids, distractor_ids, patched, steps)


# --- latent_to_latent_gradients ------------------------------------------------------


def _sparse(dense):
    return dense.to_sparse().coalesce()


def _jacobian(model, up_sae, down_sae, tokens, pos):
    """Dense J[i, p, j] over every (downstream, upstream) pair, the up and down activations."""
    up_hook, down_hook = up_sae.cfg.metadata.hook_name, down_sae.cfg.metadata.hook_name
    kept = {}
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(down_hook, lambda x, hook: kept.update(x=x))])
        up = nodes[f"{up_hook}.latents"]
        down = down_sae.encode(kept["x"][0, pos % tokens.shape[1]])
        rows = torch.stack([torch.autograd.grad(down[i], up, retain_graph=True)[0][0] for i in range(down.shape[0])])
    return rows, up.detach()[0], down.detach()


def _active_jacobian(model, up_sae, down_sae, tokens, pos, upstream_active=True):
    rows, up, down = _jacobian(model, up_sae, down_sae, tokens, pos)
    causal = (torch.arange(tokens.shape[1]) <= pos % tokens.shape[1])[:, None]
    up_mask = (up > 0) & causal if upstream_active else causal.expand_as(up)
    return rows * (down > 0)[:, None, None] * up_mask[None], up, down


def l2l_up_to_raw_pos(model, up_sae, down_sae, tokens, pos):
    J = latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos).coalesce()
    keep = J.indices()[1] <= pos  # p <= pos, with pos as given
    return torch.sparse_coo_tensor(J.indices()[:, keep], J.values()[keep], J.shape).coalesce()


def l2l_dense(model, up_sae, down_sae, tokens, pos):
    return latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos).to_dense()


def l2l_inactive_upstream(model, up_sae, down_sae, tokens, pos):
    return _sparse(_active_jacobian(model, up_sae, down_sae, tokens, pos, upstream_active=False)[0])


def l2l_same_position(model, up_sae, down_sae, tokens, pos):
    rows, _, _ = _active_jacobian(model, up_sae, down_sae, tokens, pos)
    out = torch.zeros_like(rows)
    out[:, pos % tokens.shape[1]] = rows[:, pos % tokens.shape[1]]
    return _sparse(out)


def l2l_transposed(model, up_sae, down_sae, tokens, pos):
    J = latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos)
    return _sparse(J.to_dense().permute(2, 1, 0))


def l2l_saelens_splice(model, up_sae, down_sae, tokens, pos):
    """Upstream latents as SAELens splices them: the downstream input sees the
    reconstruction only, so gradients miss the error term's identity path."""
    up_hook, down_hook = up_sae.cfg.metadata.hook_name, down_sae.cfg.metadata.hook_name
    kept = {}

    def keep_up(acts, hook):
        kept["up"] = acts
        return acts
    with model.saes(saes=[up_sae], use_error_term=False), torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(f"{up_hook}.hook_sae_acts_post", keep_up),
                                                (down_hook, lambda x, hook: kept.update(x=x))])
        up, pos = kept["up"], pos % tokens.shape[1]
        down = down_sae.encode(kept["x"][0, pos])
        rows = torch.stack([torch.autograd.grad(down[i], up, retain_graph=True)[0][0] for i in range(down.shape[0])])
    causal = (torch.arange(tokens.shape[1]) <= pos)[:, None]
    return _sparse(rows * (down.detach() > 0)[:, None, None] * ((up.detach()[0] > 0) & causal)[None])


# --- latent_to_logit_gradients -------------------------------------------------------


def logit_dense(model, sae, tokens, token_ids):
    return latent_to_logit_gradients(model, sae, tokens, token_ids).to_dense()


def _logit_grads(model, sae, tokens, token_ids, log_probs):
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        out = model(tokens)[0, -1]
        out = out.log_softmax(-1) if log_probs else out
        latents = nodes[f"{sae.cfg.metadata.hook_name}.latents"]
        grads = torch.stack([torch.autograd.grad(out[t], latents, retain_graph=True)[0][0] for t in token_ids.tolist()])
    return grads, latents.detach()[0] > 0


def logit_inactive(model, sae, tokens, token_ids):
    grads, _ = _logit_grads(model, sae, tokens, token_ids, log_probs=False)
    return _sparse(grads)


def logit_log_probs(model, sae, tokens, token_ids):
    grads, active = _logit_grads(model, sae, tokens, token_ids, log_probs=True)
    return _sparse(grads * active)


def logit_direct_path(model, sae, tokens, token_ids):
    _, active = _logit_grads(model, sae, tokens, token_ids, log_probs=False)
    direct = einops.einsum(sae.W_dec, model.W_U[:, token_ids], "d_sae d_model, d_model k -> k d_sae")
    return _sparse(direct[:, None] * active)


def logit_negated(model, sae, tokens, token_ids):
    G = latent_to_logit_gradients(model, sae, tokens, token_ids)
    return torch.sparse_coo_tensor(G.indices(), -G.values(), G.shape, check_invariants=True).coalesce()


# --- token_to_latent_gradients -------------------------------------------------------


def token_dense(model, sae, tokens, pos):
    return token_to_latent_gradients(model, sae, tokens, pos).to_dense()


def _token_grads(model, sae, tokens, pos, hook_name):
    kept = {}
    pos = pos % tokens.shape[1]

    def leaf(x, hook):
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]
    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, leaf), (sae.cfg.metadata.hook_name, lambda x, hook: kept.update(x=x))])
        latents = sae.encode(kept["x"][0, pos])
        grads = torch.stack([torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0] for i in range(latents.shape[0])])
    mask = (latents.detach() > 0)[:, None] * (torch.arange(tokens.shape[1]) <= pos)[None]
    return grads, kept["e"].detach()[0], mask


def token_up_to_raw_pos(model, sae, tokens, pos):
    A = token_to_latent_gradients(model, sae, tokens, pos).coalesce()
    keep = A.indices()[1] <= pos
    return torch.sparse_coo_tensor(A.indices()[:, keep], A.values()[keep], A.shape).coalesce()


def token_every_position(model, sae, tokens, pos):
    A = token_to_latent_gradients(model, sae, tokens, pos).coalesce()
    n = tokens.shape[1]
    later = torch.tensor([(i, p) for i in A.indices()[0].unique().tolist() for p in range(pos % n + 1, n)],
                         dtype=torch.long).reshape(-1, 2).T
    indices = torch.cat([A.indices(), later], 1)
    values = torch.cat([A.values(), torch.zeros(later.shape[1], dtype=A.dtype)])
    return torch.sparse_coo_tensor(indices, values, A.shape).coalesce()


def token_embed_only(model, sae, tokens, pos):
    grads, e, mask = _token_grads(model, sae, tokens, pos, "hook_embed")
    return _sparse((grads * e).sum(-1) * mask)


def token_grad_norm(model, sae, tokens, pos):
    grads, e, mask = _token_grads(model, sae, tokens, pos, "blocks.0.hook_resid_pre")
    return _sparse(grads.norm(dim=-1) * mask)


def token_last_position(model, sae, tokens, pos):
    return token_to_latent_gradients(model, sae, tokens, -1)


def token_gradient_only(model, sae, tokens, pos):
    grads, e, mask = _token_grads(model, sae, tokens, pos, "blocks.0.hook_resid_pre")
    return _sparse(grads.sum(-1) * mask)


# --- attn_latent_path_effects --------------------------------------------------------


def _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, where, scale=True, sign=-1.0):
    name = f"{attn_sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    source = int(attn_sae.cfg.metadata.hook_name.split(".")[1])
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=name)
    acts = cache[name]
    clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    model.set_use_split_qkv_input(True)
    try:
        effects = []
        for latent in latents.tolist():
            f = acts[..., latent, None] if scale else (acts[..., latent, None] > 0).to(acts.dtype)
            z = einops.rearrange(f * attn_sae.W_dec[latent], "b p (n h) -> b p n h", n=model.cfg.n_heads)
            contribution = einops.einsum(z, model.W_O[source], "b p n h, n h d -> b p d")

            def patch(x, hook):
                if where == "resid":
                    return x + sign * contribution
                if where == "all heads":
                    x += sign * contribution[:, :, None]
                else:
                    x[:, :, head] += sign * contribution
                return x
            hook = f"blocks.{layer}.hook_resid_pre" if where == "resid" else f"blocks.{layer}.hook_{input}_input"
            effects.append(logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(hook, patch)]), answer_ids, distractor_ids) - clean)
    finally:
        model.set_use_split_qkv_input(False)
    return torch.stack(effects, -1)


def path_every_head(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, "all heads")


def path_unscaled(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, "head", scale=False)


def path_residual(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, "resid")


def path_added(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, "head", sign=1.0)


def path_leaves_split(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    out = attn_latent_path_effects(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input)
    model.set_use_split_qkv_input(True)
    return out


def path_always_keys(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return attn_latent_path_effects(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, "k")


MISTAKES = {
    "logit_diff": [
        Mistake(diff_negated, "wrong sign", signature=False),
        Mistake(diff_first_position, "wrong position: this reads the logits at position 0 (BOS); the answer is "
                "predicted at the last position"),
        Mistake(diff_probabilities, "these are differences of probabilities: use the logits themselves"),
        Mistake(diff_batch_mean, "reduce over a dim", signature=False),
        Mistake(diff_answer_only, "this is the answer's logit alone: subtract the distractor's logit"),
        Mistake(diff_magnitude, "absolute value of the expected result", signature=False),
        Mistake(diff_mean_over_positions, "this averages the difference over every position: read the last position only"),
    ],
    "ablation_effects": [
        Mistake(ablation_without_error_term, "forgot the error term: splice with use_error_term=True so the clean "
                "run is the model's own"),
        Mistake(ablation_negated, "wrong sign", signature=False),
        Mistake(ablation_every_position, "this ablates the latents at every position; only position `pos` should change"),
        Mistake(ablation_ignores_baseline, "this ablates to zero although a baseline was given: set each latent to "
                "baseline[latent]"),
        Mistake(ablation_leaves_sae, "left an SAE at", signature=False),
        Mistake(ablation_last_position_always, "`pos` was ignored", signature=False),
        Mistake(ablation_position_mask, "a negative position counts from the end", signature=False),
        Mistake(ablation_unspliced_clean, "the clean metric comes from the plain model but the ablated runs lack the "
                "error term: compute both with the SAE spliced with use_error_term=True"),
    ],
    "attribution_patching": [
        Mistake(attribution_saelens_default, "gradient stopped at the error term: SAELens computes it under no_grad, "
                "so an earlier SAE's latents got the gradient of the reconstruction only; use splice_for_gradients"),
        Mistake(attribution_answer_logit, "gradient of the wrong metric: backpropagate the logit difference, not the "
                "answer's logit alone"),
        Mistake(attribution_mean_metric, "average over `batch` instead of summing", signature=False),
        Mistake(attribution_gradient_only, "forgot to multiply the gradient by (patched - clean)"),
        Mistake(attribution_times_patched, "multiplied by the patched latents alone: multiply by (patched - clean)"),
        Mistake(attribution_negated, "wrong sign", signature=False),
        Mistake(attribution_zero_patch, "this is the attribution for patched = 0", signature=False),
        Mistake(attribution_no_enable_grad, "with torch.enable_grad()", signature=False),
    ],
    "integrated_gradients": [
        Mistake(ig_left_endpoints, "these are left endpoints alpha = k/steps: use the midpoints (k + 1/2)/steps"),
        Mistake(ig_right_endpoints, "these are right endpoints alpha = (k + 1)/steps: use the midpoints (k + 1/2)/steps"),
        Mistake(ig_clean_point_only, "this equals attribution patching (all gradients at the clean point, alpha = 0): "
                "move along the path"),
        Mistake(ig_no_average, "summed the gradients over steps without dividing by steps"),
        Mistake(ig_no_delta, "forgot to multiply the averaged gradient by (patched - clean)"),
        Mistake(ig_negated, "wrong sign", signature=False),
        Mistake(ig_reconstruction_only, "the SAE was spliced without its error term: the model then runs on the "
                "reconstruction alone; splice with use_error_term=True, the error held at its clean value"),
    ],
    "latent_to_latent_gradients": [
        Mistake(l2l_dense, "dense tensor", signature=False),
        Mistake(l2l_up_to_raw_pos, "a negative position counts from the end", signature=False),
        Mistake(l2l_inactive_upstream, "J has gradients for inactive upstream latents: keep only latents j active at p"),
        Mistake(l2l_same_position, "J only holds the upstream position `pos`: latents at every earlier position "
                "p <= pos feed the downstream one"),
        Mistake(l2l_transposed, "swapped", signature=False),
        Mistake(l2l_saelens_splice, "J was taken through an SAE spliced without its error term: the downstream "
                "latents then see the reconstruction only; use splice_for_gradients"),
    ],
    "latent_to_logit_gradients": [
        Mistake(logit_dense, "dense tensor", signature=False),
        Mistake(logit_inactive, "G has gradients for inactive latents: keep only latents active at each position"),
        Mistake(logit_log_probs, "this is the gradient of log-probabilities: differentiate the logits"),
        Mistake(logit_direct_path, "this is the direct path W_dec @ W_U only: backpropagate through every later layer"),
        Mistake(logit_negated, "wrong sign", signature=False),
    ],
    "token_to_latent_gradients": [
        Mistake(token_dense, "dense tensor", signature=False),
        Mistake(token_up_to_raw_pos, "a negative position counts from the end", signature=False),
        Mistake(token_every_position, "after `pos`=3", signature=False),
        Mistake(token_embed_only, "A uses the token embedding alone: the model's input at p is hook_embed + "
                "hook_pos_embed (blocks.0.hook_resid_pre)"),
        Mistake(token_grad_norm, "A holds the gradient's norm: multiply the gradient by the input e(p) and sum "
                "over d_model (gradient x input)"),
        Mistake(token_last_position, "wrong position: A explains the latents at the last position; explain those at `pos`"),
        Mistake(token_gradient_only, "A sums the gradient alone over d_model: multiply it by the input e(p) first "
                "(gradient x input)"),
    ],
    "attn_latent_path_effects": [
        Mistake(path_every_head, "this removes the latent from every head's input: patch head `head` only"),
        Mistake(path_unscaled, "this removes the unscaled decoder direction: scale d_j by the latent's activation f_j"),
        Mistake(path_residual, "this removes the latent from the residual stream, i.e. from every path: patch one "
                "head's input only"),
        Mistake(path_added, "this adds the latent's contribution instead of removing it"),
        Mistake(path_leaves_split, "use_split_qkv_input", signature=False),
        Mistake(path_always_keys, "this patches the keys whatever `input` says: patch hook_{input}_input"),
    ],
}

"""Plausible wrong implementations of chapter 01's exercises; each check must catch each one."""
from __future__ import annotations

import torch

from solutions.ch01_attribution import ablation_effects, attribution_patching, integrated_gradients, logit_diff
from tests.harness import Mistake
from utils.attribution import splice_for_gradients

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


# --- ablation_effects ----------------------------------------------------------------


def _sweep(model, sae, tokens, answer_ids, distractor_ids, latents, baseline, positions, use_error_term):
    """The reference's loop with two knobs a learner might get wrong: which positions are
    ablated, and whether the SAE keeps its error term."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    model.add_sae(sae, use_error_term=use_error_term)
    try:
        clean = logit_diff(model(tokens), answer_ids, distractor_ids)
        effects = []
        for latent in latents.tolist():
            value = 0.0 if baseline is None else baseline[latent].item()

            def ablate(acts, hook):
                acts[:, positions, latent] = value
                return acts
            effects.append(logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)]), answer_ids, distractor_ids) - clean)
    finally:
        model.reset_saes()
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


# --- attribution_patching ------------------------------------------------------------


def attribution_saelens_default(model, saes, tokens, answer_ids, distractor_ids, patched):
    kept = {}

    def keep(acts, hook):
        acts.retain_grad()
        kept[hook.name.removesuffix(".hook_sae_acts_post")] = acts
    for sae in saes:
        model.add_sae(sae, use_error_term=True)
    try:
        with torch.enable_grad():
            hooks = [(f"{s.cfg.metadata.hook_name}.hook_sae_acts_post", keep) for s in saes]
            logit_diff(model.run_with_hooks(tokens, fwd_hooks=hooks), answer_ids, distractor_ids).sum().backward()
    finally:
        model.reset_saes()
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
    metric = lambda logits: logits[:, -1].gather(-1, answer_ids[:, None]).sum()
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p - c)


def attribution_mean_metric(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).mean()
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p - c)


def attribution_gradient_only(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).sum()
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: torch.ones_like(p))


def attribution_times_patched(model, saes, tokens, answer_ids, distractor_ids, patched):
    metric = lambda logits: logit_diff(logits, answer_ids, distractor_ids).sum()
    return _attribution(model, saes, tokens, patched, metric, lambda p, c: p)


def attribution_negated(model, saes, tokens, answer_ids, distractor_ids, patched):
    out = attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched)
    return {h: -a for h, a in out.items()}


def attribution_no_enable_grad(model, saes, tokens, answer_ids, distractor_ids, patched):
    with splice_for_gradients(model, saes) as nodes:
        logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    return {h.removesuffix(".latents"): n.grad for h, n in nodes.items()}


# --- integrated_gradients ------------------------------------------------------------


def _ig(model, sae, tokens, answer_ids, distractor_ids, patched, alphas, multiply=True, divide=True):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    model.add_sae(sae, use_error_term=True)
    try:
        _, cache = model.run_with_cache(tokens, names_filter=name)
        clean = cache[name]
        total = torch.zeros_like(clean)
        for alpha in alphas:
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, lambda acts, hook: point)]), answer_ids, distractor_ids).sum().backward()
            total += point.grad
    finally:
        model.reset_saes()
    mean = total / len(alphas) if divide else total
    return (patched - clean) * mean if multiply else mean


def ig_left_endpoints(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [k / steps for k in range(steps)])


def ig_clean_point_only(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [0.0] * steps)


def ig_no_average(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)], divide=False)


def ig_no_delta(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)], multiply=False)


def ig_negated(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return -integrated_gradients(model, sae, tokens, answer_ids, distractor_ids, patched, steps)


MISTAKES = {
    "logit_diff": [
        Mistake(diff_negated, "wrong sign"),
        Mistake(diff_first_position, "wrong position"),
        Mistake(diff_probabilities, "probabilities"),
        Mistake(diff_batch_mean, "reduce over a dim"),
        Mistake(diff_answer_only, "answer's logit alone"),
    ],
    "ablation_effects": [
        Mistake(ablation_without_error_term, "forgot the error term"),
        Mistake(ablation_negated, "wrong sign"),
        Mistake(ablation_every_position, "every position"),
        Mistake(ablation_ignores_baseline, "although a baseline was given"),
        Mistake(ablation_leaves_sae, "left an SAE attached"),
    ],
    "attribution_patching": [
        Mistake(attribution_saelens_default, "gradient stopped at the error term"),
        Mistake(attribution_answer_logit, "gradient of the wrong metric"),
        Mistake(attribution_mean_metric, "divided by the batch size"),
        Mistake(attribution_gradient_only, "forgot to multiply the gradient"),
        Mistake(attribution_times_patched, "patched latents alone"),
        Mistake(attribution_negated, "wrong sign"),
        Mistake(attribution_no_enable_grad, "gradients are disabled"),
    ],
    "integrated_gradients": [
        Mistake(ig_left_endpoints, "left endpoints"),
        Mistake(ig_clean_point_only, "equals attribution patching"),
        Mistake(ig_no_average, "without dividing by steps"),
        Mistake(ig_no_delta, "forgot to multiply the averaged gradient"),
        Mistake(ig_negated, "wrong sign"),
    ],
}


# --- sparse gradients ----------------------------------------------------------------
from solutions.ch01_attribution import (  # noqa: E402
    attn_latent_path_effects,
    latent_to_latent_gradients,
    latent_to_logit_gradients,
    token_to_latent_gradients,
)


def _sparse(dense):
    return dense.to_sparse().coalesce()


def _jacobian(model, up_sae, down_sae, tokens, pos):
    up_hook, down_hook = up_sae.cfg.metadata.hook_name, down_sae.cfg.metadata.hook_name
    kept = {}
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(down_hook, lambda x, hook: kept.update(x=x))])
        up = nodes[f"{up_hook}.latents"]
        down = down_sae.encode(kept["x"][0, pos % tokens.shape[1]])
        rows = torch.stack([torch.autograd.grad(down[i], up, retain_graph=True)[0][0] for i in range(down.shape[0])])
    return rows * (down.detach() > 0)[:, None, None], up.detach()[0]


def l2l_dense(model, up_sae, down_sae, tokens, pos):
    return latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos).to_dense()


def l2l_inactive_upstream(model, up_sae, down_sae, tokens, pos):
    rows, up = _jacobian(model, up_sae, down_sae, tokens, pos)
    return _sparse(rows * (torch.arange(tokens.shape[1]) <= pos % tokens.shape[1])[None, :, None])


def l2l_same_position(model, up_sae, down_sae, tokens, pos):
    pos = pos % tokens.shape[1]
    rows, up = _jacobian(model, up_sae, down_sae, tokens, pos)
    out = torch.zeros_like(rows)
    out[:, pos] = rows[:, pos] * (up[pos] > 0)
    return _sparse(out)


def l2l_transposed(model, up_sae, down_sae, tokens, pos):
    J = latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos)
    return _sparse(J.to_dense().permute(2, 1, 0))


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
    direct = (sae.W_dec @ model.W_U[:, token_ids]).T  # [k, d_sae]
    return _sparse(direct[:, None] * active)


def token_dense(model, sae, tokens, pos):
    return token_to_latent_gradients(model, sae, tokens, pos).to_dense()


def _token_grads(model, sae, tokens, pos, hook_name):
    kept = {}

    def leaf(x, hook):
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]
    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, leaf), (sae.cfg.metadata.hook_name, lambda x, hook: kept.update(x=x))])
        latents = sae.encode(kept["x"][0, pos])
        grads = torch.stack([torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0] for i in range(latents.shape[0])])
    mask = (latents.detach() > 0)[:, None] * (torch.arange(tokens.shape[1]) <= pos)[None]
    return grads, kept["e"].detach()[0], mask


def token_embed_only(model, sae, tokens, pos):
    grads, e, mask = _token_grads(model, sae, tokens, pos, "hook_embed")
    return _sparse((grads * e).sum(-1) * mask)


def token_grad_norm(model, sae, tokens, pos):
    grads, e, mask = _token_grads(model, sae, tokens, pos, "blocks.0.hook_resid_pre")
    return _sparse(grads.norm(dim=-1) * mask)


def token_last_position(model, sae, tokens, pos):
    return token_to_latent_gradients(model, sae, tokens, -1)


# --- attn_latent_path_effects --------------------------------------------------------


def _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, where, scale=True, sign=-1.0):
    name = f"{attn_sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=name)
    acts = cache[name]
    clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    model.set_use_split_qkv_input(True)
    try:
        effects = []
        for latent in latents.tolist():
            f = acts[..., latent, None] if scale else (acts[..., latent, None] > 0).float()
            z = (f * attn_sae.W_dec[latent]).reshape(*acts.shape[:2], model.cfg.n_heads, -1)
            contribution = torch.einsum("bpnh,nhd->bpd", z, model.W_O[0])

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


MISTAKES.update({
    "latent_to_latent_gradients": [
        Mistake(l2l_dense, "dense tensor"),
        Mistake(l2l_inactive_upstream, "inactive upstream"),
        Mistake(l2l_same_position, "only holds upstream position"),
        Mistake(l2l_transposed, "dims look swapped"),
    ],
    "latent_to_logit_gradients": [
        Mistake(logit_dense, "dense tensor"),
        Mistake(logit_inactive, "inactive latents"),
        Mistake(logit_log_probs, "log-probabilities"),
        Mistake(logit_direct_path, "direct path"),
    ],
    "token_to_latent_gradients": [
        Mistake(token_dense, "dense tensor"),
        Mistake(token_embed_only, "token embedding alone"),
        Mistake(token_grad_norm, "gradient's norm"),
        Mistake(token_last_position, "wrong position"),
    ],
    "attn_latent_path_effects": [
        Mistake(path_every_head, "every head"),
        Mistake(path_unscaled, "unscaled decoder direction"),
        Mistake(path_residual, "every path"),
        Mistake(path_added, "adds the latent's contribution"),
        Mistake(path_leaves_split, "use_split_qkv_input"),
    ],
})

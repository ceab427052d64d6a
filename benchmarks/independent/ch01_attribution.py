"""Chapter 01, written blind: plausible learner implementations of the eight attribution exercises.

Each wrong one carries the phrases that would name its mistake; each correct one computes the
reference's answer another way. Written from the exercise text and the library only; the
learner's own ``logit_diff`` is :func:`_logit_diff` below (what a notebook would hold).
"""
from __future__ import annotations

import einops
import torch

from benchmarks.independent import correct, wrong
from utils.attribution import splice_for_gradients
from utils.progress import progress

CH = "ch01_attribution"


def _logit_diff(logits, answer_ids, distractor_ids):
    final = logits[:, -1]
    rows = torch.arange(final.shape[0], device=final.device)
    return final[rows, answer_ids] - final[rows, distractor_ids]


def _acts_name(sae) -> str:
    return f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"


# ---------------------------------------------------------------------------------------
# logit_diff(logits, answer_ids, distractor_ids) -> [batch]


@wrong(CH, "logit_diff", "distractor minus answer: the sign flipped",
       names=('sign', 'negat', 'flip', 'swap', 'distractor minus answer'))
def diff_flipped(logits, answer_ids, distractor_ids):
    final = logits[:, -1]
    return final.gather(-1, distractor_ids[:, None])[:, 0] - final.gather(-1, answer_ids[:, None])[:, 0]


@wrong(CH, "logit_diff", "difference of probabilities (softmax) instead of logits",
       names=('softmax', 'probabilit'))
def diff_probabilities(logits, answer_ids, distractor_ids):
    probs = logits[:, -1].softmax(-1)
    rows = torch.arange(probs.shape[0])
    return probs[rows, answer_ids] - probs[rows, distractor_ids]


@wrong(CH, "logit_diff", "averages over the batch (returns a scalar)",
       names=('per prompt', 'one value per prompt', 'scalar', 'averag', 'do not average', 'reduce over a dim'))
def diff_batch_mean(logits, answer_ids, distractor_ids):
    return _logit_diff(logits, answer_ids, distractor_ids).mean()


@wrong(CH, "logit_diff", "indexes final[:, answer_ids]: a [batch, batch] table",
       names=('[batch, batch]', 'diagonal', '(batch, batch)', 'broadcast', 'one dim too many'))
def diff_outer_indexing(logits, answer_ids, distractor_ids):
    final = logits[:, -1]
    return final[:, answer_ids] - final[:, distractor_ids]


@wrong(CH, "logit_diff", "averages the logits over positions instead of taking the last",
       names=('last position', 'averag', 'over positions'))
def diff_mean_over_positions(logits, answer_ids, distractor_ids):
    final = logits.mean(1)
    rows = torch.arange(final.shape[0])
    return final[rows, answer_ids] - final[rows, distractor_ids]


@wrong(CH, "logit_diff", "logits[-1] indexes the last prompt, not the last position",
       names=('last position', 'batch dimension', 'logits[-1]', 'last prompt'))
def diff_last_prompt(logits, answer_ids, distractor_ids):
    final = logits[-1]  # [pos, d_vocab]: the last prompt's logits
    rows = torch.arange(answer_ids.shape[0]) % final.shape[0]
    return final[rows, answer_ids] - final[rows, distractor_ids]


@wrong(CH, "logit_diff", "centres the last position's logits in place first (the caller's logits change)",
       names=('in place', 'in-place', 'mutat', 'modif', 'changed your input', 'changed the input', 'your input'))
def diff_centres_in_place(logits, answer_ids, distractor_ids):
    logits[:, -1] -= logits[:, -1].mean(-1, keepdim=True)
    return _logit_diff(logits, answer_ids, distractor_ids)


@wrong(CH, "logit_diff", "takes the absolute value of the difference",
       names=('absolute value', 'sign', 'negative'))
def diff_absolute(logits, answer_ids, distractor_ids):
    return _logit_diff(logits, answer_ids, distractor_ids).abs()


@correct(CH, "logit_diff", "difference of log-softmax values (the normaliser cancels)")
def diff_log_softmax(logits, answer_ids, distractor_ids):
    logprobs = logits[:, -1].double().log_softmax(-1)
    rows = torch.arange(logprobs.shape[0])
    return (logprobs[rows, answer_ids] - logprobs[rows, distractor_ids]).to(logits.dtype)


@correct(CH, "logit_diff", "one-hot difference dotted with the last logits")
def diff_one_hot(logits, answer_ids, distractor_ids):
    final = logits[:, -1]
    vocab = final.shape[-1]
    direction = (torch.nn.functional.one_hot(answer_ids, vocab)
                 - torch.nn.functional.one_hot(distractor_ids, vocab)).to(final.dtype)
    return (final * direction).sum(-1)


@correct(CH, "logit_diff", "three-index advanced indexing with arange")
def diff_advanced_indexing(logits, answer_ids, distractor_ids):
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, -1, answer_ids] - logits[rows, -1, distractor_ids]


# ---------------------------------------------------------------------------------------
# ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None)
#   -> [batch, n_latents]


def _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, value_of, where, use_error_term=True):
    with model.saes(saes=[sae], use_error_term=use_error_term):
        clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
        columns = []
        for i, latent in enumerate(latents.tolist()):
            value = value_of(i, latent)

            def ablate(acts, hook, latent=latent, value=value):
                acts[where + (latent,)] = value
                return acts

            logits = model.run_with_hooks(tokens, fwd_hooks=[(_acts_name(sae), ablate)])
            columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(columns, dim=-1)


def _value(baseline):
    return lambda i, latent: 0.0 if baseline is None else baseline[latent].item()


@wrong(CH, "ablation_effects", "splices the SAE without its error term",
       names=('error term', 'use_error_term'))
def ablation_no_error_term(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, _value(baseline),
                           (slice(None), pos), use_error_term=False)


@wrong(CH, "ablation_effects", "ablates the latent at every position, not only at pos",
       names=('every position', 'all positions', 'other positions'))
def ablation_every_position(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, _value(baseline),
                           (slice(None), slice(None)))


@wrong(CH, "ablation_effects", "clean minus ablated: the sign flipped",
       names=('sign', 'negat', 'flip'))
def ablation_flipped(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return -_ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, _value(baseline),
                            (slice(None), pos))


@wrong(CH, "ablation_effects", "mean baseline read at the column number (baseline[i]) instead of baseline[latent]",
       names=('baseline[latent]', 'baseline[i]', 'column', 'indexed the baseline', 'baseline index'))
def ablation_baseline_by_column(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    value_of = (lambda i, latent: 0.0) if baseline is None else (lambda i, latent: baseline[i].item())
    return _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, value_of, (slice(None), pos))


@wrong(CH, "ablation_effects", "ignores pos and always ablates the last position",
       names=('wrong position', 'pos argument', 'ignores pos', 'position -1', 'last position'))
def ablation_always_last(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, _value(baseline),
                           (slice(None), -1))


@wrong(CH, "ablation_effects", "stacks the columns on dim 0: returns [n_latents, batch]",
       names=('transpos', '[n_latents, batch]', 'n_latents, batch', 'swapped dim'))
def ablation_transposed(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return _ablation_sweep(model, sae, tokens, answer_ids, distractor_ids, latents, _value(baseline),
                           (slice(None), pos)).T


@wrong(CH, "ablation_effects", "mean ablation to the prompts' own mean at pos, ignoring the baseline given",
       names=('baseline given', 'given baseline', 'your own mean', 'baseline you were given', 'baseline argument'))
def ablation_own_mean(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    with model.saes(saes=[sae], use_error_term=True):
        clean_logits, cache = model.run_with_cache(tokens, names_filter=_acts_name(sae))
        clean = _logit_diff(clean_logits, answer_ids, distractor_ids)
        columns = []
        for latent in latents.tolist():
            value = 0.0 if baseline is None else cache[_acts_name(sae)][:, pos, latent].mean().item()

            def ablate(acts, hook, latent=latent, value=value):
                acts[:, pos, latent] = value
                return acts

            logits = model.run_with_hooks(tokens, fwd_hooks=[(_acts_name(sae), ablate)])
            columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(columns, dim=-1)


@wrong(CH, "ablation_effects", "add_sae(use_error_term=True) and no reset: the SAE stays attached",
       names=('attached', 'reset_saes', 'left on', 'left an sae'))
def ablation_leaves_sae(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    model.add_sae(sae, use_error_term=True)
    clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
    columns = []
    for latent in progress(latents.tolist(), desc="ablating"):
        value = 0.0 if baseline is None else baseline[latent].item()

        def ablate(acts, hook, latent=latent, value=value):
            acts[:, pos, latent] = value
            return acts

        logits = model.run_with_hooks(tokens, fwd_hooks=[(_acts_name(sae), ablate)])
        columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(columns, dim=-1)


@wrong(CH, "ablation_effects", "sets sae.use_error_term = True (the old attribute) and never puts it back",
       names=('use_error_term', 'changed the sae', "sae's attribute", 'attribute', 'mutated the sae', 'modified the sae'))
def ablation_sets_sae_attribute(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    sae.use_error_term = True
    clean = _logit_diff(model.run_with_saes(tokens, saes=[sae]), answer_ids, distractor_ids)
    columns = []
    for latent in latents.tolist():
        value = 0.0 if baseline is None else baseline[latent].item()

        def ablate(acts, hook, latent=latent, value=value):
            acts[:, pos, latent] = value
            return acts

        logits = model.run_with_hooks_with_saes(tokens, saes=[sae], fwd_hooks=[(_acts_name(sae), ablate)])
        columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(columns, dim=-1)


@correct(CH, "ablation_effects", "clean metric from the unspliced model (the error term makes them equal)")
def ablation_clean_unspliced(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
    columns = []
    with model.saes(saes=[sae], use_error_term=True):
        for latent in latents.tolist():
            value = 0.0 if baseline is None else float(baseline[latent])

            def ablate(acts, hook, latent=latent, value=value):
                out = acts.clone()
                out[:, pos, latent] = value
                return out

            logits = model.run_with_hooks(tokens, fwd_hooks=[(_acts_name(sae), ablate)])
            columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(columns, dim=1)


@correct(CH, "ablation_effects", "every latent in one batched forward pass: prompts repeated once per latent")
def ablation_batched(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    batch, n = tokens.shape[0], latents.shape[0]
    repeated = einops.repeat(tokens, "b p -> (n b) p", n=n)
    latent_of_row = einops.repeat(latents, "n -> (n b)", b=batch)
    rows = torch.arange(n * batch)
    if baseline is None:
        values = torch.zeros(n * batch)
    else:
        values = baseline[latent_of_row]

    def ablate(acts, hook):
        acts = acts.clone()
        acts[rows, pos, latent_of_row] = values.to(acts.dtype)
        return acts

    with model.saes(saes=[sae], use_error_term=True):
        clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
        logits = model.run_with_hooks(repeated, fwd_hooks=[(_acts_name(sae), ablate)])
    ablated = _logit_diff(logits, answer_ids.repeat(n), distractor_ids.repeat(n))
    return einops.rearrange(ablated, "(n b) -> b n", n=n) - clean[:, None]


# ---------------------------------------------------------------------------------------
# attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched) -> {hook: [batch, pos, d_sae]}


def _grads(model, saes, tokens, answer_ids, distractor_ids, reduce="sum"):
    with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        metric = _logit_diff(model(tokens), answer_ids, distractor_ids)
        (metric.sum() if reduce == "sum" else metric.mean()).backward()
    return {sae.cfg.metadata.hook_name: nodes[f"{sae.cfg.metadata.hook_name}.latents"] for sae in saes}


@wrong(CH, "attribution_patching", "multiplies by clean - patched: the sign flipped",
       names=('sign', 'negat', 'flip'))
def attribution_flipped(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids)
    return {hook: f.grad * (f.detach() - patched[hook]) for hook, f in latents.items()}


@wrong(CH, "attribution_patching", "SAELens splicing with use_error_term and retain_grad on the latents "
       "(the error term's missing gradient skews earlier SAEs)",
       names=('splice_for_gradients', 'error term', 'earlier sae', 'upstream', 'no_grad'))
def attribution_saelens_gradients(model, saes, tokens, answer_ids, distractor_ids, patched):
    kept = {}

    def keep(acts, hook):
        acts.retain_grad()
        kept[hook.name] = acts

    names = [_acts_name(sae) for sae in saes]
    with torch.enable_grad(), model.saes(saes=saes, use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, keep) for name in names])
        _logit_diff(logits, answer_ids, distractor_ids).sum().backward()
    return {sae.cfg.metadata.hook_name: kept[name].grad * (patched[sae.cfg.metadata.hook_name] - kept[name].detach())
            for sae, name in zip(saes, names)}


@wrong(CH, "attribution_patching", "backpropagates the mean of the metric over prompts, not the sum",
       names=('sum of the metric', 'mean of the metric', 'batch size', 'divided by', '1/batch', 'averag'))
def attribution_mean_metric(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids, reduce="mean")
    return {hook: f.grad * (patched[hook] - f.detach()) for hook, f in latents.items()}


@wrong(CH, "attribution_patching", "returns the gradient alone, not times (patched - clean)",
       names=('patched - clean', 'gradient alone', 'only the gradient', 'multiply', 'times (patched'))
def attribution_gradient_only(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids)
    return {hook: f.grad.clone() for hook, f in latents.items()}


@wrong(CH, "attribution_patching", "multiplies the gradient by the patched latents only (forgot - clean)",
       names=('patched - clean', 'subtract', 'forgot the clean', 'minus the clean'))
def attribution_times_patched(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids)
    return {hook: f.grad * patched[hook] for hook, f in latents.items()}


@wrong(CH, "attribution_patching", "assumes zero ablation: grad * (0 - clean), ignoring `patched`",
       names=('ignor', 'zero ablation', '`patched`', 'patched argument'))
def attribution_assumes_zero(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids)
    return {hook: -f.grad * f.detach() for hook, f in latents.items()}


@wrong(CH, "attribution_patching", "turns gradients on with torch.set_grad_enabled(True) and leaves them on",
       names=('grad mode', 'set_grad_enabled', 'gradients enabled', 'enable_grad', 'grad_enabled', 'gradients on'))
def attribution_leaves_grad_enabled(model, saes, tokens, answer_ids, distractor_ids, patched):
    torch.set_grad_enabled(True)
    with splice_for_gradients(model, saes) as nodes:
        _logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    out = {}
    for sae in saes:
        hook = sae.cfg.metadata.hook_name
        f = nodes[f"{hook}.latents"]
        out[hook] = (f.grad * (patched[hook] - f)).detach()
    return out


@wrong(CH, "attribution_patching", "keys the result by the latents' hook point (…hook_sae_acts_post)",
       names=('key',))
def attribution_wrong_keys(model, saes, tokens, answer_ids, distractor_ids, patched):
    latents = _grads(model, saes, tokens, answer_ids, distractor_ids)
    return {f"{hook}.hook_sae_acts_post": f.grad * (patched[hook] - f.detach()) for hook, f in latents.items()}


@correct(CH, "attribution_patching", "one forward and backward pass per prompt, stitched together")
def attribution_per_prompt(model, saes, tokens, answer_ids, distractor_ids, patched):
    rows = {sae.cfg.metadata.hook_name: [] for sae in saes}
    for b in range(tokens.shape[0]):
        latents = _grads(model, saes, tokens[b : b + 1], answer_ids[b : b + 1], distractor_ids[b : b + 1])
        for hook, f in latents.items():
            rows[hook].append(f.grad[0] * (patched[hook][b] - f.detach()[0]))
    return {hook: torch.stack(r) for hook, r in rows.items()}


@correct(CH, "attribution_patching", "torch.autograd.grad over every SAE's latents at once, product in float64")
def attribution_autograd_float64(model, saes, tokens, answer_ids, distractor_ids, patched):
    hooks = [sae.cfg.metadata.hook_name for sae in saes]
    with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        metric = _logit_diff(model(tokens), answer_ids, distractor_ids).sum()
        leaves = [nodes[f"{hook}.latents"] for hook in hooks]
        grads = torch.autograd.grad(metric, leaves)
    return {hook: (g.double() * (patched[hook].double() - f.detach().double())).to(g.dtype)
            for hook, g, f in zip(hooks, grads, leaves)}


# ---------------------------------------------------------------------------------------
# integrated_gradients(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10) -> [batch, pos, d_sae]


def _ig(model, sae, tokens, answer_ids, distractor_ids, patched, alphas, use_error_term=True, reduce="sum",
        divide=True, multiply=True):
    name = _acts_name(sae)
    with model.saes(saes=[sae], use_error_term=use_error_term):
        _, cache = model.run_with_cache(tokens, names_filter=name)
        clean = cache[name]
        total = torch.zeros_like(clean)
        for alpha in alphas:
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda acts, hook, point=point: point)])
                metric = _logit_diff(logits, answer_ids, distractor_ids)
                (metric.sum() if reduce == "sum" else metric.mean()).backward()
            total += point.grad
    grad = total / len(alphas) if divide else total
    return (patched - clean) * grad if multiply else grad


@wrong(CH, "integrated_gradients", "left Riemann sum: alpha_k = k / steps",
       names=('riemann', 'endpoint', 'midpoint', 'alpha'))
def ig_left_endpoints(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [k / steps for k in range(steps)])


@wrong(CH, "integrated_gradients", "right Riemann sum: alpha_k = (k + 1) / steps",
       names=('riemann', 'endpoint', 'midpoint', 'alpha'))
def ig_right_endpoints(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 1) / steps for k in range(steps)])


@wrong(CH, "integrated_gradients", "alphas = torch.linspace(0, 1, steps): both endpoints, uneven spacing",
       names=('riemann', 'endpoint', 'midpoint', 'alpha', 'linspace'))
def ig_linspace(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, torch.linspace(0, 1, steps).tolist())


@wrong(CH, "integrated_gradients", "splices the SAE without its error term",
       names=('error term', 'use_error_term'))
def ig_no_error_term(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)],
               use_error_term=False)


@wrong(CH, "integrated_gradients", "returns the averaged gradient without multiplying by (patched - clean)",
       names=('patched - clean', 'multiply', 'gradient alone', 'only the gradient'))
def ig_gradient_only(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)],
               multiply=False)


@wrong(CH, "integrated_gradients", "sums the gradients over steps without dividing by steps",
       names=('divide by steps', '/ steps', 'averag', 'mean over steps', 'times steps', 'scaled by steps', 'factor of', 'without dividing by steps'))
def ig_sum_not_mean(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)],
               divide=False)


@wrong(CH, "integrated_gradients", "multiplies by clean - patched: the sign flipped",
       names=('sign', 'negat', 'flip'))
def ig_flipped(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return -_ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)])


@wrong(CH, "integrated_gradients", "backpropagates the mean of the metric over prompts, not the sum",
       names=('sum of the metric', 'mean of the metric', 'batch size', 'divided by', '1/batch', 'averag'))
def ig_mean_metric(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [(k + 0.5) / steps for k in range(steps)],
               reduce="mean")


@wrong(CH, "integrated_gradients", "add_sae(use_error_term=True) and no reset: the SAE stays attached",
       names=('attached', 'reset_saes', 'left on', 'left an sae'))
def ig_leaves_sae(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    name = _acts_name(sae)
    model.add_sae(sae, use_error_term=True)
    _, cache = model.run_with_cache(tokens, names_filter=name)
    clean = cache[name]
    total = torch.zeros_like(clean)
    for k in range(steps):
        point = (clean + (k + 0.5) / steps * (patched - clean)).requires_grad_(True)
        with torch.enable_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda acts, hook, point=point: point)])
            _logit_diff(logits, answer_ids, distractor_ids).sum().backward()
        total += point.grad
    return (patched - clean) * total / steps


@correct(CH, "integrated_gradients", "every step in one batched forward pass (prompts repeated once per step)")
def ig_batched_steps(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    name = _acts_name(sae)
    alphas = (torch.arange(steps, dtype=patched.dtype) + 0.5) / steps
    with model.saes(saes=[sae], use_error_term=True):
        _, cache = model.run_with_cache(tokens, names_filter=name)
        clean = cache[name]
        points = clean[None] + alphas[:, None, None, None] * (patched - clean)[None]  # [steps, batch, pos, d_sae]
        leaf = einops.rearrange(points, "s b p d -> (s b) p d").detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.run_with_hooks(einops.repeat(tokens, "b p -> (s b) p", s=steps),
                                          fwd_hooks=[(name, lambda acts, hook: leaf)])
            _logit_diff(logits, answer_ids.repeat(steps), distractor_ids.repeat(steps)).sum().backward()
    mean_grad = einops.reduce(leaf.grad, "(s b) p d -> b p d", "mean", s=steps)
    return (patched - clean) * mean_grad


@correct(CH, "integrated_gradients", "torch.autograd.grad per step, steps visited in reverse, mean of the stack")
def ig_autograd_reversed(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    name = _acts_name(sae)
    grads = []
    with model.saes(saes=[sae], use_error_term=True):
        _, cache = model.run_with_cache(tokens, names_filter=name)
        clean = cache[name]
        for k in reversed(range(steps)):
            point = torch.lerp(clean, patched, (k + 0.5) / steps).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda acts, hook, point=point: point)])
                grads.append(torch.autograd.grad(_logit_diff(logits, answer_ids, distractor_ids).sum(), point)[0])
    return (patched - clean) * torch.stack(grads).mean(0)


# ---------------------------------------------------------------------------------------
# latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos) -> sparse [d_sae_down, n_pos, d_sae_up]


def _l2l_parts(model, up_sae, down_sae, tokens, pos):
    """(down latents at pos, the up leaf) inside an open grad graph; caller holds the context."""
    kept = {}

    def keep(x, hook):
        kept["x"] = x

    model.run_with_hooks(tokens, fwd_hooks=[(down_sae.cfg.metadata.hook_name, keep)])
    return down_sae.encode(kept["x"][0, pos])


def _l2l(model, up_sae, down_sae, tokens, pos, normalise=True, rows_all=False, up_mask_fn=None, times_act=False,
         order="dpu", dense=False):
    n_pos = tokens.shape[1]
    if normalise:
        pos = pos % n_pos
    up_hook = up_sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        down = _l2l_parts(model, up_sae, down_sae, tokens, pos)
        up = nodes[f"{up_hook}.latents"]
        rows = torch.arange(down.shape[0]) if rows_all else down.detach().nonzero()[:, 0]
        active = up[0].detach() > 0  # [n_pos, d_up]
        allowed = torch.zeros_like(active)
        allowed[: pos + 1] = True
        mask = active & allowed if up_mask_fn is None else up_mask_fn(active, pos)
        up_pos, up_lat = mask.nonzero(as_tuple=True)
        values = torch.stack([torch.autograd.grad(down[i], up, retain_graph=True)[0][0, up_pos, up_lat]
                              for i in rows.tolist()]) if len(rows) else torch.zeros(0, len(up_pos))
        if times_act:
            values = values * up[0].detach()[up_pos, up_lat]
    index = torch.stack([rows.repeat_interleave(len(up_pos)), up_pos.repeat(len(rows)), up_lat.repeat(len(rows))])
    values = values.flatten()
    shape = [down_sae.cfg.d_sae, n_pos, up_sae.cfg.d_sae]
    if order == "pdu":
        index, shape = index[[1, 0, 2]], [n_pos, down_sae.cfg.d_sae, up_sae.cfg.d_sae]
    result = torch.sparse_coo_tensor(index, values, shape).coalesce()
    return result.to_dense() if dense else result


@wrong(CH, "latent_to_latent_gradients", "upstream positions strictly before pos (p < pos): the own position left out",
       names=("p <= pos", "own position", "same position", "pos itself", "off by one", "strictly before"))
def l2l_strictly_before(model, up_sae, down_sae, tokens, pos):
    def before(active, pos):
        mask = torch.zeros_like(active)
        mask[:pos] = active[:pos]
        return mask
    return _l2l(model, up_sae, down_sae, tokens, pos, up_mask_fn=before)


@wrong(CH, "latent_to_latent_gradients", "keeps a row for every downstream latent, active or not",
       names=('inactive', 'active downstream', 'only active', 'extra rows', 'outside the active latents'))
def l2l_every_down_latent(model, up_sae, down_sae, tokens, pos):
    return _l2l(model, up_sae, down_sae, tokens, pos, rows_all=True)


@wrong(CH, "latent_to_latent_gradients", "slices up[:, :pos + 1] with a negative pos (empty for pos = -1)",
       names=('negative', 'pos % n_pos'))
def l2l_negative_pos(model, up_sae, down_sae, tokens, pos):
    return _l2l(model, up_sae, down_sae, tokens, pos, normalise=False)


@wrong(CH, "latent_to_latent_gradients", "orders the dims (position, downstream, upstream)",
       names=('shape', 'dimension order', 'transpos'))
def l2l_dims_swapped(model, up_sae, down_sae, tokens, pos):
    return _l2l(model, up_sae, down_sae, tokens, pos, order="pdu")


@wrong(CH, "latent_to_latent_gradients", "returns the dense tensor",
       names=('sparse', 'dense'))
def l2l_dense(model, up_sae, down_sae, tokens, pos):
    return _l2l(model, up_sae, down_sae, tokens, pos, dense=True)


@wrong(CH, "latent_to_latent_gradients", "multiplies each gradient by the upstream activation",
       names=('times the activation', 'times activation', 'gradient x activation', 'gradient × activation', 'multiplied by the activation', 'activation'))
def l2l_times_activation(model, up_sae, down_sae, tokens, pos):
    return _l2l(model, up_sae, down_sae, tokens, pos, times_act=True)


@wrong(CH, "latent_to_latent_gradients", "only upstream latents at the same position as the downstream one",
       names=('earlier positions', 'p <= pos', 'same position', 'other positions', 'every position'))
def l2l_same_position_only(model, up_sae, down_sae, tokens, pos):
    def same(active, pos):
        mask = torch.zeros_like(active)
        mask[pos] = active[pos]
        return mask
    return _l2l(model, up_sae, down_sae, tokens, pos, up_mask_fn=same)


@correct(CH, "latent_to_latent_gradients", "backward() per downstream latent, reading and zeroing .grad")
def l2l_backward_loop(model, up_sae, down_sae, tokens, pos):
    n_pos = tokens.shape[1]
    pos = pos % n_pos
    up_hook = up_sae.cfg.metadata.hook_name
    entries, values = [], []
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        down = _l2l_parts(model, up_sae, down_sae, tokens, pos)
        up = nodes[f"{up_hook}.latents"]
        active_up = (up[0, : pos + 1].detach() > 0).nonzero().tolist()  # [(p, j)]
        for i in (down.detach() > 0).nonzero()[:, 0].tolist():
            up.grad = None
            down[i].backward(retain_graph=True)
            for p, j in active_up:
                entries.append((i, p, j))
                values.append(up.grad[0, p, j].item())
    index = torch.tensor(entries, dtype=torch.long).reshape(-1, 3).T
    return torch.sparse_coo_tensor(index, torch.tensor(values, dtype=up.dtype),
                                   (down_sae.cfg.d_sae, n_pos, up_sae.cfg.d_sae)).coalesce()


@correct(CH, "latent_to_latent_gradients", "Jacobian rows with is_grads_batched, entries picked by a mask")
def l2l_batched_jacobian(model, up_sae, down_sae, tokens, pos):
    n_pos = tokens.shape[1]
    pos = pos % n_pos
    up_hook = up_sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        down = _l2l_parts(model, up_sae, down_sae, tokens, pos)
        up = nodes[f"{up_hook}.latents"]
        rows = (down.detach() > 0).nonzero()[:, 0]
        selectors = torch.nn.functional.one_hot(rows, down.shape[0]).to(down.dtype)  # [n_rows, d_down]
        jac = torch.autograd.grad(down, up, grad_outputs=selectors, is_grads_batched=True)[0][:, 0]
    mask = torch.zeros(n_pos, up_sae.cfg.d_sae, dtype=torch.bool)
    mask[: pos + 1] = up[0, : pos + 1].detach() > 0
    dense = torch.zeros(down_sae.cfg.d_sae, n_pos, up_sae.cfg.d_sae, dtype=jac.dtype)
    dense[rows] = jac
    full_mask = torch.zeros_like(dense, dtype=torch.bool)
    full_mask[rows] = mask
    index = full_mask.nonzero().T
    return torch.sparse_coo_tensor(index, dense[full_mask], dense.shape).coalesce()


# ---------------------------------------------------------------------------------------
# latent_to_logit_gradients(model, sae, tokens, token_ids) -> sparse [k, n_pos, d_sae]


def _l2logit(model, sae, tokens, token_ids, output=None, active_fn=None, times_act=False, one_grad=False,
             by_token_id=False, dense=False):
    hook = sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        logits = model(tokens)[0, -1]
        final = logits if output is None else output(logits)
        latents = nodes[f"{hook}.latents"]
        active = latents[0].detach() > 0
        where = (active if active_fn is None else active_fn(active)).nonzero(as_tuple=True)
        if one_grad:
            row = torch.autograd.grad(final[token_ids].sum(), latents)[0][0][where]
            values = row.expand(len(token_ids), -1)
        else:
            values = torch.stack([torch.autograd.grad(final[t], latents, retain_graph=True)[0][0][where]
                                  for t in token_ids.tolist()])
        if times_act:
            values = values * latents[0].detach()[where]
    k, n = values.shape
    first = token_ids.repeat_interleave(n) if by_token_id else torch.arange(k).repeat_interleave(n)
    index = torch.stack([first, where[0].repeat(k), where[1].repeat(k)])
    rows = model.cfg.d_vocab if by_token_id else k
    result = torch.sparse_coo_tensor(index, values.flatten(), (rows, tokens.shape[1], sae.cfg.d_sae)).coalesce()
    return result.to_dense() if dense else result


@wrong(CH, "latent_to_logit_gradients", "differentiates the log-probabilities (log_softmax), not the logits",
       names=('log_softmax', 'log-prob', 'log prob', 'softmax', 'probabilit'))
def logit_grads_log_softmax(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, output=lambda logits: logits.log_softmax(-1))


@wrong(CH, "latent_to_logit_gradients", "multiplies each gradient by the latent's activation",
       names=('times the activation', 'times activation', 'gradient x activation', 'gradient × activation', 'multiplied by the activation', 'activation'))
def logit_grads_times_activation(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, times_act=True)


@wrong(CH, "latent_to_logit_gradients", "stores every latent at every position, active or not",
       names=('inactive', 'only active', 'stored entries', 'nnz'))
def logit_grads_every_latent(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, active_fn=torch.ones_like)


@wrong(CH, "latent_to_logit_gradients", "indexes the first dim by token id: shape [d_vocab, n_pos, d_sae]",
       names=('shape', 'd_vocab', 'token id', 'index by'))
def logit_grads_by_token_id(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, by_token_id=True)


@wrong(CH, "latent_to_logit_gradients", "one backward of the summed logits, copied to every token's row",
       names=('summed', 'each token', 'same row', 'per token', 'every row', 'identical rows'))
def logit_grads_summed(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, one_grad=True)


@wrong(CH, "latent_to_logit_gradients", "returns the dense tensor",
       names=('sparse', 'dense'))
def logit_grads_dense(model, sae, tokens, token_ids):
    return _l2logit(model, sae, tokens, token_ids, dense=True)


@wrong(CH, "latent_to_logit_gradients", "keeps only latents at the last position",
       names=('every position', 'all positions', 'earlier positions', 'other positions'))
def logit_grads_last_position_only(model, sae, tokens, token_ids):
    def last_only(active):
        mask = torch.zeros_like(active)
        mask[-1] = active[-1]
        return mask
    return _l2logit(model, sae, tokens, token_ids, active_fn=last_only)


@correct(CH, "latent_to_logit_gradients", "a fresh forward pass per token id (no retain_graph)")
def logit_grads_forward_per_token(model, sae, tokens, token_ids):
    hook = sae.cfg.metadata.hook_name
    rows = []
    for t in token_ids.tolist():
        with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
            logit = model(tokens)[0, -1, t]
            latents = nodes[f"{hook}.latents"]
            logit.backward()
        active = latents[0].detach() > 0
        rows.append((active.nonzero(), latents.grad[0][active]))
    index = torch.cat([torch.cat([torch.full((len(w), 1), t), w], dim=1) for t, (w, _) in enumerate(rows)]).T
    values = torch.cat([v for _, v in rows])
    return torch.sparse_coo_tensor(index, values, (len(rows), tokens.shape[1], sae.cfg.d_sae)).coalesce()


@correct(CH, "latent_to_logit_gradients", "all token ids in one batched vector-Jacobian product")
def logit_grads_batched(model, sae, tokens, token_ids):
    hook = sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        final = model(tokens)[0, -1]
        latents = nodes[f"{hook}.latents"]
        selectors = torch.nn.functional.one_hot(token_ids, final.shape[0]).to(final.dtype)  # [k, d_vocab]
        grads = torch.autograd.grad(final, latents, grad_outputs=selectors, is_grads_batched=True)[0][:, 0]
    active = latents[0].detach() > 0  # [n_pos, d_sae]
    mask = einops.repeat(active, "p d -> k p d", k=len(token_ids))
    return torch.sparse_coo_tensor(mask.nonzero().T, grads[mask], grads.shape).coalesce()


# ---------------------------------------------------------------------------------------
# token_to_latent_gradients(model, sae, tokens, pos) -> sparse [d_sae, n_pos]


def _t2l(model, sae, tokens, pos, normalise=True, combine=None, all_positions=False, transpose=False,
         input_of=None):
    n_pos = tokens.shape[1]
    if normalise:
        pos = pos % n_pos
    kept = {}

    def leaf_input(x, hook):
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]

    def keep(x, hook):
        kept["x"] = x

    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", leaf_input),
                                                (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])
        rows = latents.detach().nonzero()[:, 0]
        e = kept["e"][0].detach() if input_of is None else input_of(model, tokens)
        stop = n_pos if all_positions else pos + 1
        combine = combine or (lambda g, e: (g * e).sum(-1))
        values = torch.stack([combine(torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0], e)[:stop]
                              for i in rows.tolist()]).detach()
    index = torch.stack([rows.repeat_interleave(stop), torch.arange(stop).repeat(len(rows))])
    shape = (sae.cfg.d_sae, n_pos)
    if transpose:
        index, shape = index[[1, 0]], (n_pos, sae.cfg.d_sae)
    return torch.sparse_coo_tensor(index, values.flatten(), shape).coalesce()


@wrong(CH, "token_to_latent_gradients", "the gradient's L2 norm at each position instead of gradient · input",
       names=('l2 norm', 'norm of the gradient', 'gradient x input', 'gradient × input', 'times the input', 'dot product', 'times input'))
def t2l_gradient_norm(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, combine=lambda g, e: g.norm(dim=-1))


@wrong(CH, "token_to_latent_gradients", "multiplies by the token embedding W_E[token] only, leaving out W_pos",
       names=('positional', 'w_pos', 'pos_embed', 'hook_resid_pre', 'position embedding'))
def t2l_token_embedding_only(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, input_of=lambda model, tokens: model.W_E[tokens[0]])


@wrong(CH, "token_to_latent_gradients", "stores every position, including those after pos",
       names=('after pos', 'later position', 'p <= pos', 'causal', 'future', 'beyond pos'))
def t2l_all_positions(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, all_positions=True)


@wrong(CH, "token_to_latent_gradients", "slices [: pos + 1] with a negative pos (empty for pos = -1)",
       names=('negative', 'pos % n_pos'))
def t2l_negative_pos(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, normalise=False)


@wrong(CH, "token_to_latent_gradients", "takes the absolute value of gradient · input",
       names=('absolute value', 'sign', 'negative'))
def t2l_absolute(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, combine=lambda g, e: (g * e).sum(-1).abs())


@wrong(CH, "token_to_latent_gradients", "returns the transpose, [n_pos, d_sae]",
       names=('shape', 'transpos'))
def t2l_transposed(model, sae, tokens, pos):
    return _t2l(model, sae, tokens, pos, transpose=True)


@wrong(CH, "token_to_latent_gradients", "adds its hooks with model.add_hook and never removes them",
       names=('hooks left', 'left a hook', 'reset_hooks', 'left on', 'attached', 'still has hooks', 'hook left'))
def t2l_leaves_hooks(model, sae, tokens, pos):
    n_pos = tokens.shape[1]
    pos = pos % n_pos
    kept = {}

    def leaf_input(x, hook):
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]

    def keep(x, hook):
        kept["x"] = x

    model.add_hook("blocks.0.hook_resid_pre", leaf_input)
    model.add_hook(sae.cfg.metadata.hook_name, keep)
    with torch.enable_grad():
        model(tokens)
        latents = sae.encode(kept["x"][0, pos])
        rows = latents.detach().nonzero()[:, 0]
        e = kept["e"][0].detach()
        values = torch.stack([(torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0] * e).sum(-1)[: pos + 1]
                              for i in rows.tolist()]).detach()
    index = torch.stack([rows.repeat_interleave(pos + 1), torch.arange(pos + 1).repeat(len(rows))])
    return torch.sparse_coo_tensor(index, values.flatten(), (sae.cfg.d_sae, n_pos)).coalesce()


@correct(CH, "token_to_latent_gradients", "leaves at hook_embed and hook_pos_embed, gradient · each summed")
def t2l_two_leaves(model, sae, tokens, pos):
    n_pos = tokens.shape[1]
    pos = pos % n_pos
    leaves, kept = {}, {}

    def make_leaf(x, hook):
        leaves[hook.name] = x.detach().requires_grad_(True)
        return leaves[hook.name]

    def keep(x, hook):
        kept["x"] = x

    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", make_leaf), ("hook_pos_embed", make_leaf),
                                                (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])
        embed, pos_embed = leaves["hook_embed"], leaves["hook_pos_embed"]
        entries, values = [], []
        for i in latents.detach().nonzero()[:, 0].tolist():
            g_tok, g_pos = torch.autograd.grad(latents[i], [embed, pos_embed], retain_graph=True)
            per_position = (g_tok[0] * embed[0].detach()).sum(-1) + (g_pos[0] * pos_embed[0].detach()).sum(-1)
            for p in range(pos + 1):
                entries.append((i, p))
                values.append(per_position[p])
    index = torch.tensor(entries, dtype=torch.long).reshape(-1, 2).T
    values = torch.stack(values) if values else torch.zeros(0)
    return torch.sparse_coo_tensor(index, values.detach(), (sae.cfg.d_sae, n_pos)).coalesce()


@correct(CH, "token_to_latent_gradients", "backward() per latent with .grad zeroed, einsum for the dot product, "
         "forward stopped after the SAE's layer")
def t2l_backward_einsum(model, sae, tokens, pos):
    n_pos = tokens.shape[1]
    pos = pos % n_pos
    layer = int(sae.cfg.metadata.hook_name.split(".")[1])
    kept = {}

    def leaf_input(x, hook):
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]

    def keep(x, hook):
        kept["x"] = x

    rows, values = [], []
    with torch.enable_grad():
        model.run_with_hooks(tokens, stop_at_layer=layer + 1,
                             fwd_hooks=[("blocks.0.hook_resid_pre", leaf_input), (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])
        e = kept["e"]
        for i in (latents.detach() > 0).nonzero()[:, 0].tolist():
            e.grad = None
            latents[i].backward(retain_graph=True)
            rows.append(i)
            values.append(einops.einsum(e.grad[0, : pos + 1], e.detach()[0, : pos + 1], "p d, p d -> p"))
    rows_t = torch.tensor(rows, dtype=torch.long)
    index = torch.stack([rows_t.repeat_interleave(pos + 1), torch.arange(pos + 1).repeat(len(rows))])
    flat = torch.cat(values) if values else torch.zeros(0)
    return torch.sparse_coo_tensor(index, flat, (sae.cfg.d_sae, n_pos)).coalesce()


# ---------------------------------------------------------------------------------------
# attn_latent_path_effects(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k")
#   -> [batch, n_latents]


def _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k", heads=None,
          w_o_layer=None, sign=-1.0, positions=None, split="b p (n h) -> b p n h", restore=True, clean_spliced=False):
    z_hook = attn_sae.cfg.metadata.hook_name
    source = int(z_hook.split(".")[1])
    name = _acts_name(attn_sae)
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=name)
    acts = cache[name]
    if clean_spliced:
        clean = _logit_diff(model.run_with_saes(tokens, saes=[attn_sae]), answer_ids, distractor_ids)
    else:
        clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
    w_o = model.W_O[source if w_o_layer is None else w_o_layer]
    model.set_use_split_qkv_input(True)
    columns = []
    for latent in latents.tolist():
        z = einops.rearrange(acts[..., latent, None] * attn_sae.W_dec[latent], split, n=model.cfg.n_heads)
        contribution = einops.einsum(z, w_o, "b p n h, n h d -> b p d")

        def remove(x, hook, contribution=contribution):
            target = head if heads is None else heads
            where = slice(None) if positions is None else positions
            if heads is None:
                x[:, where, target] += sign * contribution[:, where]
            else:
                x[:, where] += sign * contribution[:, where, None]
            return x

        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{input}_input", remove)])
        columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    if restore:
        model.set_use_split_qkv_input(False)
    return torch.stack(columns, dim=-1)


@wrong(CH, "attn_latent_path_effects", "removes the contribution from every head's input, not one head's",
       names=('every head', 'all heads', 'one head', 'other heads'))
def path_all_heads(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, heads=True)


@wrong(CH, "attn_latent_path_effects", "always patches the keys, ignoring `input`",
       names=('queries', 'the input argument', 'q/k/v', 'hook_q_input', 'hook_v_input', '`input`', 'which input'))
def path_always_keys(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, "k")


@wrong(CH, "attn_latent_path_effects", "never switches use_split_qkv_input back off",
       names=('use_split_qkv_input', 'split_qkv', 'restore'))
def path_no_restore(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, restore=False)


@wrong(CH, "attn_latent_path_effects", "uses W_O of the reading layer instead of the SAE's own layer",
       names=('w_o', 'wrong layer', 'source layer'))
def path_wrong_w_o(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, w_o_layer=layer)


@wrong(CH, "attn_latent_path_effects", "adds the contribution instead of removing it",
       names=('sign', 'negat', 'flip', 'adds', 'subtract'))
def path_adds(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, sign=1.0)


@wrong(CH, "attn_latent_path_effects", "removes the contribution at the last position only",
       names=('every position', 'all positions', 'last position only', 'other positions'))
def path_last_position(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, positions=-1)


@wrong(CH, "attn_latent_path_effects", "splits the flattened z as (d_head, n_heads) instead of (n_heads, d_head)",
       names=('rearrange', 'reshape', 'head split', '(n h)'))
def path_wrong_split(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input,
                 split="b p (h n) -> b p n h")


@wrong(CH, "attn_latent_path_effects", "clean metric from the model with the SAE spliced (no error term)",
       names=('spliced', 'error term', 'clean run', 'clean metric', 'unspliced'))
def path_spliced_clean(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return _path(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input, clean_spliced=True)


@correct(CH, "attn_latent_path_effects", "the latent's z from attn_sae.decode of a one-latent code minus "
         "decode of zeros; split-qkv state restored in a finally")
def path_decode_difference(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    source = int(attn_sae.cfg.metadata.hook_name.split(".")[1])
    name = _acts_name(attn_sae)
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=name)
    acts = cache[name]
    clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
    was = model.cfg.use_split_qkv_input
    model.set_use_split_qkv_input(True)
    try:
        columns = []
        for latent in latents.tolist():
            code = torch.zeros_like(acts)
            code[..., latent] = acts[..., latent]
            z = attn_sae.decode(code) - attn_sae.decode(torch.zeros_like(acts))  # [b, p, n_heads, d_head]
            contribution = einops.einsum(z, model.W_O[source], "b p n h, n h d -> b p d")

            def remove(x, hook, contribution=contribution):
                x = x.clone()
                x[:, :, head] = x[:, :, head] - contribution
                return x

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{input}_input", remove)])
            columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    finally:
        model.set_use_split_qkv_input(was)
    return torch.stack(columns, dim=-1)


@correct(CH, "attn_latent_path_effects", "W_O flattened to [(n_heads d_head), d_model]: each latent's "
         "direction d_j W_O once, scaled by its activation")
def path_flat_w_o(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    source = int(attn_sae.cfg.metadata.hook_name.split(".")[1])
    name = _acts_name(attn_sae)
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=name)
    acts = cache[name]
    clean = _logit_diff(model(tokens), answer_ids, distractor_ids)
    w_o = einops.rearrange(model.W_O[source], "n h d -> (n h) d")
    directions = attn_sae.W_dec[latents] @ w_o  # [n_latents, d_model]
    model.set_use_split_qkv_input(True)
    try:
        columns = []
        for i, latent in enumerate(latents.tolist()):
            contribution = acts[..., latent, None] * directions[i]  # [b, p, d_model]

            def remove(x, hook, contribution=contribution):
                x[:, :, head] -= contribution
                return x

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{input}_input", remove)])
            columns.append(_logit_diff(logits, answer_ids, distractor_ids) - clean)
    finally:
        model.set_use_split_qkv_input(False)
    return torch.stack(columns, dim=1)


# ---------------------------------------------------------------------------------------
# Changes to `names` after the first run (commit c2ec256 catalog + runner).
#
# Loosened, where the check's message names the same mistake in other words:
# - diff_batch_mean: + "reduce over a dim". Message: "expected shape [batch=6], got []: one dim
#   is missing (`batch`?); did you reduce over a dim you should keep?"
# - diff_outer_indexing: + "one dim too many". Message: "expected shape [batch=6], got [6, 6]:
#   there is one dim too many; did you forget to reduce or index a dim?"
# - ablation_leaves_sae, ig_leaves_sae: + "left an sae". Message: "`ablation_leaves_sae` left an
#   SAE at blocks.0.hook_resid_post on the model (hooks are global state) ..."
# - ig_sum_not_mean: + "without dividing by steps". Message: "summed the gradients over steps
#   without dividing by steps"
# - l2l_every_down_latent: + "outside the active latents". Message: "J (...) stores 6748 entries
#   outside the active latents (e.g. at index [1, 0, 97]): keep only latents that are active"
#
# Tightened, where a phrase matched text every message of the check carries (a false "named"):
# - t2l_absolute, diff_absolute: "abs" -> "absolute value": "abs" matched "max abs diff" in the
#   generic message "2 of 2048 entries differ, all at n_pos=3; the rest matches (max abs diff
#   0.0684, ...)", which does not name the mistake.

"""Plausible wrong implementations of chapter 07's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis, a specific test of the check or a watched
side effect."""
from __future__ import annotations

import torch

from solutions.ch07_crosslayer import clt_loss, mean_path_length, splice_clt
from utils.course.checking import Mistake

# --- clt_forward ---------------------------------------------------------------------
# (written from the parameters: the check hands over a CLT whose own encode/decode refuse to run)


def _pre(clt, s, x):
    return x @ clt.W_enc[s] + clt.b_enc[s]


def _jump(clt, s, x):
    pre = _pre(clt, s, x)
    return pre * (pre > clt.threshold[s])


def forward_same_layer_only(clt, inputs):
    return {t: _jump(clt, t, inputs[t]) @ clt.decoder(t, t) + clt.b_dec[t] for t in range(clt.cfg.n_layers)}


def forward_bias_per_source(clt, inputs):
    f = {s: _jump(clt, s, inputs[s]) for s in range(clt.cfg.n_layers)}
    return {t: sum(f[s] @ clt.decoder(s, t) + clt.b_dec[t] for s in range(t + 1)) for t in range(clt.cfg.n_layers)}


def forward_relu(clt, inputs):
    f = {s: torch.relu(_pre(clt, s, inputs[s])) for s in range(clt.cfg.n_layers)}
    return {t: sum(f[s] @ clt.decoder(s, t) for s in range(t + 1)) + clt.b_dec[t] for t in range(clt.cfg.n_layers)}


def forward_shifted_relu(clt, inputs):
    f = {s: torch.relu(_pre(clt, s, inputs[s]) - clt.threshold[s]) for s in range(clt.cfg.n_layers)}
    return {t: sum(f[s] @ clt.decoder(s, t) for s in range(t + 1)) + clt.b_dec[t] for t in range(clt.cfg.n_layers)}


def forward_encodes_target_input(clt, inputs):
    return {t: sum(_jump(clt, s, inputs[t]) @ clt.decoder(s, t) for s in range(t + 1)) + clt.b_dec[t]
            for t in range(clt.cfg.n_layers)}


# --- clt_loss ------------------------------------------------------------------------


def _terms(clt, inputs, targets, l1_coefficient, mse_of, norms_of):
    n = clt.cfg.n_layers
    latents = {s: clt.encode(s, inputs[s]) for s in range(n)}
    mse = mse_of([clt.decode_layer(t, latents) - targets[t] for t in range(n)])
    sparsity = sum((latents[s] * norms_of(clt, s)).sum(-1).mean() for s in range(n))
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def _summed(diffs):
    return sum(d.pow(2).sum(-1).mean() for d in diffs)


def _concatenated(clt, s):
    return torch.stack([clt.decoder(s, t) for t in range(s, clt.cfg.n_layers)]).pow(2).sum((0, 2)).sqrt()


def loss_mean_over_layers(clt, inputs, targets, l1_coefficient):
    return _terms(clt, inputs, targets, l1_coefficient, lambda d: _summed(d) / len(d), _concatenated)


def loss_same_layer_norm(clt, inputs, targets, l1_coefficient):
    return _terms(clt, inputs, targets, l1_coefficient, _summed, lambda clt, s: clt.decoder(s, s).norm(dim=-1))


def loss_sum_of_norms(clt, inputs, targets, l1_coefficient):
    return _terms(clt, inputs, targets, l1_coefficient, _summed,
                  lambda clt, s: sum(clt.decoder(s, t).norm(dim=-1) for t in range(s, clt.cfg.n_layers)))


def loss_plain_l1(clt, inputs, targets, l1_coefficient):
    return _terms(clt, inputs, targets, l1_coefficient, _summed, lambda clt, s: 1.0)


def loss_mse_over_dims(clt, inputs, targets, l1_coefficient):
    return _terms(clt, inputs, targets, l1_coefficient, lambda d: sum(x.pow(2).mean() for x in d), _concatenated)


def loss_detached(clt, inputs, targets, l1_coefficient):
    with torch.no_grad():
        return clt_loss(clt, inputs, targets, l1_coefficient)


# --- clt_virtual_weights ---------------------------------------------------------------


def vw_same_layer_only(clt, source, target_layer, read):
    return clt.decoder(source, source) @ read


def vw_last_decoder_only(clt, source, target_layer, read):
    return clt.decoder(source, target_layer - 1) @ read


def vw_includes_target_layer(clt, source, target_layer, read):
    last = min(target_layer, clt.cfg.n_layers - 1)
    return sum(clt.decoder(source, t) for t in range(source, last + 1)) @ read


def vw_every_decoder(clt, source, target_layer, read):
    return sum(clt.decoder(source, t) for t in range(source, clt.cfg.n_layers)) @ read


def vw_no_range_check(clt, source, target_layer, read):
    return sum(clt.decoder(source, t) for t in range(source, min(target_layer, clt.cfg.n_layers))) @ read


# --- splice_clt ----------------------------------------------------------------------


def _splice(model, clt, tokens, recon_of, error_of, add_error=True):
    latents, errors = {}, {}

    def encode(layer):
        def hook(x, hook):
            latents[layer] = clt.encode(layer, x)
        return hook

    def replace(layer):
        def hook(out, hook):
            recon = recon_of(clt, layer, latents)
            errors[layer] = error_of(out, recon)
            return recon + errors[layer] if add_error else recon
        return hook

    n = clt.cfg.n_layers
    hooks = [(clt.hook_in_at(s), encode(s)) for s in range(n)] + [(clt.hook_out_at(t), replace(t)) for t in range(n)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks), errors


def _cross(clt, layer, latents):
    return clt.decode_layer(layer, latents)


def _error(out, recon):
    return (out - recon).detach()


def splice_without_errors(model, clt, tokens):
    return _splice(model, clt, tokens, _cross, _error, add_error=False)


def splice_same_layer_errors(model, clt, tokens):
    """Errors against a per-layer reconstruction, added to the cross-layer one."""
    latents, errors = {}, {}

    def encode(layer):
        def hook(x, hook):
            latents[layer] = clt.encode(layer, x)
        return hook

    def replace(layer):
        def hook(out, hook):
            own = latents[layer] @ clt.decoder(layer, layer) + clt.b_dec[layer]
            errors[layer] = (out - own).detach()
            return clt.decode_layer(layer, latents) + errors[layer]
        return hook

    n = clt.cfg.n_layers
    hooks = [(clt.hook_in_at(s), encode(s)) for s in range(n)] + [(clt.hook_out_at(t), replace(t)) for t in range(n)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks), errors


def splice_error_flipped(model, clt, tokens):
    return _splice(model, clt, tokens, _cross, lambda out, recon: (recon - out).detach())


def splice_not_detached(model, clt, tokens):
    return _splice(model, clt, tokens, _cross, lambda out, recon: out - recon)


def splice_hooks_left(model, clt, tokens):
    logits, errors = splice_clt(model, clt, tokens)
    model.add_hook(clt.hook_out_at(0), lambda out, hook: out)
    return logits, errors


# --- mean_path_length ----------------------------------------------------------------


def _lengths(normalized, logit_weights, sources):
    """(k, m_k) for k = 1, 2, ... and the total weight arriving anywhere at each k."""
    out, term, k = [], logit_weights @ normalized, 1
    while term.abs().sum() > 0:
        out.append((k, term[sources].sum().item(), term.sum().item()))
        term, k = term @ normalized, k + 1
    return out


def path_counts_nodes(normalized, logit_weights, sources):
    return mean_path_length(normalized, logit_weights, sources) + 1


def path_unweighted(normalized, logit_weights, sources):
    ks = [k for k, m, _ in _lengths(normalized, logit_weights, sources) if m > 0]
    return sum(ks) / len(ks) if ks else float("nan")


def path_ends_anywhere(normalized, logit_weights, sources):
    rows = _lengths(normalized, logit_weights, sources)
    total = sum(a for _, _, a in rows)
    return sum(k * a for k, _, a in rows) / total if total > 0 else float("nan")


def path_divides_by_logit_weight(normalized, logit_weights, sources):
    rows = _lengths(normalized, logit_weights, sources)
    return sum(k * m for k, m, _ in rows) / logit_weights.sum().item()


def path_longest(normalized, logit_weights, sources):
    ks = [k for k, m, _ in _lengths(normalized, logit_weights, sources) if m > 0]
    return float(max(ks)) if ks else float("nan")


MISTAKES = {
    "clt_forward": [
        Mistake(forward_same_layer_only, "only layer t's own latents write into its output: a CLT's output at layer t "
                "sums f_s W_dec[s, t] over every layer s <= t"),
        Mistake(forward_bias_per_source, "b_dec[t] is added once per source layer: it is the target layer's bias, "
                "added once to each output"),
        Mistake(forward_relu, "the latents are ReLUs: a CLT's latents are JumpReLUs, z * (z > threshold), zero below "
                "each latent's threshold"),
        Mistake(forward_shifted_relu, "relu(z - threshold) shifts every active latent down by its threshold: the "
                "JumpReLU keeps z itself where z > threshold"),
        Mistake(forward_encodes_target_input, "the latents of layer s are encoded from the target layer's input: "
                "each layer's latents read their own layer's MLP input, inputs[s]"),
    ],
    "clt_loss": [
        Mistake(loss_mean_over_layers, "the reconstruction is averaged over target layers: sum it over them, so each "
                "MLP output counts as it would for its own PLT"),
        Mistake(loss_same_layer_norm, "the sparsity term weighs each latent by its same-layer decoder only: a latent "
                "pays for everything it writes, the norm of all its decoder rows W_dec[s, t], t >= s, concatenated"),
        Mistake(loss_sum_of_norms, "the sparsity term adds the norms of each decoder row: take the norm of the rows "
                "concatenated, sqrt(sum_t ||W_dec[s, t]_i||^2)"),
        Mistake(loss_plain_l1, "the sparsity term is the plain L1 of the latents: weight each latent by the norm of "
                "its decoder rows"),
        Mistake(loss_mse_over_dims, "the reconstruction is averaged over output dimensions as well (F.mse_loss): sum "
                "over d_out, average over tokens"),
        Mistake(loss_detached, "does not require grad", signature=False),
    ],
    "clt_virtual_weights": [
        Mistake(vw_same_layer_only, "only the latent's same-layer decoder W_dec[s, s]: a CLT latent also writes "
                "through W_dec[s, t] for every t after s, up to the target's layer"),
        Mistake(vw_last_decoder_only, "only the last decoder before the target: the residual stream holds the sum of "
                "every decoder W_dec[s, t], s <= t < target_layer"),
        Mistake(vw_includes_target_layer, "includes W_dec[s, target_layer]: layer L's latents read the residual stream "
                "before layer L's MLP writes, so stop at t = target_layer - 1"),
        Mistake(vw_every_decoder, "sums every decoder of the latent, also those that write after the target reads: "
                "stop at t = target_layer - 1"),
        Mistake(vw_no_range_check, "should raise a ValueError", signature=False),
    ],
    "splice_clt": [
        Mistake(splice_without_errors, "the error node is not added: the output is the replacement model's, not the "
                "model's; return reconstruction + error"),
        Mistake(splice_same_layer_errors, "the errors are measured against a per-layer reconstruction "
                "(f_t W_dec[t, t] + b_dec[t]): measure them against the CLT's whole reconstruction of layer t, the sum "
                "over every layer s <= t"),
        Mistake(splice_error_flipped, "the error has the wrong sign: error = MLP output - reconstruction"),
        Mistake(splice_not_detached, "the error nodes carry gradient", signature=False),
        Mistake(splice_hooks_left, "hooks are global state", signature=False),
    ],
    "mean_path_length": [
        Mistake(path_counts_nodes, "counts the nodes on each path: a path's length is its number of edges (one more "
                "node than edges)"),
        Mistake(path_unweighted, "averages the lengths that occur without weights: weight each length k by the "
                "influence m_k its paths carry"),
        Mistake(path_ends_anywhere, "counts paths that end at any node: only paths that end at a source (an "
                "embedding) are paths from the embeddings"),
        Mistake(path_divides_by_logit_weight, "divides by the logits' total weight: divide by the influence that "
                "reaches the sources, sum_k m_k"),
        Mistake(path_longest, "the longest path, not the mean length"),
    ],
}

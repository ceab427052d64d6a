"""Checks of chapter 07 (Cross-layer transcoders). Each runs your function on the checks' own
toy backend and its cross-layer transcoder (and on small random CLTs of three layers, where
a two-layer CLT cannot tell some mistakes apart), watches what it does, and compares with
known outputs recorded from the reference; a failure names the likely mistake (the
catalogued ones in ``tests/mistakes``, or a generic family of ``utils.course.compare``).

A JumpReLU jumps at its threshold: a latent whose pre-activation sits within float noise of
it would be on on one machine and off on another. The checks use only tokens (or, for the
splice, compare only positions) whose pre-activations are clear of every threshold, chosen
once by the reference and stored with the known outputs."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from tests.checks import loss_entry
from tests.mistakes.ch07_crosslayer import MISTAKES
from utils.backends import Backend
from utils.clt import CLTConfig, CrossLayerTranscoder, clt_batches
from utils.course import compare
from utils.course.checking import backend, call, exercise_check, expect_tensor, fail, known, run, seed, signatures
from utils.course.compare import expect_close
from utils.graphs import centred_unembedding, normalized_adjacency

CHAPTER = "ch07_crosslayer"
CLEAR = 2e-3  # a pre-activation this share of the largest away from its threshold stays on its side


def _random_clt(n_layers: int, d: int, d_sae: int, draw: int) -> CrossLayerTranscoder:
    """A CLT of ``n_layers`` layers with seeded random weights and thresholds in [0, 0.5)."""
    g = torch.Generator().manual_seed(draw)
    clt = CrossLayerTranscoder(CLTConfig(d_in=d, d_sae=d_sae, n_layers=n_layers))
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(d))
        clt.threshold.copy_(torch.rand(clt.threshold.shape, generator=g) * 0.5)
    return clt.to(compare.tolerance().dtype)


def _clear_rows(clt: CrossLayerTranscoder, inputs: Tensor) -> Tensor:
    """Indices of the rows (tokens) of ``inputs [layer, n, d_in]`` whose pre-activations are
    clear of every latent's threshold at every layer."""
    with torch.no_grad():
        pre = torch.stack([clt.encode_pre(s, inputs[s]) for s in range(clt.cfg.n_layers)])  # [layer, n, d_sae]
        gap = (pre - clt.threshold[:, None, :]).abs()
        clear = (gap > CLEAR * pre.abs().amax((1, 2), keepdim=True)).all(-1).all(0)
    return clear.nonzero().flatten().cpu()


def _mlp_io(bk: Backend, n_seqs: int, draw: int, max_rows: int) -> tuple[Tensor, Tensor]:
    """MLP inputs and outputs ``[layer, n, d]`` of every layer on corpus text (BOS left out),
    at most ``max_rows`` tokens, all clear of the CLT's thresholds (chosen by the reference)."""
    tokens = bk.world.corpus(n_seqs=n_seqs, seq_len=24, seed=draw).tokens
    batch = next(clt_batches(bk.model, [tokens], bk.model.cfg.n_layers, weight_by_residual=False, drop_bos=True))
    rows = known(f"rows_{draw - seed(0)}", _clear_rows(bk.clt, batch.inputs)[:max_rows])
    return batch.inputs[:, rows], batch.targets[:, rows]


def _random_io(clt: CrossLayerTranscoder, n: int, draw: int) -> tuple[Tensor, Tensor]:
    """Random inputs and targets ``[layer, n, d]`` for a random CLT, rows clear of thresholds."""
    g = torch.Generator().manual_seed(draw)
    shape = (clt.cfg.n_layers, 4 * n, clt.cfg.d_in)
    x, y = torch.randn(shape, generator=g).to(clt.dtype), torch.randn(shape, generator=g).to(clt.dtype)
    rows = _clear_rows(clt, x)[:n]
    return x[:, rows], y[:, rows]


def _as_dict(out: Any, n_layers: int, name: str) -> dict[int, Any]:
    if not isinstance(out, dict):
        fail(f"{name} should return a dict {{layer: tensor}}, got {type(out).__name__}")
    if sorted(out) != list(range(n_layers)):
        fail(f"{name} should have one entry per layer, keys {list(range(n_layers))}; got keys {sorted(out)}")
    return out


# ---------------------------------------------------------------------------------------
# 1. clt_forward


def _without_shortcuts(clt: CrossLayerTranscoder) -> CrossLayerTranscoder:
    """``clt`` (the same parameters) whose own forward-pass methods refuse to run: the
    exercise is to write them."""
    def refuse(method: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"clt.{method} is the forward pass you are writing: compute it from clt.W_enc, "
                               f"clt.b_enc, clt.threshold, clt.decoder(s, t) and clt.b_dec")
        return refused

    view = copy.copy(clt)
    for method in ("encode", "encode_pre", "decode", "decode_layer", "forward", "__call__"):
        object.__setattr__(view, method, refuse(method))
    return view


@exercise_check(CHAPTER)
def check_clt_forward(clt_forward: Any) -> None:
    bk = backend()
    x, _ = _mlp_io(bk, 12, seed(10), max_rows=40)
    small = _random_clt(3, 8, 16, seed(11))
    xs, _ = _random_io(small, 12, seed(12))
    cases = [
        ("the organism's CLT, 40 tokens", bk.clt, {s: x[s] for s in range(x.shape[0])}, "token d_out"),
        ("the organism's CLT, inputs [batch, pos, d_in]", bk.clt, {s: x[s, :24].reshape(4, 6, -1) for s in range(x.shape[0])},
         "batch pos d_out"),
        ("a random 3-layer CLT", small, {s: xs[s] for s in range(3)}, "token d_out"),
    ]
    for i, (name, clt, inputs, dims) in enumerate(cases):
        got = _as_dict(run(clt_forward, bk, _without_shortcuts(clt), inputs), clt.cfg.n_layers, "clt_forward")
        mistakes = signatures(MISTAKES["clt_forward"], clt, inputs)
        for t in range(clt.cfg.n_layers):
            expect_tensor(got[t], known(f"out_{i}_{t}", got[t]), name=f"output of layer {t} ({name})", dims=dims,
                          mistakes=mistakes.select(lambda out, t=t: out[t]))


# ---------------------------------------------------------------------------------------
# 2. clt_loss


@exercise_check(CHAPTER)
def check_clt_loss(clt_loss: Any) -> None:
    bk = backend()
    x, y = _mlp_io(bk, 12, seed(20), max_rows=40)
    small = _random_clt(3, 8, 16, seed(21))
    xs, ys = _random_io(small, 12, seed(22))
    cases = [("the organism's CLT, 40 tokens", bk.clt, x, y, 1.0), ("a random 3-layer CLT", small, xs, ys, 0.5),
             ("the organism's CLT, one token", bk.clt, x[:, :1], y[:, :1], 2.0)]
    for i, (name, shipped, inputs, targets, l1) in enumerate(cases):
        clt = copy.deepcopy(shipped)  # gradients land on the copy, never on the checks' backend
        args = (clt, inputs, targets, l1)
        got = run(clt_loss, bk, *args, grad=True)
        name = f"{name}, l1_coefficient {l1}"
        mistakes = signatures(MISTAKES["clt_loss"], *args, grad=True)
        for key in ("mse", "sparsity", "loss"):
            value = loss_entry(got, key)
            expect_tensor(value, known(f"{key}_{i}", value), name=f"{key} ({name})",
                          mistakes=mistakes.select(lambda out, key=key: out[key]))
        loss = got["loss"]
        if not loss.requires_grad:
            fail("the loss does not require grad: it is cut off from the CLT's parameters (computed under "
                 "torch.no_grad(), detached, or rebuilt from .item()); a training loop could not call backward() on it")
        params = {"b_dec": clt.b_dec, **{f"W_dec[{s}, {t}]": clt.decoder(s, t) for s, t in clt.cfg.decoder_pairs()}}
        grads = call(lambda: torch.autograd.grad(loss, list(params.values()), allow_unused=True))
        for param, grad in zip(params, grads):
            if grad is None:
                fail(f"the loss does not depend on {param}: every decoder counts, in the reconstruction of its target "
                     f"layer and in the sparsity term of its source layer")
            if param != "b_dec":  # per-latent size of a decoder's gradient
                grad = grad.norm(dim=-1)
            want = known(f"grad_{param}_{i}", grad)
            # b_dec's gradient is a mean of (reconstruction - target): float noise is relative to the targets
            atol = compare.tolerance().atol * max(1.0, float(targets.abs().max() / want.abs().max().clamp(min=1e-12)))
            expect_tensor(grad, want, name=f"gradient of the loss for {param} ({name})",
                          dims="layer d_out" if param == "b_dec" else "d_sae", atol=atol if param == "b_dec" else None)


# ---------------------------------------------------------------------------------------
# 3. clt_virtual_weights


@exercise_check(CHAPTER)
def check_clt_virtual_weights(clt_virtual_weights: Any) -> None:
    bk = backend()
    clt, model = bk.clt, bk.model
    u = centred_unembedding(model, torch.tensor([3, 17, 40], device=model.cfg.device)).to(clt.dtype)
    small = _random_clt(3, 8, 16, seed(30))
    g = torch.Generator().manual_seed(seed(31))
    read = torch.randn(8, 5, generator=g).to(small.dtype)
    # three layers first: there, each catalogued mistake gives a result of its own
    cases = [("3-layer CLT, layer 0 -> layer 1", small, 0, 1, read), ("3-layer CLT, layer 0 -> layer 2", small, 0, 2, read),
             ("3-layer CLT, layer 0 -> logits", small, 0, 3, read), ("3-layer CLT, layer 1 -> logits", small, 1, 3, read),
             ("layer 0 -> layer 1's encoder", clt, 0, 1, clt.encoder(1)[:, :32]),
             ("layer 0 -> logits", clt, 0, 2, u), ("layer 1 -> logits", clt, 1, 2, u)]
    for i, (name, d, source, target, r) in enumerate(cases):
        args = (d, source, target, r)
        got = run(clt_virtual_weights, bk, *args)
        expect_tensor(got, known(f"weights_{i}", got), name=f"virtual weights ({name})", dims="d_sae n",
                      mistakes=signatures(MISTAKES["clt_virtual_weights"], *args))
    for source, target in ((1, 1), (1, 0), (0, 3)):
        try:
            got = clt_virtual_weights(clt, source, target, u)
        except ValueError:
            continue
        except Exception as error:
            fail(f"clt_virtual_weights(clt, {source}, {target}, ...) should raise a ValueError (a latent of layer "
                 f"{source} reaches layers {source + 1}..{clt.cfg.n_layers}), not {type(error).__name__}")
        fail(f"clt_virtual_weights(clt, {source}, {target}, ...) should raise a ValueError: a latent of layer {source} "
             f"reaches layers {source + 1}..{clt.cfg.n_layers}; it returned {type(got).__name__}")


# ---------------------------------------------------------------------------------------
# 4. splice_clt


def _clear_positions(bk: Backend, tokens: Tensor) -> Tensor:
    """``[batch, pos]`` mask of the positions whose CLT pre-activations are clear of every threshold."""
    clt = bk.clt
    names = [clt.hook_in_at(s) for s in range(clt.cfg.n_layers)]
    _, cache = bk.model.run_with_cache(tokens, names_filter=names)
    pre = torch.stack([clt.encode_pre(s, cache[names[s]]) for s in range(clt.cfg.n_layers)])  # [layer, b, p, d_sae]
    gap = (pre - clt.threshold[:, None, None, :]).abs()
    return (gap > CLEAR * pre.abs().amax((1, 2, 3), keepdim=True)).all(-1).all(0).cpu()


@exercise_check(CHAPTER)
def check_splice_clt(splice_clt: Any) -> None:
    bk = backend()
    model, clt = bk.model, bk.clt
    facts = bk.world.task_batch("facts", 1, seed=seed(40)).tokens
    ioi = bk.world.task_batch("ioi", 2, seed=seed(41)).tokens
    for i, (name, tokens) in enumerate((("a fact prompt", facts), ("two IOI prompts", ioi))):
        with torch.no_grad():
            clean = model(tokens)
        got = run(splice_clt, bk, model, clt, tokens, grad=True)
        if not (isinstance(got, tuple) and len(got) == 2):
            fail(f"splice_clt should return a tuple (logits, errors), got {type(got).__name__}")
        logits, errors = got
        errors = _as_dict(errors, clt.cfg.n_layers, "the errors")
        if any(isinstance(e, Tensor) and e.requires_grad for e in errors.values()):
            fail("the error nodes carry gradient: compute them without it (`(out - recon).detach()`), or gradients "
                 "flow around the latents through the MLP and the graph's edges are wrong")
        mask = known(f"clear_{i}", _clear_positions(bk, tokens))[..., None].to(clt.dtype)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[clt.hook_out_at(t) for t in range(clt.cfg.n_layers)])
        mistakes = signatures(MISTAKES["splice_clt"], model, clt, tokens)
        for t in range(clt.cfg.n_layers):
            e = errors[t]
            if not isinstance(e, Tensor):
                fail(f"the error node of layer {t} should be a tensor, got {type(e).__name__}")
            want_shape = (*tokens.shape, clt.cfg.d_out)
            if tuple(e.shape) != want_shape:
                fail(f"the error node of layer {t} ({name}) should have shape [batch, pos, d_out] = {list(want_shape)}, "
                     f"got {list(e.shape)}")
            want = known(f"errors_{i}_{t}", e * mask.to(e.device))
            # an error is a small difference of two large outputs: float noise is relative to the MLP's output
            atol = compare.tolerance().atol * max(1.0, float(cache[clt.hook_out_at(t)].abs().max().cpu()
                                                             / want.abs().max().clamp(min=1e-12)))
            expect_tensor(e * mask.to(e.device), want, atol=atol,
                          name=f"error node of layer {t} ({name})", dims="batch pos d_out",
                          mistakes=mistakes.select(lambda out, t=t: out[1][t] * mask.to(out[1][t].device)))
        expect_tensor(logits, clean, name=f"logits with the CLT spliced in ({name}): with error nodes they are the "
                      "model's own", dims="batch pos d_vocab", mistakes=mistakes.select(lambda out: out[0]))


# ---------------------------------------------------------------------------------------
# 5. mean_path_length


def _random_dag(n: int, n_sources: int, n_logits: int, draw: int, dead_ends: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A random acyclic graph in node order (sources first, logits last), its normalised
    adjacency, logit weights and source mask; ``dead_ends`` middle nodes without input (like
    error nodes). Not every possible edge is present, so paths have different lengths."""
    g = torch.Generator().manual_seed(draw)
    adjacency = torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.5)
    adjacency = adjacency.tril(-1)
    adjacency[:n_sources] = 0  # sources have no input
    adjacency[n_sources: n_sources + dead_ends] = 0
    adjacency[:, n - n_logits:] = 0  # logits feed nothing
    weights = torch.zeros(n)
    weights[n - n_logits:] = torch.rand(n_logits, generator=g).softmax(0)
    sources = torch.zeros(n, dtype=torch.bool)
    sources[:n_sources] = True
    dtype = compare.tolerance().dtype
    return normalized_adjacency(adjacency.to(dtype)), weights.to(dtype), sources


@exercise_check(CHAPTER)
def check_mean_path_length(mean_path_length: Any) -> None:
    bk = backend()
    cases = [("a random graph of 12 nodes", _random_dag(12, 3, 2, seed(50))),
             ("a random graph of 30 nodes with 4 error-like nodes", _random_dag(30, 5, 3, seed(51), dead_ends=4)),
             ("a random graph of 20 nodes", _random_dag(20, 2, 4, seed(52)))]
    chain = torch.zeros(4, 4)
    chain[1, 0], chain[2, 1], chain[3, 2], chain[3, 0] = 1.0, 2.0, 1.0, 1.0  # 0 -> 1 -> 2 -> 3 and 0 -> 3
    dtype = compare.tolerance().dtype
    cases.append(("a chain 0 -> 1 -> 2 -> 3 with a shortcut 0 -> 3",
                  (normalized_adjacency(chain.to(dtype)), torch.tensor([0, 0, 0, 1.0], dtype=dtype),
                   torch.tensor([True, False, False, False]))))
    for i, (name, args) in enumerate(cases):
        got = run(mean_path_length, bk, *args)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        want = known(f"length_{i}", got)
        for diagnosis, thunk in signatures(MISTAKES["mean_path_length"], *args).items():
            other = thunk()
            if isinstance(other, Tensor):
                other = other.item()
            if isinstance(got, float) and isinstance(other, float) and not math.isclose(want, other, rel_tol=1e-4) \
                    and math.isclose(got, other, rel_tol=1e-6, abs_tol=1e-9):
                fail(f"mean path length ({name}): {diagnosis}")
        expect_close(got, want, name=f"mean path length ({name})")
    isolated = torch.zeros(3, 3)
    isolated[2, 1] = 1.0  # the logit's only input is node 1, which has none: nothing reaches source 0
    got = run(mean_path_length, bk, normalized_adjacency(isolated.to(dtype)), torch.tensor([0, 0, 1.0], dtype=dtype),
              torch.tensor([True, False, False]))
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if not (isinstance(got, float) and math.isnan(got)):
        fail(f"when no influence reaches a source the mean path length is undefined: return float('nan'), got {got!r}")

"""Transcoder circuits: de-embeddings, pullbacks and attention paths (introduced in chapter 04).

A transcoder of layer L reads ``blocks.{L}.ln2.hook_normalized`` and writes
``blocks.{L}.hook_mlp_out``. In TransformerLens that input hook holds the residual stream
*after* centring and scaling but *before* the LayerNorm's own weight and bias:

    n(x) = P x / s(x),    P x = x - mean(x),    s(x) = sqrt(mean((P x)^2) + eps),

so latent i's pre-activation is ``a_i(x) = (P x) . W_enc[:, i] / s(x) + b_enc[i]``. (With
``normalization_type="LNPre"``, GPT-2 loaded with ``fold_ln``, the hook holds the same thing;
with RMS norms there is no ``P``.) Everything here is linear in the residual stream ``x``
except the scale ``s(x)``, which depends on the whole vector. Every input-independent
quantity below therefore takes the scale as an argument and freezes it:

* a *typical* scale (:func:`typical_scale`: the mean of ``hook_scale`` over corpus tokens)
  gives numbers in the units of a real activation on an average token;
* the *actual* scale at one position of a prompt (:func:`ln_scales`) makes a path's
  contribution exact on that prompt, with every other path held fixed (the frozen
  normalisation of a local replacement model, chapter 05).

What a frozen scale leaves out: removing or adding a direction changes ``s(x)`` itself, so
effects are not additive when the direction is a large part of ``x`` (a second-order
effect, printed in chapter 04 by comparing with true ablations).

An attention layer reads ``LN1`` *with* its weight and bias (unless they were folded into
``W_Q``, ``W_K``, ``W_V``): the value of direction ``d`` at a source position is
``((P d) / s_1 * w_1) W_V``. Attention paths (:func:`ov_pullbacks`) freeze both the scale
and the attention pattern; what they leave out is the change of the pattern itself (the QK
path).

Node ids for circuits of these latents are ``utils.nodes.Node("transcoder", layer, pos,
latent)``; chapter 05 builds its local replacement model on these functions.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.backends import Backend
from utils.metrics import auroc
from utils.nodes import layer_of, output_hook, transcoder_layer
from utils.toy.generator import Corpus

# ---------------------------------------------------------------------------------------
# Normalisation.


def centres(model: HookedSAETransformer) -> bool:
    """Whether the model's norms subtract the mean (LayerNorm) or not (RMSNorm)."""
    return model.cfg.normalization_type in ("LN", "LNPre")


def project(model: HookedSAETransformer, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """``P x``: the part of ``x`` a norm of this model sees (the mean removed for LayerNorm)."""
    return x - x.mean(-1, keepdim=True) if centres(model) else x


def ln_weight(model: HookedSAETransformer, layer: int, which: str) -> Float[Tensor, " d_model"]:
    """The weight ``w`` a norm multiplies by after scaling (ones for ``LNPre``/``RMSPre``).

    ``which`` is ``"ln1"`` (attention input) or ``"ln2"`` (MLP input). Transcoders read the
    normalised vector before ``w``; attention heads read it after."""
    ln = getattr(model.blocks[layer], which)
    w = getattr(ln, "w", None)
    return w if w is not None else torch.ones(model.cfg.d_model, dtype=model.W_E.dtype, device=model.W_E.device)


def ln_scales(model: HookedSAETransformer, tokens: Tensor, layer: int, which: str = "ln2") -> Float[Tensor, "batch pos"]:
    """The actual scale ``s(x)`` of norm ``blocks.{layer}.{which}`` at every position."""
    name = f"blocks.{layer}.{which}.hook_scale"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name, stop_at_layer=layer + 1)
    return cache[name][..., 0]


def typical_scale(model: HookedSAETransformer, tokens: Tensor, layer: int, which: str = "ln2") -> float:
    """The mean scale of norm ``blocks.{layer}.{which}`` over ``tokens``, BOS excluded (BOS
    is an outlier: the residual stream there is nothing but the BOS embedding)."""
    return ln_scales(model, tokens, layer, which)[:, 1:].mean().item()


# ---------------------------------------------------------------------------------------
# What a dictionary writes, what a transcoder reads.


def residual_writes(model: HookedSAETransformer, dictionary: SAE) -> Float[Tensor, "d_sae d_model"]:
    """The residual-stream direction one unit of each latent adds.

    A transcoder writes ``W_dec`` into ``hook_mlp_out``, which is added to the residual
    stream; an attention SAE on ``hook_z`` writes ``W_dec`` into the heads' outputs, which
    reach the residual stream through ``W_O`` (summed over heads); a residual SAE's decoder
    rows are residual directions already."""
    hook = dictionary.cfg.metadata.hook_name
    if hook.endswith("attn.hook_z"):
        W_O = model.blocks[layer_of(hook)].attn.W_O  # [n_heads, d_head, d_model]
        W_dec = einops.rearrange(dictionary.W_dec, "s (n h) -> s n h", n=W_O.shape[0])
        return einops.einsum(W_dec, W_O, "s n h, n h d -> s d")
    return dictionary.W_dec


def encoder_preacts(
    model: HookedSAETransformer, transcoder: SAE, x: Float[Tensor, "... d_model"], scale: float | Float[Tensor, "..."]
) -> Float[Tensor, "... d_sae"]:
    """Pre-activations ``(P x) . W_enc / s + b_enc`` of a transcoder for residual-stream
    vectors ``x`` with the scale frozen at ``scale`` (a number, or one per vector)."""
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return (project(model, x) / scale[..., None]) @ transcoder.W_enc + transcoder.b_enc


# ---------------------------------------------------------------------------------------
# Input-independent connections.


def de_embeddings(model: HookedSAETransformer, transcoder: SAE, scale: float) -> Float[Tensor, "d_vocab d_sae"]:
    """The pre-activation of every latent when the residual stream holds one token's
    embedding, ``(P W_E[t]) . W_enc / scale + b_enc``: which tokens drive each latent
    directly. Leaves out the positional embedding, every attention layer and (for a
    transcoder after layer 0) every earlier MLP, and freezes the scale."""
    return encoder_preacts(model, transcoder, model.W_E, scale)


def extended_de_embeddings(
    model: HookedSAETransformer, upstream: Sequence[SAE], transcoder: SAE, scales: Sequence[float]
) -> Float[Tensor, "d_vocab d_sae"]:
    """De-embeddings through earlier MLPs: start from ``x = W_E[t]``; for each upstream
    transcoder (in layer order) add its output ``ReLU(a(x; scale_k)) W_dec + b_dec``; read
    the last transcoder's pre-activation with ``scales[-1]``. Attention is left out."""
    if len(scales) != len(upstream) + 1:
        raise ValueError(f"one scale per upstream transcoder and one for the last: expected {len(upstream) + 1}, got {len(scales)}")
    x = model.W_E
    for up, scale in zip(upstream, scales):
        x = x + encoder_preacts(model, up, x, scale).relu() @ up.W_dec + up.b_dec
    return encoder_preacts(model, transcoder, x, scales[-1])


def pullbacks(model: HookedSAETransformer, upstream: SAE, transcoder: SAE, scale: float) -> Float[Tensor, "d_up d_down"]:
    """``p[k, j] = (P d_k) . W_enc[:, j] / scale``: how much one unit of upstream latent k
    raises downstream latent j's pre-activation through the residual stream at the same
    position (the direct path), with ``d_k`` what k writes (:func:`residual_writes`)."""
    return project(model, residual_writes(model, upstream)) @ transcoder.W_enc / scale


def ov_pullbacks(
    model: HookedSAETransformer, upstream: SAE, transcoder: SAE, head: int, scale_in: float, scale_out: float
) -> Float[Tensor, "d_up d_down"]:
    """The same through head ``head`` of the transcoder's own layer, per unit of attention:
    ``v[k, j] = ((P d_k) / scale_in * w_1) W_V W_O . P W_enc[:, j] / scale_out``, where
    ``scale_in`` is ``ln1``'s scale at the source position and ``scale_out`` ``ln2``'s at the
    destination. Multiply by the attention weight from destination to source and by the
    upstream activation at the source to get one path's contribution."""
    layer = transcoder_layer(transcoder)
    attn = model.blocks[layer].attn
    value_in = project(model, residual_writes(model, upstream)) / scale_in * ln_weight(model, layer, "ln1")
    out = value_in @ attn.W_V[head] @ attn.W_O[head]  # [d_up, d_model]
    return project(model, out) @ transcoder.W_enc / scale_out


# ---------------------------------------------------------------------------------------
# Input-dependent connections on prompts (direct and attention paths), and true ablations.


def upstream_contributions(
    model: HookedSAETransformer, upstream: SAE, transcoder: SAE, latent: int,
    tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, " batch"], attention: bool = True,
) -> Float[Tensor, "batch d_up"]:
    """What each upstream latent contributes to ``latent``'s pre-activation at
    ``positions[b]`` of prompt ``b``, with every normalisation scale and attention pattern
    frozen at its value on the prompt: the direct path (pullback times activation at the
    same position) plus, if ``attention``, every head's OV path from every earlier position.

    ``upstream`` must write just before ``transcoder``'s layer (a transcoder of the layer
    before, or an attention SAE of the same layer with ``attention=False``): paths through
    MLPs in between are not followed."""
    layer = transcoder_layer(transcoder)
    up_hook = upstream.cfg.metadata.hook_name
    names = [up_hook, f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale", f"blocks.{layer}.attn.hook_pattern"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=layer + 1)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    acts = upstream.encode(cache[up_hook])  # [batch, pos, d_up]
    s2 = cache[names[2]][rows, positions]  # [batch, 1]
    total = acts[rows, positions] * pullbacks(model, upstream, transcoder, 1.0)[:, latent] / s2
    if attention:
        weights = cache[names[3]][rows, :, positions] / cache[names[1]][:, None, :, 0]  # [batch, head, src]
        for head in range(model.cfg.n_heads):
            per_unit = ov_pullbacks(model, upstream, transcoder, head, 1.0, 1.0)[:, latent]  # [d_up]
            total = total + einops.einsum(weights[:, head], acts, "b s, b s k -> b k") * per_unit / s2
    return total


def upstream_ablations(
    model: HookedSAETransformer, upstream: SAE, transcoder: SAE, latent: int,
    tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, " batch"], up_latents: Int[Tensor, " n_up"],
) -> Float[Tensor, "batch n_up"]:
    """The true effect of zeroing each of ``up_latents`` (at every position, ``upstream``
    spliced with its error term) on ``latent``'s pre-activation at ``positions[b]``: one
    forward pass over ``batch * n_up`` rows (chapter 04's ``upstream_ablation_effects`` exercise, batched)."""
    n, m = tokens.shape[0], len(up_latents)
    acts_hook = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_hook = transcoder.cfg.metadata.hook_name
    read = positions.repeat(m + 1)  # row i * n + b reads prompt b
    kept: dict[str, Tensor] = {}

    def zero(acts: Float[Tensor, "rows pos d_sae"], hook: Any) -> Float[Tensor, "rows pos d_sae"]:
        block = acts[n:].view(m, n, *acts.shape[1:])  # block i ablates up_latents[i]; rows 0..n-1 are clean
        block[torch.arange(m), :, :, up_latents] = 0.0
        return acts

    with torch.no_grad(), model.saes(saes=[upstream], use_error_term=True):
        with model.hooks(fwd_hooks=[(acts_hook, zero), (down_hook, lambda x, hook: kept.update(x=x))]):
            model(tokens.repeat(m + 1, 1), stop_at_layer=transcoder_layer(transcoder) + 1)
    x = kept["x"][torch.arange(n * (m + 1), device=tokens.device), read]  # [rows, d_in]
    pre = x @ transcoder.W_enc[:, latent] + transcoder.b_enc[latent]
    return (pre[n:].view(m, n) - pre[:n]).T


# ---------------------------------------------------------------------------------------
# Ground truth (toy backend): how well a latent tracks a planted label.


def auroc_and_precision(
    acts: Float[Tensor, "token latent"], labels: Bool[Tensor, "token label"]
) -> tuple[Float[Tensor, "label latent"], Float[Tensor, "label latent"]]:
    """AUROC of each latent's activation as a score for each label (ties count 1/2), and
    its precision: the share of its activation mass on labelled tokens,
    ``sum_t y[t] a[t] / sum_t a[t]`` (0 for a latent that never fires)."""
    scores = auroc(acts.float().cpu(), labels.cpu())
    acts = acts.double().cpu()
    precision = (labels.double().cpu().T @ acts) / acts.sum(0).clamp(min=torch.finfo(acts.dtype).tiny)
    return scores, precision.float()


# ---------------------------------------------------------------------------------------
# The blind case study (chapter 04): latents of transcoder 1 with unambiguous ground truth.

BLIND_CASE_LAYER = 1
BLIND_CASE_POOL = (29, 147, 172)  # checked against the generator by tests/test_transcoders.py
# The ground truth is computed once, on this corpus, whatever seed the grader re-checks with:
# a learner's answer thus gets the same grade for every seed (tests/test_transcoders.py).
BLIND_CASE_CORPUS = {"n_seqs": 1024, "seq_len": 32, "seed": 0}
BLIND_CASE_CONTEXTS = 32  # the latent's strongest activations at which its upstream latents are measured
BLIND_CASE_CRITERIA = {"auroc": 0.9, "precision": 0.5, "runner_up_gap": 0.05}


def tracked_label(scores: dict[str, tuple[float, float]]) -> str:
    """The label a latent tracks, judged on AUROC and precision together: among the labels
    that hold at least half the largest precision, the one with the highest AUROC.

    AUROC alone would let a label the latent fires on a little almost everywhere (high AUROC,
    precision near 0.1) beat the label that holds most of its activation; precision alone
    would let a broader label that contains the right one tie with it."""
    most = max(p for _, p in scores.values())
    return max((name for name, (_, p) in scores.items() if p >= most / 2), key=lambda name: scores[name][0])


@dataclass
class CaseTruth:
    """Ground truth of one latent: the label it tracks (:func:`tracked_label`, with its AUROC
    and precision), every label's (AUROC, precision), and its upstream latents at its
    strongest activations: ``effects``, the mean change of its pre-activation when each
    candidate is zeroed (true ablation, largest in size first), and ``contributions``,
    every upstream latent's mean linearised contribution (direct and attention paths,
    :func:`upstream_contributions`), both averaged over the contexts ``tokens`` read at
    ``positions``."""

    latent: int
    label: str
    auroc: float
    precision: float
    scores: dict[str, tuple[float, float]]
    effects: dict[int, float]
    contributions: Float[Tensor, " d_up"]
    tokens: Int[Tensor, "n_contexts pos"]  # the contexts of its strongest activations
    positions: Int[Tensor, " n_contexts"]

    @property
    def main_upstream(self) -> int:
        """The upstream latent whose ablation changes the latent most."""
        return next(iter(self.effects))


def blind_case_truths(bk: Backend, latents: Sequence[int], seed: int = BLIND_CASE_CORPUS["seed"],
                      n_seqs: int = BLIND_CASE_CORPUS["n_seqs"], seq_len: int = BLIND_CASE_CORPUS["seq_len"],
                      n_contexts: int = BLIND_CASE_CONTEXTS, n_candidates: int = 24) -> dict[int, CaseTruth]:
    """Ground truth of transcoder-1 ``latents`` on a corpus drawn with ``seed`` (by default
    the blind case's fixed corpus): AUROC and precision of every planted label (BOS
    excluded), and the true ablation effect of the ``n_candidates`` transcoder-0 latents with
    the largest linearised contribution at each latent's ``n_contexts`` strongest activations."""
    model = bk.model
    up, down = bk.dictionary("transcoder", BLIND_CASE_LAYER - 1), bk.dictionary("transcoder", BLIND_CASE_LAYER)
    corpus = bk.world.corpus(n_seqs, seq_len, seed)
    hook = down.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(corpus.tokens, names_filter=hook, stop_at_layer=BLIND_CASE_LAYER + 1)
        acts = down.encode(cache[hook])[..., list(latents)]  # [batch, pos, n]
    names = list(bk.world.label_names)
    labels = torch.stack([corpus.labels[name][:, 1:].flatten() for name in names], 1)
    aurocs, precisions = auroc_and_precision(acts[:, 1:].flatten(0, 1), labels)  # [label, n]
    truths = {}
    for i, latent in enumerate(latents):
        scores = {name: (aurocs[j, i].item(), precisions[j, i].item()) for j, name in enumerate(names)}
        best = tracked_label(scores)
        strongest = acts[..., i].flatten().topk(n_contexts).indices
        seqs, positions = strongest // seq_len, strongest % seq_len
        tokens = corpus.tokens[seqs, : int(positions.max()) + 1]
        with torch.no_grad():
            linear = upstream_contributions(model, up, down, latent, tokens, positions).mean(0)  # [d_up]
            candidates = linear.abs().topk(n_candidates).indices
            effects = upstream_ablations(model, up, down, latent, tokens, positions, candidates).mean(0)
        order = effects.abs().argsort(descending=True).tolist()
        truths[latent] = CaseTruth(latent, best, *scores[best], scores,
                                   {int(candidates[j]): effects[j].item() for j in order}, linear, tokens, positions)
    return truths


def unambiguous(truth: CaseTruth, criteria: dict[str, float] = BLIND_CASE_CRITERIA) -> bool:
    """Whether a latent's ground truth is clear: its label has AUROC and precision above the
    criteria, and no other label comes close on both: each has an AUROC lower by more than
    ``runner_up_gap`` or less than half the precision."""
    if truth.auroc < criteria["auroc"] or truth.precision < criteria["precision"]:
        return False
    return all(a < truth.auroc - criteria["runner_up_gap"] or p < truth.precision / 2
               for name, (a, p) in truth.scores.items() if name != truth.label)


class _Hidden:
    """Stands where ground truth would be: any use says the case study is blind."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise PermissionError(f"the blind case study may not read {self._what}: "
                              "work from de-embeddings, pullbacks, contexts and logits")

    def __getitem__(self, key: Any) -> Any:
        return self.__getattr__("getitem")

    def __iter__(self) -> Any:
        return self.__getattr__("iter")


_TEXT: "weakref.WeakKeyDictionary[Any, dict[tuple[int, int, int], Tensor]]" = weakref.WeakKeyDictionary()


class BlindWorld:
    """The generator without its labels: the same text, with ``labels`` hidden. Corpus text
    is remembered per world (generating it is slow, and a case study asks for the same
    corpus many times); each call returns a fresh copy of the tokens."""

    def __init__(self, world: Any):
        self._world = world
        self.tasks, self.label_names, self.vocab = world.tasks, world.label_names, world.vocab

    def corpus(self, n_seqs: int, seq_len: int, seed: int = 0) -> Any:
        texts = _TEXT.setdefault(self._world, {})
        key = (n_seqs, seq_len, seed)
        if key not in texts:
            texts[key] = self._world.corpus(n_seqs, seq_len, seed).tokens
        return Corpus(texts[key].clone(), _Hidden("the corpus labels"))  # type: ignore[arg-type]  # hidden on purpose

    def task_batch(self, task: str, n: int, seed: int = 0) -> Any:
        return replace(self._world.task_batch(task, n, seed), labels=_Hidden("the task labels"))


def blind(bk: Backend) -> Backend:
    """A view of backend ``bk`` for a blind case study: the same model and dictionaries, no
    explanation table, and a generator whose text carries no labels."""
    return replace(bk, world=BlindWorld(bk.world), explanations=_Hidden("the explanation table"))

# %% [markdown]
# # Chapter 04 — Transcoder circuits: de-embeddings, pullbacks and a blind case study
#
# A residual-stream SAE describes *what is in* the residual stream at one layer. Between two
# such layers sits an MLP, a nonlinear function of thousands of neurons, so the connection
# from a latent at layer 0 to a latent at layer 1 has to be measured prompt by prompt, as
# chapter 01 did with gradients. A **transcoder** (Dunefsky, Chlenski and Nanda 2024) removes
# that obstacle: it is trained to *imitate* an MLP, reading the MLP's input and writing its
# output through a sparse layer of latents,
#
# $$f(x) = \mathrm{ReLU}\big(n(x)\,W_{enc} + b_{enc}\big), \qquad \widehat{\mathrm{MLP}}(x) = f(x)\,W_{dec} + b_{dec},$$
#
# where $n(x)$ is the MLP's normalised input. Each latent *reads* the residual stream along
# one encoder column and *writes* along one decoder row. Stack two of them and the weight
# from an upstream latent to a downstream latent is a dot product of a decoder row and an
# encoder column: a connection you can read off the weights, before running any prompt.
#
# This chapter works on the model organism's two MLP transcoders. We splice them into the
# model, read which tokens drive a latent (**de-embeddings**), which earlier latents feed it
# (**pullbacks**), compare those weight-based connections with what ablation says on real
# prompts, follow the part that travels through attention, and finish with a **blind case
# study** graded against the organism's ground truth.
#
# **Learning objectives**
# - Splice a transcoder in place of its MLP, with and without its error term, and compare
#   its cost with a residual SAE's.
# - Compute de-embeddings and extended de-embeddings, and say what they leave out: attention,
#   position, and the normalisation scale.
# - Compute pullbacks, the input-independent weights between transcoder latents, and turn
#   them into input-dependent connections on a prompt.
# - Check connections against true ablations, and explain the disagreements: attention paths
#   and the normalisation scale.
# - Compute one attention path through one head's OV circuit with the pattern frozen.
# - Explain an unlabelled latent from these tools alone, and have the answer graded.
#
# *If you read one thing:* section 3, on pullbacks and how the normalisation's scale enters
# them. Chapter 05 builds its attribution graphs on the same idea.

# %% tags=["module"]
from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import HookedSAETransformer, Transcoder
from torch import Tensor

from utils.nodes import layer_of

# %%
import plotly.express as px
import plotly.graph_objects as go

from utils.backends import load_backend
from utils.course.checking import checked, earlier
from utils.toy.report import task_scores
from utils.transcoders import (
    BLIND_CASE_LAYER,
    BLIND_CASE_POOL,
    auroc_and_precision,
    de_embeddings,
    blind_case_truths,
    extended_de_embeddings,
    pullbacks,
    typical_scale,
    upstream_contributions,
)
from utils.views import sig3

_ = torch.set_grad_enabled(False)  # nothing in this chapter needs gradients

# %% [markdown]
# ## 1. Transcoders next to SAEs
#
# Just run the next cell: it loads the organism and its two transcoders. Every dictionary is
# keyed by the hook it *reads*; a transcoder of layer $L$ reads `blocks.L.ln2.hook_normalized`
# (the MLP's input after the LayerNorm's centring and scaling) and writes
# `cfg.metadata.hook_name_out = blocks.L.hook_mlp_out`.

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
tc0, tc1 = bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
for tc in (tc0, tc1):
    print(f"reads {tc.cfg.metadata.hook_name}, writes {tc.cfg.metadata.hook_name_out}, {tc.cfg.d_sae} latents")

# %% [markdown]
# When SAELens splices a transcoder, it hooks the *output* hook: the MLP runs as before,
# and its output is replaced by the transcoder's reconstruction of it from the input
# captured at `ln2.hook_normalized`. So the latents are cached under the **output** hook,
# `blocks.L.hook_mlp_out.hook_sae_acts_post`, not under the hook the transcoder reads:

# %%
corpus = world.corpus(n_seqs=128, seq_len=48, seed=0)
_, cache = model.run_with_cache_with_saes(corpus.tokens[:2], saes=[tc0])
print(sorted(name for name in cache.keys() if "hook_sae" in name))

# %% [markdown] exercise="transcoder_metrics" title="Measure what splicing a transcoder costs" difficulty=2 importance=4 minutes=20
# Compute, over `tokens`, with BOS excluded from the first two:
#
# - `l0`: the mean number of active latents per token;
# - `explained_variance`: $1 - \sum \lVert y - \hat y\rVert^2 / \sum \lVert y - \bar y\rVert^2$
#   where $y$ is the MLP's real output (`hook_mlp_out` of the clean model), $\hat y$ the
#   transcoder's reconstruction and $\bar y$ the mean of $y$ over tokens;
# - `ce_clean`: the clean model's mean next-token loss;
# - `ce_spliced`: the loss with the transcoder spliced in place of the MLP, without its
#   error term;
# - `ce_with_error`: the same with `use_error_term=True` (it should equal `ce_clean`);
# - `ce_zero`: the loss with the MLP's output replaced by zeros;
# - `ce_recovered`: $(\mathrm{CE}_{zero} - \mathrm{CE}_{spliced}) / (\mathrm{CE}_{zero} - \mathrm{CE}_{clean})$.
#
# Return them as a dict of Python floats, and leave no transcoder attached.

# %%
def transcoder_metrics(model: HookedSAETransformer, transcoder: Transcoder, tokens: Int[Tensor, "batch pos"]) -> dict[str, float]:
    """L0, explained variance of the MLP output, and losses clean / spliced / with error / MLP zeroed."""
    ### BEGIN SOLUTION
    out_hook = transcoder.cfg.metadata.hook_name_out  # SAELens caches a transcoder under the hook it writes
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[transcoder], return_type="loss")
    acts = cache[f"{out_hook}.hook_sae_acts_post"][:, 1:]  # [batch, pos - 1, d_sae], no BOS
    y_hat = cache[f"{out_hook}.hook_sae_recons"][:, 1:]
    ce_clean, clean_cache = model.run_with_cache(tokens, return_type="loss", names_filter=out_hook)
    y = clean_cache[out_hook][:, 1:]  # the MLP's own output
    with model.saes(saes=[transcoder], use_error_term=True):
        ce_with_error = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(out_hook, lambda act, hook: torch.zeros_like(act))])
    residual = (y - y_hat).pow(2).sum()
    total = (y - y.mean(dim=(0, 1))).pow(2).sum()
    return {
        "l0": (acts > 0).float().sum(-1).mean().item(),
        "explained_variance": (1 - residual / total).item(),
        "ce_clean": ce_clean.item(),
        "ce_spliced": ce_spliced.item(),
        "ce_with_error": ce_with_error.item(),
        "ce_zero": ce_zero.item(),
        "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item(),
    }
    ### END SOLUTION

# %% [markdown] hint="transcoder_metrics"
# `run_with_cache_with_saes(tokens, saes=[transcoder], return_type="loss")` gives the spliced
# loss and a cache whose transcoder entries sit under `transcoder.cfg.metadata.hook_name_out`:
# `.hook_sae_acts_post` (latents) and `.hook_sae_recons` ($\hat y$). The MLP's real output
# comes from a clean `run_with_cache` at that same hook name.

# %% [markdown] hint="transcoder_metrics"
# For `ce_zero`, `run_with_hooks` with a hook on `hook_mlp_out` returning
# `torch.zeros_like(act)`: zero the MLP's output, not the transcoder's input.

# %% [markdown]
# Both transcoders next to the residual SAE of the same layer (chapter 00's
# `reconstruction_metrics`). Zeroing a whole MLP costs far less than zeroing a whole
# residual stream, so CE-loss recovered is not comparable between the two kinds; the
# *added* loss, spliced minus clean, is.

# %%
eval_tokens = world.corpus(n_seqs=32, seq_len=48, seed=1).tokens
tc_metrics = {layer: checked(transcoder_metrics)(model, bk.dictionary("transcoder", layer), eval_tokens) for layer in (0, 1)}
sae_metrics = {layer: earlier("ch00_toolkit", "reconstruction_metrics")(model, bk.dictionary("resid_sae", layer), eval_tokens) for layer in (0, 1)}
for layer in (0, 1):
    t, s = tc_metrics[layer], sae_metrics[layer]
    print(f"layer {layer} transcoder:   L0 {sig3(t['l0'])}, explained variance {sig3(t['explained_variance'])}, "
          f"CE clean/spliced/with error/MLP zeroed {sig3(t['ce_clean'])}/{sig3(t['ce_spliced'])}/"
          f"{sig3(t['ce_with_error'])}/{sig3(t['ce_zero'])}, added loss {sig3(t['ce_spliced'] - t['ce_clean'])}")
    print(f"layer {layer} residual SAE: L0 {sig3(s['l0'])}, explained variance {sig3(s['explained_variance'])}, "
          f"added loss {sig3(s['ce_spliced'] - s['ce_clean'])}")

# %% [markdown]
# Loss averages over every token; a circuit is about the planted tasks. Accuracy on each
# task (100 prompts each), clean and with each dictionary spliced:

# %%
task_batches = {task: world.task_batch(task, 100, seed=7) for task in world.tasks}


def task_accuracy(saes: list, use_error_term: bool = False) -> dict[str, float]:
    """Share of prompts whose top prediction is an acceptable answer, per task."""
    with model.saes(saes=saes, use_error_term=use_error_term):
        return {task: task_scores(model(b.tokens)[:, -1], b)["accuracy"] for task, b in task_batches.items()}


conditions = {"clean": task_accuracy([])}
for layer in (0, 1):
    conditions[f"transcoder {layer}"] = task_accuracy([bk.dictionary("transcoder", layer)])
    conditions[f"transcoder {layer} + error"] = task_accuracy([bk.dictionary("transcoder", layer)], use_error_term=True)
    conditions[f"residual SAE {layer}"] = task_accuracy([bk.dictionary("resid_sae", layer)])
print(f"{'':>22}" + "".join(f"{task:>14}" for task in world.tasks))
for name, acc in conditions.items():
    print(f"{name:>22}" + "".join(f"{sig3(acc[task]):>14}" for task in world.tasks))

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure([go.Bar(name=name, x=list(world.tasks), y=[acc[t] for t in world.tasks]) for name, acc in conditions.items()])
fig.update_layout(barmode="group", title="Task accuracy with one dictionary spliced (no error term unless noted)",
                  xaxis_title="task", yaxis_title="accuracy (share of 100 prompts)", legend_title="model")
fig.show()

# %% [markdown]
# With the error term the transcoder changes nothing (the row equals the clean one), which
# is what lets us ablate its latents one at a time later on. Without it, both transcoders
# keep every task within a tenth of the clean accuracy: the MLPs of this organism are well
# described by about 13 active latents per token.

# %% [markdown]
# ## 2. De-embeddings: which tokens drive a latent directly
#
# What does a transcoder latent read? Its pre-activation is a linear function of the
# residual stream $x$ *except for the normalisation*. TransformerLens's `ln2.hook_normalized`
# holds $n(x) = Px / s(x)$, the residual stream with its mean removed ($P$, a projection) and
# divided by its scale $s(x) = \sqrt{\mathrm{mean}((Px)^2) + \epsilon}$. The LayerNorm's own
# weight and bias are applied *after* that hook, on the way into the MLP; the transcoder
# reads the vector before them (whatever they do, it had to learn into its own encoder). So
#
# $$a_i(x) = \frac{(Px)\cdot W_{enc}[:, i]}{s(x)} + b_{enc}[i].$$
#
# At layer 0 the residual stream is the token embedding, plus the position embedding, plus
# what attention wrote. The **de-embedding** keeps the token embedding alone,
# $x = W_E[t]$, for every token $t$ of the vocabulary at once. The scale $s(x)$ depends on
# the whole vector, so we have to choose it. Three choices, with what each leaves out:
#
# - *a typical value* (the mean of `ln2.hook_scale` over corpus tokens): numbers in the units
#   of a real pre-activation on an average token, but it ignores how the scale varies;
# - *the embedding's own scale* $s(W_E[t])$, as if nothing else were in the residual stream:
#   exact for that fiction, and far too small here (the embedding is a small part of the
#   residual stream), which inflates every number;
# - *the actual scale at one position of a prompt*: exact on that prompt, and no longer
#   input-independent.
#
# We freeze the scale at a number given as an argument, and use the typical value.

# %% [markdown] exercise="de_embedding" title="Compute a latent's de-embedding" difficulty=2 importance=5 minutes=15
# Return the pre-activation latent `latent` of `transcoder` would have if the residual
# stream held only the token embedding $W_E[t]$, for every token $t$, with the
# normalisation scale frozen at `scale`. It works for a transcoder at any layer (the direct
# path from the embedding skips everything in between).

# %%
def de_embedding(model: HookedSAETransformer, transcoder: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_vocab"]:
    """a[t] = (W_E[t] - mean(W_E[t])) . W_enc[:, latent] / scale + b_enc[latent]."""
    ### BEGIN SOLUTION
    centred = model.W_E - model.W_E.mean(-1, keepdim=True)  # the LayerNorm removes each vector's mean
    return centred @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]
    ### END SOLUTION

# %% [markdown] hint="de_embedding"
# `model.W_E` is `[d_vocab, d_model]` and `transcoder.W_enc` is `[d_model, d_sae]`. Subtract
# each embedding's mean over `d_model` before the dot product; the LayerNorm's `w` and `b`
# are *not* part of what the transcoder reads.

# %% [markdown]
# Just run the next cell: one pass over a corpus gives every cache this section needs, the
# typical scale of each layer's `ln2` (BOS excluded), and the ground truth of every
# transcoder latent (the planted label it tracks best by AUROC, with its precision: the
# share of its activation that falls on tokens with that label). Claims below about what a
# latent tracks quote these.

# %%
_, corpus_cache = model.run_with_cache(corpus.tokens)
scales = {layer: corpus_cache[f"blocks.{layer}.ln2.hook_scale"][:, 1:].mean().item() for layer in (0, 1)}
print("typical ln2 scale:", {layer: sig3(s) for layer, s in scales.items()},
      "(utils.transcoders.typical_scale computes the same)")
corpus_labels = torch.stack([corpus.labels[name][:, 1:].flatten() for name in world.label_names], 1)  # [token, label]
latent_acts = {layer: bk.dictionary("transcoder", layer).encode(corpus_cache[f"blocks.{layer}.ln2.hook_normalized"])[:, 1:].flatten(0, 1)
               for layer in (0, 1)}  # [token, d_sae]
ground_truth = {layer: auroc_and_precision(acts, corpus_labels) for layer, acts in latent_acts.items()}


def describe(layer: int, latent: int) -> str:
    """The planted label transcoder ``layer``'s latent tracks best by AUROC, with its precision."""
    aurocs, precisions = ground_truth[layer]
    best = aurocs[:, latent].argmax().item()
    return (f"{world.label_names[best]} (AUROC {sig3(aurocs[best, latent])}, "
            f"precision {sig3(precisions[best, latent])})")


def explained(layer: int, latent: int) -> str:
    """Hover text: the latent's id and its label in the explanation table."""
    return f"transcoder-{layer} latent {latent}: {bk.explanations.lookup(f'transcoder.{layer}', latent)['label']}"


# %% [markdown]
# The de-embedding of the layer-0 latent that tracks female names best:

# %%
female = world.label_names.index("female_name")
name_latent = ground_truth[0][0][female].argmax().item()
print(f"layer-0 latent {name_latent}: {describe(0, name_latent)}")
d_emb = checked(de_embedding)(model, tc0, name_latent, scales[0])
print("de-embedding, top tokens:", ", ".join(f"{model.to_string(t)} {sig3(d_emb[t])}" for t in d_emb.topk(10).indices))

# %% [markdown]
# How good is this direct path as a description of what the latent does on real text?
# Decompose the actual pre-activation on corpus tokens exactly, with the scale at each
# position frozen at its real value: $Px$ is the sum of the token embedding, the position
# embedding and attention's output, and the pre-activation splits the same way. The share of
# the pre-activation's variance over tokens that each part carries, averaged over the
# transcoder's live latents:

# %%
def preact_parts(layer: int, c: Any) -> dict[str, Float[Tensor, "n d_sae"]]:
    """Exact split of transcoder ``layer``'s pre-activations (BOS excluded) by what wrote
    the residual stream, from a cache ``c`` of a clean run."""
    tc = bk.dictionary("transcoder", layer)
    writers = {"token embedding": ["hook_embed"], "position embedding": ["hook_pos_embed"],
               "attention": [f"blocks.{k}.hook_attn_out" for k in range(layer + 1)],
               "earlier MLPs": [f"blocks.{k}.hook_mlp_out" for k in range(layer)]}
    scale = c[f"blocks.{layer}.ln2.hook_scale"][:, 1:]
    parts = {}
    for name, hooks in writers.items():
        if hooks:
            x = sum(c[h][:, 1:] for h in hooks)
            parts[name] = ((x - x.mean(-1, keepdim=True)) / scale @ tc.W_enc).flatten(0, 1)
    parts["total"] = (c[f"blocks.{layer}.ln2.hook_normalized"][:, 1:] @ tc.W_enc + tc.b_enc).flatten(0, 1)
    return parts


parts = {layer: preact_parts(layer, corpus_cache) for layer in (0, 1)}
for layer in (0, 1):
    live = parts[layer]["total"].relu().sum(0) > 0
    total_var = parts[layer]["total"][:, live].var(0)
    shares = {name: (p[:, live].var(0) / total_var).mean().item() for name, p in parts[layer].items() if name != "total"}
    print(f"layer {layer}: variance share of each writer, mean over {int(live.sum())} live latents: "
          + ", ".join(f"{name} {sig3(v)}" for name, v in shares.items()))

# %% [markdown]
# (The shares need not add up to 1: the parts are correlated.) At layer 0, attention's
# output carries most of the variance of a typical latent and the token embedding a small
# part: in this model the tokens around a word matter more to a
# layer-0 MLP latent than the word itself. The de-embedding shows only the token's part, so
# read it as "which tokens push this latent up, everything else equal", not as "where it
# fires". How well it ranks tokens for our latent: per token of the vocabulary, its
# de-embedding against the latent's mean actual pre-activation over that token's
# occurrences in the corpus (a y = x line marks equal values; the offset between the two is
# what attention and position add on average).

# %%
flat_tokens = corpus.tokens[:, 1:].flatten()
total0 = parts[0]["total"][:, name_latent]
counts = torch.bincount(flat_tokens, minlength=model.cfg.d_vocab).float()
mean_actual = torch.zeros(model.cfg.d_vocab).index_add_(0, flat_tokens, total0) / counts.clamp(min=1)
seen = counts >= 3
r = torch.corrcoef(torch.stack([d_emb[seen], mean_actual[seen]]))[0, 1].item()
print(f"latent {name_latent}: Pearson r between de-embedding and mean actual pre-activation over "
      f"{int(seen.sum())} tokens seen at least 3 times: {sig3(r)}")

# %%
# NBVAL_IGNORE_OUTPUT
words = [model.to_string(t) for t in seen.nonzero()[:, 0]]
lo, hi = min(d_emb[seen].min(), mean_actual[seen].min()).item(), max(d_emb[seen].max(), mean_actual[seen].max()).item()
fig = go.Figure([go.Scatter(x=d_emb[seen], y=mean_actual[seen], mode="markers", text=words, name="token"),
                 go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="grey"), name="y = x")])
fig.update_layout(title=f"Layer-0 latent {name_latent}: de-embedding vs mean actual pre-activation per token (r = {sig3(r)})",
                  xaxis_title="de-embedding (pre-activation, typical scale)", yaxis_title="mean actual pre-activation",
                  yaxis_scaleanchor="x", width=700, height=600)
fig.show()

# %% [markdown]
# ### Extended de-embeddings
#
# A layer-1 latent sees the token embedding directly, and also through the layer-0 MLP,
# which the layer-0 transcoder stands in for. The **extended de-embedding** follows both
# paths for every token: put $W_E[t]$ in the residual stream, run it through transcoder 0
# (encoder, ReLU, decoder with its bias) with the layer-0 scale frozen, add the result to
# $W_E[t]$, and read latent $j$ of transcoder 1 with the layer-1 scale frozen. The ReLU in the
# middle makes the choice of the first scale matter: a scale too large switches layer-0
# latents off that a real token would switch on.
#
# Left out: attention in both layers, the position embedding, and how the scales vary.

# %% [markdown] exercise="extended_de_embedding" title="Extend the de-embedding through the layer-0 transcoder" difficulty=3 importance=4 minutes=20
# With `scales = (s_up, s_down)`, return for every token $t$
#
# $$x_t = W_E[t] + \mathrm{ReLU}\Big(\frac{P W_E[t] \cdot W^{up}_{enc}}{s_{up}} + b^{up}_{enc}\Big) W^{up}_{dec} + b^{up}_{dec},
# \qquad a[t] = \frac{P x_t \cdot W^{down}_{enc}[:, j]}{s_{down}} + b^{down}_{enc}[j].$$

# %%
def extended_de_embedding(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scales: tuple[float, float]
) -> Float[Tensor, " d_vocab"]:
    """a[t] = P(W_E[t] + up(W_E[t])) . W_enc_down[:, latent] / s_down + b_enc_down[latent], up(.) with scale s_up."""
    ### BEGIN SOLUTION
    s_up, s_down = scales

    def centre(x: Float[Tensor, "d_vocab d_model"]) -> Float[Tensor, "d_vocab d_model"]:
        return x - x.mean(-1, keepdim=True)

    up_acts = (centre(model.W_E) @ up.W_enc / s_up + up.b_enc).relu()  # [d_vocab, d_sae_up]
    resid = model.W_E + up_acts @ up.W_dec + up.b_dec  # embedding plus what the MLP adds
    return centre(resid) @ down.W_enc[:, latent] / s_down + down.b_enc[latent]
    ### END SOLUTION

# %% [markdown] hint="extended_de_embedding"
# Reuse your de-embedding for the upstream transcoder, for *all* its latents at once
# (`W_enc` without the column index), apply the ReLU, decode with `W_dec` and `b_dec`, and
# add the embedding itself before reading the downstream latent.

# %% [markdown] hint="extended_de_embedding"
# Both normalisations centre their input: centre the embedding before the upstream
# encoder, and centre the *sum* (embedding plus upstream output) before the downstream one.

# %% [markdown]
# A layer-1 latent whose direct de-embedding says little: the one that tracks pronouns best
# by AUROC. Its ground truth on corpus tokens, its direct de-embedding, and the extended one:

# %%
pronoun = world.label_names.index("pronoun")
pron_latent = ground_truth[1][0][pronoun].argmax().item()
print(f"layer-1 latent {pron_latent}: {describe(1, pron_latent)}")
direct1 = checked(de_embedding)(model, tc1, pron_latent, scales[1])
extended1 = checked(extended_de_embedding)(model, tc0, tc1, pron_latent, (scales[0], scales[1]))
for name, scores in [("direct", direct1), ("extended", extended1)]:
    print(f"{name:>9}:", ", ".join(f"{model.to_string(t)} {sig3(scores[t])}" for t in scores.topk(8).indices))

# %% [markdown]
# The precision says this latent spends most of its activation off pronouns, so "a pronoun
# latent" is only part of the story; still, the extended de-embedding puts *she* and *he*
# on top where the direct one does not: layer 0's MLP turns the pronoun embeddings into
# something this latent reads. (Every value is below zero: a pronoun alone, without its
# context, would not switch the latent on.) Over every live layer-1 latent, how well each version tracks
# the actual pre-activation on corpus tokens (Pearson r between the token's de-embedding
# and the actual pre-activation, median over latents), with two choices of the layer-0
# scale:

# %%
flat_tokens = corpus.tokens[:, 1:].flatten()
total1 = parts[1]["total"]
live1 = total1.relu().sum(0) > 0


def median_r(table: Float[Tensor, "d_vocab d_sae"]) -> float:
    """Median over live layer-1 latents of Pearson r between a de-embedding table (read at
    each corpus token) and the actual pre-activation there."""
    est, actual = table[flat_tokens][:, live1], total1[:, live1]
    est, actual = est - est.mean(0), actual - actual.mean(0)
    return ((est * actual).sum(0) / (est.norm(dim=0) * actual.norm(dim=0))).nanmedian().item()


own0 = (model.W_E - model.W_E.mean(-1, keepdim=True)).pow(2).mean(-1).add(model.cfg.eps).sqrt().mean().item()
print(f"median r over {int(live1.sum())} layer-1 latents: direct {sig3(median_r(de_embeddings(model, tc1, scales[1])))}, "
      f"extended with the typical layer-0 scale {sig3(median_r(extended_de_embeddings(model, [tc0], tc1, [scales[0], scales[1]])))}, "
      f"extended with the embeddings' own scale ({sig3(own0)}) {sig3(median_r(extended_de_embeddings(model, [tc0], tc1, [own0, scales[1]])))}")

# %% [markdown]
# The path through the layer-0 MLP roughly doubles what the token explains; neither comes
# close to the whole, because attention writes most of what the MLPs read here (the
# variance shares above). The scale matters less than one might fear, but it is a choice
# you have to make and report.

# %% [markdown]
# ## 3. Pullbacks: connections you can read off the weights
#
# Upstream latent $k$ of transcoder 0 adds $f_k\, d_k$ to the residual stream, with
# $d_k = W^{0}_{dec}[k]$. The residual stream only adds: the layer-1 attention block reads
# that vector and adds an output of its own (which can carry it to other positions: section
# 5), but the vector itself arrives unchanged at the layer-1 MLP's input *at the same
# position*. So through this direct path, one unit of $k$ changes the pre-activation of
# downstream latent $j$ by
#
# $$p_k = \frac{(P d_k)\cdot W^{1}_{enc}[:, j]}{s}.$$
#
# The vector $p$ over all upstream latents is latent $j$'s **pullback**: its encoder column
# pulled back through the upstream decoder. It is input-independent once the scale $s$ is
# frozen. (Residual SAEs have no such thing: an MLP sits between two of them.)

# %% [markdown] exercise="pullback" title="Pull a latent's encoder back through the upstream decoder" difficulty=2 importance=5 minutes=15
# Return $p_k$ for every latent $k$ of `up`, for latent `latent` of `down`, with the
# normalisation scale of `down`'s layer frozen at `scale`.

# %%
def pullback(model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_sae_up"]:
    """p[k] = (W_dec_up[k] - mean(W_dec_up[k])) . W_enc_down[:, latent] / scale."""
    ### BEGIN SOLUTION
    writes = up.W_dec - up.W_dec.mean(-1, keepdim=True)  # [d_sae_up, d_model], what the LayerNorm sees
    return writes @ down.W_enc[:, latent] / scale
    ### END SOLUTION

# %% [markdown] hint="pullback"
# `up.W_dec` is `[d_sae_up, d_model]`: each row is what one unit of an upstream latent
# writes. Centre the rows, take the dot product with the downstream encoder column, divide
# by the scale.

# %% [markdown]
# The pullback of the pronoun latent above, at the typical scale: its strongest upstream
# latents, and what the explanation table says each one tracks.

# %%
p = checked(pullback)(model, tc0, tc1, pron_latent, scales[1])
top_up = p.topk(8)
for k, v in zip(top_up.indices.tolist(), top_up.values.tolist()):
    print(f"  transcoder-0 latent {k:>3}: pullback {sig3(v)}  {describe(0, k)}")

# %%
# NBVAL_IGNORE_OUTPUT
order = p.abs().topk(15).indices
fig = go.Figure(go.Bar(x=[f"#{k}" for k in order.tolist()], y=p[order],
                       hovertext=[explained(0, k) for k in order.tolist()]))
fig.update_layout(title=f"Pullback of layer-1 latent {pron_latent}: the 15 largest in size",
                  xaxis_title="transcoder-0 latent", yaxis_title="pullback (Δ pre-activation<br>per unit upstream)")
fig.show()
fig = px.histogram(x=p, nbins=60, title=f"All {tc0.cfg.d_sae} pullback entries of layer-1 latent {pron_latent}")
fig.update_layout(xaxis_title="pullback (pre-activation per unit of upstream activation)", yaxis_title="number of upstream latents")
fig.show()

# %%
print(f"pullback entries above 0.1 in size: {int((p.abs() > 0.1).sum())} of {p.numel()}; "
      f"the largest is {sig3(p.abs().max())}")

# %% [markdown]
# The pronoun latent's strongest upstream latent is itself a layer-0 pronoun latent (see
# its label, AUROC and precision above): a two-step circuit read off the weights without a prompt. A
# large pullback is only half of a connection, though: the upstream latent must also fire.

# %% [markdown]
# ## 4. Input-dependent connections, and where they are wrong
#
# On a prompt, upstream latent $k$ fires with activation $f_k(p)$ at position $p$, and the
# normalisation scale at $p$ has its real value $s(p)$. Its direct contribution to latent
# $j$'s pre-activation at the same position is
#
# $$c_k = f_k(p)\; \frac{(P d_k)\cdot W^{1}_{enc}[:, j]}{s(p)},$$
#
# the pullback times the activation, with the frozen scale replaced by the actual one: on
# this prompt, exactly the part of the pre-activation that arrives from transcoder 0's
# latents at the same position (the rest comes from the embeddings, attention, the
# decoder bias and the error term, and $b_{enc}$).

# %% [markdown] exercise="input_dependent_connections" title="Weight the pullback by upstream activations on a prompt" difficulty=2 importance=4 minutes=15
# For every prompt of `tokens`, return $c_k$ for every upstream latent $k$ at position `pos`
# (negative positions count from the end), using the actual scale of `down`'s `ln2` at that
# position. Run the plain model (nothing spliced): the upstream latents are the transcoder's
# encoding of its own input.

# %%
def input_dependent_connections(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, tokens: Int[Tensor, "batch pos"], pos: int
) -> Float[Tensor, "batch d_sae_up"]:
    """c[b, k] = f_k(b, pos) * (P W_dec_up[k]) . W_enc_down[:, latent] / s_down(b, pos)."""
    ### BEGIN SOLUTION
    scale_hook = f"blocks.{layer_of(down.cfg.metadata.hook_name)}.ln2.hook_scale"
    up_hook = up.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=[up_hook, scale_hook])
    up_acts = up.encode(cache[up_hook][:, pos])  # [batch, d_sae_up]
    scale = cache[scale_hook][:, pos]  # [batch, 1]
    return up_acts * pullback(model, up, down, latent, 1.0) / scale
    ### END SOLUTION

# %% [markdown] hint="input_dependent_connections"
# The upstream activations are `up.encode(cache[up.cfg.metadata.hook_name])`; the scale is
# cached at `blocks.{L}.ln2.hook_scale` (shape `[batch, pos, 1]`) for `down`'s layer `L`.
# Your `pullback` with `scale=1.0`, divided by the actual scale, does the rest.

# %% [markdown]
# Now the test. On pronoun prompts with a male name (*"oliver went to the office and
# then"* → *he*), take the layer-1 latent at the last position that separates male from
# female names most. Its logits say what it is for:

# %%
pronouns = world.task_batch("pronouns", 24, seed=0)
male = torch.tensor([answer == "he" for answer in pronouns.answers])
male_tokens = pronouns.tokens[male]
_, pcache = model.run_with_cache(pronouns.tokens, names_filter="blocks.1.ln2.hook_normalized")
last1 = tc1.encode(pcache["blocks.1.ln2.hook_normalized"][:, -1])
he_latent = (last1[male].mean(0) - last1[~male].mean(0)).argmax().item()
promotes = (tc1.W_dec[he_latent] @ model.W_U).topk(5).indices
print(f"layer-1 latent {he_latent}: mean activation at the last position, male names "
      f"{sig3(last1[male, he_latent].mean())}, female names {sig3(last1[~male, he_latent].mean())}; "
      f"promotes {model.to_str_tokens(promotes)}")

# %% [markdown]
# Compare the input-dependent connection of every upstream latent that fires anywhere in
# these prompts with the **true** effect of removing it: splice transcoder 0 with its error
# term (so the model's output is unchanged), zero latent $k$ at every position, and measure
# latent $j$'s pre-activation at the last position.

# %% [markdown] exercise="upstream_ablation_effects" title="Ablate upstream latents and measure a downstream pre-activation" difficulty=3 importance=5 minutes=25
# For each latent of `up_latents`, splice `up` with its error term, zero that latent at
# every position, and return the change in latent `latent` of `down`'s *pre-activation* at
# position `pos`: one column per upstream latent. `down` is not spliced; read its
# pre-activation from its input hook. Leave nothing attached.

# %%
def upstream_ablation_effects(
    model: HookedSAETransformer,
    up: Transcoder,
    down: Transcoder,
    latent: int,
    tokens: Int[Tensor, "batch pos"],
    pos: int,
    up_latents: Int[Tensor, " n_up"],
) -> Float[Tensor, "batch n_up"]:
    """effect[b, i] = a_latent(b, pos | f_{up_latents[i]} := 0 everywhere) - a_latent(b, pos), error term kept."""
    ### BEGIN SOLUTION
    up_acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"  # the latents sit under the output hook
    down_hook = down.cfg.metadata.hook_name
    stop = layer_of(down_hook) + 1

    def downstream_preact(fwd_hooks: list) -> Float[Tensor, " batch"]:
        kept = {}
        with model.hooks(fwd_hooks=fwd_hooks + [(down_hook, lambda x, hook: kept.update(x=x))]):
            model(tokens, stop_at_layer=stop)
        return kept["x"][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]

    with model.saes(saes=[up], use_error_term=True):
        clean = downstream_preact([])
        effects = []
        for k in up_latents.tolist():
            def zero(acts: Float[Tensor, "batch pos d_sae"], hook, k: int = k) -> Float[Tensor, "batch pos d_sae"]:
                acts[..., k] = 0.0
                return acts
            effects.append(downstream_preact([(up_acts_hook, zero)]) - clean)
    return torch.stack(effects, dim=-1)
    ### END SOLUTION

# %% [markdown] hint="upstream_ablation_effects"
# With `up` spliced, its latents pass through `f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"`.
# Inside `with model.saes(saes=[up], use_error_term=True):`, a hook there that zeroes
# column `k` removes $f_k d_k$ and nothing else: SAELens computes the error term from the
# unablated latents.

# %% [markdown] hint="upstream_ablation_effects"
# To read the downstream pre-activation, hook `down.cfg.metadata.hook_name` to keep its
# input $n(x)$, then `n(x)[:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]`.
# `model(tokens, stop_at_layer=L + 1)` stops after the block you need.

# %%
connections = checked(input_dependent_connections)(model, tc0, tc1, he_latent, male_tokens, -1)  # [batch, d_sae]
_, mc = model.run_with_cache(male_tokens, names_filter="blocks.0.ln2.hook_normalized")
up_acts_all = tc0.encode(mc["blocks.0.ln2.hook_normalized"])  # [batch, pos, d_sae]
candidates = (up_acts_all > 0).any(1).any(0).nonzero()[:, 0]
ablation = checked(upstream_ablation_effects)(model, tc0, tc1, he_latent, male_tokens, -1, candidates)  # [batch, n]
removed = -ablation  # what each upstream latent contributed, by ablation
direct = connections[:, candidates]
r_direct = torch.corrcoef(torch.stack([removed.flatten(), direct.flatten()]))[0, 1].item()
print(f"{len(candidates)} upstream latents fire in these {len(male_tokens)} prompts; Pearson r between "
      f"connection and ablation over (prompt, latent) pairs: {sig3(r_direct)}")
print("largest by ablation (mean over prompts): latent, ablation, connection, where it fires")
for i in removed.mean(0).abs().topk(5).indices.tolist():
    k = candidates[i].item()
    where = up_acts_all[:, :, k].mean(0).argmax().item()
    print(f"  transcoder-0 latent {k:>3}: {sig3(removed[:, i].mean()):>7} {sig3(direct[:, i].mean()):>7}   "
          f"mostly at position {where} ({model.to_string(male_tokens[0, where])!r} in the first prompt)  {describe(0, k)}")

# %% [markdown]
# Of the five upstream latents with the largest ablation effect, only the first agrees with
# its connection. Two kinds of disagreement show:
#
# - an upstream latent with a real ablation effect and a connection of **zero**. It fires
#   at the *name*, not at the last position, so it has no direct path there at all; what it
#   contributes travels through layer 1's attention, which moves information from the name
#   to *"then"*. This is the planted pronoun circuit, and the pullback alone cannot see it.
# - latents that fire at the last position whose ablation is smaller than their connection,
#   or even of the opposite sign: removing one also changes the normalisation scale and
#   where the attention heads look, which the connection holds fixed.
#
# Section 5 separates the two.

# %%
# NBVAL_IGNORE_OUTPUT
hover = [f"prompt {b}, {explained(0, k)}" for b in range(len(male_tokens)) for k in candidates.tolist()]
lo, hi = min(removed.min(), direct.min()).item(), max(removed.max(), direct.max()).item()
fig = go.Figure([go.Scatter(x=removed.flatten(), y=direct.flatten(), mode="markers", text=hover, name="(prompt, upstream latent)"),
                 go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="grey"), name="y = x")])
fig.update_layout(title=f"Upstream contributions to layer-1 latent {he_latent} (r = {sig3(r_direct)})",
                  xaxis_title="true ablation: drop in pre-activation when the latent is zeroed",
                  yaxis_title="input-dependent connection (direct path)", yaxis_scaleanchor="x", width=700, height=600)
fig.show()

# %% [markdown]
# ## 5. Attention paths
#
# An upstream latent at source position $s$ reaches the destination $p$ through head $h$
# of layer 1 by its OV circuit. Freeze the head's attention pattern $A^h$ at its value on the
# prompt, and both scales at theirs; the value vector is then linear in what the latent
# wrote, and the path's contribution to latent $j$'s pre-activation is
#
# $$c^h_k(s) = A^h[p, s]\; f_k(s)\; \Big(\frac{P d_k}{s_1(s)} \odot w_1\Big) W_V^h W_O^h \cdot \frac{P\, W^{1}_{enc}[:, j]}{s_2(p)},$$
#
# with $s_1$ the scale of layer 1's `ln1` (attention's input) at the source, $w_1$ its
# weight (attention reads the normalised vector *after* the LayerNorm's weight, unlike the
# transcoder), and $s_2$ the scale of `ln2` at the destination. What freezing the pattern
# leaves out: the latent also changes the queries and keys, and so where the head looks
# (the QK path).

# %% [markdown] exercise="attention_path_contributions" title="Follow one upstream latent through one head's OV circuit" difficulty=4 importance=4 minutes=30
# Return $c^h_k(s)$ for every prompt and every source position $s$ (zero after `pos`, where
# the causal pattern is zero), for upstream latent `up_latent` of `up`, head `head` of
# `down`'s layer, and destination position `pos`. Take the pattern and the scales from a
# clean run of `tokens`; leave out the biases (the LayerNorm's $b_1$ and $b_V$ do not
# depend on the latent).

# %%
def attention_path_contributions(
    model: HookedSAETransformer,
    up: Transcoder,
    down: Transcoder,
    latent: int,
    up_latent: int,
    head: int,
    tokens: Int[Tensor, "batch pos"],
    pos: int,
) -> Float[Tensor, "batch pos"]:
    """c[b, s] = A[b, head, pos, s] f_k(b, s) ((P d_k) / s1(b, s) * w1) W_V W_O . P W_enc[:, latent] / s2(b, pos)."""
    ### BEGIN SOLUTION
    layer = layer_of(down.cfg.metadata.hook_name)
    up_hook = up.cfg.metadata.hook_name
    names = [up_hook, f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    up_acts = up.encode(cache[up_hook])[..., up_latent]  # [batch, pos]
    pattern = cache[names[1]][:, head, pos]  # [batch, src]: where the destination looks
    s1, s2 = cache[names[2]][..., 0], cache[names[3]][:, pos]  # [batch, src], [batch, 1]
    d = up.W_dec[up_latent] - up.W_dec[up_latent].mean()
    attn = model.blocks[layer].attn
    out = (d * model.blocks[layer].ln1.w) @ attn.W_V[head] @ attn.W_O[head]  # [d_model] per unit over s1
    read = (out - out.mean()) @ down.W_enc[:, latent]  # a number
    return pattern * up_acts / s1 * read / s2
    ### END SOLUTION

# %% [markdown] hint="attention_path_contributions"
# Cache `up`'s input, `blocks.{L}.attn.hook_pattern` (`[batch, head, dst, src]`), and the
# scales `blocks.{L}.ln1.hook_scale` and `blocks.{L}.ln2.hook_scale`. The per-unit vector
# $(P d_k \odot w_1) W_V^h W_O^h$ is the same for every source; only the pattern, the
# activation and $s_1$ vary with $s$.

# %% [markdown] hint="attention_path_contributions"
# `model.W_V[L, head]` is `[d_model, d_head]` and `model.W_O[L, head]` is `[d_head, d_model]`
# (also `model.blocks[L].attn.W_V`). Index the pattern `[:, head, pos, :]`: rows are
# destinations, columns sources.

# %% [markdown]
# The latent that ablation found and the connection missed (the largest ablation effect
# among latents with no direct path), through each head of layer 1:

# %%
no_direct = direct.abs().mean(0) < 1e-6
attn_latent = candidates[torch.where(no_direct, removed.mean(0).abs(), -1.0).argmax()].item()
per_head = torch.stack([checked(attention_path_contributions)(model, tc0, tc1, he_latent, attn_latent, h, male_tokens, -1)
                        for h in range(model.cfg.n_heads)], dim=1)  # [batch, head, src]
i = (candidates == attn_latent).nonzero().item()
print(f"transcoder-0 latent {attn_latent} -> layer-1 latent {he_latent} at the last position, mean over prompts:")
print("  attention path through each head:", ", ".join(f"1.{h} {sig3(v)}" for h, v in enumerate(per_head.sum(-1).mean(0).tolist())))
print(f"  direct connection {sig3(direct[:, i].mean())} + all attention paths {sig3(per_head.sum((1, 2)).mean())} "
      f"= {sig3(direct[:, i].mean() + per_head.sum((1, 2)).mean())}; true ablation {sig3(removed[:, i].mean())}")

# %%
# NBVAL_IGNORE_OUTPUT
first = per_head[0].detach()  # [head, src] for the first prompt
fig = go.Figure(go.Heatmap(z=first, x=[f"{p}: {w}" for p, w in enumerate(model.to_str_tokens(male_tokens[0]))],
                           y=[f"head 1.{h}" for h in range(model.cfg.n_heads)], colorscale="RdBu", zmid=0,
                           colorbar_title="contribution to pre-activation"))
fig.update_layout(title=f"Attention paths of transcoder-0 latent {attn_latent} into layer-1 latent {he_latent} (first prompt)",
                  xaxis_title="source position", yaxis_title="head")
fig.show()

# %% [markdown]
# One head carries almost all of it, from the name's position. Adding every upstream
# latent's attention paths (all heads, all sources, computed at once from the OV pullbacks
# of `utils.transcoders`) to its direct connection, and comparing with ablation again:

# %%
last = torch.full((len(male_tokens),), male_tokens.shape[1] - 1)
with_paths = upstream_contributions(model, tc0, tc1, he_latent, male_tokens, last)[:, candidates]
r_paths = torch.corrcoef(torch.stack([removed.flatten(), with_paths.flatten()]))[0, 1].item()
print(f"Pearson r with ablation over (prompt, latent) pairs: direct connection {sig3(r_direct)}, "
      f"direct + attention paths {sig3(r_paths)}")

# %% [markdown]
# What remains? Freeze every normalisation scale and attention pattern of layer 1 at its
# clean value (hooks that return the cached `hook_scale` and `hook_pattern`) and ablate
# again. Everything between the two transcoders is then linear, so this ablation must equal
# the direct path plus the attention paths exactly; the true ablation differs from it by what
# the frozen model leaves out. For the five largest upstream latents:

# %%
frozen_names = ["blocks.1.ln1.hook_scale", "blocks.1.ln2.hook_scale", "blocks.1.attn.hook_pattern"]
_, frozen_cache = model.run_with_cache(male_tokens, names_filter=frozen_names)
frozen_hooks = [(name, lambda x, hook: frozen_cache[hook.name]) for name in frozen_names]
top5 = removed.mean(0).abs().topk(5).indices
with model.hooks(fwd_hooks=frozen_hooks):
    frozen = -checked(upstream_ablation_effects)(model, tc0, tc1, he_latent, male_tokens, -1, candidates[top5])
exact = (frozen - with_paths[:, top5]).abs().max().item() < 1e-4 * with_paths.abs().max().item()
print(f"frozen ablation equals direct + attention paths (to 1e-4 of the largest): {exact}")
print("latent: direct, attention paths, frozen ablation, true ablation")
for j, i in enumerate(top5.tolist()):
    print(f"  {candidates[i].item():>3}: {sig3(direct[:, i].mean()):>7} {sig3((with_paths - direct)[:, i].mean()):>7} "
          f"{sig3(frozen[:, j].mean()):>7} {sig3(removed[:, i].mean()):>7}")

# %% [markdown]
# The frozen model is exact, and its numbers are close to the true ablation for some
# latents and not for others: the gap is the normalisation scales and attention patterns
# moving when a latent is removed (the QK path among them). A *local replacement model*
# freezes them on purpose, so that direct and attention paths add up exactly; chapter 05
# builds one. (`python -m benchmarks.transcoders` repeats this comparison on every planted
# task.)

# %% [markdown]
# ## 6. A blind case study
#
# Three latents of transcoder 1 track planted labels cleanly (the closing note names them;
# don't peek). Their ids are below, with **no label**. For each, find out which planted label
# it tracks (one of `world.label_names`) and which transcoder-0 latents feed it most, using
# only the tools of this chapter: de-embeddings, pullbacks and connections, the contexts
# where it fires, and the tokens it promotes. The explanation table and the generator's
# labels are off limits: the check hands your function a *blind* backend without them.
#
# The case files below gather the evidence for each latent (just run the cell); look further
# with your own code if they do not convince you.

# %%
case_corpus = world.corpus(n_seqs=256, seq_len=48, seed=3).tokens
_, case_cache = model.run_with_cache(case_corpus, names_filter=lambda name: name.endswith("ln2.hook_normalized"))
case_up = tc0.encode(case_cache["blocks.0.ln2.hook_normalized"]).flatten(0, 1)  # [token, d_up]
case_down = tc1.encode(case_cache["blocks.1.ln2.hook_normalized"])  # [batch, pos, d_sae]
case_extended = extended_de_embeddings(model, [tc0], tc1, [scales[0], scales[1]])  # [d_vocab, d_sae]
case_pullbacks = pullbacks(model, tc0, tc1, scales[1])  # [d_up, d_sae]


def top_entries(values: Float[Tensor, " d"], k: int = 5) -> str:
    top = values.topk(k)
    return ", ".join(f"#{i} {sig3(v)}" for i, v in zip(top.indices.tolist(), top.values.tolist()))


def case_file(latent: int, n_contexts: int = 6) -> None:
    """Evidence on transcoder-1 latent ``latent``, without labels: extended de-embedding,
    logits, strongest contexts, upstream latents."""
    print(f"=== transcoder {BLIND_CASE_LAYER}, latent {latent}")
    print("  extended de-embedding:", model.to_str_tokens(case_extended[:, latent].topk(8).indices))
    print("  promotes:", model.to_str_tokens((tc1.W_dec[latent] @ model.W_U).topk(8).indices))
    acts = case_down[..., latent]  # [batch, pos]
    print(f"  fires on {sig3((acts[:, 1:] > 0).float().mean())} of corpus tokens; strongest contexts:")
    best = acts.flatten().topk(n_contexts).indices
    for seq, pos in zip((best // acts.shape[1]).tolist(), (best % acts.shape[1]).tolist()):
        words = model.to_str_tokens(case_corpus[seq, max(0, pos - 8): pos + 1])
        print(f"    {sig3(acts[seq, pos]):>5}  ... {' '.join(words[:-1])} [[{words[-1]}]]")
    strongest = acts.flatten().topk(32).indices
    print("  upstream by pullback:", top_entries(case_pullbacks[:, latent]))
    print("  upstream by mean connection at its 32 strongest activations (typical scale):",
          top_entries((case_up[strongest] * case_pullbacks[:, latent]).mean(0)))


print("pool:", BLIND_CASE_POOL)
for latent in BLIND_CASE_POOL:
    case_file(latent)

# %% [markdown] exercise="blind_case_study" title="Name an unlabelled latent and its upstream latents" difficulty=4 importance=5 minutes=45
# Return your finding for latent `latent` of transcoder 1 (one of `BLIND_CASE_POOL`):
# `{"label": <one of bk.world.label_names>, "upstream": [<transcoder-0 latent ids, most
# important first, at most 5>]}`. The check asks about every latent of the pool, so answer
# for each of them: a dict of your conclusions inside the function is fine, and so is code
# that works them out from `bk`. It grades against the organism's ground truth, computed on
# a fixed corpus (the same for every seed the grader uses): the label is judged on AUROC and
# precision together (of the labels holding at least half the largest precision, the one
# with the highest AUROC), and the upstream latents by their ablation effect and their
# linearised connection: the main one listed, a main one first, none negligible, larger
# before much smaller.

# %%
def blind_case_study(bk: Any, latent: int) -> dict[str, Any]:
    """{"label": planted label the latent tracks, "upstream": main transcoder-0 latents feeding it}."""
    ### BEGIN SOLUTION
    # The labels, read from the case files: where each latent fires hardest, and what it promotes.
    labels = {
        29: "greater_than_end",  # the century after "to the year" only, promoting later years
        147: "century",  # every century token, after "from the year" as well as "to the year"
        172: "induction",  # the words of a repeated span's second copy
    }
    # The upstream latents, computed: mean input-dependent connection at its strongest activations.
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_scale",
                                                          "blocks.1.ln2.hook_normalized"])
    acts = down.encode(cache["blocks.1.ln2.hook_normalized"])[..., latent].flatten()
    strongest = acts.topk(32).indices
    up_acts = up.encode(cache["blocks.0.ln2.hook_normalized"]).flatten(0, 1)[strongest]  # [32, d_up]
    scale = cache["blocks.1.ln2.hook_scale"].flatten()[strongest]  # [32]
    connection = (up_acts * pullback(model, up, down, latent, 1.0) / scale[:, None]).mean(0)
    top = connection.topk(3)
    upstream = top.indices[top.values >= 0.25 * top.values[0]]  # the few that matter, not a long tail
    return {"label": labels[latent], "upstream": upstream.tolist()}
    ### END SOLUTION

# %% [markdown] hint="blind_case_study"
# Read the contexts first: which word is marked, and which words come before it? Then
# compare with the label table in `utils/toy/README.md`. A label can be *broader* than
# what the latent does (a latent that fires on some names only is not an `is_name`
# latent): the check weighs precision as well as AUROC.

# %% [markdown] hint="blind_case_study"
# For the upstream latents, the case file's "mean connection" ranks transcoder-0 latents by
# what they contribute where the latent fires; ablation (your `upstream_ablation_effects`)
# also sees attention paths. List the few that matter, not every latent with a nonzero
# pullback.

# %% [markdown]
# **Spoiler: the ground truth.** Run this after answering. For each latent of the pool, the
# label it tracks on corpus tokens (AUROC and precision together), the other label with the
# highest AUROC (the runner-up), and the transcoder-0 latents whose ablation (error term
# kept) changes it most at its strongest activations, next to their linearised contribution
# (direct and attention paths).

# %%
truths = blind_case_truths(bk, BLIND_CASE_POOL)  # the fixed corpus the check grades on
for latent, truth in truths.items():
    runner_up = max((name for name in truth.scores if name != truth.label), key=lambda name: truth.scores[name][0])
    print(f"latent {latent}: {truth.label} (AUROC {sig3(truth.auroc)}, precision {sig3(truth.precision)}); "
          f"runner-up {runner_up} (AUROC {sig3(truth.scores[runner_up][0])}, precision {sig3(truth.scores[runner_up][1])})")
    print("   upstream by ablation (linearised contribution):", ", ".join(
        f"#{k} {sig3(-e)} ({sig3(truth.contributions[k])})" for k, e in list(truth.effects.items())[:4]))

# %% [markdown]
# ## 7. Scale-up: GPT-2 small
#
# The same tools on GPT-2 small with the public MLP transcoders of Dunefsky, Chlenski and
# Nanda (2024), layers 7 and 8 (two downloads of about 150 MB). In TransformerLens,
# GPT-2's `ln2.hook_normalized` is again $Px / s(x)$ (its LayerNorm weights are folded into
# the next layer when it loads), so the chapter's functions apply unchanged. We take the
# layer-8 latent most active at the end of a prompt, its de-embedding over GPT-2's 50,257
# tokens, and its pullback from layer 7. This needs the Hugging Face hub (Colab); offline it
# prints one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from utils.backends.gpt2 import HubUnavailable, load_gpt2

try:
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[7, 8], kinds=("transcoder",))
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    g_model, g_up, g_down = gpt2.model, gpt2.dictionary("transcoder", 7), gpt2.dictionary("transcoder", 8)
    g_text = g_model.to_tokens("When Mary and John went to the store, John gave a drink to Mary. The war lasted "
                               "from the year 1732 to the year 1789, and the city of Paris grew all the while.")
    g_scale = typical_scale(g_model, g_text, 8)  # the mean ln2 scale over this text's tokens
    g_tokens = g_model.to_tokens("The war lasted from the year 1732 to the year 17")
    g_acts = g_down.encode(g_model.run_with_cache(g_tokens, names_filter="blocks.8.ln2.hook_normalized")[1]
                           ["blocks.8.ln2.hook_normalized"][0, -1])
    g_latent = g_acts.argmax().item()
    g_emb = checked(de_embedding)(g_model, g_down, g_latent, g_scale)
    print(f"layer-8 latent {g_latent} (activation {g_acts[g_latent].item():.3g}); de-embedding top tokens:",
          g_model.to_str_tokens(g_emb.topk(10).indices))
    g_pull = checked(pullback)(g_model, g_up, g_down, g_latent, g_scale)
    print("largest pullbacks from layer 7:", top_entries(g_pull))
    g_conn = checked(input_dependent_connections)(g_model, g_up, g_down, g_latent, g_tokens, -1)[0]
    print("largest connections on the prompt:", top_entries(g_conn))

# %% [markdown]
# ## Summary
#
# - A transcoder replaces an MLP by a sparse layer of latents that read and write the
#   residual stream linearly; SAELens caches its latents under the hook it writes.
# - Up to the normalisation's scale, a latent's pre-activation is linear in the residual
#   stream, so weights alone give de-embeddings (tokens), extended de-embeddings (tokens
#   through earlier transcoders) and pullbacks (earlier latents). Each needs a frozen
#   scale, and each leaves out attention.
# - On a prompt, the pullback times the upstream activation (with the actual scale) is the
#   direct path's exact contribution. True ablations differ where the upstream latent's
#   effect travels through attention, and where removing it changes the scale.
# - An attention path through one head with the pattern frozen is again a product of
#   weights and activations; direct plus attention paths recover most of the ablation.
#
# **Blind-case latents.** The pool is transcoder-1 latents 29, 147 and 172
# (`utils.transcoders.BLIND_CASE_POOL`). Their ground truth, printed in section 6's spoiler
# cell (on the fixed corpus the check grades on) and recomputed by `tests/test_transcoders.py`:
# latent 147 tracks `century` (AUROC about 0.98, precision about 0.78), fed mainly by
# transcoder-0 latents 84 and 66 (the latter through attention); latent 29 tracks
# `greater_than_end` (AUROC about 0.94, precision about 0.58; by AUROC alone `workplace`
# comes next, at about 0.87 with a precision near 0.1), fed mainly by latent 159; latent 172
# tracks `induction` (AUROC about 0.95, precision about 0.58), fed by many small
# contributors, 27 the largest.
#
# **Open questions.** How large is the QK path's share for a name-mover-like head, and can
# it be computed without rerunning the model? Which choice of frozen scale makes extended
# de-embeddings most faithful across latents, and is there a principled one? Would a
# *skip transcoder* (with a linear bypass) make the layer-0 latents less dependent on
# attention?

# %% [markdown]
# # Chapter 07 — Cross-layer transcoders: one dictionary for every MLP
#
# A per-layer transcoder (PLT, chapter 04) of layer $L$ reads that layer's MLP input and
# writes that MLP's output, nothing else. When a model computes one feature over several
# MLPs, each layer's transcoder needs a latent of its own for it, and an attribution graph
# (chapter 05) shows the feature as a chain of nodes. A **cross-layer transcoder** (CLT)
# removes that duplication: the latents of layer $s$ read the MLP input of layer $s$ and
# write, through one decoder per later layer, into the MLP outputs of layer $s$ **and every
# layer after it**. The field's attribution graphs are now built on CLTs (Ameisen et al.
# 2025, "Circuit tracing"), for two claims: the graphs have shorter paths, and more of the
# output is explained by latents rather than error nodes.
#
# On the model organism we can test those claims against ground truth. The organism ships
# a CLT of 256 latents per layer, trained on its text (`utils/clt.py`,
# `python -m utils.toy build --only clt`), and a *same-layer control*: the same code, data
# and sparsity, without the cross-layer decoders. We write the CLT's forward pass, its
# loss, its edges and its splice, then build graphs with the shipped PLTs, the control and
# the CLT for the same prompts and compare them.
#
# **Learning objectives**
# - Write a CLT's forward pass: a layer's MLP output is the sum of every earlier-or-same
#   layer's decoder applied to that layer's latents.
# - Write its training loss: reconstruction summed over target layers, and a sparsity term
#   that charges each latent once for everything it writes.
# - Compute a CLT latent's direct (virtual) weight to a later latent or a logit, summed over
#   the decoders it writes through before the target reads.
# - Splice a CLT into the model with error nodes so that the output is exact.
# - Compare PLT and CLT attribution graphs of one prompt: size, replacement and
#   completeness, error share, path length, and recovery of the planted circuits.
#
# *If you read one thing:* section 6. The CLT explains more of the output with latents, but
# its graphs are not shorter, and most of the gain is also in the same-layer control.

# %% tags=["module"]
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import HookedSAETransformer
from torch import Tensor

from utils.clt import CrossLayerTranscoder

# %%
import json

from utils.backends import load_backend
from utils.clt import clt_batches, spliced
from utils.course.checking import checked
from utils.graphs import (
    Graph,
    build_graph,
    centred_unembedding,
    edge_errors,
    influence,
    local_replacement,
    normalized_adjacency,
    paths_between,
    prune,
    salient_logit_ids,
)
from utils.nodes import Node
from utils.toy import ARTIFACTS, REPORT, load_clts
from utils.toy.training import EVAL_SEEDS
from utils.views import sig3

_ = torch.set_grad_enabled(False)  # off by default; the loss exercise turns it on where it needs it

# %% [markdown]
# ## 1. Three dictionaries for the same two MLPs
#
# Just run. `plts` are the organism's shipped per-layer transcoders (chapters 04 and 05);
# `clt` is the shipped cross-layer transcoder (`bk.clt`); `control` is the same-layer
# control, trained together with the CLT on the same batches, with the same BatchTopK
# sparsity (`utils.clt.train_clt`), but with only the decoders $W_{dec}[s, s]$.

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
n_layers = model.cfg.n_layers
plts = [bk.dictionary("transcoder", layer) for layer in range(n_layers)]
clt = bk.clt
control = load_clts()["same_layer"]
print(f"CLT: {clt.cfg.n_layers} layers, {clt.cfg.d_sae} latents per layer, decoders {clt.cfg.decoder_pairs()}")
print(f"same-layer control: decoders {control.cfg.decoder_pairs()}; PLTs: {[tc.cfg.d_sae for tc in plts]} latents")

# %% [markdown]
# How good are they as dictionaries? The organism's build measured each on held-out text
# (`report.json`): L0 and explained variance of each MLP output, the share of latents never
# active (dead), and CE-loss recovered with every MLP replaced. The CLT and its control were
# trained to the L0 of the shipped PLTs (BatchTopK with $k$ set to it), so the three are
# compared at matched L0.

# %%
report = json.loads((ARTIFACTS / REPORT).read_text())["clt"]
print(f"{'dictionary':>18} {'layer':>5} {'L0':>6} {'expl. var.':>10} {'dead':>6}   CE recovered (all MLPs replaced)")
for name, key in (("shipped PLTs", "plt"), ("same-layer control", "same_layer"), ("CLT", "cross_layer")):
    for layer, m in report[key]["layers"].items():
        ce = f"{report[key]['ce_loss_recovered']['all']:.4f}" if layer == "0" else ""
        print(f"{name if layer == '0' else '':>18} {layer:>5} {m['l0']:>6.2f} {m['explained_variance']:>10.4f} "
              f"{m['dead_fraction']:>6.3f}   {ce}")
build = report["build"]
print(f"CLT and control: {build['steps']} steps, trained together in {build['wall_time_s']:.0f} s wall, "
      f"{build['cpu_time_s']:.0f} s CPU ({build['threads']} thread)")

# %% [markdown]
# At matched L0 the CLT explains more of each MLP output than the shipped PLTs (0.9514
# against 0.9202 at layer 0, 0.9964 against 0.9859 at layer 1) and recovers more of the CE
# loss (0.9946 against 0.9811). But its same-layer control, trained with the same code and
# weighting, does as well without any cross-layer decoder: explained variance 0.9529 and
# 0.9955, CE-loss recovered 0.9951, a little *above* the CLT's. The CLT also has more dead
# latents at layer 1 (0.051 against 0.000). Keep that in mind for section 6.

# %% [markdown]
# ## 2. The forward pass
#
# For every layer $s$ the CLT has an encoder and a JumpReLU threshold, and for every pair
# $s \le t$ a decoder $W_{dec}[s, t]$ (`clt.decoder(s, t)`, shape `[d_sae, d_out]`):
#
# $$f_s = \mathrm{JumpReLU}_{\theta_s}\!\left(x_s W_{enc}[s] + b_{enc}[s]\right), \qquad
#   \hat y_t = \sum_{s \le t} f_s\, W_{dec}[s, t] + b_{dec}[t],$$
#
# with $x_s$ the MLP input of layer $s$ (`blocks.s.ln2.hook_normalized`), $\hat y_t$ the
# reconstruction of the MLP output of layer $t$ (`blocks.t.hook_mlp_out`) and
# $\mathrm{JumpReLU}_\theta(z) = z\,\mathbb 1[z > \theta]$ per latent.

# %% [markdown] exercise="clt_forward" title="Write the CLT's forward pass" difficulty=2 importance=5 minutes=15
# Given the MLP inputs `inputs[s]` of every layer `s` (shape `[..., d_in]`), return a dict
# with the reconstructed MLP output of every layer `t` (shape `[..., d_out]`). Use the
# parameters: `clt.W_enc[s]` `[d_in, d_sae]`, `clt.b_enc[s]`, `clt.threshold[s]`,
# `clt.decoder(s, t)` `[d_sae, d_out]` and `clt.b_dec[t]`. Do not call `clt.encode`,
# `clt.decode` or `clt(...)`: they are what you are writing.

# %%
def clt_forward(
    clt: CrossLayerTranscoder, inputs: dict[int, Float[Tensor, "... d_in"]]
) -> dict[int, Float[Tensor, "... d_out"]]:
    """f_s = z_s * [z_s > theta_s], z_s = x_s W_enc[s] + b_enc[s];
    y_t = sum_{s <= t} f_s W_dec[s, t] + b_dec[t], for every layer t."""
    ### BEGIN SOLUTION
    latents = {}
    for s in range(clt.cfg.n_layers):
        pre = inputs[s] @ clt.W_enc[s] + clt.b_enc[s]
        latents[s] = pre * (pre > clt.threshold[s])
    return {t: sum(latents[s] @ clt.decoder(s, t) for s in range(t + 1)) + clt.b_dec[t]
            for t in range(clt.cfg.n_layers)}
    ### END SOLUTION

# %% [markdown] hint="clt_forward"
# Two loops: first the latents of every layer (each from its *own* layer's input), then
# each output as a sum over the source layers `s = 0 .. t`. The bias `b_dec[t]` belongs to
# the target layer: add it once per output.

# %% [markdown] hint="clt_forward"
# The JumpReLU keeps the pre-activation itself where it exceeds the threshold:
# `pre * (pre > threshold)`. It is neither `relu(pre)` (which ignores the threshold) nor
# `relu(pre - threshold)` (which shifts every value down).

# %% [markdown]
# Run it on held-out text and split layer 1's reconstruction into what each source layer
# writes: how much of the second MLP's output do layer-0 latents supply through their
# cross-layer decoder $W_{dec}[0, 1]$?

# %%
eval_tokens = world.corpus(n_seqs=64, seq_len=48, seed=EVAL_SEEDS).tokens
ins = [clt.hook_in_at(layer) for layer in range(n_layers)]
outs = [clt.hook_out_at(layer) for layer in range(n_layers)]
_, cache = model.run_with_cache(eval_tokens, names_filter=ins + outs)
x = {layer: cache[ins[layer]][:, 1:] for layer in range(n_layers)}  # BOS left out
y = {layer: cache[outs[layer]][:, 1:] for layer in range(n_layers)}
y_hat = checked(clt_forward)(clt, x)
for t in range(n_layers):
    ev = 1 - (y_hat[t] - y[t]).pow(2).sum() / (y[t] - y[t].mean((0, 1))).pow(2).sum()
    print(f"layer {t}: explained variance of the MLP output {ev:.4f}")
f0 = clt.encode(0, x[0])
from_0, total = (f0 @ clt.decoder(0, 1)).pow(2).sum(-1).mean(), (y_hat[1] - clt.b_dec[1]).pow(2).sum(-1).mean()
print(f"layer 1's reconstruction (bias aside): mean squared norm {total:.3g}; of the part written by layer-0 latents "
      f"through W_dec[0, 1]: {from_0:.3g}")

# %% [markdown]
# A small but real share, about 5 % of the squared norm: the CLT routes part of layer 1's
# output through layer-0 latents, a computation a PLT needs a second latent for. (The two parts are not orthogonal, so
# their squared norms need not add up to the total.)

# %% [markdown]
# ## 3. The training loss
#
# A CLT is trained like a PLT with more targets. The reconstruction term sums, over target
# layers, each layer's squared error (summed over output dimensions, averaged over tokens),
# so each MLP output counts as it would for its own PLT. The sparsity term must not let a
# latent escape its cost by spreading its write over several decoders: each latent is
# weighted by the norm of **everything it writes**, its rows of all its decoders
# concatenated,
#
# $$\lVert d_{s,i}\rVert = \sqrt{\textstyle\sum_{t \ge s} \lVert W_{dec}[s, t]_i\rVert^2},
# \qquad \mathcal L = \sum_t \frac1n\sum_n \lVert \hat y_{t,n} - y_{t,n}\rVert^2
#   + \lambda \sum_s \frac1n \sum_n \sum_i f_{s,n,i}\,\lVert d_{s,i}\rVert .$$
#
# (The shipped CLT was trained with BatchTopK, which fixes the mean L0 and needs no
# $\lambda$; its library code also weights each token's error, as the PLTs were trained.
# The L1 form above is chapter 06's transcoder loss with several decoders per latent;
# Anthropic's CLTs put a tanh around each weighted activation instead.)

# %% [markdown] exercise="clt_loss" title="Write the CLT's training loss" difficulty=2 importance=5 minutes=20
# `inputs` and `targets` are stacked over layers: `inputs[s]` the MLP inputs of layer `s`,
# `targets[t]` the MLP outputs of layer `t`, one row per token. Return a dict of three
# scalars, differentiable in the CLT's parameters:
#
# - `"mse"`: $\sum_t \frac1n\sum_n \lVert \hat y_{t,n} - y_{t,n}\rVert^2$;
# - `"sparsity"`: $\sum_s \frac1n\sum_n\sum_i f_{s,n,i}\lVert d_{s,i}\rVert$, with
#   $\lVert d_{s,i}\rVert$ the norm of latent $i$'s rows of every decoder $W_{dec}[s, t]$,
#   $t \ge s$, concatenated;
# - `"loss"`: `mse + l1_coefficient * sparsity`.
#
# The latents are `clt.encode(s, x)`; the reconstruction of layer `t` is
# `clt.decode_layer(t, latents)` (your forward pass, in the library).

# %%
def clt_loss(
    clt: CrossLayerTranscoder,
    inputs: Float[Tensor, "layer n d_in"],
    targets: Float[Tensor, "layer n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = sum_t mean_n ||y_hat_tn - y_tn||^2; sparsity = sum_s mean_n sum_i f_sni ||d_si||
    with ||d_si||^2 = sum_{t >= s} ||W_dec[s, t]_i||^2; loss = mse + l1_coefficient * sparsity."""
    ### BEGIN SOLUTION
    n = clt.cfg.n_layers
    latents = {s: clt.encode(s, inputs[s]) for s in range(n)}
    mse = sum((clt.decode_layer(t, latents) - targets[t]).pow(2).sum(-1).mean() for t in range(n))
    sparsity = 0.0
    for s in range(n):
        rows = torch.stack([clt.decoder(s, t) for t in range(s, n)])  # [targets, d_sae, d_out]
        norms = rows.pow(2).sum((0, 2)).sqrt()  # [d_sae]
        sparsity = sparsity + (latents[s] * norms).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}
    ### END SOLUTION

# %% [markdown] hint="clt_loss"
# The norm of a concatenation is the square root of the sum of squares: stack the rows
# `clt.decoder(s, t)` for `t = s .. n-1`, square, sum over the targets and the output
# dimension, take the square root. Summing the separate norms of each decoder is a
# different (larger) number.

# %% [markdown] hint="clt_loss"
# `torch.nn.functional.mse_loss` averages over output dimensions too; and averaging over
# target layers (instead of summing) makes a two-layer CLT's reconstruction count half as
# much as a PLT's against the same $\lambda$.

# %% [markdown]
# The loss terms of the CLT and of its control on one held-out batch of 16 sequences
# (the same L1 form for both, $\lambda = 1$, though neither was trained with it):

# %%
batch = next(clt_batches(model, [eval_tokens[:16]], n_layers, weight_by_residual=False, drop_bos=True))
loss_fn = checked(clt_loss)
for name, d in (("same-layer control", control), ("CLT", clt)):
    terms = loss_fn(d, batch.inputs, batch.targets, l1_coefficient=1.0)
    print(f"{name:>18}: mse {terms['mse']:.4g}, sparsity {terms['sparsity']:.4g}")

# %% [markdown]
# On this batch the CLT has both the smaller reconstruction error and the smaller sparsity
# term: at the same L0 its latents do not write more in total, they spread a similar budget
# over two layers.

# %%
lower = {name: loss_fn(d, batch.inputs, batch.targets, 1.0) for name, d in (("control", control), ("clt", clt))}
print("CLT's reconstruction error is lower than the control's:", bool(lower["clt"]["mse"] < lower["control"]["mse"]))
print("CLT's sparsity term is lower than the control's:", bool(lower["clt"]["sparsity"] < lower["control"]["sparsity"]))

# %% [markdown]
# ## 4. Edges: a latent writes through several decoders
#
# In chapter 05's local replacement model a latent's outgoing edges are gradients. For a
# CLT latent of layer $s$ they sum over every decoder it writes through: what reaches the
# residual stream before layer $L$'s MLP reads it is
# $\sum_{s \le t < L} W_{dec}[s, t]_i$, and what reaches the unembedding (layer
# $L = $ `n_layers`) is the sum over every decoder. The **virtual weight** of latent $i$ of
# layer $s$ to a reader with direction $r$ (an encoder column of layer $L$, or an
# unembedding column) is that sum dotted with $r$. The exact edge on a prompt adds what
# chapter 05 froze on the way: the norms' scales and the attention paths to later positions.

# %% [markdown] exercise="clt_virtual_weights" title="Sum a latent's writes into a later reader" difficulty=2 importance=4 minutes=15
# Return the virtual weights `[d_sae, n]` of every latent of layer `source` to the `n`
# reading directions `read` `[d_out, n]` of a target at layer `target_layer`: the columns of
# `clt.encoder(target_layer)` for latents of that layer, or unembedding directions for
# `target_layer == clt.cfg.n_layers` (the logits). Layer $L$'s latents read the residual
# stream *before* layer $L$'s MLP writes. Raise a `ValueError` if `target_layer` is not in
# `source + 1 .. n_layers`.

# %%
def clt_virtual_weights(
    clt: CrossLayerTranscoder, source: int, target_layer: int, read: Float[Tensor, "d_out n"]
) -> Float[Tensor, "d_sae n"]:
    """(sum_{source <= t < target_layer} W_dec[source, t]) @ read."""
    ### BEGIN SOLUTION
    if not source < target_layer <= clt.cfg.n_layers:
        raise ValueError(f"a latent of layer {source} reaches layers {source + 1}..{clt.cfg.n_layers}, "
                         f"got target_layer {target_layer}")
    write = sum(clt.decoder(source, t) for t in range(source, target_layer))
    return write @ read
    ### END SOLUTION

# %% [markdown] hint="clt_virtual_weights"
# A PLT latent of layer $s$ writes through one decoder; a CLT latent through
# $W_{dec}[s, s], W_{dec}[s, s+1], \dots$ Which of them has been added to the residual
# stream when layer $L$ reads it? Those with $t < L$: `range(source, target_layer)`.

# %% [markdown]
# On the fact prompt, the CLT latents of layer 0 active at the last position, and their
# virtual weight to the answer's centred logit, split into the same-layer decoder's part
# and the cross-layer decoder's part:

# %%
facts = world.task_batch("facts", 8, seed=0)
fact_tokens = facts.tokens[:1]
answer = int(facts.answer_ids[0])
print(" ".join(model.to_str_tokens(fact_tokens[0])), "->", facts.answers[0])
rm = local_replacement(model, clt, fact_tokens)
u = centred_unembedding(model, torch.tensor([answer]))  # [d_model, 1]
vw = checked(clt_virtual_weights)
both, own = vw(clt, 0, n_layers, u)[:, 0], (clt.decoder(0, 0) @ u)[:, 0]
acts0 = rm.acts[0][-1]
for i in acts0.argsort(descending=True)[:4].tolist():
    print(f"latent 0.{i}: activation {sig3(acts0[i])}, virtual weight to '{facts.answers[0]}' {sig3(both[i])} "
          f"= {sig3(own[i])} through W_dec[0, 0] + {sig3(both[i] - own[i])} through W_dec[0, 1]")

# %% [markdown]
# The graph engine (chapter 05's, `utils.graphs`) builds a CLT's graph with the same code as
# a PLT's: a latent leaf of layer $s$ feeds every later MLP output, so the gradient with
# respect to it sums over its decoders by itself. The edges are exact: removing one source
# moves each target by its edge weight (the removal test of chapter 05).

# %%
ids = salient_logit_ids(rm.logits[-1])[0]
clt_graph = build_graph(rm, ids)
removal = edge_errors(rm, clt_graph).abs().max() / clt_graph.adjacency.abs().max()
print(f"CLT graph of the fact prompt: {len(clt_graph.nodes)} nodes; removal test exact to 1e-5 of the largest edge:",
      bool(removal < 1e-5))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"largest removal error / largest edge: {removal:.2g}")

# %% [markdown]
# ## 5. Splicing with error nodes
#
# To trace a graph we need a model whose output is *exactly* the real one, with the CLT's
# latents inside it: every MLP output becomes the CLT's reconstruction plus an error node,
# $y_t = \hat y_t + (y_t - \hat y_t)$. Two things make it a splice rather than an identity.
# The reconstruction of layer $t$ sums the writes of *every* layer $s \le t$; an error
# computed against the same-layer part alone would add the cross-layer writes on top of the
# MLP's own output. And the error is a constant: computed without gradient, so that gradients reach
# the latents through the decoders only, never around them through the MLP.

# %% [markdown] exercise="splice_clt" title="Splice the CLT into the model with error nodes" difficulty=3 importance=5 minutes=20
# Run `model` on `tokens` with hooks that (1) at `clt.hook_in_at(s)` encode layer `s`'s
# latents (`clt.encode`), and (2) at `clt.hook_out_at(t)` replace the MLP output by
# `clt.decode_layer(t, latents) + error_t`, with `error_t = out - reconstruction` computed
# without gradient. Return the logits and the dict of error nodes `{t: [batch, pos, d_out]}`.
# Leave no hook on the model (`model.hooks(...)` or `run_with_hooks` clean up).

# %%
def splice_clt(
    model: HookedSAETransformer, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[int, Float[Tensor, "batch pos d_out"]]]:
    """y_t -> y_hat_t + e_t with e_t = (y_t - y_hat_t) detached and y_hat_t = sum_{s<=t} f_s W_dec[s, t] + b_dec[t]."""
    ### BEGIN SOLUTION
    latents: dict[int, Tensor] = {}
    errors: dict[int, Tensor] = {}

    def encode(layer: int):
        def hook(x: Tensor, hook) -> None:
            latents[layer] = clt.encode(layer, x)
        return hook

    def replace(layer: int):
        def hook(out: Tensor, hook) -> Tensor:
            recon = clt.decode_layer(layer, latents)
            errors[layer] = (out - recon).detach()
            return recon + errors[layer]
        return hook

    n = clt.cfg.n_layers
    hooks = [(clt.hook_in_at(s), encode(s)) for s in range(n)] + [(clt.hook_out_at(t), replace(t)) for t in range(n)]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits, errors
    ### END SOLUTION

# %% [markdown] hint="splice_clt"
# TransformerLens runs the hooks in the model's order: `blocks.0.ln2.hook_normalized`,
# `blocks.0.hook_mlp_out`, `blocks.1.ln2.hook_normalized`, ... so when layer `t`'s output
# hook runs, the latents of every layer `s <= t` are already in your dict.

# %% [markdown] hint="splice_clt"
# A hook returns the new value of its activation. `(out - recon).detach()` is the error
# node: a constant, as SAELens's `use_error_term` computes it.

# %% [markdown]
# With the error nodes the output is the model's own; without them (the library's
# `spliced`, which replaces each MLP output by the reconstruction alone) it is the CLT's
# replacement model, a different network.

# %%
clean = model(fact_tokens)[0, -1]
logits, errors = checked(splice_clt)(model, clt, fact_tokens)
with spliced(model, clt) as _:
    replaced = model(fact_tokens)[0, -1]
print("with error nodes the logits equal the model's:", torch.allclose(logits[0, -1], clean, atol=1e-4))
print(f"p({facts.answers[0]}): model {sig3(clean.softmax(-1)[answer])}, CLT without error nodes "
      f"{sig3(replaced.softmax(-1)[answer])}; error-node norms at the last position: "
      + ", ".join(f"layer {t} {sig3(e[0, -1].norm())}" for t, e in errors.items()))

# %% [markdown]
# ## 6. PLT graphs against CLT graphs
#
# Now the comparison. For each prompt we build the attribution graph with each dictionary,
# prune it with chapter 05's rule (`prune`: the latents carrying 80 % of the influence,
# then 98 % of the edge influence) and read off:
#
# - **size**: latents and edges kept;
# - **replacement** and **completeness** of the pruned graph (chapter 05's `graph_scores`);
# - **error share**: the share of all node influence on the logits that sits on error nodes
#   (full graph);
# - **path length**: the mean number of edges on a path from the embeddings to the logits in
#   the pruned graph, each path weighted by the share of the logits' influence it carries.
#
# With $\hat A$ the normalised adjacency (chapter 05) and $w$ the logits' weights, $w\hat A^k$
# is the influence arriving at each node along paths of exactly $k$ edges; restricted to the
# embeddings and summed, $m_k$. The mean path length is $\sum_k k\,m_k / \sum_k m_k$.

# %% [markdown] exercise="mean_path_length" title="Measure the mean path length from embeddings to logits" difficulty=2 importance=4 minutes=15
# `normalized` is a graph's normalised adjacency `[target, source]` (already masked to the
# pruned edges), `logit_weights` the logits' weights (zero elsewhere) and `sources` marks
# the embedding nodes. Return $\sum_{k \ge 1} k\,m_k / \sum_{k \ge 1} m_k$ with
# $m_k = \sum_{j \in \text{sources}} (w \hat A^k)_j$, as a Python float. The graph is
# acyclic: stop when $w\hat A^k$ is all zeros. If no influence reaches a source, return
# `float("nan")`.

# %%
def mean_path_length(
    normalized: Float[Tensor, "n n"], logit_weights: Float[Tensor, " n"], sources: Bool[Tensor, " n"]
) -> float:
    """sum_k k m_k / sum_k m_k, m_k = sum over sources of (w A^k), k = 1, 2, ..."""
    ### BEGIN SOLUTION
    term, k = logit_weights @ normalized, 1
    weighted, total = 0.0, 0.0
    while term.abs().sum() > 0:
        m_k = term[sources].sum().item()
        weighted, total = weighted + k * m_k, total + m_k
        term, k = term @ normalized, k + 1
    return weighted / total if total > 0 else float("nan")
    ### END SOLUTION

# %% [markdown] hint="mean_path_length"
# The same loop as chapter 05's influence, keeping each power's contribution apart: after
# `term = w @ Â` the entries are paths of one edge; each further `term @ Â` adds one edge.

# %% [markdown] hint="mean_path_length"
# Weight each length by the influence it carries ($m_k$), and divide by the influence that
# reaches the sources at all ($\sum m_k$), not by the logits' total weight: paths ending at
# error nodes are not paths from the embeddings.

# %% [markdown]
# The summary of one graph, and the planted circuit of each task (chapter 05's grading,
# extended to induction):
#
# - **facts**: the landmark is the most influential content position, and the pruned graph
#   keeps a path from its token to the answer's logit;
# - **IOI**: the indirect object's position is more influential than the subject's first
#   mention, and the pruned graph keeps a positive direct edge from the indirect object's
#   token to the answer's logit (the name mover);
# - **induction**: the earlier copy of the answer token is the most influential content
#   position, and the pruned graph keeps a path from it to the answer's logit.

# %%
DICTIONARIES = {"PLT": plts, "control": control, "CLT": clt}
path_length = checked(mean_path_length)


def graph_summary(g: Graph) -> dict[str, float]:
    """Size, scores, error share and mean path length of ``g`` pruned by chapter 05's rule."""
    p = prune(g)
    infl = influence(normalized_adjacency(g.adjacency), g.logit_weights)
    return {"latents": int((p.nodes & g.dictionary_mask(error=False)).sum()), "edges": int(p.edges.sum()),
            "replacement": p.scores["replacement"], "completeness": p.scores["completeness"],
            "error share": float(infl[g.dictionary_mask(error=True)].sum() / infl[~g.mask("logit")].sum()),
            "path length": path_length(normalized_adjacency(g.adjacency) * p.edges, g.logit_weights, g.mask("embed")),
            "pruned": p}


def planted(task: str, tb, b: int, g: Graph, p) -> bool:
    """Whether the pruned graph ``p`` of prompt ``b`` of ``tb`` recovers the task's planted circuit."""
    tokens = tb.tokens[b]
    pos_infl = torch.zeros(len(g.tokens))
    for j, n in enumerate(g.nodes):
        if n.kind != "logit":
            pos_infl[n.pos] += p.node_influence[j]
    answer_node = Node("logit", n_layers, len(g.tokens) - 1, int(tb.answer_ids[b]))
    if answer_node not in g.nodes:
        return False
    if task == "ioi":
        io, s1 = int((tokens == tb.answer_ids[b]).nonzero()[0]), int((tokens == tb.distractor_ids[b]).nonzero()[0])
        edge = (g.index(answer_node), g.index(Node("embed", 0, io, int(tokens[io]))))
        return bool(pos_infl[io] > pos_infl[s1]) and bool(p.edges[edge]) and g.adjacency[edge].item() > 0
    pos = int(tb.labels["landmark"][b].nonzero()[0]) if task == "facts" else int((tokens == tb.answer_ids[b]).nonzero()[0])
    top = int(pos_infl[1:-1].argmax()) + 1
    path = paths_between(p.edges, g.index(Node("embed", 0, pos, int(tokens[pos]))), g.index(answer_node))
    return top == pos and len(path) > 0


summaries: dict[tuple[str, str], list[dict]] = {}
recovered: dict[tuple[str, str], list[bool]] = {}
for task in ("facts", "ioi", "induction"):
    tb = world.task_batch(task, 8, seed=0)
    for name, d in DICTIONARIES.items():
        for b in range(len(tb.prompts)):
            r = local_replacement(model, d, tb.tokens[b: b + 1])
            g = build_graph(r, salient_logit_ids(r.logits[-1])[0])
            s = graph_summary(g)
            summaries.setdefault((task, name), []).append(s)
            recovered.setdefault((task, name), []).append(planted(task, tb, b, g, s["pruned"]))

# %% [markdown]
# The first prompt of each task, side by side (pruned graphs):

# %%
KEYS = ("latents", "edges", "replacement", "completeness", "error share", "path length")
print(f"{'prompt':>10} {'dictionary':>8} " + " ".join(f"{k:>12}" for k in KEYS))
for (task, name), rows in summaries.items():
    print(f"{task:>10} {name:>8} " + " ".join(f"{sig3(rows[0][k]):>12}" for k in KEYS))

# %% [markdown]
# And over 8 prompts of each task: the means, and the number of graphs that recover the
# planted circuit.

# %%
print(f"{'task':>10} {'dictionary':>8} " + " ".join(f"{k:>12}" for k in KEYS) + "   planted circuit")
for (task, name), rows in summaries.items():
    means = {k: sum(r[k] for r in rows) / len(rows) for k in KEYS}
    print(f"{task:>10} {name:>8} " + " ".join(f"{sig3(means[k]):>12}" for k in KEYS)
          + f"   {sum(recovered[task, name])}/{len(rows)}")

# %% [markdown]
# What the table says, plainly.
#
# - **The CLT explains more with latents.** On every task its pruned graphs have higher
#   replacement and completeness than the PLTs' (means 0.753 against 0.5 and 0.859 against
#   0.669 on facts), and the error nodes hold a far smaller share of the influence (0.0262
#   against 0.217 on facts, 0.0188 against 0.15 on induction).
# - **Most of that gain is not cross-layer.** The same-layer control, trained by the same
#   code without cross-layer decoders, comes close: replacement 0.696, error share 0.0419 on
#   facts; on IOI its error share is even a little lower than the CLT's (0.0695 against
#   0.0732). The shipped PLTs were trained differently (an L1 penalty, not BatchTopK), and
#   that difference is most of the distance.
# - **The CLT graphs are smaller, but not everywhere by much.** On facts and IOI the CLT
#   keeps fewer latents and edges than both others (12 latents and 84.8 edges on facts
#   against 19.5 and 168 for the PLTs); on induction it keeps about as many latents as the
#   PLTs (26.8 against 28.5), and its control keeps more than either (31.2).
# - **The paths are not shorter than the PLTs'.** The mean path length from the embeddings
#   to the logits is a little *longer* with the CLT than with the PLTs on every task (1.9
#   against 1.85 on facts, 1.91 against 1.84 on IOI, 2.02 against 1.92 on induction). A
#   dictionary that explains more routes more influence through latents, each adding an
#   edge; where the PLTs miss, the influence ends at an error node and drops out of the
#   average. Against its fair comparison, the control, the CLT's paths *are* shorter (2.01,
#   1.99 and 2.09 for the control): that is the cross-layer decoders' effect, and in a
#   two-layer model a decoder can skip only one MLP.
# - **Ground truth.** Every dictionary recovers the fact circuit in 8 of 8 graphs; the IOI
#   name mover is recovered in 8 of 8 PLT and control graphs and 7 of 8 CLT graphs. On
#   induction the CLT and its control lose it: the planted circuit is recovered in 1 of 8
#   CLT graphs and 2 of 8 control graphs, against 7 of 8 PLT graphs.

# %%
def mean_of(task: str, name: str, key: str) -> float:
    return sum(r[key] for r in summaries[task, name]) / len(summaries[task, name])


tasks = ("facts", "ioi", "induction")
print("CLT replacement above the PLTs' on every task:", all(mean_of(t, "CLT", "replacement") > mean_of(t, "PLT", "replacement") for t in tasks))
print("CLT error share below the PLTs' on every task:", all(mean_of(t, "CLT", "error share") < mean_of(t, "PLT", "error share") for t in tasks))
print("CLT mean path length longer than the PLTs' on every task:",
      all(mean_of(t, "CLT", "path length") > mean_of(t, "PLT", "path length") for t in tasks))
print("CLT mean path length shorter than the control's on every task:",
      all(mean_of(t, "CLT", "path length") < mean_of(t, "control", "path length") for t in tasks))
print("fact circuit recovered by all three in 8/8:", all(sum(recovered["facts", n]) == 8 for n in DICTIONARIES))
print("induction circuit recovered in more PLT graphs than CLT graphs:",
      sum(recovered["induction", "PLT"]) > sum(recovered["induction", "CLT"]))

# %% [markdown]
# ## 7. Reading the graphs in the field's tools
#
# The CLT exports in circuit-tracer's CLT format (`clt.to_circuit_tracer(folder)`:
# `W_enc_{L}` and `W_dec_{L}` files per layer, which its `load_clt` reads), and the
# side-by-side benchmark of chapter 05 builds the same graphs with circuit-tracer itself:
#
#     python -m utils.course bench attribution_graphs --against circuit-tracer --backends toy-clt --threads 1
#
# prints one line per prompt with the largest edge difference between the two graphs,
# relative to the largest edge; `tests/test_circuit_tracer.py` asserts it stays below 1e-5.
#
# **GPT-2.** We found no public CLT for GPT-2 small in a format the course reads:
# circuit-tracer 0.5's loaders fetch transcoders and CLTs for Gemma and Llama models (its
# documentation also lists GPT-OSS ones), none for GPT-2, and SAELens has no CLT class.
# `utils.clt.train_clt` trains one on any `HookedTransformer`, with the BatchTopK recipe of
# the organism's CLT. The cell below trains a CLT over GPT-2's first two MLPs (3,072 latents
# per layer, $k = 32$) for 5 steps of 8 rows of 128 tokens, on the organism's text tokenized
# by GPT-2 (chapter 06's `text_dataset`), to see the pipeline run; a useful CLT needs hundreds
# of millions of tokens on a GPU. It needs the Hugging Face hub (Colab); offline it prints
# one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
import itertools

from utils.backends.gpt2 import HubUnavailable, load_gpt2
from utils.clt import CLTConfig, CLTTrainingConfig, train_clt
from utils.training import text_dataset

try:  # GPT-2 alone, no dictionaries: one download of about 500 MB
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[0, 1], kinds=())
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    g_model = gpt2.model
    texts = [model.to_string(row[1:]) for row in world.corpus(200, 48, seed=50_000).tokens]
    rows = torch.tensor(text_dataset(g_model, texts, context_size=128)["tokens"])
    stream = (rows[i % len(rows):][:8].to(g_model.cfg.device) for i in itertools.count(0, 8))
    with torch.enable_grad():  # gradients are off in this notebook (first cell); training needs them
        g_run = train_clt(CLTConfig(g_model.cfg.d_model, 4 * g_model.cfg.d_model, n_layers=2),
                          CLTTrainingConfig(k=(32, 32), steps=5, calibration_batches=2),
                          clt_batches(g_model, stream, n_layers=2, drop_bos=True), progress=False)
    h = g_run.history
    print(f"{len(rows)} rows of 128 GPT-2 tokens; 5 steps in {g_run.seconds:.1f} s: reconstruction term "
          f"{h['mse'][0]:.3g} -> {h['mse'][-1]:.3g}, L0 of the last batch {h['l0.0'][-1]:.3g} and {h['l0.1'][-1]:.3g}; "
          f"decoders {g_run.clt.cfg.decoder_pairs()}")

# %% [markdown]
# ## Summary
#
# - A CLT's latent of layer $s$ writes into every MLP output $t \ge s$; its output at $t$
#   sums the writes of every earlier-or-same layer. Its sparsity term charges each latent
#   once, by the norm of all its decoders together.
# - In a graph, a CLT latent's edge to a later reader sums over the decoders that have
#   written before the reader reads; the engine's gradients do this by themselves.
# - Splicing needs error nodes against the *cross-layer* reconstruction, detached.
# - On the organism the CLT's graphs explain more of the output with latents than the
#   shipped PLTs', but a same-layer control trained the same way gets most of the way; the
#   CLT's graphs are smaller on facts and IOI, barely on induction, and their paths are
#   longer than the PLTs' (shorter than the control's). On induction the CLT graphs mostly
#   lose the planted circuit.
#
# **Open questions.** Would a deeper organism, where a feature is built over three or more
# MLPs, show the shorter paths a two-layer model cannot? Which CLT latents take the
# induction signal that the PLT graphs put on the copied token?

# %% [markdown]
# # Chapter 03 — Sparse feature circuits: nodes, edges, cognition graphs, validation, SHIFT
#
# Chapters 01 and 02 scored nodes one at a time: a latent or an error node, at one position,
# of one dictionary. A *circuit* is more: which nodes matter, and how they feed each other.
# This chapter finds whole circuits of latents across both layers of the model organism in
# two ways. The gradient way (Marks et al. 2024, *Sparse feature circuits*) scores every node
# and every edge from a few backward passes. The ablation way (the "cognition graphs" of the
# sparse_circuit_discovery project) knocks out one latent and watches which later latents
# move. We draw both as graphs, validate the gradient circuit by ablating it as a whole,
# grade it against the mechanism we planted, and finally put a circuit to work: SHIFT, which
# removes a spurious cue (gender) from a probe for profession by ablating the latents the
# probe leans on.
#
# **Learning objectives**
# - Score every node (latents and error nodes of residual SAEs, attention SAEs and
#   transcoders, at every position) with attribution and integrated gradients, and pick a
#   node threshold.
# - Compute edge effects $\nabla_d m \cdot \frac{\partial d}{\partial u} \cdot \Delta u$ between
#   consecutive dictionaries with vector-Jacobian products, and check them against edge
#   ablation.
# - Build a cognition graph by ablation, grow it by progressive tracing, draw it, and export
#   it to `.dot` and `.svg`.
# - Validate a circuit by joint ablation: against the sum of its single effects, against
#   random circuits of the same size, and with faithfulness and completeness.
# - Grade a circuit against the planted mechanism (precision and recall) for IOI and the
#   fact chain.
# - Run SHIFT and read its table: profession accuracy, gender accuracy and worst-group
#   accuracy before and after ablating the gender latents, after retraining, and for an
#   oracle.
#
# *If you read one thing:* section 2, on edges. Every graph of this chapter and of chapter 05
# is built from them.

# %% tags=["module"]
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import NodeBaseline
from utils.graphs import node_gradients, splice_for_edges
from utils.nodes import Node, dictionary_key, output_hook

# %%
import random
import tempfile
from pathlib import Path

import plotly.graph_objects as go

from utils.metrics import agreement
from utils.backends import load_backend
from utils.course.checking import checked, earlier
from utils.circuits import label_positions, mean_baseline, node_attribution, rank_nodes
from utils.graphs import Graph, Tracer, direct_change, export_dot_svg, graph_figure
from utils.metrics import auroc
from utils.views import FIGURE_STYLE, latent_label, log_ticks

logit_diff = earlier("ch01_attribution", "logit_diff")  # chapter 01's metric: yours once its check passed, else the reference

_ = torch.set_grad_enabled(False)  # off by default; the gradient exercises turn it on where they need it

# %% [markdown]
# ## 1. Node effects
#
# **Objectives:** score every node of every dictionary; compare attribution with integrated
# gradients; choose a node threshold; see where the effects sit.
#
# The organism has six dictionaries: an attention SAE, a transcoder (standing in for the MLP)
# and a residual SAE at each of its two layers. A *node* is one latent, or one error term, of
# one dictionary at one position (`utils.nodes.Node(kind, layer, pos, index)`). Chapter 02's
# `node_attribution` scores all of them at once: splice every dictionary so that latents and
# error nodes are leaves, run forward and backward once, and multiply each gradient by the
# node's change under mean ablation,
#
# $$\hat{\Delta} m(n) = \nabla_n m \cdot (n' - n),$$
#
# with $n'$ the node's mean over 64 other prompts of the task, position by position. The
# metric is the logit difference of chapter 01 (answer minus repeated name). Just run:

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
dictionaries = list(bk.dictionaries.values())  # forward order: attn0, transcoder0, resid0, attn1, transcoder1, resid1
names = [f"{kind}{layer}" for kind, layer in bk.dictionaries]
hooks = [d.cfg.metadata.hook_name for d in dictionaries]
ioi = world.task_batch("ioi", n=16, seed=0)
ioi_means = mean_baseline(model, dictionaries, world.task_batch("ioi", n=64, seed=1).tokens)


def ioi_metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
    return logit_diff(logits, ioi.answer_ids, ioi.distractor_ids)


attribution = node_attribution(model, dictionaries, ioi.tokens, ioi_metric, ioi_means)
node_scores = {hook: a.mean(0) for hook, a in attribution.items()}  # [pos, d_sae + 1] per dictionary, error last
n_pos = ioi.tokens.shape[1]
words = ["<bos>", *ioi.prompts[0].split()]
print(f"{sum(s.numel() for s in node_scores.values())} nodes ({n_pos} positions); "
      f"clean logit difference {ioi_metric(model(ioi.tokens)).mean().item():.3g}")
print("prompt 0:", " ".join(f"{p}:{w}" for p, w in enumerate(words)))

# %% [markdown]
# Attribution is a first-order estimate. Chapter 01's integrated gradients average the
# gradient along the straight path from the clean latents to the baseline; for the layer-1
# residual SAE (the last dictionary, whose effect on the logits runs only through the final
# LayerNorm), we compare the two on the 20 latent nodes with the largest attribution, and
# both with the true effect of mean-ablating each node alone (chapter 02's `ablate_nodes`,
# every dictionary spliced with its error term).

# %%
ablate, integrate = earlier("ch02_error_nodes", "ablate_nodes"), earlier("ch01_attribution", "integrated_gradients")
ioi_args = (ioi.tokens, ioi.answer_ids, ioi.distractor_ids)
resid1 = bk.dictionary("resid_sae", 1)
hook1 = resid1.cfg.metadata.hook_name
clean_m = ablate(model, dictionaries, *ioi_args, [], ioi_means)  # [batch]
top_resid1 = rank_nodes({h: (s if h == hook1 else torch.zeros_like(s)) for h, s in node_scores.items()},
                        dictionaries, errors=False, k=20)
patched = ioi_means.latents[hook1].expand(len(ioi.prompts), -1, -1)  # every position mean-ablated
ig = integrate(model, resid1, *ioi_args, patched, steps=8).mean(0)  # [pos, d_sae]
estimates = {"attribution": torch.tensor([node_scores[hook1][n.pos, n.index].item() for n in top_resid1]),
             "integrated gradients": torch.tensor([ig[n.pos, n.index].item() for n in top_resid1])}
truth = torch.tensor([(ablate(model, dictionaries, *ioi_args, [n], ioi_means) - clean_m).mean().item() for n in top_resid1])
for name, estimate in estimates.items():
    fit = agreement(estimate, truth)
    print(f"resid_sae1, 20 top nodes, {name} vs mean ablation: Spearman {fit['spearman']:.3g}, "
          f"Pearson {fit['pearson']:.3g}, sign agreement {fit['sign_agreement']:.3g}")

# %% [markdown]
# Both estimates rank these nodes close to the truth. A *node threshold* keeps the nodes
# whose mean attribution is at least $\tau_n$ in absolute value. How many survive each
# threshold, and how many of them are error nodes:

# %%
all_nodes = rank_nodes(node_scores, dictionaries)  # every node, largest |effect| first
hook_of = {key: d.cfg.metadata.hook_name for key, d in bk.dictionaries.items()}


def effect_of(node: Node) -> float:
    """The mean attribution of one node (from the table above)."""
    return node_scores[hook_of[node.kind, node.layer]][node.pos, -1 if node.is_error else node.index].item()


def above(tau: float) -> list[Node]:
    """The nodes with |mean attribution| >= tau: a prefix of the ranking."""
    return all_nodes[:sum(int((s.abs() >= tau).sum()) for s in node_scores.values())]


thresholds = [0.3, 0.1, 0.03, 0.01]
for tau in thresholds:
    kept = above(tau)
    print(f"tau_n = {tau}: {len(kept)} nodes, {sum(n.is_error for n in kept)} of them error nodes")

# %% [markdown]
# Where do the effects sit? The sum of $|\hat\Delta m|$ over each dictionary's nodes at
# each position (latents and the error node together), and the share the error node takes:

# %%
mass = torch.stack([s.abs().sum(-1) for s in node_scores.values()])  # [dictionary, pos]
error_share = torch.stack([s[:, -1].abs() for s in node_scores.values()]) / mass.clamp(min=1e-9)
busiest = mass.sum(0).topk(4).indices.sort().values.tolist()
print("sum of |attribution| per dictionary at the four busiest positions " + ", ".join(f"{p} ({words[p]})" for p in busiest))
for i, name in enumerate(names):
    print(f"  {name:>12}: " + ", ".join(f"{mass[i, p].item():.3g} (error {error_share[i, p].item():.2f})" for p in busiest))


# %%
# NBVAL_IGNORE_OUTPUT
def node_mass_figure() -> go.Figure:
    """Heatmap: dictionary (rows, forward order) x position, colour = sum of |attribution|."""
    figure = go.Figure(go.Heatmap(
        z=mass.numpy(), x=[f"{p} {w}" for p, w in enumerate(words)], y=names, colorscale="Viridis",
        customdata=error_share.numpy(), colorbar=dict(title="Σ |attribution|<br>(logit diff)"),
        hovertemplate="%{y} at %{x}<br>Σ|attribution| %{z:.3g}<br>error node's share %{customdata:.2f}<extra></extra>"))
    figure.update_xaxes(title_text="position and token of prompt 0", type="category")
    figure.update_yaxes(title_text="dictionary (forward order, bottom first)")
    return figure.update_layout(title="Where the IOI effect sits: total |node attribution| per dictionary and position",
                                height=420, **FIGURE_STYLE)


node_mass_figure()

# %% [markdown]
# The effect concentrates at three positions: the comma (where layer-0 attention collects
# the two names, as chapter 02 found), the repeated name, and the final *to*, where the
# answer is written. The error node's share reaches 0.37 (transcoder0 at the repeated name)
# and 0.43 (transcoder1 at the final *to*).

# %% [markdown]
# ## 2. Edge effects
#
# **Objectives:** compute the effect of every edge between two consecutive dictionaries
# with vector-Jacobian products; check it against edge ablation.
#
# An edge joins an upstream node $u$ to a downstream node $d$. Marks et al. score it by how
# much of the metric flows *through* it:
#
# $$\hat\Delta m(u \to d) = \nabla_d m \cdot \frac{\partial d}{\partial u} \cdot (u' - u),$$
#
# the gradient of the metric at $d$, times how much $d$ moves per unit of $u$, times $u$'s
# change under ablation. Only *direct* dependence counts: paths that pass through a third
# dictionary between $u$ and $d$ are that dictionary's edges. `utils.graphs.splice_for_edges`
# sets this up: the upstream dictionary's latents and error are leaves, the downstream
# dictionary's latents and error are computed from what it reads (with gradients), and every
# other dictionary writes its value detached, so no gradient passes through it. With
# residual SAEs at every layer this makes edges join consecutive dictionaries, e.g. resid0 →
# resid1 is the residual *skip* path alone, and attn1 and transcoder1 carry the rest.
#
# We never build a dense $d_{sae} \times d_{sae}$ Jacobian. For each downstream node $d$
# (one latent at one position) one backward pass of the scalar
# $\sum_b (\nabla_d m)_b\, d_b$ gives $\nabla_d m \cdot \partial d / \partial u$ for every
# upstream node at every position at once: a vector-Jacobian product.

# %% [markdown] exercise="edge_effects" title="Compute edge effects with vector-Jacobian products" difficulty=4 importance=5 minutes=35
# Return, for each downstream node in `targets` (latents or error nodes of `downstream`),
# the mean over prompts of
#
# $$E[t, p, j] = g_t \cdot \frac{\partial d_t}{\partial u_j(p)} \cdot (u'_j(p) - u_j(p))$$
#
# for every upstream latent $j$ at every position $p$, and in the last column $j = d_{sae}$
# the same for the upstream error node (the dot product summed over the error's dims).
# $g_t = \partial m / \partial d_t$ is the metric's gradient at the downstream node with
# every dictionary spliced (`utils.graphs.node_gradients` gives it: `grads[f"{hook}.latents"].grad`,
# `grads[f"{hook}.error"].grad`); $u'$ is `baseline` (zero when None). Use
# `splice_for_edges(model, dictionaries, upstream, downstream)`: inside it, under
# `torch.enable_grad()`, one forward pass fills `nodes["up.latents"]`, `nodes["up.error"]`
# (leaves) and `nodes["down.latents"]`, `nodes["down.error"]` (with gradients). For an
# error target, $d_t$ is the error vector at its position and $g_t \cdot d_t$ a dot product.

# %%
def edge_effects(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    targets: Sequence[Node],
    baseline: NodeBaseline | None = None,
) -> Float[Tensor, "target pos d_up_plus_error"]:
    """E[t, p, j] = mean_b (dm_b/dd_t) . (dd_t/du_j(p)) . (u'_j(p) - u_j(p)); column d_sae: the upstream error."""
    ### BEGIN SOLUTION
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_latents, g_error = grads[f"{down_hook}.latents"].grad, grads[f"{down_hook}.error"].grad
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
        model(tokens)
        f, e = nodes["up.latents"], nodes["up.error"]
        f_change = (0.0 if baseline is None else baseline.latents[up_hook]) - f.detach()  # [batch, pos, d_sae]
        e_change = (0.0 if baseline is None else baseline.errors[up_hook]) - e.detach()  # [batch, pos, ...]
        rows = []
        for target in targets:
            if target.is_error:  # g . d for the error vector at its position
                weighted = (g_error[:, target.pos] * nodes["down.error"][:, target.pos]).sum()
            else:
                weighted = (g_latents[:, target.pos, target.index] * nodes["down.latents"][:, target.pos, target.index]).sum()
            grad_f, grad_e = torch.autograd.grad(weighted, [f, e], retain_graph=True)  # one VJP per target
            error_edge = (grad_e * e_change).flatten(2).sum(-1)  # [batch, pos]
            rows.append(torch.cat([grad_f * f_change, error_edge[..., None]], dim=-1).mean(0))
    return torch.stack(rows)
    ### END SOLUTION

# %% [markdown] hint="edge_effects"
# The skeleton:
# ```python
# grads = node_gradients(model, dictionaries, tokens, metric)
# with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
#     model(tokens)
#     for target in targets:
#         scalar = (g[:, target.pos, target.index] * nodes["down.latents"][:, target.pos, target.index]).sum()
#         grad_f, grad_e = torch.autograd.grad(scalar, [nodes["up.latents"], nodes["up.error"]], retain_graph=True)
# ```
# `retain_graph=True` keeps the forward graph for the next target.

# %% [markdown] hint="edge_effects"
# Summing over prompts before the backward pass is fine because prompts do not interact:
# each prompt's upstream nodes receive only their own prompt's gradient. Multiply by the
# change $u' - u$ *per prompt*, then average over prompts. The error column is
# `(grad_e * (e' - e)).flatten(2).sum(-1)`: an attention SAE's error is `[batch, pos, n_heads, d_head]`.

# %% [markdown]
# Check the estimate against the truth. *Edge ablation* sets one upstream node to its
# baseline, holds every other dictionary at its clean output (so only the direct path
# moves), and reads how far the downstream node moves; multiplied by $\nabla_d m$ this is the
# metric change through that edge. We take the layer-1 residual SAE's five strongest nodes as
# targets, and for each the four strongest edges from the layer-0 residual SAE and four from the
# layer-1 transcoder (`utils.graphs.direct_change` does the ablation).

# %%
edges_fn = checked(edge_effects)
grads = node_gradients(model, dictionaries, ioi.tokens, ioi_metric)
pairs = [(bk.dictionary("resid_sae", 0), resid1), (bk.dictionary("transcoder", 1), resid1)]
targets = [n for n in all_nodes if (n.kind, n.layer) == ("resid_sae", 1)][:5]
estimate, true_edge = [], []
for upstream, downstream in pairs:
    up_hook = upstream.cfg.metadata.hook_name
    edges = edges_fn(model, dictionaries, upstream, downstream, ioi.tokens, ioi_metric, targets, ioi_means)
    for t, target in enumerate(targets):
        for flat in edges[t].abs().flatten().topk(4).indices.tolist():
            p, j = divmod(flat, edges.shape[-1])
            source = Node(*dictionary_key(upstream), p, "error" if j == upstream.cfg.d_sae else j)
            value = ioi_means.errors[up_hook][p] if source.is_error else ioi_means.latents[up_hook][p, j]
            d_latents, d_error = direct_change(model, dictionaries, upstream, downstream, ioi.tokens, source, value)
            if target.is_error:
                moved = (grads[f"{hook1}.error"].grad[:, target.pos] * d_error[:, target.pos]).sum(-1)
            else:
                moved = grads[f"{hook1}.latents"].grad[:, target.pos, target.index] * d_latents[:, target.pos, target.index]
            estimate.append(edges[t, p, j].item())
            true_edge.append(moved.mean().item())
estimate, true_edge = torch.tensor(estimate), torch.tensor(true_edge)
fit = agreement(estimate, true_edge)
print(f"{len(estimate)} edges into resid_sae1: edge attribution vs edge ablation Spearman {fit['spearman']:.3g}, "
      f"Pearson {fit['pearson']:.3g}, sign agreement {fit['sign_agreement']:.3g}")

# %%
# NBVAL_IGNORE_OUTPUT
def edge_scatter() -> go.Figure:
    """Edge attribution (y) against edge ablation (x), with y = x."""
    top = max(estimate.abs().max().item(), true_edge.abs().max().item()) * 1.1
    figure = go.Figure([go.Scatter(x=[-top, top], y=[-top, top], mode="lines", line=dict(dash="dot", color="grey"), name="y = x"),
                        go.Scatter(x=true_edge.numpy(), y=estimate.numpy(), mode="markers", name="edges",
                                   hovertemplate="ablation %{x:.3g}<br>attribution %{y:.3g}<extra></extra>")])
    figure.update_xaxes(title_text="edge ablation: ∇d m · Δd (logit diff)", range=[-top, top])
    figure.update_yaxes(title_text="edge attribution (logit diff)", range=[-top, top], scaleanchor="x")
    return figure.update_layout(title="Edges into resid_sae1: vector-Jacobian estimate vs ablation", height=520, **FIGURE_STYLE)


edge_scatter()

# %% [markdown]
# The estimate ranks these edges as ablation does. Now the whole graph: nodes above
# $\tau_n = 0.1$, and every edge between them from one dictionary to the next (nine pairs:
# within a layer attn → transcoder → resid, and resid0 → each layer-1 dictionary), kept
# when $|\hat\Delta m(u \to d)| \ge \tau_e = 0.02$.

# %%
tau_node, tau_edge = 0.1, 0.02
kept = above(tau_node)
consecutive = [(("attn_sae", 0), ("transcoder", 0)), (("attn_sae", 0), ("resid_sae", 0)), (("transcoder", 0), ("resid_sae", 0)),
               (("resid_sae", 0), ("attn_sae", 1)), (("resid_sae", 0), ("transcoder", 1)), (("resid_sae", 0), ("resid_sae", 1)),
               (("attn_sae", 1), ("transcoder", 1)), (("attn_sae", 1), ("resid_sae", 1)), (("transcoder", 1), ("resid_sae", 1))]
circuit_edges: dict[tuple[Node, Node], float] = {}  # (source, target) -> edge effect
for up_key, down_key in consecutive:
    up_nodes = [n for n in kept if (n.kind, n.layer) == up_key]
    down_nodes = [n for n in kept if (n.kind, n.layer) == down_key]
    if not up_nodes or not down_nodes:
        continue
    upstream, downstream = bk.dictionary(*up_key), bk.dictionary(*down_key)
    edges = edges_fn(model, dictionaries, upstream, downstream, ioi.tokens, ioi_metric, down_nodes, ioi_means)
    for t, target in enumerate(down_nodes):
        for source in up_nodes:
            circuit_edges[source, target] = edges[t, source.pos, upstream.cfg.d_sae if source.is_error else source.index].item()
circuit_graph = Graph.from_edges({n: effect_of(n) for n in kept}, circuit_edges).thresholded(tau_node, tau_edge)
signs = sum(w > 0 for w in circuit_graph.edges.values())
print(f"IOI circuit at tau_n = {tau_node}, tau_e = {tau_edge}: {len(circuit_graph.nodes)} nodes, "
      f"{len(circuit_graph.edges)} edges ({signs} positive)")
strongest = sorted(circuit_graph.edges.items(), key=lambda item: -abs(item[1]))[:5]
for (u, d), w in strongest:
    print(f"  {u} -> {d}: {w:.3g}")

# %% [markdown]
# ## 3. Validating the circuit by joint ablation
#
# **Objectives:** ablate a whole circuit at once; compare with its nodes' single effects and
# with random circuits; measure faithfulness and completeness against the threshold.
#
# Single-node effects need not add up: two nodes that each carry the answer are each
# dispensable alone (backup), and a node may matter only once another is gone. We
# mean-ablate every node of the circuit together and compare with the sum of their
# attributions, and with circuits of the same size drawn at random among the *active* nodes
# (latents with a nonzero clean mean activation at that position, and error nodes).

# %%
circuit = list(circuit_graph.nodes)
joint = (ablate(model, dictionaries, *ioi_args, circuit, ioi_means) - clean_m).mean().item()
summed = sum(circuit_graph.effects.values())
active = [n for n in all_nodes if n.is_error or ioi_means.latents[hook_of[n.kind, n.layer]][n.pos, n.index] > 0]
rng = random.Random(0)
random_joint = [(ablate(model, dictionaries, *ioi_args, rng.sample(active, len(circuit)), ioi_means) - clean_m).mean().item()
                for _ in range(5)]
print(f"circuit of {len(circuit)} nodes: joint mean ablation {joint:.3g}, sum of single attributions {summed:.3g} "
      f"(clean logit difference {clean_m.mean().item():.3g})")
print(f"5 random circuits of {len(circuit)} active nodes (of {len(active)}): joint ablation "
      + ", ".join(f"{x:.3g}" for x in random_joint))

# %% [markdown]
# Ablated together, the circuit's nodes remove the whole logit difference, more than twice
# the sum of their single attributions: their effects are far from additive (many carry the
# same names, and each is dispensable while the others stand). Random circuits of the same
# size mostly do little; one of the five above happens to hit a node that matters.

# %% [markdown]
# Faithfulness $F(C)$ (every node *outside* the circuit mean-ablated) and completeness
# $\bar F(C)$ (only the circuit ablated), chapter 02's functions, for the circuit at each
# node threshold, with a random circuit of the same size beside it:

# %%
faithful, complete = earlier("ch02_error_nodes", "faithfulness"), earlier("ch02_error_nodes", "completeness")
validation = []
for tau in thresholds:
    nodes_tau = above(tau)
    drawn = rng.sample(active, len(nodes_tau))
    row = (tau, len(nodes_tau), faithful(model, dictionaries, nodes_tau, *ioi_args, ioi_means),
           complete(model, dictionaries, nodes_tau, *ioi_args, ioi_means), faithful(model, dictionaries, drawn, *ioi_args, ioi_means))
    validation.append(row)
    print(f"tau_n = {tau}: {row[1]} nodes, faithfulness {row[2]:.3g}, completeness {row[3]:.3g}; "
          f"random circuit of that size: faithfulness {row[4]:.3g}")


# %% [markdown]
# Completeness falls steadily as the threshold drops: ablating the circuit removes more of
# the behaviour. Faithfulness is not monotone: the 22 strongest nodes alone recover more
# than the 98 strongest. Many of the nodes added between the two thresholds work *against*
# the answer (ablating them alone would raise the logit difference):

# %%
added = above(0.1)[len(above(0.3)):]
against = [n for n in added if effect_of(n) > 0]
print(f"{len(added)} nodes added between tau_n = 0.3 and 0.1: {len(against)} with a positive attribution "
      f"(summing to {sum(effect_of(n) for n in against):.3g}), {len(added) - len(against)} negative "
      f"(summing to {sum(effect_of(n) for n in added if effect_of(n) <= 0):.3g})")

# %% [markdown]
# Kept without all of their counterweights, such nodes can leave the circuit worse off
# (one reading of the dip; we have not traced it node by node). Only at around 600 nodes
# (of 23,000) does the circuit alone recover most of the behaviour, while every random
# circuit stays near zero.

# %%
# NBVAL_IGNORE_OUTPUT
def validation_figure() -> go.Figure:
    """Faithfulness, completeness and the random baseline against circuit size."""
    sizes = [row[1] for row in validation]
    figure = go.Figure()
    for k, name, colour in ((2, "faithfulness", "royalblue"), (3, "completeness", "firebrick"), (4, "random circuit: faithfulness", "grey")):
        figure.add_scatter(x=sizes, y=[row[k] for row in validation], mode="lines+markers", name=name, line=dict(color=colour),
                           customdata=[row[0] for row in validation],
                           hovertemplate=f"{name}<br>%{{x}} nodes (tau_n %{{customdata}}): %{{y:.3g}}<extra></extra>")
    figure.update_xaxes(**log_ticks(sizes), title_text="circuit size (nodes with |attribution| ≥ tau_n)")
    figure.update_yaxes(title_text="share of the logit difference recovered")
    return figure.update_layout(title="IOI circuit validated by joint ablation", height=450, **FIGURE_STYLE)


validation_figure()

# %% [markdown]
# ## 4. Ground truth: is the circuit the planted mechanism?
#
# **Objectives:** grade a circuit's latents against the planted labels, as precision and
# recall.
#
# We know what IOI needs: the names (`is_name`), the repeated subject (`name_repeated`) and
# the final *to* (`ioi_end`). The fact chain needs the landmark (`landmark`) and, where the
# answer is predicted, the city (`city`, `fact_answer`). Call a latent node *planted* when
# its explanation-table label (AUROC at least 0.9) is one of the labels true at its position
# in these prompts (at the last position also the answer's labels), and it is active there
# (nonzero mean activation). Precision: the share of the circuit's latent nodes that are
# planted (error nodes have no label and are left out). Recall: the share of planted nodes
# the circuit holds.

# %%
def planted_nodes(batch, labels: Sequence[str], answer_labels: Sequence[str], baseline: NodeBaseline) -> set[Node]:
    """Active latent nodes whose label (AUROC >= 0.9) is true at their position (answer labels at the last)."""
    where = {name: label_positions(batch.labels[name]) for name in labels}
    planted = set()
    for (kind, layer), sae in bk.dictionaries.items():
        hook = sae.cfg.metadata.hook_name
        table = f"transcoder.{layer}" if kind == "transcoder" else hook
        means = baseline.latents[hook]  # [pos, d_sae], means over prompts of this task
        for index in range(sae.cfg.d_sae):
            row = bk.explanations.lookup(table, index)
            if row["auroc"] < 0.9:
                continue
            for pos in range(means.shape[0]):
                true_here = (row["label"] in where and bool(where[row["label"]][pos])) or (
                    pos == means.shape[0] - 1 and row["label"] in answer_labels)
                if true_here and means[pos, index] > 0:
                    planted.add(Node(kind, layer, pos, index))
    return planted


def precision_recall(found: Sequence[Node], planted: set[Node]) -> tuple[float, float]:
    latents = {n for n in found if not n.is_error}
    hits = len(latents & planted)
    return hits / max(len(latents), 1), hits / max(len(planted), 1)


facts = world.task_batch("facts", n=16, seed=0)
facts_means = mean_baseline(model, dictionaries, world.task_batch("facts", n=64, seed=1).tokens)


def facts_metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
    return logit_diff(logits, facts.answer_ids, facts.distractor_ids)


facts_scores = {h: a.mean(0) for h, a in node_attribution(model, dictionaries, facts.tokens, facts_metric, facts_means).items()}
studies = {"ioi": (node_scores, ioi_means, ioi, ("is_name", "female_name", "male_name", "name_repeated", "ioi_end"), ("ioi_end",)),
           "facts": (facts_scores, facts_means, facts, ("landmark",), ("city", "fact_answer"))}
ground_truth = {}
for task, (scores, means, batch, labels, answer_labels) in studies.items():
    planted = planted_nodes(batch, labels, answer_labels, means)
    ranked = rank_nodes(scores, dictionaries, errors=False)
    for size in (10, 30, 100):
        precision, recall = precision_recall(ranked[:size], planted)
        ground_truth[task, size] = (precision, recall)
        print(f"{task}: top {size} latent nodes vs {len(planted)} planted: precision {precision:.3g}, recall {recall:.3g}")

# %% [markdown]
# Read the two numbers against chance: a random active latent node is planted with
# probability (planted / active latent nodes):

# %%
for task, (_, means, batch, labels, answer_labels) in studies.items():
    planted = planted_nodes(batch, labels, answer_labels, means)
    n_active = sum(int((means.latents[h] > 0).sum()) for h in hooks)
    print(f"{task}: chance precision {len(planted) / n_active:.3g} ({len(planted)} planted of {n_active} active latent nodes)")
top_ioi = rank_nodes(node_scores, dictionaries, errors=False, k=100)
per_position = {p: sum(n.pos == p for n in top_ioi) for p in range(n_pos)}
print("IOI, top 100 latent nodes per position:", ", ".join(f"{p} ({words[p]}): {k}" for p, k in per_position.items() if k))

# %% [markdown]
# At 30 and 100 nodes both circuits beat chance six to twenty-two times over, yet most of their
# latents are not planted ones, and IOI's top 10 holds none. IOI's latents sit mostly at the comma
# and the final *to*: layer-0 attention gathers the names at the comma (chapter 02), and the
# comma carries no planted label, so those latents count as misses though the information
# is there. Precision and recall grade *where labelled information is represented*, which is
# not the same as whether the circuit is right; with the labels the generator knows, it is a
# grade no course on a real model can give at all.

# %% [markdown]
# ## 5. Cognition graphs by ablation
#
# **Objectives:** build a graph by ablating one latent at a time; keep changes above
# $2^k$; grow the graph by progressive tracing; show each node's contexts and logits.
#
# The sparse_circuit_discovery project finds circuits without gradients: zero-ablate one
# upstream latent, rerun the model, and record how every downstream latent's activation
# changes. Changes above a threshold $2^k$ (its `THRESHOLD_EXP` is $k$) become edges. This
# is a *total* effect (through every path, not only the direct one) and costs one forward
# pass per upstream node, but needs no metric at all.

# %% [markdown] exercise="ablation_edges" title="Record the downstream changes of one ablated latent" difficulty=3 importance=4 minutes=25
# Splice every dictionary of `dictionaries` with its error term. Zero the upstream latent
# `node` (a latent of `upstream` at `node.pos`) in every prompt and return the change of
# every `downstream` latent at every position, averaged over prompts,
# $\overline{\Delta f_j(p)} = \mathrm{mean}_b\,(f_j^{\text{ablated}}(b, p) - f_j(b, p))$, with
# every entry whose magnitude is below $2^k$ (`k = threshold_exp`) set to zero.

# %%
def ablation_edges(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    node: Node,
    threshold_exp: int,
) -> Float[Tensor, "pos d_down"]:
    """mean_b (f_down_ablated - f_down)[b, p, j], set to 0 where |.| < 2**threshold_exp; node zeroed at node.pos."""
    ### BEGIN SOLUTION
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"

    def zero(acts: Float[Tensor, "batch pos d_sae"], hook) -> Float[Tensor, "batch pos d_sae"]:
        acts = acts.clone()
        acts[:, node.pos, node.index] = 0.0
        return acts

    with model.saes(saes=list(dictionaries), use_error_term=True):
        _, clean = model.run_with_cache(tokens, names_filter=down_name)
        with model.hooks(fwd_hooks=[(up_name, zero)]):
            _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    change = (ablated[down_name] - clean[down_name]).mean(0)  # [pos, d_sae]
    return torch.where(change.abs() >= 2.0 ** threshold_exp, change, 0.0)
    ### END SOLUTION

# %% [markdown] hint="ablation_edges"
# Two cached runs inside one `with model.saes(saes=list(dictionaries), use_error_term=True):`,
# the second with a hook on `f"{output_hook(upstream)}.hook_sae_acts_post"` that returns a
# copy of the latents with `[:, node.pos, node.index]` set to zero. Read
# `f"{output_hook(downstream)}.hook_sae_acts_post"` from both caches.

# %% [markdown] hint="ablation_edges"
# The threshold is $2^k$, not $2k$: with `threshold_exp=-3` it is 0.125. Compare the
# magnitude, so that latents switched *off* (negative changes) are kept too.

# %% [markdown]
# Progressive tracing: pin one latent, and on each call expand the newest nodes by one step
# downstream (from each node, ablation edges into the next dictionaries of the forward
# order). We pin the layer-0 residual SAE latent with the largest IOI attribution at the
# repeated name, on 16 IOI prompts, with $k = -2$ (changes of at least 0.25).

# %%
edges_by_ablation = checked(ablation_edges)
THRESHOLD_EXP = -2
following = {key: [k2 for k1, k2 in consecutive if k1 == key] for key in bk.dictionaries}


def children(node: Node) -> dict[Node, float]:
    """Downstream latents whose mean activation moves by at least 2**THRESHOLD_EXP when `node` is zeroed."""
    found = {}
    for key in following[node.kind, node.layer]:
        change = edges_by_ablation(model, dictionaries, bk.dictionary(node.kind, node.layer), bk.dictionary(*key),
                                   ioi.tokens, node, THRESHOLD_EXP)
        for pos, index in change.nonzero().tolist():
            found[Node(*key, pos, index)] = change[pos, index].item()
    return found


s2 = 10  # "<bos> when A and B went to the place , S ...": the repeated name
pin = max((n for n in all_nodes if (n.kind, n.layer, n.pos) == ("resid_sae", 0, s2) and not n.is_error), key=lambda n: abs(effect_of(n)))
tracer = Tracer(children, [pin])
print(f"pinned {pin} ({latent_label(bk, 'blocks.0.hook_resid_post', pin.index)})")
for step in (1, 2):
    added = tracer.step()
    print(f"step {step}: {added} nodes added; the graph has {len(tracer.graph.nodes)} nodes, {len(tracer.graph.edges)} edges")
biggest = sorted(tracer.graph.edges.items(), key=lambda item: -abs(item[1]))[:4]
for (u, d), w in biggest:
    print(f"  {u} -> {d}: activation change {w:.3g}")

# %% [markdown]
# Each node of a cognition graph is read the way the project shows it: its top-activating
# contexts, and the tokens its decoder direction promotes and suppresses (chapter 00's
# $W_{dec} W_U$; an attention SAE's direction first goes through $W_O$). The labels come
# from the explanation table with their AUROC and precision: read a weak one as a guess.

# %%
def table_name(node: Node) -> str:
    return f"transcoder.{node.layer}" if node.kind == "transcoder" else bk.dictionary(node.kind, node.layer).cfg.metadata.hook_name


def logit_effects(node: Node) -> Float[Tensor, " d_vocab"]:
    """W_dec[i] @ W_U (through W_O for an attention SAE): the tokens a latent pushes up and down."""
    sae = bk.dictionary(node.kind, node.layer)
    direction = sae.W_dec[node.index]
    if node.kind == "attn_sae":
        direction = direction.view(model.cfg.n_heads, model.cfg.d_head)
        direction = torch.einsum("hd,hdm->m", direction, model.W_O[node.layer])
    return direction @ model.W_U


def describe(graph: Graph) -> None:
    """Fill a graph's short labels and hover texts from the explanation table and the unembedding."""
    vocab = model.tokenizer.convert_ids_to_tokens(list(range(model.cfg.d_vocab)))
    for node in graph.nodes:
        if node.is_error:
            graph.hover[node] = "error node: what the dictionary does not reconstruct"
            continue
        row = bk.explanations.lookup(table_name(node), node.index)
        effects = logit_effects(node)
        up, down = effects.topk(5).indices.tolist(), (-effects).topk(5).indices.tolist()
        graph.labels[node] = f"{row['label']}{'' if row['auroc'] >= 0.8 else '?'} ({row['auroc']:.2f})"  # label (AUROC)
        graph.hover[node] = (f"{latent_label(bk, table_name(node), node.index)}<br>"
                             + "<br>".join(c.replace("[[", "<b>").replace("]]", "</b>") for c in row["top_contexts"][:3])
                             + f"<br>promotes: {' '.join(vocab[i] for i in up)}<br>suppresses: {' '.join(vocab[i] for i in down)}")


describe(tracer.graph)
for node in sorted(tracer.graph.nodes)[:3]:
    print(node, "|", tracer.graph.hover[node].replace("<br>", " | ").replace("<b>", "[").replace("</b>", "]"))

# %% [markdown]
# ## 6. Drawing and exporting graphs
#
# `utils.graphs.graph_figure` draws a graph with nodes at (position, layer and dictionary),
# each node of a cell in its own place. The twelve strongest carry a number, listed under
# the figure as `kind layer.latent@pos` with the explanation label and its AUROC (a `?` marks
# a weak label, below 0.8); hover or click any node for its contexts and logits. Edges are
# blue when positive, red when negative, wider and more opaque when larger; the slider keeps
# only the edges of at least a fraction of the largest, so the strong paths stand out. Nodes
# are coloured by their effect on the metric; a cognition graph has no metric, so its nodes
# are coloured by dictionary and numbered by the weight of their edges. First the cognition
# graph grown above (edge weights are activation changes):

# %%
# NBVAL_IGNORE_OUTPUT
graph_figure(tracer.graph, f"Cognition graph traced from {pin}, two steps (THRESHOLD_EXP = {THRESHOLD_EXP})", words,
             weight_title="activation change")

# %% [markdown]
# Then the gradient circuit of section 2 (edge weights are edge effects on the logit
# difference; square markers are error nodes):

# %%
# NBVAL_IGNORE_OUTPUT
describe(circuit_graph)
graph_figure(circuit_graph, f"IOI circuit: nodes |effect| ≥ {tau_node}, edges |effect| ≥ {tau_edge}", words)

# %% [markdown]
# Both export to Graphviz `.dot` (render with `dot -Tsvg circuit.dot`) and to a
# self-contained `.svg` drawn without Graphviz:

# %%
export_dir = Path(tempfile.mkdtemp())
dot_path, svg_path = export_dot_svg(circuit_graph, export_dir / "ioi_circuit", "IOI circuit")
dot = dot_path.read_text()
print(f"{dot_path.name}: {dot.count(' -> ')} edges, {dot.count('[label=')} nodes; {svg_path.name}: "
      f"{svg_path.read_text().count('<circle')} nodes drawn")
print("\n".join(dot.splitlines()[:4]))

# %% [markdown]
# ## 7. SHIFT: removing a spurious cue from a probe
#
# **Objectives:** train a probe on confounded data; find the latents it depends on; mark
# the gender latents and ablate them; read the SHIFT table.
#
# The organism's biographies read *"{name} is a {profession} . {she/he} works at the"*. We
# take two professions, *nurse* (stereotyped female) and *professor* (stereotyped male), and
# a training set in which gender and profession are fully confounded (every nurse is a woman,
# every professor a man: `world.bios(n, correlation=1.0)`, the "ambiguous" set of Marks et
# al.). A logistic probe for profession reads the residual stream after layer 1, averaged
# over the positions after BOS. On confounded data the name, the pronoun and the profession
# are interchangeable cues, so the probe may use any of them. We test it on a balanced set
# (`correlation=0.0`) and report profession accuracy, the probe's *gender* accuracy (how
# often its output is the profession stereotyped for the bio's gender: 0.5 means it ignores
# gender) and worst-group accuracy (the lowest profession accuracy over the four
# gender × profession groups).

# %%
shift_sae = resid1
train_bios, test_bios = world.bios(256, correlation=1.0, seed=0), world.bios(400, correlation=0.0, seed=1)
oracle_bios = world.bios(256, correlation=0.0, seed=2)


def pooled(bios) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, "batch d_sae"]]:
    """The residual stream after layer 1 and the SAE's latents, each averaged over positions 1..:
    decoding is linear, so the pooled stream is W_dec^T (pooled latents) + b_dec + (pooled error)."""
    _, cache = model.run_with_cache(bios.tokens, names_filter=hook1)
    x = cache[hook1][:, 1:]
    return x.mean(1), shift_sae.encode(x).mean(1)


def train_probe(x: Float[Tensor, "batch d_model"], y: Int[Tensor, " batch"]) -> tuple[Float[Tensor, " d_model"], float]:
    """Logistic regression with an L2 penalty of 0.1, fitted by L-BFGS (deterministic)."""
    w, c = torch.zeros(x.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([w, c], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + c, y.float()) + 0.1 * w.square().sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    return w.detach(), c.item()


def shift_scores(w: Float[Tensor, " d_model"], c: float, x: Float[Tensor, "batch d_model"], bios) -> tuple[float, float, float]:
    """(profession accuracy, gender accuracy, worst-group accuracy) of the probe on ``bios``."""
    predicted = (x @ w + c > 0).long()
    right = predicted == bios.profession
    stereotype = 1 - bios.gender  # nurse (0) is stereotyped female (gender 1)
    groups = [(bios.gender == g) & (bios.profession == p) for g in (0, 1) for p in (0, 1)]
    worst = min(right[group].float().mean().item() for group in groups)
    return right.float().mean().item(), (predicted == stereotype).float().mean().item(), worst


x_train, f_train = pooled(train_bios)
x_test, f_test = pooled(test_bios)
w, c = train_probe(x_train, train_bios.profession)
shift_table = {"original probe": shift_scores(w, c, x_test, test_bios)}
print("original probe on the balanced test set: profession {:.3g}, gender {:.3g}, worst group {:.3g}".format(*shift_table["original probe"]))

# %% [markdown]
# The probe leans on gender: on the balanced set it is wrong for about one bio in ten of the
# worst group, those whose gender goes against their profession's stereotype. Which latents
# does it depend on? Ablating latent $i$ (setting its pooled activation $f_i$ to a baseline
# $f'_i$) moves the pooled stream by $(f'_i - f_i)\,\mathbf{d}_i$ (the error term stays), so
# the probe's logit $z = \mathbf{w} \cdot \mathbf{x} + c$ changes by exactly
# $(f'_i - f_i)(\mathbf{d}_i \cdot \mathbf{w})$: attribution to a linear probe is exact.

# %% [markdown] exercise="probe_latent_effects" title="Attribute a probe's logit to SAE latents" difficulty=2 importance=4 minutes=10
# Return, for every example and latent, the change of the probe's logit
# $z_b = \mathbf{w} \cdot \mathbf{x}_b + c$ when latent $i$ is set to `baseline[i]` (zero when
# None) in the residual stream $\mathbf{x}_b$, the error term kept; `latents` are the
# activations that scale the decoder rows $\mathbf{d}_i$ (`dictionary.W_dec[i]`).

# %%
def probe_latent_effects(
    probe_weight: Float[Tensor, " d_model"],
    dictionary: SAE,
    latents: Float[Tensor, "batch d_sae"],
    baseline: Float[Tensor, " d_sae"] | None = None,
) -> Float[Tensor, "batch d_sae"]:
    """effect[b, i] = (f'_i - latents[b, i]) * (W_dec[i] . w): z with latent i set to f'_i, minus z."""
    ### BEGIN SOLUTION
    target = torch.zeros_like(latents) if baseline is None else baseline.expand_as(latents)
    return (target - latents) * (dictionary.W_dec @ probe_weight)
    ### END SOLUTION

# %% [markdown] hint="probe_latent_effects"
# `dictionary.W_dec @ probe_weight` is `[d_sae]`: how much one unit of each latent moves the
# logit. The decoder bias does not depend on any latent and cancels in the difference.

# %% [markdown]
# We ablate to the latent's mean over the training bios (zero ablation would also shift the
# probe's operating point, which its bias was fitted to). The 12 latents with the largest
# mean |effect| on the training set, with their explanation labels, and how well each one's
# pooled activation separates *gender* and *profession* on the balanced set (AUROC; 0.5 is no
# separation, 0 or 1 perfect):

# %%
probe_effects = checked(probe_latent_effects)
train_mean = f_train.mean(0)
effects = probe_effects(w, shift_sae, f_train, train_mean).abs().mean(0)
candidates = effects.topk(12).indices.tolist()
separation = auroc(f_test, torch.stack([test_bios.gender.bool(), test_bios.profession.bool()], dim=1))  # [2, d_sae]
for i in candidates:
    print(f"  latent {i:>3}: mean |effect| {effects[i].item():.3g}; {latent_label(bk, hook1, i)}; "
          f"gender AUROC {separation[0, i].item():.3g}, profession AUROC {separation[1, i].item():.3g}")

# %% [markdown]
# The explanation labels (from the whole corpus) say little here: most are weak. What
# matters for SHIFT is what each latent does *on bios*.

# %% [markdown] exercise="gender_latents" title="Mark the gender latents among the candidates" difficulty=2 importance=4 minutes=15
# Marks et al. read each candidate's dashboard and judge by hand whether it is about gender.
# Here the check grades your judgement against the planted truth: every bio's gender. Return,
# in increasing order, the candidates that carry *gender* rather than profession: those
# whose activation separates gender better than profession on the balanced bios `bios`
# ($|\mathrm{AUROC}_{gender} - 0.5| > |\mathrm{AUROC}_{profession} - 0.5|$), and separate
# gender at all ($|\mathrm{AUROC}_{gender} - 0.5| \ge 0.2$). `latents` holds each bio's pooled
# latents; `bios.gender` and `bios.profession` are 0/1 per bio. Use
# `utils.toy.report.auroc(scores, labels)` (scores `[n, latent]`, Bool labels `[n, label]`,
# returns `[label, latent]`).

# %%
def gender_latents(latents: Float[Tensor, "batch d_sae"], bios, candidates: Sequence[int]) -> list[int]:
    """Candidates i, sorted, with |AUROC_gender(i) - 0.5| >= 0.2 and > |AUROC_profession(i) - 0.5|."""
    ### BEGIN SOLUTION
    from utils.metrics import auroc

    scores = auroc(latents[:, list(candidates)], torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1))
    gender, profession = (scores - 0.5).abs()  # [n_candidates] each
    return sorted(i for i, g, p in zip(candidates, gender.tolist(), profession.tolist()) if g >= 0.2 and g > p)
    ### END SOLUTION

# %% [markdown] hint="gender_latents"
# Stack the labels as `torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1)`,
# call `auroc` on the candidates' columns, and compare the distances from 0.5: a latent that
# fires for *men* has a gender AUROC near 0, and is as much a gender latent as one near 1.

# %% [markdown]
# Mean-ablate the marked latents and score the same probe; retrain it on the ablated
# training features (still confounded); and train an oracle probe on balanced data, without
# any ablation. This is the table of Marks et al.:

# %%
marked = checked(gender_latents)(f_test, test_bios, candidates)
print("gender latents marked:", marked)


def ablated(x: Float[Tensor, "batch d_model"], f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_model"]:
    """The pooled stream with the marked latents set to their training mean."""
    return x + (train_mean[marked] - f[:, marked]) @ shift_sae.W_dec[marked]


shift_table["gender latents ablated"] = shift_scores(w, c, ablated(x_test, f_test), test_bios)
w_re, c_re = train_probe(ablated(x_train, f_train), train_bios.profession)
shift_table["ablated + retrained"] = shift_scores(w_re, c_re, ablated(x_test, f_test), test_bios)
x_oracle, _ = pooled(oracle_bios)
w_or, c_or = train_probe(x_oracle, oracle_bios.profession)
shift_table["oracle (balanced training)"] = shift_scores(w_or, c_or, x_test, test_bios)
print(f"{'':>28} {'profession':>10} {'gender':>8} {'worst group':>12}")
for name, (profession, gender, worst) in shift_table.items():
    print(f"{name:>28} {profession:>10.3g} {gender:>8.3g} {worst:>12.3g}")

# %% [markdown]
# Read the rows against the oracle. Ablating the gender latents brings the probe's gender
# accuracy to the oracle's level and lifts the worst group; retraining on the ablated
# features, still on confounded data, does not find the cue again. What remains between
# these rows and the oracle is gender or profession information the marked latents do not
# hold (other latents, or the error term, which SHIFT leaves alone).
#
# The same recipe fails at a single position of the same stream: a probe on the *last*
# position's residual stream (the same hook, not averaged over positions) leans on gender
# far harder, but there this SAE has only a couple of active
# latents, each mixing gender and profession (both AUROCs far from 0.5), so no latent can be
# removed without the other cue:

# %%
x_train_last = model.run_with_cache(train_bios.tokens, names_filter=hook1)[1][hook1][:, -1]  # [batch, d_model]
x_test_last = model.run_with_cache(test_bios.tokens, names_filter=hook1)[1][hook1][:, -1]
w_last, c_last = train_probe(x_train_last, train_bios.profession)
last_scores = shift_scores(w_last, c_last, x_test_last, test_bios)
live = (shift_sae.encode(x_train_last) > 0).any(0).nonzero()[:, 0].tolist()
last_separation = auroc(shift_sae.encode(x_test_last), torch.stack([test_bios.gender.bool(), test_bios.profession.bool()], dim=1))
print("last-position probe: profession {:.3g}, gender {:.3g}, worst group {:.3g}".format(*last_scores))
print(f"latents active at the last position of any training bio: {len(live)}; "
      + "; ".join(f"{i}: gender AUROC {last_separation[0, i].item():.3g}, profession AUROC {last_separation[1, i].item():.3g}" for i in live))

# %% [markdown]
# ## 8. Scale-up: GPT-2 small
#
# Node and edge effects for IOI on GPT-2 small with the `gpt2-small-res-jb` residual SAEs
# at layers 6 to 9 (`blocks.{L}.hook_resid_pre`), drawn with the same view. This needs the
# Hugging Face hub (Colab); offline it prints one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from utils.backends.gpt2 import HubUnavailable, load_gpt2

try:  # four residual SAEs: about 600 MB, plus GPT-2 small
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[6, 7, 8, 9], kinds=("resid_sae",))
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    g_model = gpt2.model
    g_saes = [gpt2.dictionary("resid_sae", layer) for layer in (6, 7, 8, 9)]
    prompts = [("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
               ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
               ("When Dan and Sid went to the shops, Sid gave an apple to", " Dan", " Sid"),
               ("After Martin and Amy went to the park, Amy gave a drink to", " Martin", " Amy")]
    g_tokens = g_model.to_tokens([p for p, _, _ in prompts])
    g_answer = torch.tensor([g_model.to_single_token(a) for _, a, _ in prompts], device=g_tokens.device)
    g_distractor = torch.tensor([g_model.to_single_token(d) for _, _, d in prompts], device=g_tokens.device)

    def g_metric(logits: Tensor) -> Tensor:
        return logit_diff(logits, g_answer, g_distractor)

    g_scores = {h: a.mean(0) for h, a in node_attribution(g_model, g_saes, g_tokens, g_metric).items()}
    g_nodes = rank_nodes(g_scores, g_saes, k=24)
    g_effects = {n: g_scores[gpt2.dictionary(n.kind, n.layer).cfg.metadata.hook_name][n.pos, -1 if n.is_error else n.index].item()
                 for n in g_nodes}
    g_edge_effects: dict[tuple[Node, Node], float] = {}
    for up, down in zip(g_saes, g_saes[1:]):
        up_key, down_key = dictionary_key(up), dictionary_key(down)
        down_nodes = [n for n in g_nodes if (n.kind, n.layer) == down_key]
        up_nodes = [n for n in g_nodes if (n.kind, n.layer) == up_key]
        if down_nodes and up_nodes:
            g_edges = edges_fn(g_model, g_saes, up, down, g_tokens, g_metric, down_nodes)
            for t, target in enumerate(down_nodes):
                for source in up_nodes:
                    g_edge_effects[source, target] = g_edges[t, source.pos, up.cfg.d_sae if source.is_error else source.index].item()
    g_graph = Graph.from_edges(g_effects, g_edge_effects)
    print(f"GPT-2 IOI: {len(g_graph.nodes)} nodes, {len(g_edge_effects)} edges between consecutive residual SAEs")
    graph_figure(g_graph, "GPT-2 small, IOI: residual SAEs 6-9", g_model.to_str_tokens(g_tokens[0])).show()

# %% [markdown]
# ## Summary
#
# - Node effects come from one forward and one backward pass over every dictionary; error
#   nodes are nodes like any other and take a large share of the IOI effect.
# - Edge effects are vector-Jacobian products: one backward pass per downstream node gives
#   its edges from every upstream node at every position. Holding every other dictionary
#   fixed makes edges join consecutive dictionaries, the residual skip path included, and the
#   estimate ranks edges as edge ablation does.
# - A cognition graph by ablation needs no metric and no gradients, costs a forward pass per
#   node, and measures total rather than direct effects; progressive tracing grows it only
#   where you look.
# - Joint ablation validates a circuit as a whole: a circuit chosen by attribution does far
#   more than random circuits of its size, and faithfulness and completeness trace how much
#   of the behaviour each threshold keeps.
# - Against the planted mechanism, both circuits beat chance several times over but hold
#   few planted latents: much of IOI's sits at the comma, which no label marks.
# - SHIFT: a probe trained on confounded bios leans on gender; mean-ablating the gender
#   latents it depends on moves it towards the oracle, but only where the SAE keeps gender and
#   profession in separate latents.
#
# **Open questions.** Edge effects here are first-order: which edges does a large ablation
# step (the error nodes of chapter 02) get wrong, and would integrated gradients along the
# edge repair them? Should a circuit's graph include the embeddings (chapter 05 adds them),
# given that IOI's names reach the comma without passing any node? SHIFT ablates only the
# latents we marked: how much gender is left in the error term, and can a probe find it?

# %% [markdown]
# # Chapter 02 — Error nodes: what the dictionary misses, and whether a circuit needs it
#
# A dictionary never reconstructs its activation exactly. What it misses, the *error term*
# $e = y - \hat y$, is usually treated as noise and left out of circuit pictures. This
# chapter treats it as a node like any other: one error node per dictionary and position,
# next to the latents. We compute it by hand, ablate it, attribute the metric to it with
# gradients, and then ask of a whole circuit how much of the behaviour it recovers
# (*faithfulness*) and how much it leaves behind (*completeness*), with and without error
# nodes. On the model organism we can check where circuits sit against the planted
# ground truth, and find out what one of our dictionaries fails to capture.
#
# **Learning objectives**
# - Compute the error term of a residual SAE, an attention SAE and a transcoder from a cache,
#   and match SAELens's own.
# - Measure what splicing without the error term costs each planted task.
# - Ablate any set of nodes (latents and error nodes, each at a position) of any dictionaries,
#   and see an error node carry a behaviour.
# - Attribute the metric to every error node from one forward and one backward pass, though
#   SAELens computes the error under `no_grad`.
# - Compute faithfulness and completeness of a circuit (Marks et al. 2024) and plot them
#   against circuit size, with error nodes allowed and excluded.
# - Grade the positions of a circuit against the generator's labels.
#
# *If you read one thing:* section 4, on faithfulness and completeness. Chapter 03 builds its
# circuits on those two functions.

# %% tags=["module"]
from collections.abc import Collection

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import NodeBaseline, node_masks
from utils.course.checking import earlier
from utils.nodes import Node, output_hook
from utils.toy.generator import TaskBatch

logit_diff = earlier("ch01_attribution", "logit_diff")  # chapter 01's metric: yours once its check passed, else the reference

# %%
from collections import Counter

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from utils.backends import load_backend
from utils.course.checking import checked
from utils.metrics import agreement
from utils.circuits import label_positions, mean_baseline, node_attribution, rank_nodes
from utils.metrics import auroc
from utils.toy.training import EVAL_SEEDS
from utils.views import FIGURE_STYLE, latent_name, log_ticks, scatter_with_diagonal

_ = torch.set_grad_enabled(False)  # off by default; the gradient exercise turns it on where it needs it

# %% [markdown]
# ## 1. The error term by hand
#
# The organism has three kinds of dictionary at each of its two layers. A *residual SAE* and
# an *attention SAE* read an activation and reconstruct the same activation; the attention
# SAE reads `hook_z`, the heads' outputs before $W_O$, flattened to `n_heads * d_head`
# inputs. A *transcoder* reads the MLP's input (`ln2.hook_normalized`) and predicts its
# *output* (`hook_mlp_out`): it stands in for the MLP. SAELens splices every kind at the hook
# it writes, so that is where its hook points (`hook_sae_acts_post`, `hook_sae_error`, ...)
# live. Just run:

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
dictionaries = bk.dictionaries  # (kind, layer) -> dictionary, in the order of a forward pass
for (kind, layer), dictionary in dictionaries.items():
    print(f"{kind}{layer}: reads {dictionary.cfg.metadata.hook_name:<30} writes {output_hook(dictionary)}")

# %% [markdown] exercise="error_term" title="Compute a dictionary's error term from a cache" difficulty=2 importance=5 minutes=15
# With $x$ the activation a dictionary reads and $y$ the activation it stands in for
# ($y = x$ for an SAE), the error term is
#
# $$e = y - \hat y, \qquad \hat y = \mathrm{decode}(\mathrm{encode}(x)).$$
#
# Run the *unspliced* model once with a cache and return $e$ at every position, in the
# shape of $y$: `[batch, pos, d_model]` for residual SAEs and transcoders,
# `[batch, pos, n_heads, d_head]` for attention SAEs.

# %%
def error_term(model: HookedSAETransformer, dictionary: SAE, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos ..."]:
    """e = y - decode(encode(x)): x read at cfg.metadata.hook_name, y at cfg.metadata.hook_name_out (or x)."""
    ### BEGIN SOLUTION
    reads = dictionary.cfg.metadata.hook_name
    writes = dictionary.cfg.metadata.hook_name_out or reads
    _, cache = model.run_with_cache(tokens, names_filter=[reads, writes])
    return cache[writes] - dictionary.decode(dictionary.encode(cache[reads]))
    ### END SOLUTION

# %% [markdown] hint="error_term"
# `model.run_with_cache(tokens, names_filter=[reads, writes])` caches both activations.
# `dictionary.encode` and `dictionary.decode` handle the `hook_z` reshape themselves: give
# them the cached `[batch, pos, n_heads, d_head]` tensor and you get one back.

# %% [markdown] hint="error_term"
# A transcoder's $\hat y$ predicts `blocks.{L}.hook_mlp_out` from
# `blocks.{L}.ln2.hook_normalized`: subtract it from the MLP's output, not from its input.

# %% [markdown]
# Ours against SAELens's `hook_sae_error`, and what the error term buys: with it, the
# spliced model's logits are the clean ones up to float rounding; without it, the
# reconstruction alone flows on.

# %%
error_of = checked(error_term)  # yours once its check passes, else the reference
ioi = world.task_batch("ioi", n=16, seed=0)
clean_logits = model(ioi.tokens)
exact = {}
for (kind, layer), dictionary in dictionaries.items():
    error_name = f"{output_hook(dictionary)}.hook_sae_error"
    _, cache = model.run_with_cache_with_saes(ioi.tokens, saes=[dictionary], use_error_term=True, names_filter=error_name)
    ours = error_of(model, dictionary, ioi.tokens)
    with model.saes(saes=[dictionary], use_error_term=True):
        with_error = model(ioi.tokens)
    without_error = model.run_with_saes(ioi.tokens, saes=[dictionary])
    exact[kind, layer] = (with_error - clean_logits).abs().max().item()
    print(f"{kind}{layer}: error {list(ours.shape)}, equals SAELens's (to 1e-4): "
          f"{bool(torch.allclose(ours, cache[error_name], atol=1e-4))}; max |Δlogit| with the error term "
          f"below 1e-4: {exact[kind, layer] < 1e-4}, without it: {(without_error - clean_logits).abs().max().item():.3g}")

# %%
# NBVAL_IGNORE_OUTPUT
print("max |Δlogit| with the error term (float rounding, varies by machine):",
      {f"{kind}{layer}": f"{value:.1e}" for (kind, layer), value in exact.items()})

# %% [markdown] exercise="spliced_task_scores" title="Measure what splicing without the error term costs a task" difficulty=1 importance=4 minutes=10
# Splice every dictionary in `dictionaries` at once (with or without the error term) and
# return the task's accuracy (the share of prompts whose top prediction at the last
# position is an acceptable answer: `batch.correct[b, token]`, which allows several answers
# for greater-than) and its mean logit difference (chapter 01's `logit_diff`), as floats.

# %%
def spliced_task_scores(
    model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch, use_error_term: bool = False
) -> tuple[float, float]:
    """(mean_b [argmax logits[b, -1] is correct for b], mean_b logit_diff_b), dictionaries spliced."""
    ### BEGIN SOLUTION
    with model.saes(saes=dictionaries, use_error_term=use_error_term):
        logits = model(batch.tokens)
    top = logits[:, -1].argmax(-1)  # [batch]
    accuracy = batch.correct.gather(-1, top[:, None]).float().mean().item()
    return accuracy, logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()
    ### END SOLUTION

# %% [markdown] hint="spliced_task_scores"
# `with model.saes(saes=dictionaries, use_error_term=use_error_term):` splices them all for
# the block. `batch.correct` is `[batch, d_vocab]`; `gather` it at the argmax of the last
# position's logits.

# %% [markdown]
# Every dictionary spliced alone without its error term, on every planted task (32 prompts
# each): the accuracy, then the logit difference. With the error term every entry would be
# the clean model's.

# %%
task_scores = checked(spliced_task_scores)
tasks = {task: world.task_batch(task, n=32, seed=0) for task in world.tasks}
names = [f"{kind}{layer}" for kind, layer in dictionaries]
clean_scores = {task: task_scores(model, [], batch) for task, batch in tasks.items()}
spliced_scores = {(task, name): task_scores(model, [dictionary], batch)
                  for task, batch in tasks.items() for name, dictionary in zip(names, dictionaries.values())}
print(f"{'task':>13} {'clean':>6}" + "".join(f"{name:>12}" for name in names))
for task in tasks:
    print(f"{task:>13} {clean_scores[task][0]:>6.3g}" + "".join(f"{spliced_scores[task, n][0]:>12.3g}" for n in names))
print("mean logit difference")
for task in tasks:
    print(f"{task:>13} {clean_scores[task][1]:>6.3g}" + "".join(f"{spliced_scores[task, n][1]:>12.3g}" for n in names))

# %%
# NBVAL_IGNORE_OUTPUT
DISTINCT = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")  # one colour per dictionary


def task_cost_figure() -> go.Figure:
    """Grouped bars: per task, the clean model and each dictionary spliced without its error term."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "mean logit difference"])
    for i, name in enumerate(["clean", *names]):
        for col in (1, 2):
            values = [(clean_scores[t] if name == "clean" else spliced_scores[t, name])[col - 1] for t in tasks]
            figure.add_bar(x=list(tasks), y=values, name=name, legendgroup=name, showlegend=col == 1,
                           marker_color="grey" if name == "clean" else DISTINCT[(i - 1) % len(DISTINCT)],
                           hovertemplate=f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>", row=1, col=col)
    figure.update_layout(title="Each dictionary spliced without its error term, per planted task", barmode="group",
                         legend_title_text="dictionary spliced", height=520, **FIGURE_STYLE)
    figure.update_yaxes(title_text="accuracy (share of prompts)", row=1, col=1)
    figure.update_yaxes(title_text="logit difference (nats)", row=1, col=2)
    return figure.update_xaxes(title_text="task")


task_cost_figure()

# %% [markdown]
# One entry stands out: induction with the layer-0 attention SAE. The organism's README
# reports an accuracy of 0.58 on its 200 held-out prompts; the same prompts here:

# %%
held_out = world.task_batch("induction", n=200, seed=EVAL_SEEDS)
attn0 = bk.dictionary("attn_sae", 0)
accuracy, mean_diff = task_scores(model, [attn0], held_out)
clean_accuracy, clean_diff = task_scores(model, [], held_out)
print(f"induction, 200 held-out prompts: clean accuracy {clean_accuracy:.3g} (logit difference {clean_diff:.3g}); "
      f"attn_sae0 without its error term {accuracy:.3g} ({mean_diff:.3g})")

# %% [markdown]
# ## 2. Ablating error nodes and latents
#
# Spliced *with* its error term, a dictionary changes nothing, and every node can be
# ablated on its own: a latent $f_i$ at position $p$ (its contribution $f_i d_i$ leaves
# $\hat y$), or the error node at $p$ (the whole vector $e(p)$). SAELens recomputes the error
# from the clean latents, so ablating a latent removes exactly that latent's share. Error
# and latents together make up $y$, so an error node's effect is directly comparable with a
# latent's.
#
# As in chapter 01, "ablate" means set to a baseline: zero, or the node's mean. Our task
# prompts share one template, so we take means *position by position* over a reference
# batch of the same task: the mean at position 3 of a prompt is the mean of position 3 over
# other prompts (`utils.circuits.mean_baseline`). A `NodeBaseline` holds, per dictionary
# (keyed by the hook it reads), `latents[hook]` (`[pos, d_sae]`) and `errors[hook]`
# (`[pos, *d_out]`).
#
# A set of nodes is a collection of `Node(kind, layer, pos, index)` with `index` a latent id
# or `"error"` (`utils.nodes`); the same node set applies to every prompt of a batch.
# `utils.circuits.node_masks(nodes, dictionaries, n_pos)` turns it into one Bool mask per
# dictionary, keyed by the hook it reads, of shape `[n_pos, d_sae + 1]`: the latents, then
# the error node in the last column.

# %% [markdown] exercise="ablate_nodes" title="Ablate any set of nodes" difficulty=3 importance=5 minutes=30
# Splice every dictionary in `dictionaries` with its error term, set the ablated nodes to
# their baseline (zero when `baseline` is None) at their positions in every prompt, and
# return the logit difference per prompt. The ablated nodes are `nodes`, or with
# `complement=True` every node of the dictionaries *not* in `nodes` (section 4's
# faithfulness needs that). Hook each dictionary's `hook_sae_acts_post` (latents) and
# `hook_sae_error` (the error term, `[batch, pos, *d_out]`), found under the hook it writes.

# %%
def ablate_nodes(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    nodes: Collection[Node],
    baseline: NodeBaseline | None = None,
    complement: bool = False,
) -> Float[Tensor, " batch"]:
    """m_b with every node of A set to its baseline: f_i(p) := f'_i(p) for a latent, e(p) := e'(p) for an
    error node (f', e' from `baseline`, 0 when None); A = nodes, or every other node when `complement`.
    Every dictionary is spliced with its error term, so A = {} gives the model's own m_b."""
    ### BEGIN SOLUTION
    masks = node_masks(nodes, dictionaries, tokens.shape[1])  # hook -> [pos, d_sae + 1], error last
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        ablated = ~masks[hook] if complement else masks[hook]
        latent_value = 0.0 if baseline is None else baseline.latents[hook]
        error_value = 0.0 if baseline is None else baseline.errors[hook]

        def set_latents(acts: Float[Tensor, "batch pos d_sae"], hook, where=ablated[:, :-1], value=latent_value):
            return torch.where(where, value, acts)  # [pos, d_sae] broadcasts over the batch

        def set_error(error: Float[Tensor, "batch pos ..."], hook, where=ablated[:, -1], value=error_value):
            where = where.view(-1, *[1] * (error.ndim - 2))  # [pos, 1, ...]: the whole vector at p
            return torch.where(where, value, error)

        writes = output_hook(sae)
        fwd_hooks += [(f"{writes}.hook_sae_acts_post", set_latents), (f"{writes}.hook_sae_error", set_error)]
    with model.saes(saes=dictionaries, use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    return logit_diff(logits, answer_ids, distractor_ids)
    ### END SOLUTION

# %% [markdown] hint="ablate_nodes"
# For each dictionary, `masks[sae.cfg.metadata.hook_name]` (inverted with `~` for the
# complement) splits into `mask[:, :-1]` (latents, `[pos, d_sae]`) and `mask[:, -1]` (the
# error node, `[pos]`). `torch.where(mask, value, acts)` broadcasts a `[pos, d_sae]` mask
# and value over the batch. The hooks live at `f"{output_hook(sae)}.hook_sae_acts_post"` and
# `f"{output_hook(sae)}.hook_sae_error"`: a transcoder's under `blocks.{L}.hook_mlp_out`.

# %% [markdown] hint="ablate_nodes"
# The error of an attention SAE is `[batch, pos, n_heads, d_head]`: reshape the `[pos]` mask
# to `[pos, 1, 1]` before `torch.where`. Define each hook inside the loop with the loop's
# values bound as default arguments (`def hook(x, hook, where=where)`), or every hook ends up
# with the last dictionary's mask.

# %% [markdown]
# The induction task: *"w1 … w6 w1 … w5"* → *w6*. For each layer-0 dictionary, the 11
# latents most active at the last position (mean over prompts), then the error node there
# (last column): one ablation per node, to zero and to the mean.

# %%
ablate = checked(ablate_nodes)
induction = world.task_batch("induction", n=8, seed=0)
induction_means = mean_baseline(model, list(dictionaries.values()), world.task_batch("induction", n=64, seed=1).tokens)
ind_args = (induction.tokens, induction.answer_ids, induction.distractor_ids)
ind_clean = ablate(model, [], *ind_args, [])  # nothing spliced, nothing ablated
last = induction.tokens.shape[1] - 1


def node_effects(dictionary: SAE, nodes: list[Node], baseline: NodeBaseline | None) -> Float[Tensor, "batch n_nodes"]:
    """Change of the logit difference when each node alone is ablated (dictionary spliced alone)."""
    return torch.stack([ablate(model, [dictionary], *ind_args, [node], baseline) - ind_clean for node in nodes], dim=-1)


def top_latents(dictionary: SAE, tokens: Int[Tensor, "batch pos"], pos: int, k: int) -> list[int]:
    """The k latents with the largest mean activation at ``pos``, in increasing id order."""
    name = f"{output_hook(dictionary)}.hook_sae_acts_post"
    acts = model.run_with_cache_with_saes(tokens, saes=[dictionary], names_filter=name)[1][name]
    return acts[:, pos].mean(0).topk(k).indices.sort().values.tolist()


layer0 = {kind: bk.dictionary(kind, 0) for kind in ("resid_sae", "attn_sae", "transcoder")}
columns, effects = {}, {}
for kind, dictionary in layer0.items():
    columns[kind] = [Node(kind, 0, last, i) for i in top_latents(dictionary, induction.tokens, last, 11)]
    columns[kind].append(Node(kind, 0, last, "error"))
    effects[kind] = {"zero": node_effects(dictionary, columns[kind], None),
                     "mean": node_effects(dictionary, columns[kind], induction_means)}
    for baseline in ("zero", "mean"):
        mean_effect = effects[kind][baseline].mean(0)
        best = mean_effect[:-1].abs().argmax().item()
        print(f"{kind}0, {baseline} ablation at the last position: error node {mean_effect[-1].item():.3g}; "
              f"strongest latent {columns[kind][best].index} {mean_effect[best].item():.3g} "
              f"(clean logit difference {ind_clean.mean().item():.3g})")


# %%
# NBVAL_IGNORE_OUTPUT
def node_label(node: Node) -> str:
    """The error node, or a latent's id and explanation-table label (what the hover shows)."""
    table = {"resid_sae": f"blocks.{node.layer}.hook_resid_post", "attn_sae": f"blocks.{node.layer}.attn.hook_z",
             "transcoder": f"transcoder.{node.layer}"}[node.kind]
    return "error node" if node.is_error else latent_name(bk, table, node.index)


def ablation_heatmaps() -> go.Figure:
    """Prompts x (latents, then the error node) for each layer-0 dictionary, zero and mean."""
    figure = make_subplots(rows=2, cols=3, horizontal_spacing=0.06, vertical_spacing=0.2,
                           subplot_titles=[f"{kind}0, {b} ablation" for b in ("zero", "mean") for kind in layer0])
    scale = max(e[b].abs().max().item() for e in effects.values() for b in ("zero", "mean"))
    for row, baseline in enumerate(("zero", "mean"), start=1):
        for col, kind in enumerate(layer0, start=1):
            z = effects[kind][baseline].numpy()
            labels = [node_label(node) for node in columns[kind]]
            figure.add_heatmap(z=z, x=[str(node.index) for node in columns[kind]], y=[f"prompt {b}" for b in range(len(z))],
                               zmin=-scale, zmax=scale, colorscale="RdBu", showscale=row == 1 and col == 1,
                               colorbar=dict(title="Δ logit diff"), customdata=[labels] * len(z),
                               hovertemplate="%{y}, %{customdata}<br>Δ logit difference %{z:.3g}<extra></extra>",
                               row=row, col=col)
    figure.update_xaxes(title_text="latent (error node last)", type="category")
    figure.update_yaxes(autorange="reversed")
    return figure.update_layout(title="Ablating one node at the last induction position: latents, then the error node",
                                height=650, **FIGURE_STYLE)


ablation_heatmaps()

# %% [markdown]
# Read the two baselines together. Zero-ablating a latent removes what it says on *every*
# prompt, including what all induction prompts share ("a word repeats here"); mean-ablating
# it removes only what is specific to this prompt. The layer-0 attention SAE's error node
# is large under both, and under mean ablation it outweighs every latent of its
# dictionary: what it carries differs from prompt to prompt. Is that one position or all of
# them? The error node at every position at once, against the last position alone:

# %%
for kind, dictionary in layer0.items():
    every = [Node(kind, 0, p, "error") for p in range(induction.tokens.shape[1])]
    for name, baseline in (("zero", None), ("mean", induction_means)):
        all_positions = ablate(model, [dictionary], *ind_args, every, baseline) - ind_clean
        at_last = ablate(model, [dictionary], *ind_args, every[-1:], baseline) - ind_clean
        print(f"{kind}0 error node, {name} ablation: every position {all_positions.mean().item():.3g}, "
              f"last position only {at_last.mean().item():.3g}")

# %% [markdown]
# Zero-ablating that error node at every position is exactly splicing the SAE without its
# error term: the induction failure of section 1. Almost all of it happens at the last
# position. What is in $e$ there that the latents miss? Layer-0 attention can only move
# tokens around, so first: where does each layer-0 head look from the last position?

# %%
span = induction.tokens.shape[1] // 2  # tokens: BOS, w1 .. w6, w1 .. w5; the answer w6 first sits at `span`
_, cache = model.run_with_cache(induction.tokens, names_filter=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z"])
to_answer = cache["blocks.0.attn.hook_pattern"][:, :, last, span].mean(0)  # [n_heads]
copier = to_answer.argmax().item()
print("attention from the last position to the answer's first occurrence, per layer-0 head:",
      ", ".join(f"{a:.3g}" for a in to_answer.tolist()), f"-> head 0.{copier}")

# %% [markdown]
# One head copies the answer word itself from its first occurrence. Its output at the last
# position is roughly its value vector of that word, so we can *decode* which word it
# carries: the vocabulary word whose value vector (the head's $W_V$ applied to the word's
# embedding at that position, after the layer norm) is closest in cosine to the output.
# We decode the head's full output, the SAE's reconstruction of it, and the error term, on
# 256 fresh prompts:

# %%
many = world.task_batch("induction", n=256, seed=2)
z = model.run_with_cache(many.tokens, names_filter="blocks.0.attn.hook_z")[1]["blocks.0.attn.hook_z"]
z_hat = attn0.decode(attn0.encode(z))
embedded = model.blocks[0].ln1(model.W_E + model.W_pos[span])  # every word at the answer's position
values = embedded @ model.W_V[0, copier] + model.b_V[0, copier]  # [d_vocab, d_head]
for name, part in (("full output", z), ("SAE reconstruction", z_hat), ("error term", z - z_hat)):
    similarity = torch.nn.functional.cosine_similarity(part[:, last, copier, None], values[None], dim=-1)
    hit = (similarity.argmax(-1) == many.answer_ids).float().mean().item()
    print(f"{name:>18}: decodes the answer word in {hit:.3g} of prompts")

# %% [markdown]
# Yet the SAE does see *that* a word is being repeated. Its latent that best separates the
# planted `induction` label (words of a span's second copy), scored on a corpus: AUROC, and
# precision (the share of its activation mass that falls on labelled tokens; a latent firing
# equally everywhere would score the label's share of tokens):

# %%
corpus = world.corpus(n_seqs=128, seq_len=48, seed=0)
acts_name = "blocks.0.attn.hook_z.hook_sae_acts_post"
corpus_acts = model.run_with_cache_with_saes(corpus.tokens, saes=[attn0], names_filter=acts_name)[1][acts_name][:, 1:].flatten(0, 1)
label = corpus.labels["induction"][:, 1:].flatten()
scores = auroc(corpus_acts, label[:, None])[0]  # [d_sae]
repeat_latent = scores.argmax().item()
precision = (corpus_acts[:, repeat_latent] * label).sum() / corpus_acts[:, repeat_latent].sum()
fires = (corpus_acts[:, repeat_latent] > 0).float().mean()
print(f"attn_sae0 latent {repeat_latent}: `induction` AUROC {scores[repeat_latent].item():.3g}, precision {precision.item():.3g}; "
      f"it fires on {fires.item():.3g} of tokens, the label covers {label.float().mean().item():.3g}")

# %% [markdown]
# So the layer-0 attention SAE represents *that* induction is happening (one latent, AUROC
# above 0.9, three quarters of its mass on the label), but not *which* word the copying head
# moved: from the reconstruction only about six copied words in ten can be read back, while
# the error term still carries more than nine in ten. A circuit that drops this error node
# drops the answer. (Why the SAE loses the word we have not tested. The span words are 80
# random adjectives, nouns and verbs; one guess is that 256 latents at an L0 of 20, which must
# also cover names, places and years, cannot keep that many identities apart.)

# %% [markdown]
# ## 3. Attribution to error nodes
#
# One ablation per node and position is exact but slow. Attribution patching (chapter 01)
# estimates every node's effect from one forward and one backward pass. For the error node
# at position $p$, with $e'$ its baseline:
#
# $$\Delta m \approx \nabla_{e(p)} m \cdot (e'(p) - e(p)),$$
#
# a dot product over the error's dims (`d_model`, or `n_heads × d_head`). SAELens computes
# the error term under `torch.no_grad()`, so the spliced graph has no edge into it: to get
# $\nabla_e m$ the hook on `hook_sae_error` must *return a leaf that requires grad* (a
# detached copy of the error with `requires_grad_(True)`). With one dictionary spliced the
# gradient is then exactly the model's own, since every later layer is the real one.

# %% [markdown] exercise="error_attribution" title="Attribute the metric to every error node at once" difficulty=3 importance=5 minutes=20
# Splice `dictionary` with SAELens (`use_error_term=True`), make its error term a leaf that
# requires grad, run one forward and one backward pass of the logit difference summed over
# prompts, and return $\nabla_{e(p)} m_b \cdot (e'(p) - e(p))$ for every prompt and
# position, with $e'$ = `baseline` (`[pos, *d_out]`, or zero when None).

# %%
def error_attribution(
    model: HookedSAETransformer,
    dictionary: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: Float[Tensor, "pos ..."] | None = None,
) -> Float[Tensor, "batch pos"]:
    """attr[b, p] = sum_d dm_b/de_d(p) (e'_d(p) - e_d(p)), one forward and one backward pass."""
    ### BEGIN SOLUTION
    kept = {}

    def leaf(error: Float[Tensor, "batch pos ..."], hook) -> Float[Tensor, "batch pos ..."]:
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    with model.saes(saes=[dictionary], use_error_term=True), torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"{output_hook(dictionary)}.hook_sae_error", leaf)])
        logit_diff(logits, answer_ids, distractor_ids).sum().backward()
    error = kept["error"]
    target = torch.zeros_like(error) if baseline is None else baseline.expand_as(error)
    return (error.grad * (target - error.detach())).flatten(2).sum(-1)
    ### END SOLUTION

# %% [markdown] hint="error_attribution"
# ```python
# def leaf(error, hook):
#     kept["error"] = error.detach().requires_grad_(True)
#     return kept["error"]
# ```
# on `f"{output_hook(dictionary)}.hook_sae_error"` (a transcoder's sits under
# `blocks.{L}.hook_mlp_out`), inside `with model.saes(...), torch.enable_grad():`.

# %% [markdown] hint="error_attribution"
# After `backward()`, `kept["error"].grad` has the error's shape; multiply by
# `baseline - error` and sum every dim after `pos` (`.flatten(2).sum(-1)`).

# %% [markdown]
# `utils.circuits.node_attribution` does the same for every latent *and* every error node of
# every dictionary at once, with `splice_for_gradients` from chapter 01 (now also for
# transcoders). Its error column must agree with ours, dictionary by dictionary, though it
# splices all six together: its splice leaves every gradient the unspliced model's.

# %%
ioi_args = (ioi.tokens, ioi.answer_ids, ioi.distractor_ids)
together = node_attribution(model, list(dictionaries.values()), ioi.tokens,
                            lambda logits: logit_diff(logits, ioi.answer_ids, ioi.distractor_ids))
attribute_error = checked(error_attribution)
alone = {key: attribute_error(model, dictionary, *ioi_args) for key, dictionary in dictionaries.items()}
gap = max(((together[d.cfg.metadata.hook_name][..., -1] - alone[key]).abs().max() / alone[key].abs().max()).item()
          for key, d in dictionaries.items())
print(f"error attribution, one dictionary spliced by SAELens vs all six by splice_for_gradients: "
      f"largest difference below 1e-3 of the scale: {gap < 1e-3}")

# %% [markdown]
# Now against the truth: zero-ablate each error node alone (every dictionary, every
# position; one forward pass each) and compare with its attribution, per (prompt, node).

# %%
ioi_clean = ablate(model, [], *ioi_args, [])
n_pos = ioi.tokens.shape[1]
truth = {key: torch.stack([ablate(model, [d], *ioi_args, [Node(*key, p, "error")]) - ioi_clean
                           for p in range(n_pos)], dim=-1) for key, d in dictionaries.items()}  # [batch, pos] each
estimate = torch.cat([alone[key].flatten() for key in dictionaries])
true_effect = torch.cat([truth[key].flatten() for key in dictionaries])
moved = true_effect.abs() > 1e-3 * true_effect.abs().max()  # error nodes whose ablation changes anything
fit = agreement(estimate[moved], true_effect[moved])
print(f"{int(moved.sum())} (prompt, error node) pairs with an effect: Spearman {fit['spearman']:.3g}, "
      f"sign agreement {fit['sign_agreement']:.3g}, Pearson {fit['pearson']:.3g}")
for key in dictionaries:
    fit = agreement(alone[key].flatten(), truth[key].flatten())
    print(f"  {key[0]}{key[1]}: largest true effect {truth[key].abs().max().item():.3g}, Pearson {fit['pearson']:.3g}")

# %%
# NBVAL_IGNORE_OUTPUT
words = [["<bos>", *prompt.split()] for prompt in ioi.prompts]
hover = [f"{key[0]}{key[1]} error, prompt {b}, position {p} ({words[b][p]!r})"
         for key in dictionaries for b in range(len(ioi.prompts)) for p in range(n_pos)]
scatter_with_diagonal(true_effect, estimate, hover, "Error nodes: attribution vs true zero-ablation (IOI, every position)",
                      "true effect of zero-ablating the error node (Δ logit diff)", "attribution ∇e m · (0 − e) (Δ logit diff)",
                      points="(prompt, error node)")

# %% [markdown]
# Good agreement on IOI. The same comparison on the induction prompts of section 2, where one
# error node carries a large share of the answer:

# %%
ind_estimate = {key: attribute_error(model, d, *ind_args) for key, d in dictionaries.items()}
ind_truth = {key: torch.stack([ablate(model, [d], *ind_args, [Node(*key, p, "error")]) - ind_clean
                               for p in range(induction.tokens.shape[1])], dim=-1) for key, d in dictionaries.items()}
for keys, name in ((list(dictionaries), "all dictionaries"), ([("attn_sae", 0)], "attn_sae0 alone")):
    estimate_k, truth_k = torch.cat([ind_estimate[k].flatten() for k in keys]), torch.cat([ind_truth[k].flatten() for k in keys])
    moved_k = truth_k.abs() > 1e-3 * truth_k.abs().max()
    fit = agreement(estimate_k[moved_k], truth_k[moved_k])
    print(f"induction, {name}, {int(moved_k.sum())} pairs with an effect: Spearman {fit['spearman']:.3g}, "
          f"sign agreement {fit['sign_agreement']:.3g}, Pearson {fit['pearson']:.3g}; "
          f"largest true effect {truth_k.abs().max().item():.3g}")
print(f"attn_sae0 error node at the last position, mean over prompts: attribution "
      f"{ind_estimate['attn_sae', 0][:, last].mean().item():.3g}, true effect {ind_truth['attn_sae', 0][:, last].mean().item():.3g}")

# %% [markdown]
# Worse, and worst exactly where it matters: the estimate for the layer-0 attention SAE's
# error node at the last position, the node that carries the copied word, is far from its
# true effect. Attribution is a first-order estimate at the clean point, and removing that
# node is a large step away from it (chapter 01's integrated gradients average the gradient
# along the way). Attribution is good for ranking many small nodes; check the few large ones
# by ablating them.

# %% [markdown]
# ## 4. Faithfulness and completeness
#
# A *circuit* is a set $C$ of nodes. Marks et al. (2024) judge it by the metric $m$ (averaged
# over prompts) of the model in which every node *outside* $C$ is mean-ablated, $m(C)$:
#
# $$F(C) = \frac{m(C) - m(\emptyset)}{m(M) - m(\emptyset)},$$
#
# where $M$ is the whole model (nothing ablated) and $m(\emptyset)$ the model with every node
# ablated. $F = 1$: the circuit alone does what the model does; $F = 0$: no better than
# nothing. *Completeness* asks the converse: ablate only the nodes of $C$,
#
# $$\bar F(C) = F(M \setminus C) = \frac{m(M \setminus C) - m(\emptyset)}{m(M) - m(\emptyset)},$$
#
# near 0 when $C$ holds everything the model uses, near 1 when the rest of the model does
# the job without it. Nodes inside $C$ are not frozen: they take whatever values the
# ablated forward pass gives them. All six dictionaries are spliced, so the nodes are every
# latent and every error node of every dictionary at every position.

# %% [markdown] exercise="faithfulness" title="Compute a circuit's faithfulness" difficulty=2 importance=5 minutes=15
# With your `ablate_nodes`, return $F(C)$ for the node set `circuit`, the metric averaged
# over prompts before the ratio is taken, every node outside the circuit set to
# `baseline` (zero when None).

# %%
def faithfulness(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    circuit: Collection[Node],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: NodeBaseline | None = None,
) -> float:
    """F(C) = (m(C) - m(empty)) / (m(M) - m(empty)), m(X): mean logit diff with every node outside X ablated."""
    ### BEGIN SOLUTION
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean().item()

    empty, whole = m([], complement=True), m([], complement=False)
    return (m(circuit, complement=True) - empty) / (whole - empty)
    ### END SOLUTION

# %% [markdown] hint="faithfulness"
# Three calls to `ablate_nodes`: $m(C)$ ablates the complement of `circuit`; $m(\emptyset)$ the
# complement of the empty set (everything); $m(M)$ the empty set itself (nothing). Average
# each over prompts, then take one ratio.

# %% [markdown] exercise="completeness" title="Compute a circuit's completeness" difficulty=1 importance=4 minutes=10
# Return $\bar F(C) = F(M \setminus C)$: the model with only the nodes of `circuit` ablated,
# normalised like faithfulness.

# %%
def completeness(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    circuit: Collection[Node],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: NodeBaseline | None = None,
) -> float:
    """F(M \\ C) = (m(M \\ C) - m(empty)) / (m(M) - m(empty)), m(M \\ C): only the nodes of C ablated."""
    ### BEGIN SOLUTION
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean().item()

    empty, whole = m([], complement=True), m([], complement=False)
    return (m(circuit, complement=False) - empty) / (whole - empty)
    ### END SOLUTION

# %% [markdown] hint="completeness"
# The same three numbers as faithfulness, except that the circuit's own term ablates
# `circuit` itself (`complement=False`).

# %% [markdown]
# Which nodes go into a circuit of size $n$? The $n$ with the largest attribution, averaged
# over prompts, of mean-ablating each node alone (`node_attribution` with the mean baseline:
# latents and error nodes of all six dictionaries, one forward and one backward pass), with
# error nodes either allowed or left out of the ranking. We grow the circuit and measure
# both numbers, on IOI and on induction (16 prompts each, means from 64 others).

# %%
faithful_fn, complete_fn = checked(faithfulness), checked(completeness)
all_dictionaries = list(dictionaries.values())
sizes = [1, 5, 10, 20, 50, 100, 200, 500, 1000, 1500, 2000, 5000]
curves, rankings, batches = {}, {}, {}
for task in ("ioi", "induction"):
    batch = world.task_batch(task, n=16, seed=0)
    means = mean_baseline(model, all_dictionaries, world.task_batch(task, n=64, seed=1).tokens)
    attribution = node_attribution(model, all_dictionaries, batch.tokens,
                                   lambda logits, b=batch: logit_diff(logits, b.answer_ids, b.distractor_ids), means)
    scores = {hook: a.mean(0) for hook, a in attribution.items()}  # [pos, d_sae + 1] per dictionary
    args = (batch.tokens, batch.answer_ids, batch.distractor_ids, means)
    batches[task] = (batch, means)
    for errors in (True, False):
        ranking = rank_nodes(scores, all_dictionaries, errors=errors, k=max(sizes))
        rankings[task, errors] = ranking
        curves[task, errors] = {
            "faithfulness": [faithful_fn(model, all_dictionaries, ranking[:n], *args) for n in sizes],
            "completeness": [complete_fn(model, all_dictionaries, ranking[:n], *args) for n in sizes],
        }


def sig(x: float) -> str:
    """3 significant figures; float noise (below 1e-6) prints as 0, the same on every machine."""
    return f"{x:.3g}" if abs(x) > 1e-6 else "0"


for task in ("ioi", "induction"):
    n_errors = sum(node.is_error for node in rankings[task, True][:100])
    print(f"{task}: {n_errors} error nodes among the top 100 when they are allowed")
    for errors in (True, False):
        row = ", ".join(f"{n}: {sig(f)} / {sig(c)}" for n, f, c in zip(sizes, *curves[task, errors].values())
                        if n in (10, 50, 100, 1000, 5000))
        print(f"  error nodes {'allowed ' if errors else 'excluded'}: faithfulness / completeness at {row}")

# %%
# NBVAL_IGNORE_OUTPUT
def curves_figure() -> go.Figure:
    """Faithfulness and completeness against circuit size, error nodes allowed (solid) or not (dotted)."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["IOI", "induction"])
    for col, task in enumerate(("ioi", "induction"), start=1):
        for errors, dash in ((True, "solid"), (False, "dot")):
            for measure, colour in (("faithfulness", "royalblue"), ("completeness", "firebrick")):
                name = f"{measure}, error nodes {'allowed' if errors else 'excluded'}"
                figure.add_scatter(x=sizes, y=curves[task, errors][measure], mode="lines+markers", name=name,
                                   legendgroup=name, showlegend=col == 1, line=dict(color=colour, dash=dash),
                                   hovertemplate=f"{name}<br>%{{x}} nodes: %{{y:.3g}}<extra></extra>", row=1, col=col)
    figure.update_xaxes(**log_ticks(sizes), title_text="circuit size (nodes, ranked by attribution)")
    figure.update_yaxes(title_text="F (share of the metric recovered)", row=1, col=1)
    return figure.update_layout(title="Faithfulness and completeness against circuit size, with and without error nodes",
                                height=500, **FIGURE_STYLE)


curves_figure()

# %% [markdown]
# Two things to read off. With error nodes allowed they crowd the top of the ranking, and
# faithfulness reaches 0.9 with one to two thousand nodes of about twenty thousand. With error
# nodes excluded every error node is always mean-ablated, and no number of latents makes up
# for them: the gap between the solid and dotted blue curves is what *only* error nodes
# explain. Completeness says the same from the other side (compare the two rows at 100
# nodes): ablating the top 100 latents leaves most of the behaviour standing, while ablating
# the top 100 nodes, a dozen of them error nodes, removes nearly all of it. A circuit drawn
# from latents alone would leave the model working without it, and could not work alone.

# %% [markdown]
# ## 5. Ground truth: where do the circuits sit?
#
# The planted tasks tell us which tokens matter: in IOI the names and the final *to*
# (labels `is_name` and `ioi_end`), in induction the repeated copy (label `induction`: the
# second copy's words from the second on). Take the smallest circuit on our size grid with
# $F \ge 0.9$ and compare the positions its nodes sit at with the labelled ones.

# %% [markdown] exercise="position_precision_recall" title="Grade a circuit's positions against the labels" difficulty=1 importance=3 minutes=10
# With $P$ the set of positions the circuit's nodes sit at (a negative position counts from
# the end, as in Python) and $T$ the positions where `truth` is True, return
# precision $|P \cap T| / |P|$ and recall $|P \cap T| / |T|$ as floats (0 when a set is empty).

# %%
def position_precision_recall(nodes: Collection[Node], truth: Bool[Tensor, " pos"]) -> tuple[float, float]:
    """(|P & T| / |P|, |P & T| / |T|), P = {node.pos mod n_pos}, T = {p : truth[p]}."""
    ### BEGIN SOLUTION
    n_pos = truth.shape[0]
    found = {node.pos % n_pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return (hits / len(found) if found else 0.0), (hits / len(true) if true else 0.0)
    ### END SOLUTION

# %% [markdown] hint="position_precision_recall"
# Build two Python sets of ints and intersect them; `truth.nonzero()[:, 0].tolist()` lists
# the labelled positions, `node.pos % n_pos` turns -1 into the last position.

# %%
grade = checked(position_precision_recall)
ground_truth = {"ioi": ("is_name", "ioi_end"), "induction": ("induction",)}
circuits = {}
for task, label_names in ground_truth.items():
    batch, _ = batches[task]
    truth = label_positions(torch.stack([batch.labels[name] for name in label_names]).any(0))
    faithful = [n for n, f in zip(sizes, curves[task, True]["faithfulness"]) if f >= 0.9]
    size = faithful[0]
    circuits[task] = rankings[task, True][:size]
    precision, recall = grade(circuits[task], truth)
    on_label = sum(bool(truth[node.pos]) for node in circuits[task]) / size
    per_position = dict(sorted(Counter(node.pos for node in circuits[task]).items()))
    print(f"{task}: {size} nodes for F >= 0.9; nodes per position {per_position}; labelled positions "
          f"{truth.nonzero()[:, 0].tolist()}: precision {precision:.3g}, recall {recall:.3g}; "
          f"{on_label:.3g} of the nodes sit on a labelled position")

# %%
# NBVAL_IGNORE_OUTPUT
def positions_figure() -> go.Figure:
    """Nodes of each F >= 0.9 circuit per position, labelled positions in green."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["IOI", "induction"])
    for col, (task, label_names) in enumerate(ground_truth.items(), start=1):
        batch, _ = batches[task]
        truth = label_positions(torch.stack([batch.labels[name] for name in label_names]).any(0))
        counts = torch.bincount(torch.tensor([node.pos for node in circuits[task]]), minlength=len(truth))
        words = ["<bos>", *batch.prompts[0].split()]
        figure.add_bar(x=[f"{p} {w}" for p, w in enumerate(words)], y=counts.tolist(), row=1, col=col, showlegend=False,
                       marker_color=["seagreen" if t else "lightgrey" for t in truth.tolist()],
                       hovertemplate="position %{x}: %{y} nodes<extra></extra>")
    figure.update_xaxes(title_text="position and token of the first prompt (green: labelled)", type="category")
    figure.update_yaxes(title_text="nodes of the F ≥ 0.9 circuit", row=1, col=1)
    return figure.update_layout(title="Where the smallest circuit with faithfulness ≥ 0.9 sits", height=450, **FIGURE_STYLE)


positions_figure()

# %% [markdown]
# The IOI circuit does not sit where the labels say, and the reason is instructive. No node
# sits on the two names themselves: layer-0 attention reads them straight from the token
# embeddings, which are not nodes of this graph (chapter 05 adds them), and collects them at
# the comma, where layer-1 attention at the final *to* reads them back, next to the repeated
# name. The attention weights say so:

# %%
ioi_batch, _ = batches["ioi"]
pattern = model.run_with_cache(ioi_batch.tokens, names_filter="blocks.0.attn.hook_pattern")[1]["blocks.0.attn.hook_pattern"]
pattern1 = model.run_with_cache(ioi_batch.tokens, names_filter="blocks.1.attn.hook_pattern")[1]["blocks.1.attn.hook_pattern"]
comma, s2, end = 9, 10, ioi_batch.tokens.shape[1] - 1  # "<bos> when A and B went to the place , S gave a object to"
to_names = pattern[:, :, comma][..., [2, 4]].sum(-1).mean(0)  # [n_heads]
from_end = pattern1[:, :, end][..., [comma, s2]].mean(0)  # [n_heads, 2]
print("layer-0 attention from ',' to the two names, per head:", ", ".join(f"{a:.3g}" for a in to_names.tolist()))
print("layer-1 attention from the last position to ',' and to the repeated name, per head:",
      "; ".join(f"{a:.3g}, {b:.3g}" for a, b in from_end.tolist()))

# %% [markdown]
# The induction circuit mostly sits on the second copy. Its misses are the copy's first word
# (position 7), which the label leaves out because the copy does not make that word
# predictable, and a handful of nodes on the answer's first occurrence (position 6), which
# the copying head of section 2 reads from the embeddings. Why would a prediction at the
# last position need the copy's earlier words at all? Layer-1 attention there reads them:

# %%
ind_batch, _ = batches["induction"]
pattern1 = model.run_with_cache(ind_batch.tokens, names_filter="blocks.1.attn.hook_pattern")[1]["blocks.1.attn.hook_pattern"]
copy = pattern1[:, :, -1, span + 1: -1].sum(-1).mean(0)  # [n_heads]: the copy's words before the last one
print("layer-1 attention from the last position to the copy's earlier words (positions 7-10), per head:",
      ", ".join(f"{a:.3g}" for a in copy.tolist()))

# %% [markdown]
# Position labels grade *where a mechanism's information is*; a graph without embedding
# nodes finds it where it is first written into a dictionary, and precision and recall of
# positions say how far apart the two are.

# %% [markdown]
# ## 6. Scale-up: GPT-2 small
#
# The same error-node ablation on GPT-2 small, with the `gpt2-small-hook-z-kk` attention SAE
# at layer 5, on IOI prompts: the error node at the last position and at every position, and
# the attribution to each error node. This needs the Hugging Face hub (Colab); offline it
# prints one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from utils.backends.gpt2 import HubUnavailable, load_gpt2

try:  # one attention SAE: a download of about 150 MB, plus GPT-2 small
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[5], kinds=("attn_sae",))
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    g_model, g_sae = gpt2.model, gpt2.attn_saes["blocks.5.attn.hook_z"]
    templates = [("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
                 ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
                 ("When Dan and Sid went to the shops, Sid gave an apple to", " Dan", " Sid"),
                 ("After Martin and Amy went to the park, Amy gave a drink to", " Martin", " Amy")]
    g_tokens = g_model.to_tokens([t for t, _, _ in templates])
    g_answer = torch.tensor([g_model.to_single_token(a) for _, a, _ in templates], device=g_tokens.device)
    g_distractor = torch.tensor([g_model.to_single_token(d) for _, _, d in templates], device=g_tokens.device)
    g_args = (g_tokens, g_answer, g_distractor)
    g_clean = ablate(g_model, [], *g_args, [])
    g_last = g_tokens.shape[1] - 1
    every = [Node("attn_sae", 5, p, "error") for p in range(g_tokens.shape[1])]
    for name, nodes in (("at the last position", every[-1:]), ("at every position", every)):
        effect = ablate(g_model, [g_sae], *g_args, nodes) - g_clean
        print(f"zero-ablating the layer-5 attention SAE's error node {name}: "
              f"logit difference {g_clean.mean().item():.3g} -> {(g_clean + effect).mean().item():.3g}")
    g_attr = attribute_error(g_model, g_sae, *g_args).mean(0)
    words = g_model.to_str_tokens(g_tokens[0])
    print("error-node attribution by position (prompt 0's tokens):",
          ", ".join(f"{w!r} {a:.3g}" for w, a in zip(words, g_attr.tolist())))

# %% [markdown]
# ## Summary
#
# - A dictionary's error term $e = y - \hat y$ is a node like a latent: one per dictionary and
#   position. For a transcoder, $\hat y$ predicts the MLP's *output* from its *input*, and
#   SAELens keeps its hook points under the output hook.
# - Splicing without the error term can break a task outright (induction with the layer-0
#   attention SAE); with it, nothing changes and every node can be ablated alone.
# - An error node can carry a behaviour its latents miss: the layer-0 attention SAE knows
#   that a word repeats but cannot say which word the copying head moved; its error can.
# - Gradients reach the error only if a hook makes it a leaf that requires grad, because
#   SAELens computes it under `no_grad`; one forward and backward pass then attributes the
#   metric to every error node.
# - Faithfulness and completeness judge a whole circuit. Without error nodes, circuits on the
#   organism stay far from faithful however many latents they hold.
# - Circuits sit where information is written into dictionaries, which is not always where
#   the planted labels are: layer-0 attention reads tokens straight from the embeddings.
#
# **Open questions.** Would a wider attention SAE, or one trained with more weight on
# induction text, shrink that error node, or would it just move the problem? Which is the
# right baseline for faithfulness on a task with no template: means per position, the
# corrupted prompt, or zero? How should a circuit be scored when one error node carries most
# of it: is "error node at position 11" an explanation, or the honest admission that there is
# none yet? Chapter 03 turns node effects into edges and draws the circuit.

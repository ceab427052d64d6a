# %% [markdown]
# # Chapter 01 — Latent attribution: ablation, attribution patching, latent-to-latent gradients
#
# Chapter 00 read latents one at a time. This chapter asks the question every circuit
# analysis starts from: **which latents does a behaviour depend on, and how much?** There
# are two answers. *Ablation* changes a latent and reruns the model: exact, but one forward
# pass per latent. *Attribution* takes one forward and one backward pass and estimates every
# latent's effect at once with a first-order Taylor expansion. We compute both on the model
# organism, compare them against each other, repair attribution where it fails with
# integrated gradients, find where a fact travels by activation patching, and then follow
# gradients *between* latents along that path. Because the tasks are planted, every answer
# is checked against what is there.
#
# **Learning objectives**
# - Write a task metric (logit difference) and use it for every effect in the chapter.
# - Zero- and mean-ablate latents with the SAE's error term, so only the latent changes.
# - Compute attribution patching, $\nabla_f m \cdot (f_{patch} - f_{clean})$, for every latent
#   of every spliced SAE from one forward and one backward pass, and get its gradients right
#   through SAELens's error term.
# - Use integrated gradients where the linear approximation breaks, and see where it breaks.
# - Find where information flows with activation patching before following gradients.
# - Compute latent-to-latent, token-to-latent and latent-to-logit gradients over *active*
#   latents only, as sparse tensors, and see where gradient × input is blind.
# - Path-patch an attention-SAE latent into one input of a later head to find the latents an
#   induction head reads.
#
# *If you read one thing:* section 3, on attribution patching and the error term's gradient.
# Chapters 02, 03 and 05 all build on it.

# %% tags=["module"]
from typing import Literal

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.attribution import splice_for_gradients
from utils.progress import progress

# %%
from utils.metrics import spearman
from utils.backends import load_backend
from utils.course.checking import checked
from utils.patching import patch_each_position
from utils.views import bar, edge_graph, heatmap, latent_name, scatter_with_diagonal, top_latents_bar

_ = torch.set_grad_enabled(False)  # off by default; the gradient exercises turn it on where they need it

# %% [markdown]
# ## 1. A metric for a planted task
#
# We study indirect-object identification (IOI): in *"when mary and john went to the store ,
# john gave a book to"* the model should say *mary* (the indirect object) and not *john*
# (the subject, repeated). The generator gives us each prompt's answer and distractor, and a
# corrupted twin of the same length in which the subject is not repeated.

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
ioi = world.task_batch("ioi", n=8, seed=0)
print(ioi.prompts[0], "->", ioi.answers[0], "| distractor:", ioi.distractors[0])
print(ioi.corrupted[0])

# %% [markdown] exercise="logit_diff" title="Write the logit-difference metric" difficulty=1 importance=5 minutes=5
# Every effect in this chapter is a change in one number per prompt: the logit of the
# answer minus the logit of the distractor, at the last position (where the answer is
# predicted). It is positive when the model prefers the right name. Return one value per
# prompt; do not average over the batch (later exercises need each prompt's value).

# %%
def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], answer_ids: Int[Tensor, " batch"], distractor_ids: Int[Tensor, " batch"]
) -> Float[Tensor, " batch"]:
    """m_b = logits[b, -1, answer_b] - logits[b, -1, distractor_b]."""
    ### BEGIN SOLUTION
    final = logits[:, -1]  # [batch, d_vocab]
    answer = final.gather(-1, answer_ids[:, None])[:, 0]
    distractor = final.gather(-1, distractor_ids[:, None])[:, 0]
    return answer - distractor
    ### END SOLUTION

# %% [markdown] hint="logit_diff"
# `logits[:, -1]` is `[batch, d_vocab]`; `Tensor.gather(-1, ids[:, None])` picks one entry
# per row (or index with `final[torch.arange(batch), ids]`).

# %%
metric = checked(logit_diff)  # yours once its check passes, else the reference
clean_metric = metric(model(ioi.tokens), ioi.answer_ids, ioi.distractor_ids)
corrupted_metric = metric(model(ioi.corrupted_tokens), ioi.answer_ids, ioi.distractor_ids)
print(f"mean logit difference: clean {clean_metric.mean().item():.3g}, corrupted {corrupted_metric.mean().item():.3g}")

# %% [markdown]
# ## 2. Ablating latents
#
# Splice a residual SAE **with its error term**: the output is
# $\hat x(f) + (x - \hat x(f_{clean}))$, so the model's logits are exactly the clean ones and
# a change we make to one latent is the *only* change. Without the error term every number
# below would also carry the SAE's reconstruction error.
#
# Two baselines for "removing" a latent: zero (its natural off value, for a ReLU latent) and
# its mean activation over a corpus (which keeps the average information the latent carries
# and removes only what is specific to this prompt).

# %% [markdown] exercise="ablation_effects" title="Zero- and mean-ablate latents one at a time" difficulty=2 importance=5 minutes=20
# For each latent in `latents`, set its activation at position `pos` of every prompt to the
# baseline (zero, or `baseline[latent]` when a baseline is given), with the SAE spliced with
# its error term, and return the change in `logit_diff` from the clean run: one column per
# latent. Show a progress bar over latents (`utils.progress.progress(iterable, desc)` wraps
# tqdm), and leave no SAE attached when you return.

# %%
def ablation_effects(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    latents: Int[Tensor, " n_latents"],
    pos: int = -1,
    baseline: Float[Tensor, " d_sae"] | None = None,
) -> Float[Tensor, "batch n_latents"]:
    """effect[b, i] = m_b(f_{latents[i]} at pos := baseline) - m_b(clean), error term kept."""
    ### BEGIN SOLUTION
    acts_hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=True):  # spliced inside the block only
        clean = logit_diff(model(tokens), answer_ids, distractor_ids)
        effects = []
        for latent in progress(latents.tolist(), desc="ablating"):
            value = 0.0 if baseline is None else baseline[latent].item()

            def ablate(acts: Float[Tensor, "batch pos d_sae"], hook) -> Float[Tensor, "batch pos d_sae"]:
                acts[:, pos, latent] = value
                return acts

            logits = model.run_with_hooks(tokens, fwd_hooks=[(acts_hook, ablate)])
            effects.append(logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(effects, dim=-1)
    ### END SOLUTION

# %% [markdown] hint="ablation_effects"
# `with model.saes(saes=[sae], use_error_term=True):` splices the SAE for the block only
# (hooks are global state; the block removes them even if your code raises). The latents pass through the hook point `f"{hook_name}.hook_sae_acts_post"`; a hook
# `def ablate(acts, hook)` can set `acts[:, pos, latent] = value` and return `acts`. SAELens
# recomputes the error term from the clean latents, so changing them changes only $\hat x$.

# %% [markdown] hint="ablation_effects"
# One `model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)])` per latent runs every prompt
# at once. Subtract the clean metric, computed with the SAE spliced the same way.

# %% [markdown]
# Which latents to sweep? Only those active at the last position of some prompt: ablating an
# inactive ReLU latent to zero changes nothing. We take the residual SAE with the most such
# latents (the other may have almost none at that position), and for mean ablation we need
# each latent's mean over a corpus.

# %%
def last_position_latents(hook: str) -> Float[Tensor, "batch pos d_sae"]:
    name = f"{hook}.hook_sae_acts_post"
    return model.run_with_cache_with_saes(ioi.tokens, saes=[bk.saes[hook]], names_filter=name)[1][name]


n_active = {hook: int((last_position_latents(hook)[:, -1] > 0).any(0).sum()) for hook in bk.saes}
print("latents active at the last position of some prompt:", n_active)
hook = max(n_active, key=n_active.get)
sae, acts_name = bk.saes[hook], f"{hook}.hook_sae_acts_post"
clean_acts = last_position_latents(hook)  # [batch, pos, d_sae]
active = (clean_acts[:, -1] > 0).any(0).nonzero()[:, 0]
corpus = world.corpus(n_seqs=64, seq_len=32, seed=0)
_, corpus_cache = model.run_with_cache_with_saes(corpus.tokens, saes=[sae], names_filter=acts_name)
mean_acts = corpus_cache[acts_name][:, 1:].mean((0, 1))  # [d_sae], BOS excluded
zero_effects = checked(ablation_effects)(model, sae, ioi.tokens, ioi.answer_ids, ioi.distractor_ids, active)
mean_effects = checked(ablation_effects)(model, sae, ioi.tokens, ioi.answer_ids, ioi.distractor_ids, active, baseline=mean_acts)
print(f"sweeping {hook}: {len(active)} latents")
for name, effects in [("zero", zero_effects), ("mean", mean_effects)]:
    top = effects.mean(0).abs().topk(3).indices
    print(f"{name} ablation, largest mean effects:",
          ", ".join(f"latent {active[i].item()}: {effects[:, i].mean().item():.3g}" for i in top))

# %% [markdown]
# Most of the swept latents barely matter; the figure shows the fifteen with the largest mean
# effect (bars) and each prompt's effect (dots). Hover for a latent's label.

# %%
# NBVAL_IGNORE_OUTPUT
top_latents_bar(zero_effects, [latent_name(bk, hook, i) for i in active.tolist()], 15,
                f"Zero-ablating one latent of {hook} at the last position",
                "change in logit difference (nats)")

# %% [markdown]
# ## 3. Attribution patching
#
# Ablation costs one forward pass per latent, and there are `d_sae` latents at every position
# of every SAE. Attribution patching (Nanda 2023; Syed et al. 2023) replaces each rerun by
# a first-order Taylor expansion around the clean run:
#
# $$m(f_{patch}) - m(f_{clean}) \approx \frac{\partial m}{\partial f}\Big|_{clean} \cdot (f_{patch} - f_{clean}),$$
#
# one term per latent. One forward and one backward pass give $\partial m / \partial f$ for every
# latent of every SAE at every position at once; $f_{patch}$ is zero (zero ablation), the
# mean, or the latents of the corrupted prompt.
#
# **The error term's gradient.** SAELens computes the error term under `torch.no_grad()`.
# The forward value is right, but in a backward pass the SAE's output then depends on its
# input only through the reconstruction: an earlier layer receives
# $J_{dec} J_{enc}$ where the real model has the identity, and the error node receives no
# gradient at all. (Within SAELens, a hook on `hook_sae_error` returning a leaf that requires
# grad fixes the second problem but not the first.) `utils.attribution.splice_for_gradients`
# splices each SAE with one hook of its own that returns
# $\hat x(f) + e + (x - x_{\text{detached}})$, where the latents $f$ and the error
# $e = x - \hat x(f)$ are leaves that require grad: the value is $x$ exactly, the latents and
# the error receive their gradients, and the input receives the identity, as in the real
# model. Read its ten lines. Below, the gradient that reaches the layer-0 SAE's latents with
# SAELens's splicing and with this one:

# %%
def layer0_grads(repair: bool) -> Float[Tensor, "batch pos d_sae"]:
    """Gradient of the metric w.r.t. layer-0 latents with both residual SAEs spliced."""
    saes = list(bk.saes.values())
    with torch.enable_grad():
        if repair:
            with splice_for_gradients(model, saes) as nodes:
                metric(model(ioi.tokens), ioi.answer_ids, ioi.distractor_ids).sum().backward()
            return nodes["blocks.0.hook_resid_post.latents"].grad
        kept = {}

        def keep(acts, hook):
            acts.retain_grad()
            kept["acts"] = acts
        with model.saes(saes=saes, use_error_term=True):
            logits = model.run_with_hooks(ioi.tokens, fwd_hooks=[("blocks.0.hook_resid_post.hook_sae_acts_post", keep)])
            metric(logits, ioi.answer_ids, ioi.distractor_ids).sum().backward()
        return kept["acts"].grad


repaired, naive = layer0_grads(True), layer0_grads(False)
print(f"relative difference of layer-0 latent gradients, SAELens default vs repaired: "
      f"{((naive - repaired).norm() / repaired.norm()).item():.3g}")

# %% [markdown] exercise="attribution_patching" title="Attribute the metric to every latent at once" difficulty=3 importance=5 minutes=25
# Splice every SAE in `saes` with `splice_for_gradients`, run the clean `tokens` forward and
# backward once (gradients are disabled in this notebook: turn them on for your pass), and
# return, for each SAE's hook name, the attribution
# $\partial m/\partial f \cdot (f_{patch} - f_{clean})$ of every latent at every position, where
# `patched[hook]` holds $f_{patch}$. Backpropagate the *sum* of the metric over prompts:
# prompts do not interact, so each prompt's latents receive the gradient of its own metric.

# %%
def attribution_patching(
    model: HookedSAETransformer,
    saes: list[SAE],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    patched: dict[str, Float[Tensor, "batch pos d_sae"]],
) -> dict[str, Float[Tensor, "batch pos d_sae"]]:
    """attr[hook][b, p, i] = dm_b/df_i(p) * (patched[hook][b, p, i] - f_i(p)), one fwd + one bwd."""
    ### BEGIN SOLUTION
    with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    attributions = {}
    for sae in saes:
        hook = sae.cfg.metadata.hook_name
        latents = nodes[f"{hook}.latents"]
        attributions[hook] = latents.grad * (patched[hook] - latents.detach())
    return attributions
    ### END SOLUTION

# %% [markdown] hint="attribution_patching"
# ```python
# with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
#     ...  # forward, metric, .sum().backward()
# ```
# then `nodes[f"{hook}.latents"]` is the clean latent tensor and `.grad` its gradient.

# %% [markdown] hint="attribution_patching"
# The sign: the estimate is of $m(patch) - m(clean)$, so multiply by `patched - clean`.

# %% [markdown]
# Zero ablation at the last position is the patch of section 2, so the two can be compared
# latent by latent. We patch the last position only (elsewhere the patch equals the clean
# latents, so their attribution is zero).

# %%
patched_zero = clean_acts.clone()
patched_zero[:, -1] = 0.0
attr = checked(attribution_patching)(model, [sae], ioi.tokens, ioi.answer_ids, ioi.distractor_ids,
                                      {hook: patched_zero})
attr_active = attr[hook][:, -1, active]  # [batch, n_active]
r = torch.corrcoef(torch.stack([attr_active.flatten(), zero_effects.flatten()]))[0, 1]
print(f"attribution vs zero ablation over {attr_active.numel()} (prompt, latent) pairs: Pearson r = {r.item():.3g}")

# %% [markdown]
# ## 4. Where the linear approximation fails
#
# Plot attribution (y) against the true ablation effect (x): on the line $y = x$ the Taylor
# expansion is exact. It is good for small effects and worse for large ones, and it fails
# most for *saturated* latents: a large activation whose effect runs through a nonlinearity
# that is flat at the clean point (a LayerNorm, or a softmax already sure of its answer), so
# the local gradient is small while removing the latent changes a lot.

# %%
# NBVAL_IGNORE_OUTPUT
labels = [f"prompt {b}, {latent_name(bk, hook, i)}" for b in range(attr_active.shape[0]) for i in active.tolist()]
scatter_with_diagonal(zero_effects.flatten(), attr_active.flatten(), labels, "Attribution patching vs zero ablation",
                      "true effect of zero-ablating the latent (nats of logit difference)",
                      "attribution patching estimate (nats)")

# %% [markdown] exercise="integrated_gradients" title="Close the gap with integrated gradients" difficulty=3 importance=4 minutes=20
# Integrated gradients replace the gradient at the clean point by its average along the
# straight line from clean to patched latents,
#
# $$\mathrm{IG}_i = (p_i - c_i)\,\frac{1}{S}\sum_{k=0}^{S-1} \frac{\partial m}{\partial f_i}\Big|_{f = c + \alpha_k (p - c)},
# \qquad \alpha_k = \frac{k + 1/2}{S},$$
#
# (midpoints of `steps` = $S$ equal intervals). Every latent of the SAE moves together along
# the line, with the error term held at its clean value. As $S$ grows, the sum over latents
# tends to $m(p) - m(c)$ exactly (completeness), which attribution patching ($S = 1$ at
# $\alpha = 0$) does not promise. One forward and backward pass per step.

# %%
def integrated_gradients(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    patched: Float[Tensor, "batch pos d_sae"],
    steps: int = 10,
) -> Float[Tensor, "batch pos d_sae"]:
    """IG[b, p, i] = (patched - clean)[b, p, i] * mean_k dm_b/df_i(p) at clean + alpha_k (patched - clean)."""
    ### BEGIN SOLUTION
    acts_hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=True):
        _, cache = model.run_with_cache(tokens, names_filter=acts_hook)
        clean = cache[acts_hook]
        total_grad = torch.zeros_like(clean)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(acts_hook, lambda acts, hook: point)])
                logit_diff(logits, answer_ids, distractor_ids).sum().backward()
            total_grad += point.grad
    return (patched - clean) * total_grad / steps
    ### END SOLUTION

# %% [markdown] hint="integrated_gradients"
# Splice the SAE with its error term, read the clean latents once, then for each step build
# `point = (clean + alpha * (patched - clean)).requires_grad_(True)` and run the model with a
# hook on `hook_sae_acts_post` that returns `point`. The error term is recomputed from the
# SAE's unchanged input, so it stays at its clean value.

# %% [markdown] hint="integrated_gradients"
# Average the gradients over the steps, then multiply by `patched - clean` once.

# %% [markdown]
# With 8 steps, on the same patch:

# %%
ig = checked(integrated_gradients)(model, sae, ioi.tokens, ioi.answer_ids, ioi.distractor_ids, patched_zero, steps=8)
ig_active = ig[:, -1, active]
r_ig = torch.corrcoef(torch.stack([ig_active.flatten(), zero_effects.flatten()]))[0, 1]
with model.saes(saes=[sae], use_error_term=True):
    joint = metric(model.run_with_hooks(ioi.tokens, fwd_hooks=[(acts_name, lambda acts, hook: patched_zero)]),
                   ioi.answer_ids, ioi.distractor_ids) - clean_metric
print(f"Pearson r with single-latent ablation: attribution {r.item():.3g}, integrated gradients {r_ig.item():.3g}")
print(f"completeness, mean over prompts: sum of IG {ig.sum((1, 2)).mean().item():.3g}, "
      f"sum of attribution {attr[hook].sum((1, 2)).mean().item():.3g}, "
      f"true joint ablation {joint.mean().item():.3g}")

# %%
# NBVAL_IGNORE_OUTPUT
scatter_with_diagonal(zero_effects.flatten(), ig_active.flatten(), labels, "Integrated gradients vs zero ablation",
                      "true effect of zero-ablating the latent (nats of logit difference)",
                      "integrated-gradients estimate (nats)")

# %% [markdown]
# **Ranking latents.** A circuit search keeps the latents with the largest estimated effects,
# so what matters is often the *order* more than the values. Take the 10 latents whose true
# (zero-ablation) mean effect is largest and compare ranks (Spearman's $\rho$: 1 when the
# estimate orders them exactly as ablation does) in two ways: on each latent's mean effect
# over prompts, 10 numbers, and on every (prompt, latent) pair where the latent is active.
# We also count how many of the estimate's own top 10 are the true top 10.

# %%
top10 = zero_effects.mean(0).abs().topk(10).indices  # columns of the true top 10
on = clean_acts[:, -1, active[top10]] > 0  # [batch, 10]: pairs where the latent is active
print("true mean effects of the top 10:", ", ".join(f"{v:.3g}" for v in zero_effects[:, top10].mean(0).tolist()))
for name, estimate in [("attribution", attr_active), ("integrated gradients", ig_active)]:
    found = set(estimate.mean(0).abs().topk(10).indices.tolist()) & set(top10.tolist())
    signs = (estimate[:, top10].mean(0).sign() == zero_effects[:, top10].mean(0).sign()).sum().item()
    print(f"{name}: Spearman on the 10 mean effects {spearman(estimate[:, top10].mean(0), zero_effects[:, top10].mean(0)):.3g}, "
          f"on {int(on.sum())} (prompt, latent) pairs {spearman(estimate[:, top10][on], zero_effects[:, top10][on]):.3g}; "
          f"same sign on {signs} of 10; {len(found)} of its top 10 are in the true top 10")

# %% [markdown]
# Per (prompt, latent) pair attribution orders the effects almost as ablation does (0.991),
# yet on the ten mean effects its Spearman is only 0.794: below the 0.9 this course aims for,
# and the same miss that `python -m benchmarks.attribution` reports on 32 prompts. Both are
# true at once because the mean effects lie close together (0.275 against 0.27, 0.263
# against 0.258 in size): an estimate that is off by a few hundredths on a latent or two
# reshuffles neighbours. What it means for ranking latents: attribution finds the right
# *set* (8 of its top 10 are the true top 10) and their signs, but not a reliable
# *order* within it. Do not read "third" against "fifth" off an attribution ranking. When
# the order matters, ablate the short list of candidates (one forward pass each, 10 here
# instead of 171), or use integrated gradients (0.952 here).

# %% [markdown]
# ## 5. Gradients between latents, from tokens, to logits
#
# Attribution patching answers "how much does the metric depend on this latent?". To trace a
# *circuit* we also need the edges: how much does a later latent depend on an earlier one?
# The Jacobian $\partial f^{(1)}_i / \partial f^{(0)}_j$ between two SAEs is
# $d_{sae} \times d_{sae}$ per pair of positions, but almost all of it is irrelevant: a
# ReLU latent that is off has zero gradient (so only *active* downstream latents have
# rows), and an inactive upstream latent has no activation to pass on (so only active
# upstream latents matter for what actually happened). We therefore compute it only for
# active latents, one backward pass per active downstream latent, and store it as a sparse
# COO tensor (values, indices, shape). Never build the dense matrix: at GPT-2 scale one
# position pair alone would be $24576^2 \approx 6 \times 10^8$ floats.
#
# Our test bed is the planted fact-recall chain: *"the eiffel is in the city of"* → *paris*.
# Gradients tell us how much one latent depends on another *locally*; they do not tell us
# where to look. So first ask the model where the fact travels, by **activation patching**:
# run the clean prompt, replace one activation (one hook, one position) by its value on the
# corrupted twin (another city's landmark, same length), and read the metric. If it stays at
# its clean value, what the corruption changes does not pass through that activation; if it
# drops to the corrupted value, all of it does. `utils.patching.patch_each_position` does
# this for every position of every hook we name, one forward pass each; we patch the input
# embeddings, the output of each attention layer and MLP, and the residual stream after each
# layer, on 64 prompts.

# %%
facts = world.task_batch("facts", n=64, seed=0)
words = model.to_str_tokens(facts.tokens[0])  # "<bos> the {landmark} is in the city of"
landmark_pos, last = 2, facts.tokens.shape[1] - 1
print(facts.prompts[0], "->", facts.answers[0], "| corrupted:", facts.corrupted[0], "->", facts.distractors[0])
fact_metric = lambda logits: metric(logits, facts.answer_ids, facts.distractor_ids)  # noqa: E731
fact_clean, fact_corrupted = fact_metric(model(facts.tokens)).mean().item(), fact_metric(model(facts.corrupted_tokens)).mean().item()
sites = {"embeddings": "blocks.0.hook_resid_pre", "attention 0": "blocks.0.hook_attn_out", "MLP 0": "blocks.0.hook_mlp_out",
         "residual after 0": "blocks.0.hook_resid_post", "attention 1": "blocks.1.hook_attn_out", "MLP 1": "blocks.1.hook_mlp_out",
         "residual after 1": "blocks.1.hook_resid_post"}
patched_metric = patch_each_position(model, facts.tokens, facts.corrupted_tokens, list(sites.values()), fact_metric).mean(-1)
print(f"logit difference, mean over {len(facts.prompts)} prompts: clean {fact_clean:.3g}, corrupted {fact_corrupted:.3g}; "
      "patched from the corrupted prompt at one site:")
print(f"{'':>17}" + "".join(f"{w if p != landmark_pos else '{landmark}':>11}" for p, w in enumerate(words)))
for site, row in zip(sites, patched_metric.tolist()):
    print(f"{site:>17}" + "".join(f"{v:>11.3g}" for v in row))
moved = (fact_clean - patched_metric[:, last]) / (fact_clean - fact_corrupted)  # share of the clean-to-corrupted gap
print(f"share of the gap moved by patching at {words[last]!r}:",
      ", ".join(f"{site} {round(v, 3) + 0.0:.3f}" for site, v in zip(sites, moved.tolist())))  # + 0.0: no "-0.000"

# %%
# NBVAL_IGNORE_OUTPUT
heatmap(patched_metric, [w if p != landmark_pos else "{landmark}" for p, w in enumerate(words)], list(sites),
        "Logit difference with one site patched from the corrupted prompt (facts)",
        "position patched", "site patched (hook)", "logit difference (nats)")

# %% [markdown]
# Read the table row by row (the answer is predicted at *of*, the last position):
#
# - **Embeddings.** Only the landmark differs between the two prompts, and patching its
#   embedding gives the corrupted value ($-9.87$): the landmark is the whole corruption.
# - **After layer 0 the landmark's own position no longer matters.** Patching the residual
#   stream there leaves the metric at 9.98: no later layer reads the landmark from its own
#   position. Patching the residual stream at *of* instead moves 0.987 of the gap
#   ($-9.61$), and so does patching layer-0 *attention*'s output at *of* alone: layer-0
#   attention has already copied the landmark's identity into the last position. The
#   positions in between carry none of it (9.91 or more everywhere).
# - **Layer 1 works at the last position.** Its attention output at *of* moves only 0.046 of
#   the gap (9.08): it hardly reads other positions for this task. Its MLP at *of* moves
#   0.530 ($-0.533$), and the layer-0 MLP at *of* 0.844 ($-6.78$). (The shares of single
#   components need not add up: each patch changes what the later layers compute.)
#
# So the fact travels once between positions, in layer-0 attention, from the landmark to
# *of*; from there everything happens at *of*: the layer-0 residual latents there feed the
# layer-1 latents there (through the residual stream and the layer-1 MLP), which feed the
# logits. That is the chain to follow with gradients. A latent at the landmark's position
# after layer 0 is not on it, however strongly it fires.

# %% [markdown] exercise="latent_to_latent_gradients" title="Compute latent-to-latent gradients over active latents" difficulty=4 importance=5 minutes=30
# For one prompt (`tokens` of shape `[1, n_pos]`) return the sparse tensor $J$ of shape
# `[d_sae_down, n_pos, d_sae_up]` with
# $J[i, p, j] = \partial f^{down}_i(\text{pos}) / \partial f^{up}_j(p)$ for every latent $i$ of
# `down_sae` active at `pos` and every latent $j$ of `up_sae` active at a position
# $p \le \text{pos}$ (store those entries even where the gradient is zero). Splice only
# `up_sae`, with `splice_for_gradients`; compute the downstream latents yourself with
# `down_sae.encode` from the activation at its hook, so they stay connected to the graph.

# %%
def latent_to_latent_gradients(
    model: HookedSAETransformer, up_sae: SAE, down_sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae_down n_pos d_sae_up"]:
    """Sparse J[i, p, j] = d f_down_i(pos) / d f_up_j(p) over active i (at pos) and active j (at p <= pos)."""
    ### BEGIN SOLUTION
    up_hook, down_hook = up_sae.cfg.metadata.hook_name, down_sae.cfg.metadata.hook_name
    pos = pos % tokens.shape[1]
    kept = {}

    def keep(x: Float[Tensor, "1 n_pos d_model"], hook) -> None:
        kept["x"] = x

    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(down_hook, keep)])
        up = nodes[f"{up_hook}.latents"]  # [1, n_pos, d_sae_up], the leaf to differentiate
        down = down_sae.encode(kept["x"][0, pos])  # [d_sae_down]
        rows = down.detach().nonzero()[:, 0]  # active downstream latents
        up_pos, up_latent = (up[0, : pos + 1].detach() > 0).nonzero(as_tuple=True)  # active upstream ones
        values = torch.stack([
            torch.autograd.grad(down[i], up, retain_graph=True)[0][0, up_pos, up_latent] for i in rows.tolist()
        ])  # [n_down, n_up]
    indices = torch.stack([
        rows.repeat_interleave(len(up_pos)), up_pos.repeat(len(rows)), up_latent.repeat(len(rows))
    ])  # [3, n_down * n_up], rows of `values` flattened in order
    shape = (down_sae.cfg.d_sae, tokens.shape[1], up_sae.cfg.d_sae)
    return torch.sparse_coo_tensor(indices, values.flatten(), shape, check_invariants=True).coalesce()
    ### END SOLUTION

# %% [markdown] hint="latent_to_latent_gradients"
# Inside `with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():` run the
# model with a hook on the downstream SAE's hook name that *stores* the activation (return
# nothing); then `down = down_sae.encode(x[0, pos])` is a function of `nodes[...latents]`.
# `torch.autograd.grad(down[i], up, retain_graph=True)[0]` is one row of the Jacobian.

# %% [markdown] hint="latent_to_latent_gradients"
# Build the result with `torch.sparse_coo_tensor(indices, values, shape).coalesce()`, where
# `indices` is `[3, nnz]` (downstream latent, upstream position, upstream latent). `nonzero`
# of the activation masks gives the active latents.

# %% [markdown]
# Now the gradients, on the first prompt. Take the layer-1 latent at *of* that the answer
# needs most (the most negative zero-ablation attribution), compute the Jacobian from the
# layer-0 SAE into it, and weigh each edge by its upstream activation (gradient ×
# activation, the edge's first-order share). If the patching table is right, its inputs
# come from layer-0 latents at *of*, and next to nothing from the landmark's position.

# %%
prompt, corrupted_prompt = facts.tokens[:1], facts.corrupted_tokens[:1]
sae0, sae1 = bk.saes["blocks.0.hook_resid_post"], bk.saes["blocks.1.hook_resid_post"]
down_hook, up_hook = "blocks.1.hook_resid_post", "blocks.0.hook_resid_post"


def latents_of(dictionary: SAE, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_sae"]:
    name = f"{dictionary.cfg.metadata.hook_name}.hook_sae_acts_post"
    return model.run_with_cache_with_saes(tokens, saes=[dictionary], names_filter=name)[1][name]


down_patch = latents_of(sae1, prompt).clone()
down_patch[:, -1] = 0.0
fact_attr = checked(attribution_patching)(model, [sae1], prompt, facts.answer_ids[:1], facts.distractor_ids[:1],
                                          {down_hook: down_patch})[down_hook][0, -1]
down_latent = fact_attr.argmin().item()
J = checked(latent_to_latent_gradients)(model, sae0, sae1, prompt, pos=-1)
print(f"J: {J._nnz()} stored entries instead of {J.shape.numel():,} dense")
up_acts = latents_of(sae0, prompt)[0]  # [pos, d_sae]
rows = J.indices()[0] == down_latent
(_, up_pos, up_latent), grads = J.indices()[:, rows], J.values()[rows]
contribution = grads * up_acts[up_pos, up_latent]  # gradient x activation: each edge's linear share
per_position = torch.zeros(len(words)).index_add_(0, up_pos, contribution.abs())
print(f"layer-1 latent {down_latent} at {words[last]!r} (attribution {fact_attr[down_latent].item():.3g}); "
      "sum of |gradient x activation| of its edges from each position:")
print("  " + ", ".join(f"{w!r} {v:.3g}" for w, v in zip(words, per_position.tolist())))
print("strongest edges:")
for k in contribution.abs().topk(3).indices.tolist():
    print(f"  layer-0 latent {up_latent[k].item()} at {words[up_pos[k]]!r}: {contribution[k].item():.3g}")
feeder = up_latent[contribution.abs().argmax()].item()

# %% [markdown]
# Do these two latents carry what the corruption changes? Read them on the corrupted prompt,
# and at *of* on all 64 prompts, grouped by landmark:

# %%
up_corrupted, down_corrupted = latents_of(sae0, corrupted_prompt)[0, last], latents_of(sae1, corrupted_prompt)[0, last]
print(f"at {words[last]!r}: layer-0 latent {feeder} {up_acts[last, feeder].item():.3g} clean, "
      f"{up_corrupted[feeder].item():.3g} corrupted; layer-1 latent {down_latent} "
      f"{latents_of(sae1, prompt)[0, last, down_latent].item():.3g} clean, {down_corrupted[down_latent].item():.3g} corrupted")
up_all, down_all = latents_of(sae0, facts.tokens)[:, last, feeder], latents_of(sae1, facts.tokens)[:, last, down_latent]
landmarks = [p.split()[1] for p in facts.prompts]
firing = {}
for landmark, answer in sorted(set(zip(landmarks, facts.answers))):
    where = torch.tensor([lm == landmark for lm in landmarks])
    if up_all[where].mean() > 0 or down_all[where].mean() > 0:
        firing[f"{landmark} ({answer})"] = (up_all[where].mean().item(), down_all[where].mean().item())
print(f"mean at {words[last]!r} (layer-0 {feeder}, layer-1 {down_latent}), landmarks where either fires:",
      "; ".join(f"{k} {a:.3g}, {b:.3g}" for k, (a, b) in firing.items()),
      f"| {len(set(landmarks)) - len(firing)} of {len(set(landmarks))} landmarks: both 0")
for name, latent in [(up_hook, feeder), (down_hook, down_latent)]:
    row = bk.explanations.lookup(name, latent)
    print(f"explanation table, {name} #{latent}: label {row['label']!r}, AUROC {row['auroc']:.3g}, "
          f"precision {row['precision']:.3g}, fires on {row['frequency']:.3g} of tokens")

# %% [markdown]
# The gradients agree with the patching. Into the layer-1 latent the answer needs most at
# *of*, the edges from layer-0 latents at *of* sum to 0.59 in |gradient × activation|,
# those from the landmark's position to 0.0388, and those from any other position to 0.0814
# at most; its three strongest edges all come from *of*. The
# strongest, layer-0 latent 104, and the layer-1 latent 198 are both switched off by the
# corruption (1.53 → 0 and 0.707 → 0), and across the 64 prompts they fire at *of* mostly
# for Madrid's two landmarks (bernabeu and prado); latent 104 also fires weakly for the
# sphinx (0.464). Their rows in the explanation table are poor fits, and the table says so:
# latent 104's best label, ioi_end, has AUROC 0.625 with 5.6% of its activation on ioi_end
# tokens, and latent 198's, workplace, AUROC 0.802 with 3.4%. Both are polysemantic (they
# also fire on IOI prompts); on fact prompts they behave like "the answer is Madrid", a
# feature no planted label names. A label from the table is a hypothesis to test, not a
# finding.

# %% [markdown] exercise="latent_to_logit_gradients" title="Compute latent-to-logit gradients" difficulty=3 importance=4 minutes=20
# The other end of the chain: for one prompt, return the sparse tensor $G$ of shape
# `[k, n_pos, d_sae]` with $G[t, p, j] = \partial\, \mathrm{logits}[0, -1, \text{token\_ids}[t]] / \partial f_j(p)$
# for every latent $j$ active at position $p$. This is the full gradient through every later
# layer, not only the direct path $W_{dec} W_U$ of chapter 00.

# %%
def latent_to_logit_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], token_ids: Int[Tensor, " k"]
) -> Float[Tensor, "k n_pos d_sae"]:
    """Sparse G[t, p, j] = d logits[0, -1, token_ids[t]] / d f_j(p) over active (p, j)."""
    ### BEGIN SOLUTION
    hook = sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        final = model(tokens)[0, -1]  # [d_vocab]
        latents = nodes[f"{hook}.latents"]  # [1, n_pos, d_sae], the leaf
        where = (latents[0].detach() > 0).nonzero(as_tuple=True)
        values = torch.stack([
            torch.autograd.grad(final[t], latents, retain_graph=True)[0][0][where] for t in token_ids.tolist()
        ])  # [k, n_active]
    k, n_active = values.shape
    indices = torch.stack([
        torch.arange(k, device=values.device).repeat_interleave(n_active), where[0].repeat(k), where[1].repeat(k)
    ])
    return torch.sparse_coo_tensor(indices, values.flatten(), (k, tokens.shape[1], sae.cfg.d_sae), check_invariants=True).coalesce()
    ### END SOLUTION

# %% [markdown] hint="latent_to_logit_gradients"
# The same recipe as the previous exercise with `model(tokens)[0, -1, token_id]` as the
# output: one `torch.autograd.grad` per token id, each read at the active (position,
# latent) pairs only.

# %%
cities = sorted(set(facts.answers))
G = checked(latent_to_logit_gradients)(model, sae1, prompt, torch.tensor([model.to_single_token(c) for c in cities]))
to_cities = G.to_dense()[:, last, down_latent]  # [n_cities]: d logit(city) / d f at the last position
print(f"layer-1 latent {down_latent} at {words[last]!r}, d logit(city) per unit of activation:",
      ", ".join(f"{c} {v:.3g}" for c, v in zip(cities, to_cities.tolist())))

# %% [markdown]
# Through every later layer, latent 198 raises the logit of madrid (0.315 per unit of
# activation) and lowers every other city's ($-0.185$ to $-0.977$): the last link of the
# chain, from *of* to the answer.

# %% [markdown] exercise="token_to_latent_gradients" title="Attribute a latent to its input tokens" difficulty=3 importance=3 minutes=20
# The first link: which input tokens make a latent fire? With $e(p)$ the model's input at
# position $p$ (token plus positional embedding, `blocks.0.hook_resid_pre`), return the
# sparse tensor $A$ of shape `[d_sae, n_pos]` with
# $A[i, p] = \frac{\partial f_i(\text{pos})}{\partial e(p)} \cdot e(p)$ (gradient times input)
# for every latent $i$ active at `pos` and every $p \le \text{pos}$. The SAE need not be
# spliced: compute its latents with `sae.encode` from the activation at its hook.

# %%
def token_to_latent_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae n_pos"]:
    """Sparse A[i, p] = (d f_i(pos) / d e(p)) . e(p) over active i and p <= pos."""
    ### BEGIN SOLUTION
    pos = pos % tokens.shape[1]
    kept = {}

    def leaf_input(x: Float[Tensor, "1 n_pos d_model"], hook) -> Float[Tensor, "1 n_pos d_model"]:
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]

    def keep(x: Float[Tensor, "1 n_pos d_model"], hook) -> None:
        kept["x"] = x

    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", leaf_input), (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])  # [d_sae]
        rows = latents.detach().nonzero()[:, 0]
        e = kept["e"][0]  # [n_pos, d_model]
        values = torch.stack([
            (torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0] * e).sum(-1)[: pos + 1]
            for i in rows.tolist()
        ]).detach()  # [n_active, pos + 1]
    indices = torch.stack([rows.repeat_interleave(pos + 1), torch.arange(pos + 1, device=rows.device).repeat(len(rows))])
    return torch.sparse_coo_tensor(indices, values.flatten(), (sae.cfg.d_sae, tokens.shape[1]), check_invariants=True).coalesce()
    ### END SOLUTION

# %% [markdown] hint="token_to_latent_gradients"
# Hook `blocks.0.hook_resid_pre` to return a leaf `x.detach().requires_grad_(True)` (keep
# it), hook the SAE's hook name to store its activation, and take
# `torch.autograd.grad(latents[i], leaf, retain_graph=True)` for each active latent `i`;
# multiply by the leaf and sum over `d_model`.

# %%
A = checked(token_to_latent_gradients)(model, sae0, prompt, pos=last)
dense_A = A.to_dense()  # [d_sae, n_pos]: small here (one SAE, a few positions)
largest = dense_A[feeder].abs().argmax().item()
print(f"layer-0 latent {feeder} at {words[last]!r}, activation {up_acts[last, feeder].item():.3g}; gradient x input: "
      f"landmark {words[landmark_pos]!r} {dense_A[feeder, landmark_pos].item():.2g}, "
      f"largest in size over all {len(words)} tokens {dense_A[feeder, largest].item():.2g} (at {words[largest]!r})")

# %% [markdown]
# Gradient × input gives the landmark almost nothing, yet changing the landmark alone (the
# corrupted prompt) switched this latent off. The reason is LayerNorm. Gradient × input at
# position $p$ is the first-order change of the latent when $e(p)$ is scaled by
# $(1 + \delta)$. The landmark reaches *of* only through layer-0 attention, which reads
# $\mathrm{LN}(e(p))$, and LayerNorm ignores scale: $\mathrm{LN}(c\,x) = \mathrm{LN}(x)$ for
# $c > 0$ (up to its small $\epsilon$). So gradient × input is zero along every path that
# leaves a position through a LayerNorm, which in this model is every path from another
# position: it sees only the latent's own position (here the embedding of *of*, which adds
# nothing to this latent). A forward check, doubling the landmark's embedding and then
# replacing it by the corrupted landmark's:

# %%
embeddings = "blocks.0.hook_resid_pre"
corrupted_embedding = model.run_with_cache(corrupted_prompt, names_filter=embeddings)[1][embeddings]


def feeder_with(edit) -> float:
    """Layer-0 latent `feeder` at the last position after `edit` to the landmark's embedding."""
    kept = {}

    def change(x: Float[Tensor, "1 pos d_model"], hook) -> Float[Tensor, "1 pos d_model"]:
        x[:, landmark_pos] = edit(x[:, landmark_pos])
        return x

    def keep(x: Float[Tensor, "1 pos d_model"], hook) -> None:
        kept["x"] = x
    model.run_with_hooks(prompt, fwd_hooks=[(embeddings, change), (up_hook, keep)])
    return sae0.encode(kept["x"][0, last])[feeder].item()


print(f"layer-0 latent {feeder} at {words[last]!r}: clean {feeder_with(lambda e: e):.3g}, "
      f"landmark embedding doubled {feeder_with(lambda e: 2 * e):.3g}, "
      f"replaced by the corrupted landmark's {feeder_with(lambda e: corrupted_embedding[:, landmark_pos]):.3g}")

# %% [markdown]
# The edges into the layer-1 latent as a graph: the strongest layer-0 latents feeding it
# (gradient × activation), each at the position it fires on. Hover a node for its label.

# %%
# NBVAL_IGNORE_OUTPUT
edges_in = J.indices()[0] == down_latent
_, edge_pos, edge_up = J.indices()[:, edges_in]
edge_weight = J.values()[edges_in] * up_acts[edge_pos, edge_up]  # gradient x activation
strongest = edge_weight.abs().topk(min(6, len(edge_weight))).indices.tolist()
edge_graph([[f"{latent_name(bk, up_hook, edge_up[k].item())} at {words[edge_pos[k]]!r}" for k in strongest],
            [latent_name(bk, down_hook, down_latent)]],
           [(0, row, 1, 0, edge_weight[k].item()) for row, k in enumerate(strongest)],
           ["layer-0 latents (at a position)", "layer-1 latent (last position)"],
           "Strongest edges into the layer-1 latent the answer needs", "gradient × activation")

# %% [markdown]
# ## 6. Attention-SAE latents and the heads that read them
#
# An attention SAE on `hook_z` decomposes the concatenated head outputs *before* $W_O$:
# latent $j$ writes $f_j\, d_j$ into $z$ (all heads at once), which reaches the residual
# stream as $f_j\, d_j W_O$. A later head reads the residual stream three times, for its
# queries, keys and values. *Path patching* removes a latent's contribution along one of
# these paths only: subtract $f_j d_j W_O$ from the input of one head's keys (or queries, or
# values), leave every other reader untouched, and measure the metric. TransformerLens exposes
# the three inputs per head as `blocks.{L}.hook_q_input` / `hook_k_input` / `hook_v_input`
# (shape `[batch, pos, n_heads, d_model]`) after `model.set_use_split_qkv_input(True)`.
#
# Our target is induction: in *"w1 ... w6 w1 ... w5"* the model predicts *w6*. The textbook
# circuit has a layer-1 head attend from the last *w5* to the token after the first *w5*,
# which it can find only if layer-0 attention wrote "my previous token was *w5*" there
# (K-composition). Whether this model reads its layer-0 attention latents through the keys,
# the queries or the values is a question the three paths below answer.

# %% [markdown] exercise="attn_latent_path_effects" title="Path-patch attention-SAE latents into one head's input" difficulty=4 importance=4 minutes=30
# For each latent in `latents` of `attn_sae` (an SAE on `blocks.{L0}.attn.hook_z`), remove its
# contribution $f_j d_j W_O^{(L0)}$, at every position, from the `input` (`"q"`, `"k"` or `"v"`)
# of head `head` of layer `layer` only, and return the change in `logit_diff` (one column
# per latent). The SAE is not spliced: the model runs on its own activations. Restore
# `use_split_qkv_input` before returning.

# %%
def attn_latent_path_effects(
    model: HookedSAETransformer,
    attn_sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    layer: int,
    head: int,
    latents: Int[Tensor, " n_latents"],
    input: Literal["q", "k", "v"] = "k",
) -> Float[Tensor, "batch n_latents"]:
    """effect[b, i] = m_b(head's `input` minus f_i d_i W_O) - m_b(clean), one path at a time."""
    ### BEGIN SOLUTION
    z_hook = attn_sae.cfg.metadata.hook_name
    source_layer = int(z_hook.split(".")[1])  # "blocks.{L}.attn.hook_z"
    acts_hook = f"{z_hook}.hook_sae_acts_post"
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=acts_hook)
    acts = cache[acts_hook]  # [batch, pos, d_sae]
    clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    model.set_use_split_qkv_input(True)
    try:
        effects = []
        for latent in progress(latents.tolist(), desc="path patching"):
            z = einops.rearrange(acts[..., latent, None] * attn_sae.W_dec[latent],
                                 "b p (n h) -> b p n h", n=model.cfg.n_heads)
            contribution = einops.einsum(z, model.W_O[source_layer], "b p n h, n h d -> b p d")

            def remove(x: Float[Tensor, "batch pos n_heads d_model"], hook) -> Float[Tensor, "batch pos n_heads d_model"]:
                x[:, :, head] -= contribution
                return x

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{input}_input", remove)])
            effects.append(logit_diff(logits, answer_ids, distractor_ids) - clean)
    finally:
        model.set_use_split_qkv_input(False)
    return torch.stack(effects, dim=-1)
    ### END SOLUTION

# %% [markdown] hint="attn_latent_path_effects"
# Read the latents with `run_with_cache_with_saes(tokens, saes=[attn_sae])` at
# `f"{hook}.hook_sae_acts_post"`. One latent's $z$ is `acts[..., j, None] * W_dec[j]`,
# rearranged `"b p (n h) -> b p n h"`; `einops.einsum(z, model.W_O[L0], "b p n h, n h d -> b p d")`
# is what it adds to the residual stream.

# %% [markdown] hint="attn_latent_path_effects"
# The hook on `blocks.{layer}.hook_{input}_input` receives `[batch, pos, n_heads, d_model]`:
# subtract from `x[:, :, head]` only.

# %% [markdown]
# First the head, by computation: the layer-1 head whose removal (zeroing its `hook_z`)
# hurts the induction logit difference most.

# %%
induction = world.task_batch("induction", n=8, seed=0)
span = induction.tokens.shape[1] // 2  # tokens: BOS, w1 .. w6, w1 .. w5; w6 sits at position span
induction_clean = metric(model(induction.tokens), induction.answer_ids, induction.distractor_ids)


def head_ablation(head: int) -> float:
    def zero_head(z: Float[Tensor, "batch pos n_heads d_head"], hook) -> Float[Tensor, "batch pos n_heads d_head"]:
        z[:, :, head] = 0.0
        return z
    logits = model.run_with_hooks(induction.tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
    return (metric(logits, induction.answer_ids, induction.distractor_ids) - induction_clean).mean().item()


head_effects = [head_ablation(h) for h in range(model.cfg.n_heads)]
ind_head = min(range(model.cfg.n_heads), key=lambda h: head_effects[h])
print("effect of zeroing each layer-1 head:", ", ".join(f"{e:.3g}" for e in head_effects), f"-> head 1.{ind_head}")

# %%
# NBVAL_IGNORE_OUTPUT
bar(torch.tensor(head_effects), [f"1.{h}" for h in range(model.cfg.n_heads)], "Zeroing one layer-1 head (induction prompts)",
    "head (layer.head)", "change in logit difference (nats)")

# %% [markdown]
# Which layer-0 attention latents to test? Those that fire where the head has to look: at
# the first copy's *w6* (position `span`), in most prompts.

# %%
attn_sae0 = bk.attn_saes["blocks.0.attn.hook_z"]
z_acts_name = "blocks.0.attn.hook_z.hook_sae_acts_post"
_, z_cache = model.run_with_cache_with_saes(induction.tokens, saes=[attn_sae0], names_filter=z_acts_name)
at_target = z_cache[z_acts_name][:, span]  # [batch, d_sae]: latents at the first copy's w6
z_active = (at_target > 0).float().mean(0).topk(12).indices.sort().values
path = {inp: checked(attn_latent_path_effects)(model, attn_sae0, induction.tokens, induction.answer_ids,
                                               induction.distractor_ids, 1, ind_head, z_active, input=inp)
        for inp in "qkv"}
for inp, effects in path.items():
    best = effects.mean(0).argmin()
    print(f"{inp}: total {effects.mean(0).sum().item():.3g}; strongest latent {z_active[best].item()} "
          f"({effects[:, best].mean().item():.3g})")

# %%
# NBVAL_IGNORE_OUTPUT
bar(torch.stack([path[inp].mean(0).sum() for inp in "qkv"]), ["queries", "keys", "values"],
    f"Removing {len(z_active)} layer-0 attention latents from one input of head 1.{ind_head}",
    "input of the head the latents are removed from", "total change in logit difference (nats)",
    hover=[f"{name}: strongest latent {latent_name(bk, 'blocks.0.attn.hook_z', z_active[path[inp].mean(0).argmin()].item())}"
           for name, inp in zip(["queries", "keys", "values"], "qkv")])

# %% [markdown]
# The input whose removal hurts most carries most of what the head reads from layer-0
# attention (each path's total is smaller than the effect of zeroing the whole head, which
# also reads the embeddings and the MLPs). What does the strongest latent on that path
# track? The explanation table gives the planted label its activation separates best, how
# well (AUROC), and how much of the latent's activation falls on that label (precision):

# %%
strongest_input = min(path, key=lambda inp: path[inp].mean(0).sum().item())
path_best = z_active[path[strongest_input].mean(0).argmin()].item()
row = bk.explanations.lookup("blocks.0.attn.hook_z", path_best)
print(f"input {strongest_input!r}, latent {path_best}: label {row['label']!r}, AUROC {row['auroc']:.3g}, "
      f"precision {row['precision']:.3g}, fires on {row['frequency']:.3g} of tokens, top tokens {row['top_tokens'][:3]}")
print("strongest contexts:", *row["top_contexts"][:2], sep="\n  ")

# %% [markdown]
# That is a weak explanation. Its strongest contexts lie inside repeated spans, but one in
# the second copy (where the label holds) and one in the first (where it does not); an
# AUROC of 0.684 is closer to chance (0.5) than to a clean feature, and only 0.399 of the
# latent's activation falls on induction tokens. The path patching stands (the induction
# head reads this latent through its keys); what the latent *means* is not settled by the
# table. Its dashboard (chapter 00) is where to look next.

# %% [markdown]
# ## 7. Scale-up: GPT-2 small
#
# The same functions, unchanged, on GPT-2 small with the `gpt2-small-res-jb` residual SAEs.
# Latent-to-logit for a fact prompt, and latent-to-latent across layers for a word that
# GPT-2 splits into several tokens. This needs the Hugging Face hub (Colab); offline it
# prints one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from utils.backends.gpt2 import HubUnavailable, load_gpt2

try:  # residual SAEs at two layers only: two downloads of about 150 MB each
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[6, 8], kinds=("resid_sae",))
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    g_model = gpt2.model
    g_up, g_down = gpt2.saes["blocks.6.hook_resid_pre"], gpt2.saes["blocks.8.hook_resid_pre"]
    fact = g_model.to_tokens("The Eiffel Tower is located in the city of")
    paris = g_model.to_single_token(" Paris")
    G_g = checked(latent_to_logit_gradients)(g_model, g_down, fact, torch.tensor([paris]))
    acts_g = g_model.run_with_cache_with_saes(fact, saes=[g_down])[1]["blocks.8.hook_resid_pre.hook_sae_acts_post"][0]
    share = G_g.values() * acts_g[G_g.indices()[1], G_g.indices()[2]]
    for k in share.topk(5).indices.tolist():
        p, j = G_g.indices()[1, k].item(), G_g.indices()[2, k].item()
        print(f"layer-8 latent {j} at {g_model.to_string(fact[0, p])!r}: gradient x activation {share[k].item():.3g}")
    word = g_model.to_tokens("The committee discussed antidisestablishmentarianism")
    J_g = checked(latent_to_latent_gradients)(g_model, g_up, g_down, word, pos=-1)
    print(f"latent-to-latent over {word.shape[1]} tokens: {J_g._nnz()} entries stored of {J_g.shape.numel():,}")

# %% [markdown]
# ## Summary
#
# - Ablation is exact but costs a forward pass per latent; attribution patching estimates
#   every latent of every SAE at every position from one forward and one backward pass.
# - With SAELens's error term the forward pass is right but the backward pass is not: the
#   error is computed under `no_grad`. `splice_for_gradients` makes latents and errors
#   leaves and gives the SAE an identity path, so gradients are the unspliced model's.
# - The linear approximation is good for small effects and fails for large or saturated
#   ones; integrated gradients repair much of that at the cost of one pass per step, and
#   are complete: their sum is the joint effect.
# - Attribution ranks the important latents well per prompt, but the order of latents with
#   similar mean effects is not reliable: confirm a ranking that matters by ablation or IG.
# - Activation patching from a corrupted prompt shows where information flows: in the fact
#   chain, layer-0 attention carries the landmark to the last position and everything
#   after happens there. Follow gradients along that path, not along a story.
# - Gradients between latents, from tokens to latents and from latents to logits live on
#   *active* latents only and are stored sparse. Gradient × input is blind to every path
#   through a LayerNorm (scale-invariant), here every path between positions.
# - An explanation table's label comes with its AUROC and precision; a low one (0.625,
#   0.684) says the label does not explain the latent.
# - Path patching an attention-SAE latent into one input of one head shows which latents a
#   head reads, and through which of its inputs.
#
# **Open questions.** When does the first-order estimate rank latents correctly even though
# its values are off? Which position would patching point to in a model whose fact lookup
# needed two attention hops? How would you pick the IG path (zero, mean, corrupted) for a task with
# no natural corrupted prompt? Chapter 02 asks what the error nodes themselves contribute.

# %% [markdown]
# # Chapter 00 — Toolkit: splicing SAEs and reading their latents
#
# Every later chapter of this course finds circuits made of *latents*: the units of a sparse
# autoencoder (SAE) or a transcoder trained on a model's activations. This chapter teaches
# the tools those chapters lean on, on a model whose circuits we planted ourselves, so every
# claim you read here is checked against ground truth.
#
# **Learning objectives**
# - Load a backend and know what a `HookedSAETransformer` adds to a `HookedTransformer`.
# - Splice SAEs into the forward pass, cache their activations, and reset the model after.
# - Read a latent three ways: which latents fire on a prompt, which tokens a latent promotes,
#   and which contexts make it fire hardest.
# - Measure how much an SAE costs the model: L0, explained variance, CE-loss recovered.
# - Find the latent that tracks a planted feature and score it against ground truth (AUROC,
#   read beside precision: the share of its activation on the label).
# - Keep memory under control, and explore latents interactively.
#
# *If you read one thing:* section 2, on the hook names an SAE adds. Every later chapter
# reads activations through them.

# %% tags=["module"]
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.progress import progress

# %%
import einops
from transformer_lens.utils import test_prompt

from utils.backends import load_backend
from utils.course.checking import checked
from utils.dashboards import latent_dashboard
from utils.explorer import explorer_summary, latent_explorer, sae_acts
from utils.memory import free, memory_table
from utils.metrics import activation_precision
from utils.views import contexts_table, histogram, show_contexts, token_logprob_view

_ = torch.set_grad_enabled(False)  # this chapter only reads the model: no gradients needed

# %% [markdown]
# ## 1. The model organism
#
# The default backend, `toy`, is a two-layer transformer trained on a small synthetic
# language (about 320 words) with planted tasks: indirect-object identification, induction on
# repeated spans, fact recall, gendered pronouns, greater-than on years, and short
# biographies. It ships with the repo, loads in seconds, and needs no network. With it come
# residual-stream SAEs (one per layer), attention-output SAEs, MLP transcoders, the data
# generator with per-token ground-truth labels, and an explanation table for every latent.

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
print(type(model).__name__, "with", model.cfg.n_layers, "layers, d_model =", model.cfg.d_model,
      ", vocabulary of", model.cfg.d_vocab, "words")
print("residual SAEs:", {hook: sae.cfg.d_sae for hook, sae in bk.saes.items()})
print("tasks:", world.tasks)

# %% [markdown]
# The generator writes prompts of each task with their answers. Here is one of each, with
# the model's most likely next word:

# %%
for task in world.tasks:
    batch = world.task_batch(task, n=1, seed=0)
    guess = model.to_string(model(batch.tokens)[0, -1].argmax())
    print(f"{task:>13}: {batch.prompts[0]!r} -> answer {batch.answers[0]!r}, model says {guess!r}")

# %% [markdown]
# `test_prompt` from TransformerLens shows the rank and probability of the answer, and the
# model's top guesses. Because the tokenizer is word-level, the answer is one token.

# %%
ioi = world.task_batch("ioi", n=8, seed=0)
test_prompt(ioi.prompts[0], ioi.answers[0], model, prepend_space_to_answer=False, top_k=5)

# %% [markdown]
# `model.generate` continues a prompt; greedy decoding (`do_sample=False`) makes it
# deterministic. The organism finishes the planted sentence, then starts another document.

# %%
for prompt in ["when mary and john went to the park , john gave a ball to", "the eiffel is in the city of"]:
    print(model.generate(prompt, max_new_tokens=10, do_sample=False, stop_at_eos=False, verbose=False))

# %% [markdown]
# The same for every token of a prompt at once: each token coloured by the log-probability
# the model gave it after the text before it (hover a token for its probability, its rank
# and the model's top guesses). On an induction prompt the second copy of the span turns
# white: the model predicts it.

# %%
# NBVAL_IGNORE_OUTPUT
token_logprob_view(model, world.task_batch("induction", 1, seed=2).prompts[0])

# %% [markdown]
# ## 2. Splicing SAEs into the forward pass
#
# A `HookedSAETransformer` is a `HookedTransformer` that can *splice* an SAE at a hook point:
# the activation $x$ at that hook is replaced by the SAE's reconstruction
# $\hat x = W_{dec}^\top\,\mathrm{ReLU}(W_{enc}^\top x + b_{enc}) + b_{dec}$ and the rest of the
# model runs on $\hat x$. Three ways to do it:
#
# - `model.run_with_saes(tokens, saes=[sae])`: spliced for one call only;
# - `model.run_with_cache_with_saes(tokens, saes=[sae])`: the same, returning a cache too;
# - `with model.saes(saes=[sae]):` spliced inside the block, removed when it ends (even
#   if your code raises). Hooks are global state: `model.add_sae(sae)` splices until
#   `model.reset_saes()`, and forgetting the reset sends every later call through the SAE,
#   so prefer the block.
#
# While an SAE sits at hook `X`, the cache no longer has `X` itself. Its activations live
# under the SAE's own hook points, `X.hook_sae_input`, `X.hook_sae_acts_pre`,
# `X.hook_sae_acts_post` (the latents), `X.hook_sae_recons` and `X.hook_sae_output`.

# %%
hook = "blocks.1.hook_resid_post"
sae = bk.saes[hook]
_, cache = model.run_with_cache_with_saes(ioi.tokens, saes=[sae])
print(sorted(name for name in cache.keys() if name.startswith(hook)))
print("SAEs still attached after the call:", model.acts_to_saes)

# %% [markdown]
# The spliced model makes slightly different predictions from the clean one, because the
# reconstruction is not perfect. With `use_error_term=True` the SAE adds back its own error
# $x - \hat x$ (as `X.hook_sae_error`), so the output is exactly the clean one while the
# latents are still exposed: chapter 02 builds on that.

# %%
clean = model(ioi.tokens)
spliced = model.run_with_saes(ioi.tokens, saes=[sae])
with model.saes(saes=[sae], use_error_term=True):
    with_error = model(ioi.tokens)
print(f"max |spliced - clean| logit:    {(spliced - clean).abs().max().item():.3g}")
exact = (with_error - clean).abs().max().item() < 1e-4  # float rounding only
print(f"with the error term, logits equal the clean ones up to 1e-4: {exact}")

# %% [markdown] exercise="top_k_latents" title="Find the top-k active latents at a position" difficulty=1 importance=5 minutes=10
# Write a function returning the `k` largest latent activations of `sae` at position `pos`
# of `prompt`, and their indices, largest first. Splice the SAE for this call only (the
# model must have no SAE attached when your function returns). Remember that
# `model.to_tokens` prepends `<bos>`, so position 0 is BOS and negative positions count from
# the end.

# %%
def top_k_latents(
    model: HookedSAETransformer, sae: SAE, prompt: str, pos: int, k: int
) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"]]:
    """The k largest entries of f(x) = ReLU(W_enc^T x + b_enc) at position ``pos``.

    Returns (values, indices), values in decreasing order.
    """
    ### BEGIN SOLUTION
    hook_name = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(prompt, saes=[sae])
    acts = cache[f"{hook_name}.hook_sae_acts_post"][0, pos]  # [d_sae]
    values, indices = acts.topk(k)
    return values, indices
    ### END SOLUTION

# %% [markdown] hint="top_k_latents"
# `model.run_with_cache_with_saes(prompt, saes=[sae])` accepts a string. The latents are at
# `f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"`, shaped `[batch, pos, d_sae]`;
# `Tensor.topk(k)` returns values and indices, largest first.

# %% [markdown]
# At the last position of an IOI prompt (where the model must say the indirect object), the
# layer-1 SAE has a handful of active latents. The explanation table (section 6) tells what
# each one tracks; for now, their activations:

# %%
values, indices = checked(top_k_latents)(model, sae, ioi.prompts[0], pos=-1, k=5)
for v, i in zip(values, indices):
    print(f"latent {i.item():>4}: {v.item():.3g}")

# %% [markdown] exercise="latent_logit_effects" title="Read a latent's direct effect on the logits" difficulty=1 importance=4 minutes=10
# A latent writes its decoder row $d_i = W_{dec}[i]$ into the residual stream. The part of
# its effect that goes straight to the output is $d_i W_U$: one number per vocabulary word,
# how much one unit of the latent raises that word's logit (ignoring the final layer norm's
# scale). Return it.

# %%
def latent_logit_effects(model: HookedSAETransformer, sae: SAE, latent: int) -> Float[Tensor, " d_vocab"]:
    """Direct logit effect of one latent: W_dec[latent] @ W_U."""
    ### BEGIN SOLUTION
    return sae.W_dec[latent] @ model.W_U
    ### END SOLUTION

# %% [markdown] hint="latent_logit_effects"
# `sae.W_dec` is `[d_sae, d_model]` and `model.W_U` is `[d_model, d_vocab]`.

# %% [markdown]
# The top and bottom words of the strongest latent at the end of the IOI prompt above. It
# fires where the model must name the indirect object; look at what it writes:

# %%
top_latent = indices[0].item()
effects = checked(latent_logit_effects)(model, sae, top_latent)
print("promotes:", [model.to_string(t) for t in effects.topk(8).indices])
print("demotes: ", [model.to_string(t) for t in (-effects).topk(8).indices])

# %% [markdown] exercise="max_activating_contexts" title="Collect a latent's max-activating contexts" difficulty=2 importance=4 minutes=20
# Over a corpus of token sequences, find the `k` (sequence, position) pairs where a latent
# is largest. Run the model in batches of `batch_size` sequences (with a progress bar:
# `utils.progress.progress(iterable, desc)` wraps tqdm), and
# stop the forward pass right after the SAE's layer: nothing later is needed. Return the
# values, largest first, and a `[k, 2]` tensor of (sequence index, position).

# %%
def max_activating_contexts(
    model: HookedSAETransformer,
    sae: SAE,
    latent: int,
    tokens: Int[Tensor, "batch pos"],
    k: int = 10,
    batch_size: int = 64,
) -> tuple[Float[Tensor, " k"], Int[Tensor, "k 2"]]:
    """Top-k activations of one latent over every (sequence, position) of ``tokens``."""
    ### BEGIN SOLUTION
    hook_name = sae.cfg.metadata.hook_name
    layer = int(hook_name.split(".")[1])  # hook names read "blocks.{layer}...."
    acts = []
    for start in progress(range(0, tokens.shape[0], batch_size), desc=f"latent {latent}"):
        _, cache = model.run_with_cache_with_saes(
            tokens[start : start + batch_size], saes=[sae], stop_at_layer=layer + 1,
            names_filter=f"{hook_name}.hook_sae_acts_post",
        )
        acts.append(cache[f"{hook_name}.hook_sae_acts_post"][..., latent])  # [batch, pos]
    acts = torch.cat(acts)  # [n_seqs, pos]
    values, flat = acts.flatten().topk(k)
    seq_pos = torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)
    return values, seq_pos
    ### END SOLUTION

# %% [markdown] hint="max_activating_contexts"
# `run_with_cache_with_saes` passes `stop_at_layer` and `names_filter` on to
# `run_with_cache`. Collect the latent's `[batch, pos]` activations, concatenate, flatten,
# `topk`, then turn flat indices back into (sequence, position) with `//` and `%`.

# %% [markdown] hint="max_activating_contexts"
# Check your batching: `range(0, n, batch_size)` visits every sequence, including a last,
# smaller batch.

# %%
corpus = world.corpus(n_seqs=256, seq_len=48, seed=0)
ctx_values, ctx_where = checked(max_activating_contexts)(model, sae, top_latent, corpus.tokens, k=6)
print(contexts_table(model, corpus.tokens, ctx_values, ctx_where, window=8))

# %% [markdown]
# The same contexts as a table, each token shaded by how strongly the latent fires on it
# (hover a token for its activation):

# %%
# NBVAL_IGNORE_OUTPUT
show_contexts(model, corpus.tokens, ctx_values, ctx_where, acts=sae_acts(model, sae, corpus.tokens)[..., top_latent])

# %% [markdown] exercise="reconstruction_metrics" title="Measure what splicing an SAE costs" difficulty=2 importance=5 minutes=25
# An SAE is useful when it is sparse *and* faithful. Compute, over `tokens`, excluding the
# BOS position for the first two:
#
# - `l0`: the mean number of active latents per token;
# - `explained_variance`: $1 - \sum \lVert x - \hat x\rVert^2 / \sum \lVert x - \bar x \rVert^2$,
#   sums over tokens, $\bar x$ the mean activation over tokens;
# - `ce_clean`, `ce_spliced`, `ce_zero`: the model's mean next-token loss clean, with the SAE
#   spliced in (no error term), and with the hook's activation replaced by zeros;
# - `ce_recovered`: $(\mathrm{CE}_{zero} - \mathrm{CE}_{spliced}) / (\mathrm{CE}_{zero} - \mathrm{CE}_{clean})$,
#   1 for a perfect SAE, 0 for one no better than deleting the activation.
#
# Return them as a dict of Python floats.

# %%
def reconstruction_metrics(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """L0, explained variance and CE-loss recovered of ``sae`` spliced at its hook."""
    ### BEGIN SOLUTION
    hook_name = sae.cfg.metadata.hook_name
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[sae], return_type="loss")
    x = cache[f"{hook_name}.hook_sae_input"][:, 1:]  # [batch, pos - 1, d_model], no BOS
    x_hat = cache[f"{hook_name}.hook_sae_recons"][:, 1:]
    acts = cache[f"{hook_name}.hook_sae_acts_post"][:, 1:]
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(dim=(0, 1))).pow(2).sum()
    ce_clean = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(
        tokens, return_type="loss", fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]
    )
    return {
        "l0": (acts > 0).float().sum(-1).mean().item(),
        "explained_variance": (1 - residual / total).item(),
        "ce_clean": ce_clean.item(),
        "ce_spliced": ce_spliced.item(),
        "ce_zero": ce_zero.item(),
        "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item(),
    }
    ### END SOLUTION

# %% [markdown] hint="reconstruction_metrics"
# One `run_with_cache_with_saes(..., return_type="loss")` gives the spliced loss and the
# SAE's input (`hook_sae_input`), reconstruction (`hook_sae_recons`) and latents. The clean
# loss is `model(tokens, return_type="loss")` with no SAE attached; for the zero-ablated
# loss, `run_with_hooks` with a hook returning `torch.zeros_like(act)`.

# %% [markdown] hint="reconstruction_metrics"
# If your spliced loss equals the clean loss, the SAE was spliced with its error term (or
# was not spliced at all).

# %% [markdown]
# For both residual SAEs, with the three losses printed so you can see the scale: zeroing
# the whole residual stream costs several nats, so even a poor SAE would recover most of
# that gap. Read CE-loss recovered together with the *added* loss, `ce_spliced - ce_clean`,
# which is what chapter 02's error nodes account for.

# %%
eval_tokens = world.corpus(n_seqs=64, seq_len=48, seed=1).tokens
for name, dictionary in bk.saes.items():
    m = checked(reconstruction_metrics)(model, dictionary, eval_tokens)
    print(f"{name}: L0 {m['l0']:.3g}, explained variance {m['explained_variance']:.3g}, "
          f"CE clean/spliced/zero {m['ce_clean']:.3g}/{m['ce_spliced']:.3g}/{m['ce_zero']:.3g}, "
          f"CE recovered {m['ce_recovered']:.3g}, added loss {m['ce_spliced'] - m['ce_clean']:.3g} nats")

# %% [markdown] exercise="latent_aurocs" title="Score every latent against a ground-truth label" difficulty=3 importance=4 minutes=25
# Because we generated the language, every token carries ground-truth labels, such as
# `name_repeated` (this name appeared earlier in the sequence). How well does a latent
# track a label? Use the latent's activation as a score and compute the AUROC: the
# probability that a random positive token scores higher than a random negative one,
# counting ties as one half,
#
# $$\mathrm{AUROC} = \frac{1}{PN}\sum_{p \in \text{pos}}\sum_{q \in \text{neg}}
#   \Big(\mathbb{1}[s_p > s_q] + \tfrac12\,\mathbb{1}[s_p = s_q]\Big).$$
#
# Ties matter here: a ReLU latent is exactly zero on most tokens. Compute it for all latents
# at once, without a Python loop over latents or tokens.

# %%
def latent_aurocs(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """AUROC of each latent's activation as a score for ``labels`` (ties count 1/2)."""
    ### BEGIN SOLUTION
    pos = acts[labels].T.contiguous()  # [d_sae, P]
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()  # [d_sae, N], sorted per latent
    below = torch.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    below_or_tied = torch.searchsorted(neg, pos, side="right")
    wins = (below + below_or_tied).float() / 2  # below + ties / 2
    return wins.sum(-1) / (pos.shape[1] * neg.shape[1])
    ### END SOLUTION

# %% [markdown] hint="latent_aurocs"
# Sort each latent's negative scores once. For a positive score $s$,
# `torch.searchsorted(sorted_neg, s, side="left")` counts negatives strictly below $s$ and
# `side="right"` counts those below or tied; their mean is the count with ties as one half.
# `searchsorted` works row by row on `[d_sae, N]` sorted rows and `[d_sae, P]` queries.

# %% [markdown]
# Score every layer-1 latent against `name_repeated` on the corpus, BOS excluded:

# %%
_, corpus_cache = model.run_with_cache_with_saes(corpus.tokens, saes=[sae])
flat_acts = einops.rearrange(corpus_cache[f"{hook}.hook_sae_acts_post"][:, 1:], "b p d -> (b p) d")
flat_label = corpus.labels["name_repeated"][:, 1:].flatten()
aurocs = checked(latent_aurocs)(flat_acts, flat_label)
best = aurocs.argmax().item()
precision = activation_precision(flat_acts, flat_label[:, None])[0]  # [d_sae]
print(f"best latent for name_repeated: {best} (AUROC {aurocs[best].item():.3g}, precision {precision[best].item():.3g}); "
      f"{(aurocs > 0.9).sum().item()} latents above 0.9; {flat_label.float().mean().item():.3g} of tokens carry the label")

# %% [markdown]
# AUROC asks whether the latent ranks labelled tokens above the others; it does not ask what
# else the latent does. For that, read its **precision** beside it: the share of the
# latent's total activation that falls on labelled tokens,
# $\sum_t y_t a_t / \sum_t a_t$ (`utils.toy.report.activation_precision`). A latent that fired
# equally on every token would have precision equal to the label's share of tokens; one
# that fires only on the label, 1. A label claim is "label X, AUROC a, precision p", never
# the AUROC alone.

# %% [markdown]
# How many latents separate the label well? Most sit near 0.5 (chance); a few stand apart:

# %%
# NBVAL_IGNORE_OUTPUT
histogram(aurocs, f"AUROC of each {hook} latent for name_repeated", "AUROC (0.5 = chance, 1 = perfect)",
          threshold=0.9)

# %% [markdown]
# ## 6. The explanation table: an offline Neuronpedia
#
# For every latent of every dictionary, the toy backend ships a row: the planted label its
# activation separates best (with that AUROC and the latent's precision on it), how often
# it fires, its top contexts and the tokens it promotes. Look up the latent you just found,
# then search the table by keyword, the way you would search Neuronpedia for a concept.

# %%
row = bk.explanations.lookup(hook, best)
print(f"latent {best}: label {row['label']!r}, AUROC {row['auroc']:.3f}, precision {row['precision']:.3f}, "
      f"fires on {row['frequency']:.3g} of tokens")
print("promotes:", row["top_tokens"])
for context in row["top_contexts"][:3]:
    print("  ", context)

# %% [markdown]
# Searching for the label finds the best latents in every dictionary. Compare the AUROC you
# computed with the table's (computed on other corpus tokens), and notice that two latents
# with almost the same AUROC can differ fourfold in precision.

# %%
for row in bk.explanations.search("name_repeated")[:3]:
    print(f"{row['dictionary']:>26} latent {row['latent']:>3}: {row['label']} "
          f"(AUROC {row['auroc']:.3f}, precision {row['precision']:.3f})")

# %% [markdown]
# Which planted labels have a latent of their own? The best AUROC per label over every
# dictionary, from the table:

# %%
best_per_label = {}
for row in bk.explanations.rows:
    if row["auroc"] > best_per_label.get(row["label"], {"auroc": 0.0})["auroc"]:
        best_per_label[row["label"]] = row
print(f"{'label':>18}  AUROC  precision  fires on  latent")
for label, row in sorted(best_per_label.items(), key=lambda kv: -kv[1]["auroc"]):
    print(f"{label:>18}  {row['auroc']:.3f}  {row['precision']:>9.3f}  {row['frequency']:>8.3g}  "
          f"{row['dictionary']} #{row['latent']}")

# %% [markdown]
# Read the columns together. *High AUROC, low precision:* the best `country` latent (AUROC
# 0.997) puts only 0.198 of its activation on country tokens, and the best `fact_answer`
# latent (0.999) 0.263: each fires on its label and on much else besides. *Low AUROC, high
# precision:* the best `is_name` latent (0.716) spends 0.989 of its activation on names but
# fires on only 0.044 of tokens, so it misses many names. *Weak on both:* no latent
# explains `city` (0.880, precision 0.231) or `male_name` (0.802, 0.512) well. Only rows
# high on both, such as `year` (0.963, 0.807) or `greater_than_end` (1.000, 0.742), earn
# their label without more evidence. (Each row here is a latent's *own* best label; a latent
# can also score high on a second label, which the report of `python -m utils.toy report`
# lists per label.)

# %% [markdown]
# ## 7. Latent dashboards
#
# A dashboard gathers everything about a latent on one page: its activation histogram, the
# logits it promotes and suppresses, its max-activating contexts, and its nearest neighbours.
# `latent_dashboard` builds one with sae-vis for the toy SAE, offline. (sae-vis 0.2.15 drops
# the weights of a SAELens SAE handed to it; our helper copies them in.)

# %%
# NBVAL_IGNORE_OUTPUT
dashboard_file = latent_dashboard(model, sae, corpus.tokens[:128], [best, top_latent], "ch00_dashboard")

# %% [markdown]
# ## 8. Memory
#
# Models, caches and dictionaries pile up in a notebook. `memory_table` lists the largest
# tensors and modules in a namespace by device, and `free` deletes names and collects the
# garbage. A cache over a whole corpus is often the biggest item: here, `corpus_cache`.

# %%
# NBVAL_IGNORE_OUTPUT
print(memory_table(globals(), top=8))

# %%
free(globals(), "corpus_cache", "flat_acts")
print("corpus_cache" in globals())

# %% [markdown]
# ## 9. A latent explorer
#
# Pick a prompt and a layer, see the active latents at each position (with their labels;
# faded ones are weak guesses), and click one to see what it promotes and where it fires
# hardest. It opens on the IOI latent you read above (`top_latent`); below it, the same
# content as text.

# %%
# NBVAL_IGNORE_OUTPUT
explorer = latent_explorer(bk, [ioi.prompts[0], world.task_batch("facts", 1).prompts[0], world.task_batch("induction", 1).prompts[0]],
                           hook=hook, latent=top_latent)

# %%
print(explorer_summary(bk, ioi.prompts[0], hook, top_latent))

# %% [markdown]
# ## 10. Scale-up: GPT-2 small
#
# The same tools on GPT-2 small with the public `gpt2-small-res-jb` SAE at layer 8. This
# needs the Hugging Face hub (Colab); offline the cell says so in one line and moves on.
# The Neuronpedia page of the top latent is embedded below it.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from IPython.display import IFrame, display

from utils.backends.gpt2 import HubUnavailable, load_gpt2

try:
    gpt2 = load_gpt2(layers=[8], kinds=("resid_sae",))
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    gpt2_sae = gpt2.saes["blocks.8.hook_resid_pre"]
    prompt = "The Eiffel Tower is in the city of"
    g_values, g_indices = checked(top_k_latents)(gpt2.model, gpt2_sae, prompt, pos=-1, k=5)
    for v, i in zip(g_values, g_indices):
        effects = checked(latent_logit_effects)(gpt2.model, gpt2_sae, i.item())
        print(f"latent {i.item():>5} ({v.item():.3g}): promotes {gpt2.model.to_str_tokens(effects.topk(6).indices)}")
    url = f"https://neuronpedia.org/gpt2-small/8-res-jb/{g_indices[0].item()}?embed=true"
    display(IFrame(url, width=900, height=500))
    free(globals(), "gpt2", "gpt2_sae")

# %% [markdown]
# ## Summary
#
# - A `HookedSAETransformer` splices SAEs at hook points; their latents are cached under
#   `X.hook_sae_acts_post`, and `use_error_term=True` keeps the output exact.
# - A latent can be read by what fires it (top latents per position, max-activating contexts),
#   by what it writes (its direct logit effect), and against ground truth (AUROC beside
#   precision: a latent can rank a label first and still spend most of its activation elsewhere).
# - Reconstruction metrics come in a set: L0 for sparsity; explained variance and added loss
#   for faithfulness; CE-loss recovered only relative to a (here very destructive) ablation.
#
# **Open questions.** Which planted labels does no single latent carry, and why might a
# broad label like "is a name" be spread over several latents? How would the AUROC of the
# best latent change with a wider SAE?

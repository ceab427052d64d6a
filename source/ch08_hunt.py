# %% [markdown]
# # Chapter 08 — Capstone: a blind circuit hunt, graded against planted ground truth
#
# Every chapter so far told you what the model does before asking how. Here nobody does.
# You get a second model organism, the *hunt model* (the same kind of two-layer model and
# the same six dictionaries as before), trained on a language that hides three tasks no
# chapter describes. Your seed draws one of them and hands you its prompts: no rule, no
# labels, no hint of where the model computes the answer. With the methods of chapters
# 01–05 you find out what the model predicts, which positions carry the answer, which
# nodes compute it, and which latents matter; then you hand it in through one function,
# `hunt_submission`, which the check grades against the circuit we planted.
#
# The grade is computed, not read from you: the course recomputes your circuit's
# faithfulness and completeness on prompts of its own, compares your positions with the
# planted labels and your nodes with the planted mechanism, and says what to fix ("your
# circuit leaves out layer 1's transcoder at the last position", "two of your five key
# latents fire on a quarter of all tokens"). The grader then runs your `hunt_submission`
# on **another seed** of the pool, which may be another task: what is graded is your
# method, not your answers.
#
# **Learning objectives**
# - Score candidate rules against a model's own predictions, and pick the one it follows.
# - Find the positions that carry an answer by patching tokens and computed outputs from a
#   twin prompt, and read the share of the logit difference each carries.
# - Attribute the logit difference to every latent and error node, and see where the
#   attribution sits, dictionary by dictionary and position by position.
# - Build the smallest faithful circuit along an attribution ranking, validate it against
#   random and latent-only circuits, and find which of its components it cannot lose.
# - Set apart dense latents that fire everywhere, and name the key latents of a circuit.
# - Put it all into one function that finds a task's circuit from its seed alone.
#
# *If you read one thing:* section 6, what is graded and how.
#
# **The rules of the hunt.** `utils/hunt/README.md`, `utils/hunt/planted.py`,
# `utils/hunt/truth.py` and `utils/hunt/artifacts/truth.json` are the answer key: read them
# after you have handed in. The grader flags code that reads them.

# %% tags=["module"]
from collections.abc import Callable, Collection, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.backends import Backend
from utils.circuits import NodeBaseline, mean_baseline, node_attribution, rank_nodes
from utils.course.checking import earlier
from utils.hunt import HuntSubmission, hunt_prompts, rule_answers, rule_menu
from utils.nodes import Node
from utils.toy.generator import TaskBatch

logit_diff = earlier("ch01_attribution", "logit_diff")  # chapter 01's metric: yours once its check passed, else the reference
ablate_nodes = earlier("ch02_error_nodes", "ablate_nodes")  # chapter 02's ablation of node sets

TOKENS = ["blocks.0.hook_resid_pre"]  # the token (and position) embedding: what a position reads in
COMPUTED = ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
TOKEN_SHARE, COMPUTED_SHARE = 0.05, 0.1  # a position carries the answer when patching it moves this share
TARGET = 0.8  # the faithfulness a circuit must reach
SIZES = (50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000)  # circuit sizes tried, in order
DENSE = 0.2  # a latent firing on more than this share of all tokens is dense: no key latent
N_KEY = 5  # key latents handed in


def answer_ids(model: HookedSAETransformer, answers: list[list[str | None]]) -> Int[Tensor, "rule batch"]:
    """Token ids of ``rule_answers``' words; -1 where a rule gives no word."""
    vocab = model.tokenizer.get_vocab()
    return torch.tensor([[vocab[word] if word in vocab else -1 for word in row] for row in answers])


def faithfulness_of(model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch,
                    baseline: NodeBaseline) -> Callable[[Collection[Node]], float]:
    """C -> F(C) = (m(C) - m(empty)) / (m(M) - m(empty)), chapter 02's faithfulness with its
    ``ablate_nodes``, m(M) and m(empty) computed once for the batch."""
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, batch.tokens, batch.answer_ids, batch.distractor_ids, nodes,
                            baseline, complement).mean().item()

    whole, empty = m([], complement=False), m([], complement=True)
    return lambda circuit: (m(circuit, complement=True) - empty) / (whole - empty)


# %%
import random

import plotly.graph_objects as go

from utils.backends import load_backend
from utils.course.checking import checked

completeness = earlier("ch02_error_nodes", "completeness")
from utils.hunt import hunt_seed, hunt_task, pool_size
from utils.views import FIGURE_STYLE

_ = torch.set_grad_enabled(False)  # node_attribution turns gradients on where it needs them

# %% [markdown]
# ## 0. Your seed
#
# Write your name (or student id) below: it draws your seed, one of 0–8, and your seed
# draws your task and the layout of its prompts. Seeds that follow each other draw
# different tasks, so an instructor can hand out seeds instead (set `HUNT_SEED` yourself).
# Everything below runs on `HUNT_SEED`.

# %%
LEARNER = "your name"  # your name or student id
HUNT_SEED = hunt_seed(LEARNER)  # or the seed your instructor gave you (0-8)
print(f"hunt seed {HUNT_SEED}: task {hunt_task(HUNT_SEED)}")

# %% [markdown]
# The hunt model and its dictionaries load like the organism's (just run). Its world knows
# the organism's labels only, and the prompts of your task come with their labels hidden.

# %%
bk = load_backend("hunt")
model, dictionaries = bk.model, list(bk.dictionaries.values())
batch = hunt_prompts(HUNT_SEED, 64)  # your 64 prompts, each with a twin of the same layout
reference = hunt_prompts(HUNT_SEED, 64, split="baseline")  # 64 more of the same layout, for means
n_pos = batch.tokens.shape[1]
words = ["<bos>", *batch.prompts[0].split()]
print(f"{len(batch.prompts)} prompts of {n_pos} tokens; the labels are {batch.labels!r}")
for prompt, twin, answer, distractor in list(zip(batch.prompts, batch.corrupted, batch.answers, batch.distractors))[:4]:
    print(f"  {prompt!r} -> {answer!r}    twin: {twin!r} -> {distractor!r}")

# %% [markdown]
# ## 1. What the model predicts
#
# First, behaviour: what does the model say at the last position, and which rule explains
# it? The prompts above show the answer the generator wrote, but the circuit to find is the
# *model's*, so score rules against the model's own top predictions. The menu below holds
# five candidate rules; `rule_answers` says what each gives on each prompt (a word, or None
# where it gives none). A rule that reads well off the prompts' surface is not yet a rule
# the model follows.

# %%
menu = rule_menu(HUNT_SEED)
top = model(batch.tokens)[:, -1].softmax(-1).max(-1)  # the model's top prediction and its probability
predicted = model.to_str_tokens(top.indices)
hits = int((top.indices == batch.answer_ids).sum())
print(f"the model's top prediction is the generator's answer on {hits} of the {len(top.indices)} prompts; "
      f"its mean probability {top.values.mean():.2f}")
for i, rule in enumerate(menu):
    print(f"rule {i}: {rule}")

# %% [markdown] exercise="rule_agreement" title="Score each rule against the model's predictions" difficulty=1 importance=4 minutes=10
# With $\hat y_b = \arg\max_v \mathrm{logits}[b, -1, v]$ the model's top prediction on prompt
# $b$ and $a_{r,b}$ the token id rule $r$ gives for it (`rule_ids[r, b]`, -1 where the rule
# gives no word), return for every rule the share of *all* prompts on which it gives the
# model's prediction:
#
# $$\mathrm{fit}_r = \frac{1}{B} \sum_b [\, a_{r,b} = \hat y_b \,].$$

# %%
def rule_agreement(model: HookedSAETransformer, tokens: Int[Tensor, "batch pos"],
                   rule_ids: Int[Tensor, "rule batch"]) -> Float[Tensor, " rule"]:
    """fit[r] = mean_b [rule_ids[r, b] == argmax_v logits[b, -1, v]] (a rule's -1 never fits)."""
    ### BEGIN SOLUTION
    top = model(tokens)[:, -1].argmax(-1)  # [batch]
    return (rule_ids == top).float().mean(-1)
    ### END SOLUTION

# %% [markdown] hint="rule_agreement"
# `model(tokens)[:, -1].argmax(-1)` is the top prediction of every prompt, `[batch]`;
# comparing it with `rule_ids` (`[rule, batch]`) broadcasts. Divide by the number of prompts,
# not by the number of prompts where the rule gives a word: a rule that is silent on a
# prompt does not explain it.

# %% [markdown]
# Every rule of the menu, scored on your 64 prompts:

# %%
fits = checked(rule_agreement)(model, batch.tokens, answer_ids(model, rule_answers(HUNT_SEED, batch.prompts)))
for rule, fit in sorted(zip(menu, fits.tolist()), key=lambda item: -item[1]):
    print(f"{fit:>5.2f}  {rule}")
chosen_rule = menu[int(fits.argmax())]

# %% [markdown]
# One rule fits every prompt (or nearly), and the next best fits far fewer: that rule is
# what the model does. A decoy can fit a good share of prompts by chance, which is why you
# score rules on many prompts and not on the first few you read.

# %% [markdown]
# ## 2. Localise by patching
#
# Each prompt has a *twin* of the same layout whose answer is the prompt's distractor (the
# twins are fresh prompts, not minimal edits: a minimal edit would point at the answer). As
# in chapter 01, patch an activation at one position from the twin's run into the prompt's
# and read the logit difference $m$ = logit(answer) − logit(distractor). Its *share*
#
# $$s(p) = \frac{\bar m_{\text{clean}} - \bar m_{\text{patched at } p}}{\bar m_{\text{clean}} - \bar m_{\text{twin}}}$$
#
# (means over prompts, $\bar m_{\text{twin}}$ scored with the prompt's answer and distractor)
# is 1 when that position alone turns the answer into the twin's, 0 when it changes nothing.
# Patch the *tokens* (`blocks.0.hook_resid_pre`, what a position reads in) to find the
# positions whose token decides the answer, and everything the layers *compute* at a
# position (both attention and both MLP outputs at once) to find where it is worked out.

# %% [markdown] exercise="patch_positions" title="Measure the share each position carries" difficulty=2 importance=5 minutes=20
# For every position $p$, patch the activations at *all* of `hooks` at position $p$ (every
# prompt at once, each from its own twin) and return $s(p)$ as above, `[pos]`. One forward
# pass per position; the twin's activations come from one cached run of
# `batch.corrupted_tokens`.

# %%
def patch_positions(model: HookedSAETransformer, batch: TaskBatch, hooks: Sequence[str]) -> Float[Tensor, " pos"]:
    """s[p] = (mean m_clean - mean m_patched(p)) / (mean m_clean - mean m_twin), every hook of `hooks`
    patched at position p from the twin; m = logit(answer) - logit(distractor) at the last position."""
    ### BEGIN SOLUTION
    def metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        return logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean()

    twin_logits, twin = model.run_with_cache(batch.corrupted_tokens, names_filter=list(hooks))
    clean, corrupted = metric(model(batch.tokens)), metric(twin_logits)
    shares = []
    for pos in range(batch.tokens.shape[1]):
        def patch(x: Tensor, hook: HookPoint, pos: int = pos) -> Tensor:
            x = x.clone()
            x[:, pos] = twin[hook.name][:, pos]  # every trailing dim (d_model, or heads and d_head)
            return x

        patched = metric(model.run_with_hooks(batch.tokens, fwd_hooks=[(name, patch) for name in hooks]))
        shares.append((clean - patched) / (clean - corrupted))
    return torch.stack(shares)
    ### END SOLUTION

# %% [markdown] hint="patch_positions"
# `twin_logits, twin = model.run_with_cache(batch.corrupted_tokens, names_filter=list(hooks))`
# gives the twin's metric and its activations. In the patching hook, clone the activation
# and write `twin[hook.name][:, pos]` into position `pos`; pass one `(name, hook)` pair per
# hook to `model.run_with_hooks`.

# %% [markdown] hint="patch_positions"
# Average the metric over prompts *before* taking the ratio: a prompt whose twin barely
# moves the metric would otherwise weigh as much as any other, divided by almost nothing.

# %% [markdown]
# Both on your prompts, position by position (the words are those of your first prompt):

# %%
patch = checked(patch_positions)
token_share, computed_share = patch(model, batch, TOKENS), patch(model, batch, COMPUTED)
print(f"{'pos':>4} {'word':>10} {'tokens':>7} {'computed':>9}")
for pos in range(n_pos):
    print(f"{pos:>4} {words[pos]:>10} {token_share[pos].item():>7.2f} {computed_share[pos].item():>9.2f}")
positions = [p for p in range(n_pos)
             if token_share[p].abs() >= TOKEN_SHARE or computed_share[p].abs() >= COMPUTED_SHARE]
print("positions that carry the answer:", positions, "| computed at:",
      [p for p in range(n_pos) if computed_share[p].abs() >= COMPUTED_SHARE])

# %% [markdown]
# A few token positions decide the answer, and what is computed from them matters at the
# last position only: layer-0 attention reads the deciding tokens there. That has a
# consequence for circuits of dictionary nodes: their nodes all sit where something is
# written *into* a dictionary, and the token embeddings are not dictionary nodes (chapter 05
# adds them). So expect your circuit at the last position, and your positions to name the
# tokens it reads as well.

# %% [markdown]
# ## 3. Attribute
#
# Next, which nodes. As in chapters 02 and 03, attribute the logit difference to every
# latent and every error node of all six dictionaries at every position, in one forward and
# one backward pass (`utils.circuits.node_attribution`), with each node's baseline its mean
# at that position over the 64 other prompts of your layout (`reference`). Averaged over
# prompts, that is one number per node: the estimated change of $m$ when that node alone is
# mean-ablated.

# %% [markdown] exercise="attribution_map" title="Map the attribution by dictionary and position" difficulty=2 importance=4 minutes=15
# Attribute $m$ (chapter 01's `logit_diff`) to every node with `node_attribution` and
# `baseline`, average over prompts, and return for each dictionary $d$ (in the order of
# `dictionaries`) and position $p$ the share of all attribution that sits there:
#
# $$A[d, p] = \frac{\sum_i |\bar a_{d,p,i}|}{\sum_{d',p',i} |\bar a_{d',p',i}|},$$
#
# $\bar a_{d,p,i}$ the attribution of node $i$ (latents and the error node) averaged over
# prompts.

# %%
def attribution_map(model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch,
                    baseline: NodeBaseline) -> Float[Tensor, "dictionary pos"]:
    """A[d, p] = sum_i |mean_b attr[d][b, p, i]| / sum over every node, error nodes included."""
    ### BEGIN SOLUTION
    attribution = node_attribution(model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), baseline)
    mass = torch.stack([attribution[sae.cfg.metadata.hook_name].mean(0).abs().sum(-1) for sae in dictionaries])
    return mass / mass.sum()  # [dictionary, pos]
    ### END SOLUTION

# %% [markdown] hint="attribution_map"
# `node_attribution(...)` returns, per dictionary keyed by the hook it reads
# (`sae.cfg.metadata.hook_name`), `[batch, pos, d_sae + 1]`: the latents, then the error
# node. Average over the batch first, then take absolute values: attribution that changes
# sign from prompt to prompt averages out, as it does in the ranking.

# %%
means = mean_baseline(model, dictionaries, reference.tokens)
where = checked(attribution_map)(model, dictionaries, batch, means)
names = [f"{kind}{layer}" for kind, layer in bk.dictionaries]
print(f"share of the attribution at the last position: {where[:, -1].sum():.2f}; elsewhere, the largest: "
      f"{where[:, :-1].max():.3f}")
print("at the last position, by dictionary:", ", ".join(f"{n} {v:.2f}" for n, v in zip(names, where[:, -1].tolist())))

# %%
# NBVAL_IGNORE_OUTPUT
go.Figure(go.Heatmap(z=where.numpy(), x=[f"{p} {w}" for p, w in enumerate(words)], y=names, colorscale="Blues",
                     hovertemplate="%{y} at %{x}: %{z:.3f} of the attribution<extra></extra>"),
          layout=dict(title="Where the attribution sits (share of the total, error nodes included)",
                      xaxis_title="position and word of your first prompt", **FIGURE_STYLE))

# %% [markdown]
# Attribution agrees with patching: most of it sits at the last position, spread over the
# dictionaries there. How much of it is on error nodes?

# %%
attribution = node_attribution(model, dictionaries, batch.tokens,
                               lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
scores = {hook: a.mean(0) for hook, a in attribution.items()}  # [pos, d_sae + 1] per dictionary
ranking = rank_nodes(scores, dictionaries)  # every latent and error node, largest |attribution| first
error_mass = sum(s[:, -1].abs().sum() for s in scores.values()) / sum(s.abs().sum() for s in scores.values())
print(f"{len(ranking)} nodes ranked; {error_mass:.2f} of the attribution is on the "
      f"{sum(s.shape[0] for s in scores.values())} error nodes; among the top 50 nodes, "
      f"{sum(n.is_error for n in ranking[:50])} are error nodes")

# %% [markdown]
# ## 4. Build and validate the circuit
#
# A circuit is a prefix of the ranking: the $n$ nodes with the largest attribution. Which
# $n$? The smallest whose faithfulness (chapter 02: every node outside the circuit
# mean-ablated) reaches a target, 0.8 here. Faithfulness is not monotone in $n$, so try the
# sizes in order and stop at the first that reaches it. `faithfulness_of(model,
# dictionaries, batch, means)` (defined above, with chapter 02's `ablate_nodes`) returns a
# function $C \mapsto F(C)$ with $m(M)$ and $m(\emptyset)$ computed once.

# %% [markdown] exercise="smallest_faithful_circuit" title="Find the smallest faithful circuit on a size grid" difficulty=1 importance=4 minutes=10
# Try `sizes` in order; return the first prefix `ranking[:n]` whose faithfulness reaches
# `target` ($F \ge$ `target`), with its faithfulness. When no size reaches it, return the
# prefix of the last size and its faithfulness.

# %%
def smallest_faithful_circuit(faithfulness: Callable[[Sequence[Node]], float], ranking: Sequence[Node],
                              target: float, sizes: Sequence[int]) -> tuple[list[Node], float]:
    """(ranking[:n], F(ranking[:n])) for the first n of `sizes` with F >= target, else the last n."""
    ### BEGIN SOLUTION
    for size in sizes:
        f = faithfulness(ranking[:size])
        if f >= target:
            return list(ranking[:size]), f
    return list(ranking[:sizes[-1]]), f
    ### END SOLUTION

# %% [markdown] hint="smallest_faithful_circuit"
# One loop over `sizes` with an early `return`; keep error nodes in the ranking (they are
# nodes like the latents), and compare with `>=`: a circuit that reaches the target exactly
# reaches it.

# %%
faithful = faithfulness_of(model, dictionaries, batch, means)
circuit, f = checked(smallest_faithful_circuit)(faithful, ranking, TARGET, [s for s in SIZES if s <= len(ranking)])
c = completeness(model, dictionaries, circuit, batch.tokens, batch.answer_ids, batch.distractor_ids, means)
print(f"circuit: {len(circuit)} nodes ({sum(n.is_error for n in circuit)} error nodes) of {len(ranking)}, "
      f"faithfulness {f:.2f}, completeness {c:.2f}")

# %% [markdown]
# Is that more than any set of that many nodes would do? Two controls: circuits of the same
# size drawn at random from every node at the circuit's positions, and the same number of
# the best-ranked *latents*, without error nodes.

# %%
rng = random.Random(HUNT_SEED)
same_positions = [n for n in ranking if n.pos in {m.pos for m in circuit}]
random_f = [faithful(rng.sample(same_positions, len(circuit))) for _ in range(5)]
latents_only = [n for n in ranking if not n.is_error][:len(circuit)]
print(f"random circuits of {len(circuit)} nodes at the same positions: F between {min(random_f):.2f} and "
      f"{max(random_f):.2f}; the {len(circuit)} best latents without error nodes: F = {faithful(latents_only):.2f}")

# %% [markdown]
# Random nodes recover little of the behaviour: the ranking matters. Whether the error nodes
# matter depends on the task: compare the latent-only faithfulness with the circuit's.
# Which parts of the circuit can it not lose? Group its nodes into *components*: a
# dictionary at a position, $(\text{kind}, \text{layer}, \text{pos})$.

# %% [markdown] exercise="leave_one_out" title="Find the components a circuit cannot lose" difficulty=2 importance=4 minutes=15
# For every component $g = (\text{kind}, \text{layer}, \text{pos})$ that holds at least one
# node of `circuit`, return the faithfulness lost when the circuit drops all its nodes of
# that component (latents and error node alike), keyed by `(node.kind, node.layer,
# node.pos)`:
#
# $$L(g) = F(C) - F(C \setminus g).$$

# %%
def leave_one_out(faithfulness: Callable[[Sequence[Node]], float],
                  circuit: Sequence[Node]) -> dict[tuple[str, int, int], float]:
    """{g: F(C) - F(C without the nodes of component g)} for every component g = (kind, layer, pos) of C."""
    ### BEGIN SOLUTION
    full = faithfulness(circuit)
    components = sorted({(n.kind, n.layer, n.pos) for n in circuit})
    return {g: full - faithfulness([n for n in circuit if (n.kind, n.layer, n.pos) != g]) for g in components}
    ### END SOLUTION

# %% [markdown] hint="leave_one_out"
# Compute $F(C)$ once. For each component, keep the nodes whose `(n.kind, n.layer, n.pos)`
# differs from it (its error node goes too) and subtract that circuit's faithfulness.

# %%
lost = checked(leave_one_out)(faithful, circuit)
required = {g: v for g, v in lost.items() if v >= 0.1}
print(f"{len(lost)} components; those whose loss costs at least 0.1 of faithfulness:")
for (kind, layer, pos), value in sorted(required.items(), key=lambda item: -item[1]):
    print(f"  {kind}{layer} at position {pos} ({words[pos]!r}): {value:.2f}")
print("the others cost at most", f"{max([v for g, v in lost.items() if g not in required], default=0.0):.2f}")

# %% [markdown]
# Not every dictionary at the last position is needed: which ones are, and which are not,
# is part of what tells the three tasks apart (look for the attention SAEs of each layer).

# %% [markdown]
# ## 5. Label the key latents
#
# The circuit's best-ranked latents are candidates for a story. Before telling one, ask of
# each how *specific* it is: a latent that fires on a large share of all tokens (a comma
# detector, a "the" detector) can carry attribution on your prompts without saying anything
# about the task. Measure how often each latent fires on ordinary text of the hunt model's
# language.

# %% [markdown] exercise="firing_frequency" title="Measure how often each latent fires" difficulty=1 importance=3 minutes=10
# Encode what `dictionary` reads (its `cfg.metadata.hook_name`; a transcoder reads the MLP's
# input) on `tokens` and return, per latent, the share of tokens on which it is active
# ($f_i > 0$), BOS left out: `[d_sae]`.

# %%
def firing_frequency(model: HookedSAETransformer, dictionary: SAE,
                     tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " d_sae"]:
    """freq[i] = mean over (b, p >= 1) of [f_i(x[b, p]) > 0], x read at cfg.metadata.hook_name."""
    ### BEGIN SOLUTION
    hook = dictionary.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return (dictionary.encode(cache[hook])[:, 1:] > 0).float().mean((0, 1))
    ### END SOLUTION

# %% [markdown] hint="firing_frequency"
# `model.run_with_cache(tokens, names_filter=hook)` then `dictionary.encode(cache[hook])`
# gives `[batch, pos, d_sae]`; drop position 0 (BOS, where every prompt looks the same) and
# average `(acts > 0).float()` over batch and position.

# %% [markdown]
# The circuit's 12 best-ranked latents, with how often each fires on 64 sequences of the
# hunt corpus, the label the explanation table gives it (the organism's labels only: none
# describes your task) and its strongest context there:

# %%
corpus = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
frequency = {key: checked(firing_frequency)(model, sae, corpus) for key, sae in bk.dictionaries.items()}
table_name = {"resid_sae": "blocks.{}.hook_resid_post", "attn_sae": "blocks.{}.attn.hook_z", "transcoder": "transcoder.{}"}
candidates = [n for n in circuit if not n.is_error][:12]
for node in candidates:
    row = bk.explanations.lookup(table_name[node.kind].format(node.layer), int(node.index))
    dense = "  DENSE" if frequency[node.kind, node.layer][node.index] >= DENSE else ""
    print(f"{str(node):>20}  fires on {frequency[node.kind, node.layer][node.index].item():.2f}{dense:<7} "
          f"table: {row['label']} (AUROC {row['auroc']:.2f}, frequency {row['frequency']:.2f})  {row['top_contexts'][0]!r}")
key_latents = [n for n in circuit if not n.is_error and frequency[n.kind, n.layer][n.index] < DENSE][:N_KEY]
print("key latents:", ", ".join(map(str, key_latents)))

# %% [markdown]
# Your frequencies agree with the explanation table's column (both count active tokens). A
# latent marked DENSE fires on more than a fifth of all tokens: keep it in the circuit if
# the circuit needs it, but do not call it a key latent of the task. The table's labels are
# the organism's, so they name what a latent also does elsewhere, not what it does here;
# the contexts, read with your rule in mind, say more.

# %% [markdown]
# ## 6. Hand in
#
# Your finding goes in as a `HuntSubmission` (from `utils.hunt`):
#
# - `rule`: one line of `rule_menu(seed)`, verbatim;
# - `positions`: the token positions (BOS at 0) that carry the answer;
# - `circuit`: your circuit's nodes, a list of `Node(kind, layer, pos, index)`;
# - `faithfulness`: its faithfulness as you measured it;
# - `key_latents`: at most five latents of the circuit, the most important first, none dense.
#
# The check calls `hunt_submission(bk, HUNT_SEED)` and grades it on prompts of its own
# (64 of your layout, means over 64 more):
#
# | part | graded | passes at |
# |---|---|---|
# | rule | the planted rule | right |
# | positions | precision and recall against the planted labels | both ≥ 0.8 |
# | circuit | faithfulness *recomputed* by the course; completeness; your claim against the recomputed value; node precision (share of your nodes the task uses) and recall (share of the planted circuit's attribution you hold) | F ≥ 0.7, completeness ≤ 0.25, claim within 0.1, precision ≥ 0.4, recall ≥ 0.6 |
# | key latents | none dense (fires on > 25% of tokens), each among the nodes the task uses | all |
#
# The grader then calls it again with a seed of its own (one of 0–8, any task). So write
# the *method*: everything from the seed, with the functions of this chapter (yours) and
# of the earlier chapters, nothing typed in from your notebook's outputs.

# %% [markdown] exercise="hunt_submission" title="Hunt down a task's circuit from its seed alone" difficulty=4 importance=5 minutes=45 check_args="HUNT_SEED"
# Return a `HuntSubmission` for the task `seed` draws, found with this chapter's method on
# `bk` (the check hands you its own copy of the hunt backend): the rule that fits the
# model's predictions best, the positions whose tokens or computed outputs carry at least
# `TOKEN_SHARE` or `COMPUTED_SHARE` of the logit difference, the smallest circuit on
# `SIZES` with faithfulness at least `TARGET`, its faithfulness, and its first `N_KEY`
# latents that fire on fewer than `DENSE` of corpus tokens.

# %%
def hunt_submission(bk: Backend, seed: int) -> HuntSubmission:
    """The rule, positions, circuit, faithfulness and key latents of the task `seed` draws."""
    ### BEGIN SOLUTION
    model, dictionaries = bk.model, list(bk.dictionaries.values())
    batch = hunt_prompts(seed, 64)
    means = mean_baseline(model, dictionaries, hunt_prompts(seed, 64, split="baseline").tokens)
    # 1. the rule the model's predictions follow
    fits = rule_agreement(model, batch.tokens, answer_ids(model, rule_answers(seed, batch.prompts)))
    rule = rule_menu(seed)[int(fits.argmax())]
    # 2. the positions whose token, or what is computed there, carries the answer
    tokens, computed = patch_positions(model, batch, TOKENS), patch_positions(model, batch, COMPUTED)
    positions = [p for p in range(batch.tokens.shape[1])
                 if tokens[p].abs() >= TOKEN_SHARE or computed[p].abs() >= COMPUTED_SHARE]
    # 3. every node ranked by attribution, error nodes included
    attribution = node_attribution(model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
    ranking = rank_nodes({hook: a.mean(0) for hook, a in attribution.items()}, dictionaries)
    # 4. the smallest faithful prefix
    faithful = faithfulness_of(model, dictionaries, batch, means)
    circuit, f = smallest_faithful_circuit(faithful, ranking, TARGET, [s for s in SIZES if s <= len(ranking)])
    # 5. key latents: the best-ranked latents of the circuit that are not dense
    corpus = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
    frequency: dict[tuple[str, int], Tensor] = {}
    key: list[Node] = []
    for node in (n for n in circuit if not n.is_error):
        if (node.kind, node.layer) not in frequency:
            frequency[node.kind, node.layer] = firing_frequency(model, bk.dictionaries[node.kind, node.layer], corpus)
        if frequency[node.kind, node.layer][node.index] < DENSE:
            key.append(node)
        if len(key) == N_KEY:
            break
    return HuntSubmission(rule=rule, positions=positions, circuit=circuit, faithfulness=f, key_latents=key)
    ### END SOLUTION

# %% [markdown] hint="hunt_submission"
# Sections 1 to 5 in order, with `seed` in place of `HUNT_SEED` and your own functions:
# `rule_agreement` on `answer_ids(model, rule_answers(seed, batch.prompts))`,
# `patch_positions` with `TOKENS` and with `COMPUTED`, `node_attribution` and `rank_nodes`
# with the mean baseline, `faithfulness_of` and `smallest_faithful_circuit`, then
# `firing_frequency` for the dictionaries of the circuit's latents.

# %% [markdown] hint="hunt_submission"
# The grader measures faithfulness on prompts you have not seen: measure yours on 64
# prompts of your own with means over 64 others, as in sections 3 and 4, and the two agree
# within a few hundredths. Leave `checked(...)` out of this function: the grader refuses it
# (it hands back the reference), and it re-runs the function on a clean copy of your code.

# %% [markdown]
# Before you hand in, run your function on the two tasks your seed did not draw: the
# grader may draw either. What it finds there (rule fit, positions, circuit size and
# faithfulness) should look like what it finds on yours.

# %%
hunt = checked(hunt_submission)
for other in (HUNT_SEED + 1, HUNT_SEED + 2):
    found = hunt(bk, other % pool_size())
    print(f"seed {other % pool_size()} ({hunt_task(other % pool_size())}): {len(found.positions)} positions, {len(found.circuit)} nodes "
          f"({sum(n.is_error for n in found.circuit)} error nodes), faithfulness {found.faithfulness:.2f}, "
          f"{len(found.key_latents)} key latents")

# %% [markdown]
# ## Summary
#
# - A blind hunt runs the course's methods in order: behaviour first (score candidate rules
#   against the model's own predictions), then positions (patch tokens, and what is computed,
#   from twin prompts), then nodes (attribution with error nodes, the smallest faithful
#   prefix), then validation (random and latent-only controls, leave-one-component-out),
#   then labels (set dense latents apart before telling a story).
# - Patching and attribution answer different questions and must agree: patching says which
#   tokens matter and where the model computes; attribution says through which dictionary
#   nodes. Where the embeddings are not nodes, a circuit of dictionary nodes sits where the
#   tokens are read, not where they are.
# - Faithfulness claimed on your own prompts holds on others only when it is measured on
#   enough of them; the grader recomputes it.
# - The grader runs your method on tasks you did not study: a method that works on one task
#   by accident fails there.
#
# **Scale-up.** This chapter has no GPT-2 cell: the hunt is graded against planted ground
# truth, which no pretrained model has. Every step of the method scales as chapters 01–05
# showed on GPT-2 small (patching, node attribution with error nodes, faithfulness); what
# does not scale is the answer key.
#
# **The answer key** is `utils/hunt/README.md`: the three tasks, their planted mechanisms as
# measured, and the reference circuits. Read it once the check has passed, and compare.
#
# **Open questions.** The circuits here sit at one position because layer-0 attention reads
# tokens straight from the embeddings: how would the grade change with embedding nodes
# (chapter 05's graphs) in the circuit? A circuit that needs its error nodes is faithful
# but leaves part of the answer unexplained: which dictionary would you retrain (chapter 06)
# to shrink them, and how would you know it worked? And a question for the grader: what is
# the fairest way to score a circuit that is faithful but shares few nodes with the
# planted one?

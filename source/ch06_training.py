# %% [markdown]
# # Chapter 06 — Training SAEs and transcoders on the model organism
#
# Every chapter so far used dictionaries that came with the model organism. This one shows
# where they come from. We train SAEs with **SAELens's own trainer**, offline on a CPU, on
# the organism's activations; judge them the way the field does (sparsity, reconstruction,
# cost to the model's loss, dead and dense latents); compare four architectures; and then
# ask the question only a planted model can answer: **did training recover the features we
# put there?** Last, we write the training loss of a transcoder ourselves, because SAELens
# runs transcoders but has no trainer for them.
#
# **Learning objectives**
# - Configure SAELens's `LanguageModelSAETrainingRunner` for a model and a dataset it has
#   never heard of (`override_model`, `override_dataset`), with nothing sent to wandb and
#   nothing written to disk.
# - Know what the sparsity knob of each architecture is: the L1 coefficient (standard), k
#   (TopK and BatchTopK), the L0 coefficient (JumpReLU).
# - Judge a trained SAE: L0, explained variance, CE-loss recovered, dead and dense latents,
#   the distribution of latent densities.
# - Read a sweep as a Pareto front of sparsity against faithfulness.
# - Grade dictionaries against planted ground truth (AUROC and precision of the best latent
#   per label), and watch features split as the dictionary grows.
# - Write a transcoder's loss and train one in a short loop.
#
# *If you read one thing:* section 5, on ground truth. A dictionary can score well on every
# reconstruction metric and still miss the features you care about.

# %% tags=["module"]
import math

import torch
from jaxtyping import Bool, Float
from sae_lens import (
    BatchTopKTrainingSAEConfig,
    HookedSAETransformer,
    JumpReLUTrainingSAEConfig,
    LoggingConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
    Transcoder,
)
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import TrainingSAEConfig
from torch import Tensor

# %%
import itertools

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from utils.backends import load_backend
from utils.course.checking import checked, earlier
from utils.toy.training import EVAL_SEEDS
from utils.views import FIGURE_STYLE, latent_name, log_ticks
from utils.training import (
    SWEEP_COMMAND,
    activation_batches,
    latent_acts,
    load_sweep,
    new_transcoder,
    recovery,
    token_dataset,
    train_sae,
)

# %% [markdown]
# ## 1. What we train on
#
# Just run. We train on the layer-0 residual stream, `blocks.0.hook_resid_post`, the input
# of layer 1: the organism has read each word and mixed in its context once. The shipped
# SAE for this hook is the yardstick throughout. The evaluation text is held out (its seeds
# never served in training), the same text the organism's own report uses.

# %%
bk = load_backend("toy")
model, world = bk.model, bk.world
HOOK = "blocks.0.hook_resid_post"
shipped = bk.saes[HOOK]
eval_corpus = world.corpus(n_seqs=128, seq_len=48, seed=EVAL_SEEDS)
print(f"{HOOK}: d_model = {model.cfg.d_model}; shipped SAE: {shipped.cfg.d_sae} latents")
print(f"evaluation text: {eval_corpus.tokens.shape[0]} sequences of {eval_corpus.tokens.shape[1]} tokens")

# %% [markdown]
# SAELens's trainer reads text from a Hugging Face `datasets.Dataset`. Ours comes from the
# generator, already tokenized: one column, `tokens`, one row per sequence, BOS first.
# SAELens feeds a pre-tokenized row to the model as it is, so the BOS we put there is the
# only one.

# %%
train_data = token_dataset(world, n_seqs=3000, seq_len=48, seed=30_000)
print(train_data)
print(model.to_string(torch.tensor(train_data[0]["tokens"][:14])))

# %% [markdown]
# ## 2. Configuring SAELens's trainer
#
# A training run in SAELens is two configs. The *SAE config* says what is trained: its
# architecture, its size, and the knob that trades sparsity against reconstruction. The
# *runner config* says how: which hook, how many tokens, what learning rate, where
# activations come from and where results go.
#
# Four architectures, four knobs. Each encodes $f(x) = \sigma(W_{enc}^\top x + b_{enc})$ and
# decodes $\hat x = W_{dec}^\top f + b_{dec}$; they differ in $\sigma$ and in how sparsity is
# asked for:
#
# | architecture | $\sigma$ | training loss | knob |
# |---|---|---|---|
# | standard | ReLU | $\lVert x-\hat x\rVert^2 + \lambda \sum_i f_i \lVert W_{dec,i}\rVert$ | L1 coefficient $\lambda$ (higher: sparser) |
# | TopK | keep the $k$ largest pre-activations per token | $\lVert x-\hat x\rVert^2$ (+ an auxiliary loss that revives dead latents) | $k$ = the L0 of every token |
# | BatchTopK | keep the $k \times$ batch largest over the whole batch | as TopK; at inference a learned threshold replaces the batch | $k$ = the *mean* L0 |
# | JumpReLU | $z\,\mathbb{1}[z > \theta_i]$, a learned threshold per latent | $\lVert x-\hat x\rVert^2 + \lambda_0 \sum_i \mathbb{1}[f_i > 0]$ (a smoothed step) | L0 coefficient $\lambda_0$ |
#
# The L1 and L0 coefficients are only meaningful relative to the size of the input: we let
# SAELens rescale activations to mean norm $\sqrt{d_{in}}$ during training
# (`normalize_activations="expected_average_only_in"`) and fold the scale back into the
# weights afterwards, so one range of coefficients fits any hook.

# %% [markdown] exercise="sae_training_config" title="Pick each architecture's training config and knob" difficulty=1 importance=4 minutes=10
# Return SAELens's *training* config for `architecture` (`"standard"`, `"topk"`,
# `"batchtopk"` or `"jumprelu"`), with `d_in` inputs, `d_sae` latents, inputs normalised to
# mean norm $\sqrt{d_{in}}$ (`normalize_activations="expected_average_only_in"`), and
# `sparsity` given to the architecture's knob: `l1_coefficient`, `k` (a whole number for
# TopK), `k` (BatchTopK takes a mean, a float), `l0_coefficient`. Leave every other field at
# its default. Raise a `ValueError` naming the four choices for any other architecture.

# %%
def sae_training_config(architecture: str, d_in: int, d_sae: int, sparsity: float) -> TrainingSAEConfig:
    """The SAELens training config of ``architecture`` with ``sparsity`` as its knob:
    standard -> l1_coefficient, topk -> k (int), batchtopk -> k (mean L0), jumprelu -> l0_coefficient."""
    ### BEGIN SOLUTION
    shape = dict(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    if architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=sparsity, **shape)
    if architecture == "topk":
        return TopKTrainingSAEConfig(k=round(sparsity), **shape)
    if architecture == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=float(sparsity), **shape)
    if architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=sparsity, **shape)
    raise ValueError(f"unknown architecture {architecture!r}: expected standard, topk, batchtopk or jumprelu")
    ### END SOLUTION

# %% [markdown] hint="sae_training_config"
# The four classes are `StandardTrainingSAEConfig`, `TopKTrainingSAEConfig`,
# `BatchTopKTrainingSAEConfig` and `JumpReLUTrainingSAEConfig` (all importable from
# `sae_lens`). Their inference twins (`StandardSAEConfig`, ...) have no sparsity knob: the
# trainer needs the training classes.

# %% [markdown] hint="sae_training_config"
# Which field holds the knob? Look at each class's dataclass fields, e.g.
# `[f.name for f in dataclasses.fields(JumpReLUTrainingSAEConfig)]`. JumpReLU's
# `jumprelu_init_threshold` is only where its thresholds start.

# %% [markdown] exercise="runner_config" title="Configure SAELens's training runner for the organism" difficulty=2 importance=5 minutes=20
# Build the `LanguageModelSAERunnerConfig` that trains `sae_cfg` on `model`'s activations at
# `hook_name`, reading a pre-tokenized dataset of `context_size`-token rows (we hand the
# dataset and the model to the runner ourselves). Set:
#
# - `sae`, `hook_name`, `context_size`;
# - `training_tokens` for `steps` steps of `batch_tokens` tokens, and
#   `train_batch_size_tokens`;
# - learning rate `lr`, warmed up linearly over the first `steps // 20` steps and decayed
#   linearly to zero over the last `steps // 5` (`lr_warm_up_steps`, `lr_decay_steps`:
#   both count *steps*, not tokens);
# - an activation buffer, `n_batches_in_buffer` $\times$ `context_size` tokens in SAELens,
#   of at least two training batches (the fewest rows that do);
# - the activation norm estimated from `n_batches_for_norm_estimate=10` batches (the
#   default, 1,000, would read more text than the whole run);
# - BOS left out of training (`exclude_special_tokens`, the model's `tokenizer.bos_token_id`):
#   it is the same token at the same place in every row, with an outsized norm;
# - `device` the model's (`model.cfg.device`, as a string);
# - nothing sent to wandb (`logger=LoggingConfig(log_to_wandb=False)`) and nothing written to
#   disk (`checkpoint_path=None`, `output_path=None`).

# %%
def runner_config(
    model: HookedSAETransformer,
    sae_cfg: TrainingSAEConfig,
    hook_name: str,
    context_size: int,
    steps: int,
    batch_tokens: int,
    lr: float = 3e-3,
) -> LanguageModelSAERunnerConfig:
    """training_tokens = steps * batch_tokens; buffer rows n = ceil(2 * batch_tokens / context_size);
    warm-up steps // 20, decay steps // 5; BOS excluded; no wandb, no files."""
    ### BEGIN SOLUTION
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        hook_name=hook_name,
        context_size=context_size,
        training_tokens=steps * batch_tokens,
        train_batch_size_tokens=batch_tokens,
        lr=lr,
        lr_warm_up_steps=steps // 20,
        lr_decay_steps=steps // 5,
        n_batches_in_buffer=math.ceil(2 * batch_tokens / context_size),
        n_batches_for_norm_estimate=10,
        exclude_special_tokens=[model.tokenizer.bos_token_id],
        device=str(model.cfg.device),
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
    )
    ### END SOLUTION

# %% [markdown] hint="runner_config"
# `training_tokens` counts tokens: `steps * batch_tokens`. The learning-rate schedule counts
# steps. A buffer of `n` rows holds `n * context_size` tokens; two batches need
# `n >= 2 * batch_tokens / context_size`, so `n = math.ceil(2 * batch_tokens / context_size)`.

# %% [markdown] hint="runner_config"
# SAELens's defaults are made for a GPU run of hundreds of millions of tokens with wandb
# watching: `log_to_wandb=True`, `output_path="output"`, `n_batches_in_buffer=20`,
# `n_batches_for_norm_estimate=1000`, `exclude_special_tokens=False`. Each needs changing
# here.

# %% [markdown]
# ## 3. Training an SAE with SAELens
#
# Now the runner itself. `train_sae` (in `utils.training`) calls
# `LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=train_data).run()`,
# seeds torch first (the runner does not), records the loss terms SAELens computes at every
# step, and converts the trained SAE into the inference class SAELens would save. A standard
# (L1) SAE of 256 latents, 120 steps of 1,024 tokens: a short run, well under a minute on a
# laptop. Run it and watch the progress bar.

# %%
# NBVAL_IGNORE_OUTPUT
LIVE = dict(architecture="standard", d_sae=256, sparsity=1.0, steps=120, batch_tokens=1024)
live_sae_cfg = checked(sae_training_config)(LIVE["architecture"], model.cfg.d_model, LIVE["d_sae"], LIVE["sparsity"])
live_cfg = checked(runner_config)(model, live_sae_cfg, HOOK, context_size=48, steps=LIVE["steps"],
                                  batch_tokens=LIVE["batch_tokens"])
live = train_sae(live_cfg, model, train_data, seed=0)
print(f"trained a {type(live.sae).__name__} in {live.seconds:.1f} s ({LIVE['steps']} steps of {LIVE['batch_tokens']} tokens); "
      f"SAELens's own record: mean L0 over the run {live.sae.cfg.metadata.l0:.3g}")

# %% [markdown]
# The run step by step, as `train_sae` recorded it from SAELens's `TrainStepOutput`: the
# reconstruction term (`mse_loss`), the L1 term (`l1_loss`, already times its coefficient)
# and the L0 of each training batch. Expect the reconstruction term to fall fast, and the
# L0 to be pushed down once the warm-up is over; 120 steps are too few for either to settle.
# (This run and the figures below it vary a little from machine to machine: float noise
# grows over training steps.)

# %%
# NBVAL_IGNORE_OUTPUT
fig = make_subplots(rows=1, cols=2, subplot_titles=("loss terms", "L0 of each training batch"))
for term, values in live.history.items():
    if term != "l0":
        fig.add_scatter(y=values, name=term, row=1, col=1)
fig.add_scatter(y=live.history["l0"], name="L0", row=1, col=2)
fig.update_xaxes(title_text="training step")
fig.update_yaxes(title_text="loss (normalised inputs)", row=1, col=1)
fig.update_yaxes(title_text="active latents per token", row=1, col=2)
fig.update_layout(title=f"SAELens training run: standard SAE on {HOOK}", height=380, **FIGURE_STYLE)

# %% [markdown]
# The same run in numbers. The exact values vary from machine to machine, so the checked
# lines below it only state what the text claims, with a wide margin.

# %%
# NBVAL_IGNORE_OUTPUT
h = live.history
print(f"reconstruction term: {h['mse_loss'][0]:.3g} at step 0, {h['mse_loss'][-1]:.3g} at step {len(h['l0']) - 1}")
print(f"L0 of a training batch: {h['l0'][0]:.3g} at step 0, at most {max(h['l0']):.3g} (step {h['l0'].index(max(h['l0']))}), "
      f"{h['l0'][-1]:.3g} at the last step")

# %%
print("reconstruction term fell at least five-fold:", h["mse_loss"][-1] < h["mse_loss"][0] / 5)
print("L0 of the last batch is under half its peak:", h["l0"][-1] < max(h["l0"]) / 2)

# %% [markdown]
# ## 4. Judging a trained SAE
#
# Chapter 00's `reconstruction_metrics` gives L0, explained variance and CE-loss recovered.
# The shipped SAE trained on 2,000 steps of 3,072 tokens (50 times as many) with a loss
# weighted towards what the logits see (`utils/toy/README.md`); ours on 120 of 1,024.

# %%
# NBVAL_IGNORE_OUTPUT
measure = earlier("ch00_toolkit", "reconstruction_metrics")  # yours once its check passed, else the reference
metrics = {name: measure(model, sae, eval_corpus.tokens) for name, sae in [("live", live.sae), ("shipped", shipped)]}
for name, m in metrics.items():
    print(f"{name:>8}: L0 {m['l0']:.3g}, explained variance {m['explained_variance']:.3g}, "
          f"CE recovered {m['ce_recovered']:.3g} (added loss {m['ce_spliced'] - m['ce_clean']:.3g} nats)")

# %% [markdown]
# The short run is worse on every count: more latents active per token, less of the variance
# explained, more of the model's loss lost.

# %%
live_m, ship_m = metrics["live"], metrics["shipped"]
print("live SAE less sparse than the shipped one (higher L0):", live_m["l0"] > ship_m["l0"])
print("live SAE explains less variance:", live_m["explained_variance"] < ship_m["explained_variance"])
print("live SAE recovers less of the CE loss:", live_m["ce_recovered"] < ship_m["ce_recovered"])

# %% [markdown]
# Averages hide the latents that never fire (*dead*: wasted capacity) and the ones that fire
# on a large share of all tokens (*dense*: often a direction the SAE failed to split, or a
# bias it uses to reconstruct the mean). Both show in the distribution of *densities*, the
# share of tokens on which each latent is active, best read on a log scale.

# %% [markdown] exercise="density_stats" title="Find dead and dense latents" difficulty=1 importance=4 minutes=10
# From latent activations over `n` tokens, return a dict with
#
# - `"density"`: for each latent, the share of the tokens on which it is active ($f_i > 0$);
# - `"dead"`: Bool, latents active on no token;
# - `"dense"`: Bool, latents active on more than `dense_above` of the tokens.

# %%
def density_stats(acts: Float[Tensor, "n d_sae"], dense_above: float = 0.1) -> dict[str, Tensor]:
    """density_i = (1/n) sum_t 1[f_i(t) > 0]; dead_i = (density_i == 0); dense_i = (density_i > dense_above)."""
    ### BEGIN SOLUTION
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}
    ### END SOLUTION

# %% [markdown] hint="density_stats"
# `(acts > 0)` is a Bool `[n, d_sae]`; its mean over tokens (dim 0, after a cast to a float
# dtype) is the density.

# %% [markdown]
# For both SAEs on the evaluation text (BOS left out, as in training). Densities are plotted
# as $\log_{10}$; a dead latent has none, so the legend counts them apart. The dashed line
# is the dense threshold, 10% of tokens.

# %%
# NBVAL_IGNORE_OUTPUT
eval_acts = {name: latent_acts(model, sae, eval_corpus.tokens) for name, sae in [("live", live.sae), ("shipped", shipped)]}
stats_fn, fig, dense = checked(density_stats), go.Figure(), {}
for name, acts in eval_acts.items():
    stats = stats_fn(acts, dense_above=0.1)
    dense[name] = int(stats["dense"].sum())
    print(f"{name:>8}: {int(stats['dead'].sum())} dead, {int(stats['dense'].sum())} dense (> 10% of tokens) "
          f"of {acts.shape[1]} latents; median density {stats['density'].median().item():.3g}")
    alive = stats["density"][~stats["dead"]]
    fig.add_histogram(x=alive.log10().tolist(), name=f"{name} ({int(stats['dead'].sum())} dead)",
                      opacity=0.6, xbins=dict(start=-4, end=0, size=0.1))
fig.add_vline(x=-1, line_dash="dash", line_color="grey", annotation_text="dense above 10%")
fig.update_layout(barmode="overlay", title="Latent densities on held-out text",
                  xaxis_title="log10(share of tokens on which the latent is active)", yaxis_title="latents", **FIGURE_STYLE)

# %% [markdown]
# Many latents are dense even in the shipped SAE: the organism's language is small and its
# features frequent (every sentence has a name, a verb, a place). The short run has more: its
# L1 penalty has not yet had time to switch latents off.

# %%
print("live SAE has more dense latents than the shipped one:", dense["live"] > dense["shipped"])

# %% [markdown]
# ## 5. Architectures: a sweep and its Pareto front
#
# One run tells little: every architecture can be made sparser at the price of
# reconstruction. What matters is the *front*: the best faithfulness reachable at each L0.
# A sweep trains the four architectures at four settings of their knob each (256 latents,
# 2,000 steps of 1,024 tokens, on this hook), plus TopK at other widths for section 6. It
# runs SAELens's `MultiSAETrainingRunner`, which trains many SAEs on one stream of
# activations. Twenty SAEs for 2,000 steps take over an hour on one CPU thread, so its
# results are committed; this command reproduces them (`--steps 100` gives a quick, rough
# look in about five minutes):

# %%
print(SWEEP_COMMAND)
sweep = load_sweep()
runs = [r for r in sweep["runs"] if r["d_sae"] == 256]
print(f"{len(sweep['runs'])} runs, {sweep['settings']['steps']} steps of {sweep['settings']['batch_tokens']} tokens each; "
      f"evaluated on {sweep['settings']['eval_tokens']} held-out tokens; training took {sweep['seconds']['train']:.0f} s "
      f"on {sweep['settings']['torch_threads']} thread(s)")
for r in runs:
    print(f"{r['architecture']:>9} knob {r['sparsity']:<5g}: L0 {r['l0']:.3g}, explained variance {r['explained_variance']:.3g}, "
          f"CE recovered {r['ce_recovered']:.3g}, dead {r['dead']}, dense {r['dense']}")
ref = sweep["shipped"]
print(f"  shipped SAE: L0 {ref['l0']:.3g}, explained variance {ref['explained_variance']:.3g}, CE recovered {ref['ce_recovered']:.3g}")

# %% [markdown]
# Sparsity (L0, lower is sparser) against faithfulness (CE-loss recovered, higher is better):
# a better architecture sits up and to the left. Hover a point for its setting.

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure()
for arch in ("standard", "topk", "batchtopk", "jumprelu"):
    points = sorted((r for r in runs if r["architecture"] == arch), key=lambda r: r["l0"])
    fig.add_scatter(x=[r["l0"] for r in points], y=[r["ce_recovered"] for r in points], mode="lines+markers", name=arch,
                    text=[f"{arch}, knob {r['sparsity']:g}: {r['dead']} dead latents, explained variance "
                          f"{r['explained_variance']:.3g}" for r in points],
                    hovertemplate="%{text}<br>L0 %{x:.3g}, CE-loss recovered %{y:.3g}<extra></extra>")
fig.add_scatter(x=[ref["l0"]], y=[ref["ce_recovered"]], mode="markers", marker=dict(symbol="star", size=14),
                name="shipped SAE", text=["shipped SAE (weighted loss, 2,000 steps of 3,072 tokens)"],
                hovertemplate="%{text}<br>L0 %{x:.3g}, CE-loss recovered %{y:.3g}<extra></extra>")
fig.update_layout(title=f"Pareto front on {HOOK}: 256 latents, {sweep['settings']['steps']} steps",
                  xaxis_title="L0 (active latents per token, log scale)", yaxis_title="CE-loss recovered (fraction)",
                  **FIGURE_STYLE)
fig.update_xaxes(**log_ticks([r["l0"] for r in runs] + [ref["l0"]]))

# %% [markdown]
# What the knobs did, read off the table above: TopK's $k$ *is* the L0 of every token, and
# BatchTopK's mean L0 lands on its $k$ too, though single tokens vary around it. The L1 and L0
# coefficients only push: their L0 is found by training, and the same coefficient gives a
# different L0 on another hook or after longer training. Our live run used the L1
# coefficient 1 for 120 steps; the sweep's run with the same coefficient, 2,000 steps long:

# %%
long_run = next(r for r in runs if r["architecture"] == "standard" and r["sparsity"] == LIVE["sparsity"])
print(f"L1 coefficient {LIVE['sparsity']:g}, 2,000 steps: L0 {long_run['l0']:.3g}")
print("the 120-step live run ended with over 1.5 times that L0:", live_m["l0"] > 1.5 * long_run["l0"])

# %% [markdown]
# At a matched L0, the comparison between architectures is the vertical gap between their
# curves. The run of each architecture nearest L0 = 16, and the shipped SAE:

# %%
def nearest(arch: str, l0: float) -> dict:
    """The sweep run of ``arch`` (256 latents) whose L0 is closest to ``l0`` on a log scale."""
    return min((r for r in runs if r["architecture"] == arch), key=lambda r: abs(math.log(r["l0"] / l0)))


def mean_over_labels(table: dict, key: str) -> float:
    """``key`` ("auroc" or "precision") of the best latent, averaged over the labels of a
    ``recovery`` table (section 6)."""
    return sum(row[key] for row in table.values()) / len(table)


matched = {arch: nearest(arch, 16) for arch in ("standard", "topk", "batchtopk", "jumprelu")}
for arch, r in [*matched.items(), ("shipped", ref)]:
    knob = f"knob {r['sparsity']:g}" if r["sparsity"] is not None else "L1, weighted"
    print(f"{arch:>9} ({knob}): L0 {r['l0']:.3g}, CE recovered {r['ce_recovered']:.3g}, added loss {r['added_loss']:.3g} nats, "
          f"explained variance {r['explained_variance']:.3g}, mean best-latent AUROC {mean_over_labels(r['recovery'], 'auroc'):.3g}")

# %% [markdown]
# Read with the sweep table above: at L0 of 12 to 16, BatchTopK and JumpReLU lose the least
# of the model's loss (CE recovered 0.998 and 0.997) and the standard L1 SAE the most
# (0.990); TopK sits between. The price of the TopK family shows in another column: BatchTopK
# leaves 27 to 38 of its 256 latents dead at every $k$, and TopK about as many (28 and 30) at
# its two smallest $k$, where the L1 and JumpReLU SAEs have none (one at the strongest L1). And the best reconstruction is not the best ground truth: BatchTopK's
# mean best-latent AUROC is below TopK's and JumpReLU's. Section 6 looks at the labels one by
# one.

# %% [markdown]
# ## 6. Ground truth: did training find the planted features?
#
# For each planted label, the best single latent by AUROC (chapter 00's `latent_aurocs`),
# and how much of that latent's activation falls on the label: a latent with AUROC 0.99 that
# spends most of its activation elsewhere is a detector *of* the label, not a latent *for*
# it. That second number is *precision*.

# %% [markdown] exercise="label_precision" title="Measure how much of a latent's activation falls on a label" difficulty=2 importance=4 minutes=15
# For every latent, return the share of its total activation (summed over the `n` tokens)
# that falls on tokens where `labels` is true. A latent that never fires has precision 0.

# %%
def label_precision(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """precision_i = sum_t f_i(t) 1[label_t] / sum_t f_i(t), and 0 where sum_t f_i(t) = 0."""
    ### BEGIN SOLUTION
    on_label = acts[labels].sum(0)
    total = acts.sum(0)
    return torch.where(total > 0, on_label / total.clamp_min(torch.finfo(acts.dtype).tiny), 0.0)
    ### END SOLUTION

# %% [markdown] hint="label_precision"
# `acts[labels]` keeps the label's rows; sum them over tokens and divide by the sum over all
# tokens. Dividing 0 by 0 gives NaN: `torch.where(total > 0, ..., 0.0)` (and keep the
# denominator away from zero inside it, or the NaN's gradient leaks out).

# %% [markdown]
# `recovery` (in `utils.training`) puts both together: for each label, the latent with the
# best AUROC, its AUROC and its precision. The live SAE against the shipped one:

# %%
# NBVAL_IGNORE_OUTPUT
eval_labels = {name: mask[:, 1:].flatten() for name, mask in eval_corpus.labels.items()}
aurocs_fn, precision_fn = earlier("ch00_toolkit", "latent_aurocs"), checked(label_precision)
recovered = {name: recovery(acts, eval_labels, aurocs_fn, precision_fn) for name, acts in eval_acts.items()}
print(f"{'label':>17}  {'live AUROC':>10} {'precision':>9}   {'shipped AUROC':>13} {'precision':>9}")
for label in eval_labels:
    live_r, ship_r = recovered["live"][label], recovered["shipped"][label]
    print(f"{label:>17}  {live_r['auroc']:>10.3g} {live_r['precision']:>9.3g}   {ship_r['auroc']:>13.3g} {ship_r['precision']:>9.3g}")

# %% [markdown]
# Read both columns. The short run's best latents tend to score a *higher* AUROC than the
# shipped SAE's, at a *lower* precision: its latents are dense (section 4), and a latent
# that fires on most tokens can rank the label's tokens above the rest while spending most
# of its activation elsewhere. AUROC alone would flatter the worse dictionary. Averaged over
# the 16 labels:

# %%
print("live SAE: higher mean best-latent AUROC than the shipped one:",
      mean_over_labels(recovered["live"], "auroc") > mean_over_labels(recovered["shipped"], "auroc"))
print("live SAE: lower mean precision of those latents:",
      mean_over_labels(recovered["live"], "precision") < mean_over_labels(recovered["shipped"], "precision"))

# %% [markdown]
# The same grading for every run of the sweep (computed there with the reference functions on
# the same held-out text). One row per label, one column per architecture at L0 near 16, and
# the shipped SAE: the best latent's AUROC, with its precision on hover.

# %%
# NBVAL_IGNORE_OUTPUT
label_names = list(ref["recovery"])
columns = {f"{arch} (L0 {r['l0']:.3g})": r["recovery"] for arch, r in matched.items()} | {"shipped": ref["recovery"]}


def hover_name(column: str, latent: int) -> str:
    """A latent's id, with its explanation-table label for the shipped SAE (trained ones have none)."""
    return latent_name(bk, HOOK, latent) if column == "shipped" else f"#{latent}"


fig = go.Figure(go.Heatmap(
    z=[[col[label]["auroc"] for col in columns.values()] for label in label_names],
    x=list(columns), y=label_names, zmin=0.5, zmax=1.0, colorscale="Viridis", colorbar=dict(title="best AUROC"),
    text=[[f"latent {hover_name(name, col[label]['latent'])}: AUROC {col[label]['auroc']:.3g}, "
           f"precision {col[label]['precision']:.3g}" for name, col in columns.items()] for label in label_names],
    hovertemplate="%{y}, %{x}<br>%{text}<extra></extra>"))
fig.update_layout(title="Best single latent per planted label", xaxis_title="dictionary", yaxis_title="planted label",
                  height=560, **FIGURE_STYLE)

# %%
for label in label_names:
    cells = "  ".join(f"{col[label]['auroc']:.3g}/{col[label]['precision']:.3g}" for col in columns.values())
    print(f"{label:>17}: {cells}")
print("columns (AUROC/precision):", " | ".join(columns))

# %% [markdown]
# Per dictionary: how many labels get a latent with AUROC at least 0.95, how many of those
# latents also put half their activation or more on the label, and the mean precision.
# Then the labels no dictionary captures that well with one latent.

# %%
for name, col in columns.items():
    strong = [label for label in label_names if col[label]["auroc"] >= 0.95]
    precise = [label for label in strong if col[label]["precision"] >= 0.5]
    print(f"{name:>18}: {len(strong):>2} labels at AUROC >= 0.95, {len(precise):>2} of them with precision >= 0.5; "
          f"mean precision {mean_over_labels(col, 'precision'):.3g}")
print("no dictionary reaches 0.95:", ", ".join(lb for lb in label_names if all(c[lb]["auroc"] < 0.95 for c in columns.values())))

# %% [markdown]
# The weak spots are the names (`is_name`, `male_name`, `name_repeated`), `pronoun` and
# `year`: no dictionary at this size gives any of them one latent with AUROC 0.95, and most
# best AUROCs there are below 0.9, which is weak. Architectures trade the two numbers
# differently: the standard L1 SAE has the fewest labels at high AUROC (7, as many as the
# shipped SAE) but the most precise latents (narrow ones, each covering part of a label and
# little else); the TopK family's best latents are broad, with a mean precision under one
# half. JumpReLU has the most labels at high AUROC (10) and the second-highest precision. A probe on a few latents, not one, is the fairer test for the broad labels
# (chapter 00's report does this for the shipped dictionaries).

# %% [markdown]
# **Feature splitting.** Grow the dictionary at a fixed L0 (TopK, $k = 16$) and a broad
# feature can get several latents of its own, each covering part of it. Then the best single
# latent's AUROC for that label can *fall* while the number of latents devoted to it rises
# (*specialists*: active on at least 5 tokens, with precision at least 0.9). Both, per label
# and width, with the dead latents of each width:

# %%
widths = sorted((r for r in sweep["runs"] if r["architecture"] == "topk" and r["sparsity"] == 16), key=lambda r: r["d_sae"])
print(f"{'label':>17}  " + "  ".join(f"{r['d_sae']:>10}" for r in widths) + "   (best AUROC / latents with precision >= 0.9)")
for label in label_names:
    print(f"{label:>17}  " + "  ".join(f"{r['recovery'][label]['auroc']:>6.3g}/{r['recovery'][label]['specialists']:<3d}" for r in widths))
print(f"{'dead latents':>17}  " + "  ".join(f"{r['dead']:>10}" for r in widths))

# %% [markdown]
# Names split: `is_name` has no specialist at 64 latents and 36 at 1,024. From 512 latents
# on, `pronoun`, `name_repeated` and `century` get specialists too, and for `pronoun` and
# `name_repeated` the best single latent gets *worse* as they do (AUROC 0.983 and 0.916 at 64
# latents, 0.794 and 0.794 at 1,024): once a feature is split, no one latent covers it. Most
# labels keep one good latent at every width. The widest dictionaries also waste capacity:
# 374 of 1,024 latents are dead after 2,000 steps, too few to put them all to use.

# %%
# NBVAL_IGNORE_OUTPUT
# Colour for the labels that split (specialists gained from the narrowest to the widest
# dictionary, or best AUROC lost from its peak), grey for the rest: 16 colours would repeat.
def splitting(label: str) -> float:
    auroc = [r["recovery"][label]["auroc"] for r in widths]
    specialists = [r["recovery"][label]["specialists"] for r in widths]
    return max(specialists[-1] - specialists[0], 0) / 10 + (max(auroc) - auroc[-1]) * 20


split = sorted((label for label in label_names if splitting(label) >= 1), key=splitting, reverse=True)[:6]
colours = dict(zip(split, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")))
sizes = [r["d_sae"] for r in widths]
fig = make_subplots(rows=1, cols=2, subplot_titles=("best single latent (AUROC)", "latents with precision >= 0.9"))
for label in sorted(label_names, key=lambda label: label in split):  # coloured lines drawn on top
    shown = label in split or label == next(other for other in label_names if other not in split)
    name = label if label in split else f"other labels ({len(label_names) - len(split)})"
    line = dict(color=colours.get(label, "#bbbbbb"), width=2.5 if label in split else 1)
    best = [f"{label}, {r['d_sae']} latents: best latent #{r['recovery'][label]['latent']}" for r in widths]
    fig.add_scatter(x=sizes, y=[r["recovery"][label]["auroc"] for r in widths], name=name, legendgroup=name,
                    showlegend=shown, line=line, mode="lines+markers", text=best,
                    hovertemplate="%{text}, AUROC %{y:.3g}<extra></extra>", row=1, col=1)
    fig.add_scatter(x=sizes, y=[r["recovery"][label]["specialists"] for r in widths], name=name, legendgroup=name,
                    showlegend=False, line=line, mode="lines+markers", text=[f"{label}, {n} latents" for n in sizes],
                    hovertemplate="%{text}: %{y} specialists<extra></extra>", row=1, col=2)
fig.update_xaxes(title_text="latents (d_sae, log scale)", type="log", tickvals=sizes, ticktext=[str(n) for n in sizes])
fig.update_yaxes(title_text="best single latent's AUROC", row=1, col=1)
fig.update_yaxes(title_text="latents with precision >= 0.9", row=1, col=2)
fig.update_layout(title="Feature splitting: TopK (k = 16) at five widths", height=470, legend_title_text="labels that split",
                  **FIGURE_STYLE)
fig.update_layout(margin_t=90)  # the title above the two panels' own

# %% [markdown]
# ## 7. Training a transcoder
#
# A transcoder reads the MLP's input (`blocks.L.ln2.hook_normalized`) and predicts its
# output (`blocks.L.hook_mlp_out`): $\hat y = W_{dec}^\top f(x) + b_{dec}$ with
# $f(x) = \mathrm{ReLU}(W_{enc}^\top x + b_{enc})$. SAELens can splice and run one (class
# `Transcoder`) but has no trainer for it, so we write the loss and a short loop ourselves.

# %% [markdown] exercise="transcoder_loss" title="Write a transcoder's training loss" difficulty=2 importance=5 minutes=20
# For a batch of MLP inputs `x` and outputs `y`, return a dict of three scalars:
#
# - `"mse"`: the squared error of the prediction, summed over output dimensions and averaged
#   over tokens, $\frac1n\sum_t \lVert \hat y_t - y_t\rVert^2$;
# - `"sparsity"`: the decoder-norm-weighted L1 of the latents, averaged over tokens,
#   $\frac1n \sum_t \sum_i f_i(x_t)\,\lVert W_{dec,i}\rVert$ (weighting by the decoder norm
#   stops the optimiser from shrinking $f$ while growing $W_{dec}$);
# - `"loss"`: `mse + l1_coefficient * sparsity`.
#
# The loss must be differentiable with respect to the transcoder's parameters (a training
# loop calls `backward()` on it). Use the transcoder's own `encode` and `decode`.

# %%
def transcoder_loss(
    transcoder: Transcoder,
    x: Float[Tensor, "n d_in"],
    y: Float[Tensor, "n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = mean_t ||y_hat_t - y_t||^2; sparsity = mean_t sum_i f_i(x_t) ||W_dec[i]||;
    loss = mse + l1_coefficient * sparsity."""
    ### BEGIN SOLUTION
    acts = transcoder.encode(x)  # [n, d_sae]
    y_hat = transcoder.decode(acts)  # [n, d_out]
    mse = (y_hat - y).pow(2).sum(-1).mean()
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}
    ### END SOLUTION

# %% [markdown] hint="transcoder_loss"
# `transcoder.encode(x)` gives the latents `[n, d_sae]` (a transcoder does not subtract
# `b_dec` from its input: `b_dec` lives in the output space), `transcoder.decode(acts)` the
# prediction. `transcoder.W_dec` is `[d_sae, d_out]`: its row norms are `W_dec.norm(dim=-1)`.

# %% [markdown] hint="transcoder_loss"
# `torch.nn.functional.mse_loss` averages over output dimensions as well as tokens: that is
# the loss divided by `d_out`, which changes what a given `l1_coefficient` means.

# %% [markdown]
# The loop: a fresh transcoder for layer 0 (`new_transcoder`, initialised as SAELens
# initialises its SAEs), its output bias set to the mean MLP output, Adam, and one step per
# batch of about 1,000 tokens from `activation_batches` (which runs the model only up to
# layer 0). 120 steps.

# %%
# NBVAL_IGNORE_OUTPUT
hook_in, hook_out = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
loss_fn = checked(transcoder_loss)
transcoder = new_transcoder(model.cfg.d_model, 256, model.cfg.d_model, hook_in, hook_out, seed=0)
batches = activation_batches(model, world, [hook_in, hook_out], batch_seqs=22, seq_len=48, seed=40_000)
with torch.no_grad():
    transcoder.b_dec.copy_(next(batches)[hook_out].mean(0))
optimiser = torch.optim.Adam(transcoder.parameters(), lr=3e-3)
history = []
with torch.enable_grad():
    for batch in itertools.islice(batches, 120):
        terms = loss_fn(transcoder, batch[hook_in], batch[hook_out], l1_coefficient=2.0)
        terms["loss"].backward()
        optimiser.step()
        optimiser.zero_grad()
        history.append({k: v.item() for k, v in terms.items()})
transcoder.eval()
print(f"step 0: mse {history[0]['mse']:.3g}, sparsity {history[0]['sparsity']:.3g}; "
      f"step {len(history) - 1}: mse {history[-1]['mse']:.3g}, sparsity {history[-1]['sparsity']:.3g}")

# %% [markdown]
# Against the shipped layer-0 transcoder, with chapter 04's `transcoder_metrics` (yours once
# its check passed, else the reference): L0 and explained variance of the MLP's output (BOS
# left out), CE-loss recovered with the transcoder spliced in place of the MLP (zero
# ablation of the MLP's output as the baseline), and the same ground-truth grading.

# %%
# NBVAL_IGNORE_OUTPUT
transcoders = {"live": transcoder, "shipped": bk.transcoders[hook_in]}
tc_measure = earlier("ch04_transcoders", "transcoder_metrics")  # chapter 04's
tc_metrics = {name: tc_measure(model, tc, eval_corpus.tokens) for name, tc in transcoders.items()}
for name, m in tc_metrics.items():
    print(f"{name:>8}: L0 {m['l0']:.3g}, explained variance {m['explained_variance']:.3g}, CE recovered {m['ce_recovered']:.3g}")
tc_labels = {label: eval_labels[label] for label in ("fact_answer", "profession", "workplace", "city", "country", "pronoun")}
tc_recovered = {name: recovery(latent_acts(model, tc, eval_corpus.tokens), tc_labels, aurocs_fn, precision_fn)
                for name, tc in transcoders.items()}
for label in tc_labels:
    print(f"{label:>12}: live AUROC {tc_recovered['live'][label]['auroc']:.3g} (precision {tc_recovered['live'][label]['precision']:.3g}), "
          f"shipped {tc_recovered['shipped'][label]['auroc']:.3g} ({tc_recovered['shipped'][label]['precision']:.3g})")

# %% [markdown]
# 120 steps get a transcoder that works, but not as well as the shipped one, which trained
# on 50 times as many tokens: it explains less of the MLP's output and loses more of the
# model's loss when spliced in. The fact-like labels the MLP computes (`fact_answer`,
# `profession`, `workplace`, `city`, `country`) already have latents with AUROC near 0.99 in
# both, at precisions under one half in both; whether the short run has found a precise
# `pronoun` latent, as the shipped transcoder has, varies from run to run (see the table).

# %%
print("reconstruction loss fell at least three-fold in training:", history[-1]["mse"] < history[0]["mse"] / 3)
print("shipped transcoder explains more of the MLP's output:",
      tc_metrics["shipped"]["explained_variance"] > tc_metrics["live"]["explained_variance"])
print("shipped transcoder recovers more of the CE loss:", tc_metrics["shipped"]["ce_recovered"] > tc_metrics["live"]["ce_recovered"])
fact_like = ("fact_answer", "profession", "workplace", "city", "country")
print("every fact-like label has a latent at AUROC >= 0.95 in both:",
      all(tc_recovered[name][label]["auroc"] >= 0.95 for name in transcoders for label in fact_like))
print("and precision under one half in both:",
      all(tc_recovered[name][label]["precision"] < 0.5 for name in transcoders for label in fact_like))

# %% [markdown]
# ## 8. Scale-up: a GPT-2 `hook_mlp_out` SAE
#
# The same two configs for GPT-2 small, with the settings of SAELens's training tutorial: an
# SAE on the output of layer 0's MLP (768 dimensions, 16 times as many latents), L1
# coefficient 5, learning rate $5 \times 10^{-5}$. A few steps only, to see the pipeline
# run; a real run is hundreds of millions of tokens on a GPU. For text we reuse the
# organism's, tokenized by GPT-2 (`text_dataset`); a real run streams a corpus from the hub
# instead: `dataclasses.replace(g_cfg, dataset_path="apollo-research/Skylion007-openwebtext-tokenizer-gpt2",
# streaming=True)` and `dataset=None` in `train_sae`. This needs the Hugging Face hub
# (Colab); offline it prints one line and skips.

# %% tags=["scaleup"]
# NBVAL_IGNORE_OUTPUT
from utils.backends.gpt2 import HubUnavailable, load_gpt2
from utils.training import text_dataset

try:  # GPT-2 alone, no dictionaries: one download of about 500 MB
    gpt2 = load_gpt2("cuda" if torch.cuda.is_available() else "cpu", layers=[0], kinds=())
except HubUnavailable as error:  # the hub cannot be reached: skip; any other failure shows
    print(f"skipped ({error})")
else:
    texts = [model.to_string(row[1:]) for row in world.corpus(400, 48, seed=50_000).tokens]
    g_data = text_dataset(gpt2.model, texts, context_size=128)
    g_sae_cfg = checked(sae_training_config)("standard", 768, 768 * 16, 5.0)
    g_cfg = checked(runner_config)(gpt2.model, g_sae_cfg, "blocks.0.hook_mlp_out", context_size=128, steps=5,
                                   batch_tokens=1024, lr=5e-5)
    g_run = train_sae(g_cfg, gpt2.model, g_data, seed=0)
    print(f"{len(g_data)} rows of 128 GPT-2 tokens; 5 steps of 1,024 tokens in {g_run.seconds:.1f} s: "
          f"L0 {g_run.history['l0'][0]:.3g} -> {g_run.history['l0'][-1]:.3g}, "
          f"reconstruction term {g_run.history['mse_loss'][0]:.3g} -> {g_run.history['mse_loss'][-1]:.3g}")

# %% [markdown]
# ## Summary
#
# - SAELens trains an SAE on any `HookedTransformer` and any pre-tokenized `Dataset`:
#   `override_model` and `override_dataset` replace the names in the config, and a handful of
#   settings keep a small CPU run small (no wandb, no files, a short norm estimate, a buffer
#   of at least two batches, BOS excluded).
# - Each architecture asks for sparsity differently: TopK fixes the L0 of every token,
#   BatchTopK its mean, the L1 and L0 coefficients only push and their L0 is found by
#   training. Compare architectures on the Pareto front, at matched L0.
# - Reconstruction metrics are not the whole story: grade against ground truth where you
#   have it, with precision next to AUROC, and expect broad features to split as the
#   dictionary widens.
# - A transcoder's loss is an SAE's loss with a different target: reconstruct the MLP's
#   output from its input, plus the decoder-weighted L1.
#
# **The figures.** The live standard SAE (256 latents, 120 steps of 1,024 tokens) trained in
# 5 to 11 s and the live transcoder in 4 to 8 s on a 2-core machine shared with other jobs
# (the whole notebook: about 40 s of CPU time); both end well short of the shipped
# dictionaries. From the sweep (2,000 steps, 256 latents), at L0
# near 16, each architecture's L0, CE-loss recovered and best-latent AUROC per label
# (mean, lowest and how many of the 16 reach 0.95):
#
# | dictionary | L0 | CE recovered | mean AUROC | lowest AUROC | labels at ≥ 0.95 |
# |---|---|---|---|---|---|
# | standard (L1 1) | 12.2 | 0.990 | 0.875 | 0.671 (`male_name`) | 7 |
# | TopK ($k$ 16) | 16.0 | 0.992 | 0.940 | 0.841 (`pronoun`) | 9 |
# | BatchTopK ($k$ 16) | 15.8 | 0.998 | 0.916 | 0.767 (`male_name`) | 9 |
# | JumpReLU ($\lambda_0$ 0.3) | 11.5 | 0.997 | 0.939 | 0.790 (`male_name`) | 10 |
# | shipped (weighted L1) | 23.7 | 0.995 | 0.897 | 0.714 (`male_name`) | 7 |
#
# Each label's AUROC (and precision) per architecture is the table of section 6. The same
# figures, computed from the committed sweep:

# %%
for name, r in [*matched.items(), ("shipped", ref)]:
    aurocs = {label: row["auroc"] for label, row in r["recovery"].items()}
    weakest = min(aurocs, key=aurocs.get)
    print(f"{name:>9}: L0 {r['l0']:.3g}, CE recovered {r['ce_recovered']:.3g}, mean AUROC {mean_over_labels(r['recovery'], 'auroc'):.3g}, "
          f"lowest {aurocs[weakest]:.3g} ({weakest}), {sum(a >= 0.95 for a in aurocs.values())} labels at >= 0.95")

# %% [markdown]
# **Open questions.** No architecture gives the name labels, `pronoun` or `year` one latent
# at AUROC 0.95: would a probe on a few latents (chapter 00's report does this) capture them,
# and do TopK's dead latents explain part of it? The shipped SAEs weight each token's error by the inverse squared norm of the residual
# stream after their layer: how far does that move the Pareto front in CE-loss recovered at
# the same explained variance? At what width do the name latents stop splitting?

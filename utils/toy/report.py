"""Figures of merit of the model organism, as printed by ``python -m utils.toy report``.

- Task accuracy: the share of prompts whose top prediction at the last position is an
  acceptable answer; logit difference: mean of logit[answer] - logit[distractor].
- Per dictionary, on held-out corpus text: L0 (mean number of active latents per token);
  explained variance 1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2; CE-loss recovered
  (CE_zero - CE_spliced) / (CE_zero - CE_clean), where "spliced" replaces the hook's output
  by the reconstruction (no error term) and "zero" replaces it by zeros; added loss
  CE_spliced - CE_clean; task accuracy with the dictionary spliced; dead fraction (latents
  never active); planted-feature recovery: for every label, the single latent whose
  activation best separates labelled from unlabelled tokens, by AUROC, with that latent's
  precision (the share of its activation mass on labelled tokens, see
  :func:`activation_precision`) and firing frequency (the share of tokens where it is
  active). AUROC alone can be near 1 for a latent that fires on every labelled token and on
  many others too; precision says how much of what the latent does is about the label.
  Broad labels also get ``probe5_auroc``: a logistic probe on their 5 best latents, fitted
  on half the tokens and scored on the other half.
- Per label, ``label_share``: the share of corpus tokens that carry it (the precision of a
  latent that fired equally on every token).
- ``clt`` (when cross-layer transcoders are saved): for the CLT (``cross_layer``), its
  same-layer control (``same_layer``: the same trainer without cross-layer decoders) and the
  shipped PLTs taken together (``plt``), on the same held-out text: per layer the L0, the
  explained variance of that layer's MLP output, the dead fraction and planted-feature
  recovery; CE-loss recovered and added loss with every MLP replaced at once (``all``) and
  with each layer's alone (``"0"``, ``"1"``: for the PLTs these are the ``transcoder.L``
  entries' figures); task accuracy with every MLP replaced; and the training record.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import einops
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.clt import CrossLayerTranscoder, read_clt
from utils.clt import spliced as clt_spliced
from utils.metrics import activation_precision, auroc
from utils.toy.dictionaries import DictionarySpec
from utils.toy.generator import BROAD_LABELS, TaskBatch, World
from utils.toy.training import EVAL_SEEDS


@contextmanager
def spliced(model: HookedSAETransformer, sae: SAE,
            use_error_term: bool = False) -> Iterator[HookedSAETransformer]:
    """Attach ``sae`` for the duration of a ``with`` block (hooks are global state), and
    check it really attached: SAELens skips unknown hooks with only a log line."""
    model.add_sae(sae, use_error_term=use_error_term)
    try:
        assert sae.cfg.metadata.hook_name in model.acts_to_saes, "the SAE did not attach"
        yield model
    finally:
        model.reset_saes()


def last_logits(model: HookedSAETransformer, batch: TaskBatch) -> Float[Tensor, "batch d_vocab"]:
    with torch.no_grad():
        return model(batch.tokens)[:, -1]


def task_scores(logits: Float[Tensor, "batch d_vocab"], batch: TaskBatch) -> dict[str, float]:
    """Accuracy (top token is acceptable) and mean logit difference answer - distractor."""
    top = logits.argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    diff = logits.gather(-1, batch.answer_ids[:, None]) - logits.gather(
        -1, batch.distractor_ids[:, None])
    return {"accuracy": accuracy, "logit_diff": diff.mean().item()}


def task_batches(world: World, n: int) -> dict[str, TaskBatch]:
    """Held-out prompts for every task."""
    return {task: world.task_batch(task, n, seed=EVAL_SEEDS) for task in world.tasks}


def firing_frequency(acts: Float[Tensor, "token latent"]) -> Float[Tensor, " latent"]:
    """Share of tokens on which each latent is active (a > 0)."""
    return (acts > 0).float().mean(0)


def probe_auroc(acts: Float[Tensor, "token k"], label: Bool[Tensor, " token"]) -> float:
    """AUROC on the second half of the tokens of a logistic probe fitted on the first."""
    half = len(label) // 2
    x = (acts - acts[:half].mean(0)) / (acts[:half].std(0) + 1e-6)
    weights = torch.zeros(acts.shape[1] + 1, requires_grad=True)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    optimiser = torch.optim.LBFGS([weights], max_iter=100)

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            design[:half] @ weights, label[:half].float()) + 1e-3 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return auroc((design[half:] @ weights)[:, None], label[half:, None]).item()


@dataclass
class DictionaryReading:
    """A dictionary read over corpus tokens: its inputs, targets, reconstructions and
    latent activations, one row per token."""

    target: Float[Tensor, "token d_out"]
    reconstruction: Float[Tensor, "token d_out"]
    latents: Float[Tensor, "token d_sae"]


def read_dictionary(model: HookedSAETransformer, sae: SAE, spec: DictionarySpec,
                    tokens: Int[Tensor, "batch pos"]) -> DictionaryReading:
    """Run the clean model, then the dictionary on its activations at ``spec.hook``."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[spec.hook, spec.hook_out])
        latents = sae.encode(cache[spec.hook])
        reconstruction = sae.decode(latents)

    def flat(t: Tensor) -> Tensor:
        return einops.rearrange(t, "b p ... -> (b p) (...)")

    return DictionaryReading(flat(cache[spec.hook_out]), flat(reconstruction), flat(latents))


def explained_variance(reading: DictionaryReading) -> float:
    residual = (reading.target - reading.reconstruction).pow(2).sum()
    total = (reading.target - reading.target.mean(0)).pow(2).sum()
    return (1 - residual / total).item()


def ce_losses(model: HookedSAETransformer, sae: SAE, spec: DictionarySpec,
              tokens: Int[Tensor, "batch pos"]) -> dict[str, float]:
    """Next-token CE clean, with the dictionary spliced in, and with its output zeroed."""
    with torch.no_grad():
        clean = model(tokens, return_type="loss").item()
        zero = model.run_with_hooks(
            tokens, return_type="loss",
            fwd_hooks=[(spec.hook_out, lambda act, hook: torch.zeros_like(act))]).item()
        with spliced(model, sae):
            patched = model(tokens, return_type="loss").item()
    return {"clean": clean, "spliced": patched, "zero": zero}


def recovery(latents: Float[Tensor, "token d_sae"], labels: dict[str, Bool[Tensor, " token"]],
             scores: Float[Tensor, "label d_sae"]) -> dict[str, dict]:
    """Best single latent per label by AUROC, with its precision and firing frequency (and a
    5-latent probe for broad labels)."""
    precision = activation_precision(latents, torch.stack(list(labels.values()), dim=1))
    frequency = firing_frequency(latents)
    out = {}
    for i, name in enumerate(labels):
        best = int(scores[i].argmax())
        out[name] = {"latent": best, "auroc": round(scores[i, best].item(), 4),
                     "precision": round(precision[i, best].item(), 4),
                     "frequency": round(frequency[best].item(), 4)}
        if name in BROAD_LABELS:
            top5 = scores[i].topk(5).indices
            out[name]["probe5_auroc"] = round(probe_auroc(latents[:, top5], labels[name]), 4)
    return out


def dictionary_report(model: HookedSAETransformer, sae: SAE, spec: DictionarySpec,
                      tokens: Int[Tensor, "batch pos"],
                      labels: dict[str, Bool[Tensor, " token"]],
                      batches: dict[str, TaskBatch]) -> dict:
    """Every figure of one dictionary (see the module docstring)."""
    reading = read_dictionary(model, sae, spec, tokens)
    ce = ce_losses(model, sae, spec, tokens)
    with spliced(model, sae):
        spliced_acc = {task: task_scores(last_logits(model, b), b)["accuracy"]
                       for task, b in batches.items()}
    scores = auroc(reading.latents, torch.stack(list(labels.values()), dim=1))
    return {
        "kind": spec.kind, "hook": spec.hook, "hook_out": spec.hook_out, "layer": spec.layer,
        "d_sae": sae.cfg.d_sae,
        "l0": round((reading.latents > 0).float().sum(-1).mean().item(), 3),
        "explained_variance": round(explained_variance(reading), 4),
        "ce_loss_recovered": round((ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"]), 4),
        "added_loss": round(ce["spliced"] - ce["clean"], 4),
        "ce_loss": {k: round(v, 4) for k, v in ce.items()},
        "task_accuracy_spliced": {t: round(a, 4) for t, a in spliced_acc.items()},
        "dead_fraction": round((reading.latents.max(0).values <= 0).float().mean().item(), 4),
        "recovery": recovery(reading.latents, labels, scores),
    }


def clt_ce_losses(model: HookedSAETransformer, clt: CrossLayerTranscoder,
                  tokens: Int[Tensor, "batch pos"]) -> dict[str, dict[str, float]]:
    """Next-token CE clean, with the CLT in place of the MLP outputs of every layer at once
    (``all``) or of one layer alone (``"0"``, ``"1"``...), and with those outputs zeroed."""
    n = clt.cfg.n_layers
    out = {}
    with torch.no_grad():
        clean = model(tokens, return_type="loss").item()
        for key, layers in [("all", list(range(n)))] + [(str(L), [L]) for L in range(n)]:
            zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[
                (clt.cfg.hook_out_at(L), lambda act, hook: torch.zeros_like(act)) for L in layers]).item()
            with clt_spliced(model, clt, layers=layers):
                patched = model(tokens, return_type="loss").item()
            out[key] = {"clean": clean, "spliced": patched, "zero": zero}
    return out


def clt_report(model: HookedSAETransformer, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"],
               labels: dict[str, Bool[Tensor, " token"]], batches: dict[str, TaskBatch]) -> dict:
    """Every figure of one CLT (or of PLTs as one, ``CrossLayerTranscoder.from_transcoders``)."""
    latents, recon, true = read_clt(model, clt, tokens)
    layers = {}
    for L in range(clt.cfg.n_layers):
        reading = DictionaryReading(*(einops.rearrange(t, "b p d -> (b p) d") for t in (true[L], recon[L], latents[L])))
        acts = reading.latents
        layers[str(L)] = {
            "l0": round((acts > 0).float().sum(-1).mean().item(), 3),
            "explained_variance": round(explained_variance(reading), 4),
            "dead_fraction": round((acts.max(0).values <= 0).float().mean().item(), 4),
            "recovery": recovery(acts, labels, auroc(acts, torch.stack(list(labels.values()), dim=1))),
        }
    ce = clt_ce_losses(model, clt, tokens)
    with clt_spliced(model, clt):
        spliced_acc = {task: task_scores(last_logits(model, b), b)["accuracy"] for task, b in batches.items()}
    return {
        "n_layers": clt.cfg.n_layers, "d_sae": clt.cfg.d_sae, "cross_layer": clt.cfg.cross_layer,
        "layers": layers,
        "ce_loss_recovered": {k: round((v["zero"] - v["spliced"]) / (v["zero"] - v["clean"]), 4) for k, v in ce.items()},
        "added_loss": {k: round(v["spliced"] - v["clean"], 4) for k, v in ce.items()},
        "ce_loss": {k: {name: round(x, 4) for name, x in v.items()} for k, v in ce.items()},
        "task_accuracy_spliced": {t: round(a, 4) for t, a in spliced_acc.items()},
    }


def flat_labels(labels: dict[str, Bool[Tensor, "batch pos"]]) -> dict[str, Bool[Tensor, " token"]]:
    return {name: einops.rearrange(mask, "b p -> (b p)") for name, mask in labels.items()}


def full_report(model: HookedSAETransformer, dictionaries: dict[str, SAE],
                specs: list[DictionarySpec], world: World, n_prompts: int = 200,
                n_seqs: int = 256, seq_len: int = 48,
                clts: dict[str, CrossLayerTranscoder] | None = None) -> dict:
    """The report's JSON (schema in issue 3 and the README of ``utils/toy``); with ``clts``
    (keyed by name) a ``clt`` entry compares them with the transcoders of ``dictionaries``."""
    batches = task_batches(world, n_prompts)
    corpus = world.corpus(n_seqs, seq_len, seed=EVAL_SEEDS)
    labels = flat_labels(corpus.labels)
    tasks = {}
    for task, batch in batches.items():
        tasks[task] = {k: round(v, 4) for k, v in task_scores(last_logits(model, batch),
                                                              batch).items()}
    result = {
        "tasks": tasks,
        "dictionaries": {spec.name: dictionary_report(model, dictionaries[spec.name], spec,
                                                      corpus.tokens, labels, batches)
                         for spec in specs},
        "label_share": {name: round(mask.float().mean().item(), 4) for name, mask in labels.items()},
        "eval": {"n_prompts": n_prompts, "n_seqs": n_seqs, "seq_len": seq_len,
                 "seed": EVAL_SEEDS},
    }
    if clts:
        result["clt"] = clt_entry(model, dictionaries, specs, world, clts, n_prompts, n_seqs, seq_len)
    return result


def clt_entry(model: HookedSAETransformer, dictionaries: dict[str, SAE], specs: list[DictionarySpec],
              world: World, clts: dict[str, CrossLayerTranscoder], n_prompts: int = 200,
              n_seqs: int = 256, seq_len: int = 48) -> dict:
    """The report's ``clt`` entry: :func:`clt_report` of each CLT in ``clts`` and of the
    transcoders of ``dictionaries`` taken together (``plt``), on :func:`full_report`'s data."""
    batches = task_batches(world, n_prompts)
    corpus = world.corpus(n_seqs, seq_len, seed=EVAL_SEEDS)
    labels = flat_labels(corpus.labels)
    plts = CrossLayerTranscoder.from_transcoders([dictionaries[s.name] for s in specs if s.kind == "transcoder"])
    return {name: clt_report(model, clt, corpus.tokens, labels, batches) for name, clt in {**clts, "plt": plts}.items()}

"""Rebuild every artifact of the model organism from seeds, and recompute its report.

``build`` writes, under ``root``: the tokenizer, the trained model, every dictionary, the
explanation table and ``report.json``. Everything is seeded: the same code on the same
machine gives the same artifacts (thread count and hardware may change the last digits).
``explain`` rewrites only the explanation table and ``report.json`` from the saved model and
dictionaries, without training anything (after a change to what they measure).
``build_clts`` (``python -m utils.toy build --only clt``) trains the cross-layer transcoders
alone, on the saved model, at the L0 the saved report gives the shipped transcoders, and
writes ``report.json``'s ``clt`` entry; every other entry and artifact is left as it is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from sae_lens import SAE, HookedSAETransformer

from utils.nodes import layer_of
from utils.clt import CrossLayerTranscoder
from utils.toy import ARTIFACTS, EXPLANATIONS, MODEL, REPORT, TOKENIZER, clt_folder, load_clts
from utils.toy.dictionaries import DictionarySpec, dictionary_folder, dictionary_specs
from utils.toy.explanations import explanation_table
from utils.toy.generator import World
from utils.toy.model import load_model, make_model, save_model
from utils.toy.report import clt_entry, flat_labels, full_report
from utils.toy.tokenizer import build_tokenizer, load_tokenizer
from utils.toy.training import CLT_NAMES, EVAL_SEEDS, train_dictionaries, train_model, train_organism_clts


def specs_of(model) -> list[DictionarySpec]:
    return dictionary_specs(model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads,
                            model.cfg.d_head)


def write_explanations(model: HookedSAETransformer, dictionaries: dict[str, SAE],
                       world: World, root: Path) -> None:
    """Explain every latent on held-out corpus text (not the report's) and save the table."""
    corpus = world.corpus(256, 48, seed=EVAL_SEEDS + 1)
    table = explanation_table(model, dictionaries, specs_of(model), corpus.tokens,
                              flat_labels(corpus.labels))
    table.save(root / EXPLANATIONS)


def build(root: Path = ARTIFACTS, model_steps: int = 2000, dictionary_steps: int = 2000,
          retrain_model: bool = True, seed: int = 0) -> dict:
    """Train and save everything; returns the report (with the wall time in ``build``)."""
    start = time.perf_counter()
    world = World(seed)
    if retrain_model:
        model = make_model(build_tokenizer(root / TOKENIZER), seed=seed)
        train_model(model, world, steps=model_steps)
        save_model(model, root / MODEL)
    model = load_model(root / MODEL, load_tokenizer(root / TOKENIZER))
    specs = specs_of(model)
    torch.manual_seed(seed)
    dictionaries = train_dictionaries(model, world, specs, steps=dictionary_steps)
    for spec in specs:
        dictionaries[spec.name].save_model(dictionary_folder(root, spec))
    write_explanations(model, dictionaries, world, root)
    report = full_report(model, dictionaries, specs, world)
    report["build"] = {"wall_time_s": round(time.perf_counter() - start, 1),
                       "model_steps": model_steps, "dictionary_steps": dictionary_steps,
                       "retrained_model": retrain_model, "threads": torch.get_num_threads()}
    (root / REPORT).write_text(json.dumps(report, indent=1))
    return build_clts(root, dictionary_steps)


def matched_l0(report: dict, n_layers: int) -> tuple[float, ...]:
    """The shipped transcoders' L0 per layer, as the report gives it: the CLTs' BatchTopK k."""
    return tuple(report["dictionaries"][f"transcoder.{L}"]["l0"] for L in range(n_layers))


def build_clts(root: Path = ARTIFACTS, steps: int = 2000, seed: int = 0) -> dict:
    """Train and save the cross-layer transcoders on the saved model (nothing else is
    trained or rewritten), and put their figures, with the training record, under the
    ``clt`` key of ``report.json``; returns the whole report."""
    model, dictionaries, world = saved(root, with_clts=False)
    report = json.loads((root / REPORT).read_text())
    k = matched_l0(report, model.cfg.n_layers)
    torch.manual_seed(seed)
    runs = train_organism_clts(model, world, k, steps=steps)
    for name, run in runs.items():
        run.clt.save(clt_folder(root, name))
    clts = load_clts(root)  # report what was written
    record = {"wall_time_s": round(runs[CLT_NAMES[0]].seconds, 1), "cpu_time_s": round(runs[CLT_NAMES[0]].cpu_seconds, 1),
              "steps": steps, "k": list(k), "threads": torch.get_num_threads(), "trained_together": list(CLT_NAMES)}
    figures = clt_entry(model, dictionaries, specs_of(model), world, clts)
    return write_clt_entry(root, {**figures, "build": record})


def write_clt_entry(root: Path, entry: dict) -> dict:
    """Set ``report.json``'s ``clt`` entry (before ``build``), leaving every other entry as
    it is, byte for byte."""
    report = json.loads((root / REPORT).read_text())
    report.pop("clt", None)
    build_record = report.pop("build", None)
    report["clt"] = entry
    if build_record is not None:
        report["build"] = build_record
    (root / REPORT).write_text(json.dumps(report, indent=1))
    return report


def saved(root: Path = ARTIFACTS, with_clts: bool = True) -> tuple[HookedSAETransformer, dict[str, SAE], World]:
    """The saved model, every saved dictionary (keyed by report name) and the world."""
    from utils.toy import load

    backend = load(root=root, with_clt=with_clts)
    dictionaries = {**backend.saes, **backend.attn_saes,
                    **{f"transcoder.{layer_of(hook)}": tc for hook, tc in backend.transcoders.items()}}
    return backend.model, dictionaries, backend.world


def saved_clts(root: Path = ARTIFACTS) -> dict[str, CrossLayerTranscoder] | None:
    """The saved cross-layer transcoders by name, or None before any was built."""
    return load_clts(root) if clt_folder(root, CLT_NAMES[0]).exists() else None


def report(root: Path = ARTIFACTS) -> dict:
    """Recompute the report from the saved artifacts (held-out evaluation data)."""
    model, dictionaries, world = saved(root)
    return full_report(model, dictionaries, specs_of(model), world, clts=saved_clts(root))


def explain(root: Path = ARTIFACTS) -> dict:
    """Rewrite the explanation table and ``report.json`` from the saved model and
    dictionaries, training nothing; the report keeps the ``build`` record of the training run
    that made them. Returns the new report."""
    model, dictionaries, world = saved(root)
    write_explanations(model, dictionaries, world, root)
    result = full_report(model, dictionaries, specs_of(model), world, clts=saved_clts(root))
    previous = root / REPORT
    if previous.exists():
        old = json.loads(previous.read_text())
        if "clt" in result and "clt" in old:
            result["clt"]["build"] = old["clt"].get("build")
        result["build"] = old.get("build")
    previous.write_text(json.dumps(result, indent=1))
    return result

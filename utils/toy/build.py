"""Rebuild every artifact of the model organism from seeds, and recompute its report.

``build`` writes, under ``root``: the tokenizer, the trained model, every dictionary, the
explanation table and ``report.json``. Everything is seeded: the same code on the same
machine gives the same artifacts (thread count and hardware may change the last digits).
``explain`` rewrites only the explanation table and ``report.json`` from the saved model and
dictionaries, without training anything (after a change to what they measure).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from sae_lens import SAE, HookedSAETransformer

from utils.nodes import layer_of
from utils.toy import ARTIFACTS, EXPLANATIONS, MODEL, REPORT, TOKENIZER
from utils.toy.dictionaries import DictionarySpec, dictionary_folder, dictionary_specs
from utils.toy.explanations import explanation_table
from utils.toy.generator import World
from utils.toy.model import load_model, make_model, save_model
from utils.toy.report import flat_labels, full_report
from utils.toy.tokenizer import build_tokenizer, load_tokenizer
from utils.toy.training import EVAL_SEEDS, train_dictionaries, train_model


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
    return report


def saved(root: Path = ARTIFACTS) -> tuple[HookedSAETransformer, dict[str, SAE], World]:
    """The saved model, every saved dictionary (keyed by report name) and the world."""
    from utils.toy import load

    backend = load(root=root)
    dictionaries = {**backend.saes, **backend.attn_saes,
                    **{f"transcoder.{layer_of(hook)}": tc for hook, tc in backend.transcoders.items()}}
    return backend.model, dictionaries, backend.world


def report(root: Path = ARTIFACTS) -> dict:
    """Recompute the report from the saved artifacts (held-out evaluation data)."""
    model, dictionaries, world = saved(root)
    return full_report(model, dictionaries, specs_of(model), world)


def explain(root: Path = ARTIFACTS) -> dict:
    """Rewrite the explanation table and ``report.json`` from the saved model and
    dictionaries, training nothing; the report keeps the ``build`` record of the training run
    that made them. Returns the new report."""
    model, dictionaries, world = saved(root)
    write_explanations(model, dictionaries, world, root)
    result = full_report(model, dictionaries, specs_of(model), world)
    previous = root / REPORT
    if previous.exists():
        result["build"] = json.loads(previous.read_text()).get("build")
    previous.write_text(json.dumps(result, indent=1))
    return result

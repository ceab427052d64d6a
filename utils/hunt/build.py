"""Rebuild every artifact of the hunt model from seeds, and recompute its report.

``build`` writes, under ``root``, what ``utils.toy.build`` writes for the organism (the
tokenizer, the model, every dictionary, the explanation table, ``report.json``) with the
organism's own training code, plus ``truth.json``: the planted tasks' ground truth for the
capstone's grader (``utils.hunt.truth``). Everything is seeded: the same code on the same
machine gives the same artifacts.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from sae_lens import SAE, HookedSAETransformer

from utils.hunt import ARTIFACTS, MODEL, REPORT, TOKENIZER, TRUTH
from utils.hunt.truth import derive_truth, planted_report
from utils.hunt.world import HuntWorld, hunt_vocabulary
from utils.nodes import layer_of
from utils.toy.build import specs_of, write_explanations
from utils.toy.dictionaries import dictionary_folder
from utils.toy.model import load_model, make_model, save_model
from utils.toy.report import full_report
from utils.toy.tokenizer import build_tokenizer, load_tokenizer
from utils.toy.training import train_dictionaries, train_model

MODEL_STEPS, DICTIONARY_STEPS = 1000, 800


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build(root: Path = ARTIFACTS, model_steps: int = MODEL_STEPS, dictionary_steps: int = DICTIONARY_STEPS,
          retrain_model: bool = True, seed: int = 0) -> dict:
    """Train and save everything; returns the report (wall and CPU time in ``build``)."""
    start, cpu_start, times = time.perf_counter(), _cpu_seconds(), {}
    world = HuntWorld(seed)
    root.mkdir(parents=True, exist_ok=True)
    if retrain_model:
        model = make_model(build_tokenizer(root / TOKENIZER, hunt_vocabulary()), seed=seed, model_name="hunt")
        train_model(model, world, steps=model_steps)
        save_model(model, root / MODEL)
        times["model_s"] = round(time.perf_counter() - start, 1)
    model = load_model(root / MODEL, load_tokenizer(root / TOKENIZER))
    specs = specs_of(model)
    torch.manual_seed(seed)
    mark = time.perf_counter()
    dictionaries = train_dictionaries(model, world, specs, steps=dictionary_steps)
    times["dictionaries_s"] = round(time.perf_counter() - mark, 1)
    for spec in specs:
        dictionaries[spec.name].cfg.metadata.model_name = "hunt"
        dictionaries[spec.name].save_model(dictionary_folder(root, spec))
    mark = time.perf_counter()
    result = evaluate(model, dictionaries, world, root)
    times["explanations_report_truth_s"] = round(time.perf_counter() - mark, 1)
    result["build"] = {"wall_time_s": round(time.perf_counter() - start, 1),
                       "cpu_time_s": round(_cpu_seconds() - cpu_start, 1), **times,
                       "model_steps": model_steps, "dictionary_steps": dictionary_steps,
                       "retrained_model": retrain_model, "threads": torch.get_num_threads()}
    (root / REPORT).write_text(json.dumps(result, indent=1))
    return result


def evaluate(model: HookedSAETransformer, dictionaries: dict[str, SAE], world: HuntWorld, root: Path) -> dict:
    """Write the explanation table and ``truth.json``; return the report (the organism's
    report on the hunt model, plus the planted tasks' figures)."""
    specs = specs_of(model)
    write_explanations(model, dictionaries, world, root)
    truth = derive_truth(model, dictionaries)
    (root / TRUTH).write_text(json.dumps(truth, separators=(",", ":")))  # data: compact
    result = full_report(model, dictionaries, specs, world)
    result["planted"] = planted_report(truth)
    return result


def saved(root: Path = ARTIFACTS) -> tuple[HookedSAETransformer, dict[str, SAE], HuntWorld]:
    """The saved model, every saved dictionary (keyed by report name) and the world."""
    from utils.hunt import load

    backend = load(root=root)
    dictionaries = {**backend.saes, **backend.attn_saes,
                    **{f"transcoder.{layer_of(hook)}": tc for hook, tc in backend.transcoders.items()}}
    return backend.model, dictionaries, backend.world


def explain(root: Path = ARTIFACTS) -> dict:
    """Rewrite the explanation table, ``truth.json`` and ``report.json`` from the saved model
    and dictionaries, training nothing (the report keeps its ``build`` record)."""
    model, dictionaries, world = saved(root)
    result = evaluate(model, dictionaries, world, root)
    previous = root / REPORT
    if previous.exists():
        result["build"] = json.loads(previous.read_text()).get("build")
    previous.write_text(json.dumps(result, indent=1))
    return result


def report(root: Path = ARTIFACTS) -> dict:
    """Recompute the report from the saved artifacts (held-out data), writing nothing."""
    model, dictionaries, world = saved(root)
    result = full_report(model, dictionaries, specs_of(model), world)
    result["planted"] = planted_report(derive_truth(model, dictionaries))
    return result

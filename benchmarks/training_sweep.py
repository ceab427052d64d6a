"""Chapter 06's sweep: SAE architectures, sparsity settings and widths on the model organism,
judged on held-out text and against planted ground truth.

    python -m utils.course bench training_sweep                    # writes utils/training_sweep.json (read by chapter 06)
    python -m utils.course bench training_sweep --steps 100 --out /tmp/sweep.json   # a quick look

Trains on ``blocks.0.hook_resid_post`` with SAELens's ``MultiSAETrainingRunner`` (every SAE
reads the same stream of activations, so the model runs once per batch for all of them):

- ``standard`` (L1 coefficient 0.25, 0.5, 1, 2), ``topk`` (k 4, 8, 16, 32), ``batchtopk``
  (k 4, 8, 16, 32) and ``jumprelu`` (L0 coefficient 0.1, 0.3, 1, 3), 256 latents each;
- ``topk`` with k = 16 at 64, 128, 512 and 1,024 latents too (feature splitting).

Each SAE config comes from chapter 06's reference ``sae_training_config`` and the run's
settings from its ``runner_config`` (``--steps`` steps of ``--batch-tokens`` tokens, learning
rate ``--lr`` with its warm-up and decay, BOS excluded), so the sweep trains exactly as the
chapter's live run does, only longer. Torch is seeded; on one machine the results repeat.

Every trained SAE, and the shipped SAE of the same hook, is evaluated on held-out text (128
sequences of 48 tokens, ``EVAL_SEEDS``) with the reference functions: ``l0``,
``explained_variance``, ``ce_recovered`` and ``added_loss`` (CE_spliced - CE_clean, nats) from
chapter 00's ``reconstruction_metrics``; ``dead`` and ``dense`` (active on more than 10% of
tokens) counts from ``density_stats``; and ``recovery`` per planted label from
``utils.training.recovery``: the best latent by AUROC (``latent_aurocs``), its AUROC, its
precision (``label_precision``) and ``specialists``, the number of latents active on at
least 5 tokens with precision at least 0.9.

Output schema: ``{"settings": {...}, "seconds": {"data", "train", "eval"}, "shipped": RUN,
"runs": [RUN, ...]}`` with ``RUN = {"architecture", "sparsity", "d_sae", "l0",
"explained_variance", "ce_recovered", "added_loss", "dead", "dense", "recovery": {LABEL:
{"latent", "auroc", "precision", "specialists"}}}``. Printed as JSON, then as readable lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, MultiSAETrainingRunnerConfig

from solutions.ch00_toolkit import latent_aurocs, reconstruction_metrics
from solutions.ch06_training import density_stats, label_precision, runner_config, sae_training_config
from utils.backends import load_backend
from utils.toy.training import EVAL_SEEDS
from utils.training import SWEEP_COMMAND, SWEEP_RESULTS, inference_sae, latent_acts, quiet_sae_lens, recovery, token_dataset

HOOK = "blocks.0.hook_resid_post"
SEQ_LEN = 48
DATA_SEED = 3_000_000  # training text: seeds no other part of the course reads
GRID = [("standard", s, 256) for s in (0.25, 0.5, 1, 2)] + [("topk", k, 256) for k in (4, 8, 16, 32)] + \
       [("batchtopk", k, 256) for k in (4, 8, 16, 32)] + [("jumprelu", s, 256) for s in (0.1, 0.3, 1, 3)] + \
       [("topk", 16, width) for width in (64, 128, 512, 1024)]


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=SWEEP_RESULTS)
    parser.add_argument("--save", type=Path, help="also save the trained SAEs here (SAELens format)")
    parser.add_argument("--load", type=Path, help="evaluate SAEs saved by an earlier --save instead of training")


def run_name(architecture: str, sparsity: float, d_sae: int) -> str:
    return f"{architecture}-{sparsity:g}-{d_sae}"


def multi_config(model: Any, steps: int, batch_tokens: int, lr: float) -> MultiSAETrainingRunnerConfig:
    """Every SAE of ``GRID`` under the settings of the chapter's ``runner_config``."""
    saes = {run_name(a, s, d): sae_training_config(a, model.cfg.d_model, d, s) for a, s, d in GRID}
    single = runner_config(model, next(iter(saes.values())), HOOK, SEQ_LEN, steps, batch_tokens, lr)
    shared = {f.name for f in dataclasses.fields(MultiSAETrainingRunnerConfig) if f.init} & {
        f.name for f in dataclasses.fields(single)}
    return MultiSAETrainingRunnerConfig(saes=saes, hook_names=HOOK, **{name: getattr(single, name) for name in shared})


def evaluate(model: Any, sae: SAE, tokens: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The figures of one SAE on held-out ``tokens`` (see the module docstring)."""
    with torch.no_grad():
        m = reconstruction_metrics(model, sae, tokens)
        acts = latent_acts(model, sae, tokens)
    stats = density_stats(acts, dense_above=0.1)
    return {
        "d_sae": sae.cfg.d_sae,
        "l0": round(m["l0"], 4),
        "explained_variance": round(m["explained_variance"], 4),
        "ce_recovered": round(m["ce_recovered"], 4),
        "added_loss": round(m["ce_spliced"] - m["ce_clean"], 4),
        "dead": int(stats["dead"].sum()),
        "dense": int(stats["dense"].sum()),
        "recovery": recovery(acts, labels, latent_aurocs, label_precision),
    }


def main(args: argparse.Namespace) -> None:
    bk = load_backend("toy")
    model, world = bk.model, bk.world
    seconds = {}

    start = time.perf_counter()
    n_seqs = (args.steps + 20) * args.batch_tokens // (SEQ_LEN - 1) + 64  # every step reads new text
    data = token_dataset(world, n_seqs, SEQ_LEN, seed=DATA_SEED) if not args.load else None
    seconds["data"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    names = [run_name(a, s, d) for a, s, d in GRID]
    if args.load:
        saes = {name: SAE.load_from_disk(args.load / name) for name in names}
    else:
        torch.manual_seed(args.seed)  # initial weights (in GRID order) and the buffer's shuffling
        with quiet_sae_lens():
            trained = MultiSAETrainingRunner(multi_config(model, args.steps, args.batch_tokens, args.lr),
                                             override_model=model, override_dataset=data).run()
            saes = {name: inference_sae(sae) for name, sae in trained.items()}
        seconds["train"] = round(time.perf_counter() - start, 1)
    if args.save:
        for name, sae in saes.items():
            sae.save_model(args.save / name)

    start = time.perf_counter()
    corpus = world.corpus(128, SEQ_LEN, seed=EVAL_SEEDS)
    labels = {name: mask[:, 1:].flatten() for name, mask in corpus.labels.items()}
    runs = [{"architecture": a, "sparsity": s, **evaluate(model, saes[run_name(a, s, d)], corpus.tokens, labels)}
            for a, s, d in GRID]
    shipped = {"architecture": "standard (shipped)", "sparsity": None, **evaluate(model, bk.saes[HOOK], corpus.tokens, labels)}
    seconds["eval"] = round(time.perf_counter() - start, 1)

    result = {
        "settings": {"hook": HOOK, "steps": args.steps, "batch_tokens": args.batch_tokens, "lr": args.lr,
                     "seed": args.seed, "seq_len": SEQ_LEN, "train_sequences": n_seqs,
                     "eval_tokens": int(labels["is_name"].numel()), "torch_threads": torch.get_num_threads(),
                     "command": SWEEP_COMMAND},
        "seconds": seconds,
        "shipped": shipped,
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    print(f"\n{len(runs)} SAEs trained together in {seconds.get('train', 0):.0f} s ({args.steps} steps of "
          f"{args.batch_tokens} tokens), evaluated in {seconds['eval']:.0f} s; written to {args.out}")
    for r in [shipped, *runs]:
        print(f"{r['architecture']:>18} {str(r['sparsity']):>5} d_sae {r['d_sae']:>5}: L0 {r['l0']:6.2f}  "
              f"EV {r['explained_variance']:.3f}  CE recovered {r['ce_recovered']:.3f}  dead {r['dead']:>4}  dense {r['dense']:>3}")



if __name__ == "__main__":  # the chapters name `python -m utils.course bench training_sweep`
    from utils.course.__main__ import bench_alias

    bench_alias("training_sweep")

"""Build circuit-tracer's attribution graphs of an exported model; run *inside its venv*.

    <circuit-tracer venv>/bin/python benchmarks/circuit_tracer/runner.py EXPORT_DIR OUT.pt \
        [--threads N] [--repeats R] [--batch B] [--fold-ln2]

Reads a folder written by ``benchmarks.circuit_tracer.export`` and, with circuit-tracer's own
API (``load_transcoder_set`` for per-layer transcoders or ``load_clt`` for a cross-layer
transcoder, ``ReplacementModel.from_config``, ``attribute``), builds the
graph of every prompt of its manifest for the manifest's target logits, timing each build
(process CPU time, one warm-up, then ``--repeats`` runs, ``--threads`` torch threads). It
writes, per prompt, the adjacency, every node as ``(kind, layer, pos, index)`` in
circuit-tracer's order (kind 0 latent, 1 error, 2 token embedding, 3 logit), circuit-tracer's
node influence, the timings and a forward pass's time; and what it found about conventions
(versions, where ``ln2.hook_normalized`` sits, whether ``ln2`` was folded, how far its model's
logits are from the course's). This file imports nothing from the course: the course's
packages are not installed in that venv.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

KIND_LATENT, KIND_ERROR, KIND_EMBED, KIND_LOGIT = 0, 1, 2, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128, help="circuit-tracer's batch_size (rows per backward pass)")
    parser.add_argument("--fold-ln2", action="store_true",
                        help="fold ln2's scale and bias into the MLP even where TransformerLens reads the hook before them")
    return parser.parse_args()


def hook_normalized_after_affine() -> bool:
    """Does this TransformerLens take ``LayerNorm.hook_normalized`` after the scale ``w`` and
    bias ``b``? Checked on a LayerNorm with ``w = 2`` and ``b = 1``, not read from a version."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.components import LayerNorm

    cfg = HookedTransformerConfig(n_layers=1, d_model=4, n_ctx=2, d_head=2, d_vocab=3, act_fn="relu")
    ln = LayerNorm(cfg)
    with torch.no_grad():
        ln.w.fill_(2.0)
        ln.b.fill_(1.0)
    seen = {}
    ln.hook_normalized.add_hook(lambda x, hook: seen.setdefault("x", x.detach().clone()))
    x = torch.tensor([[[1.0, 2.0, 4.0, 7.0]]])
    out = ln(x)
    ln.hook_normalized.remove_hooks()
    return torch.allclose(seen["x"], out)


def fold_ln2_into_mlp(state: dict[str, torch.Tensor], n_layers: int) -> None:
    """Make ``ln2`` plain normalisation (``w = 1``, ``b = 0``) and move its scale and bias into
    the MLP's input weights: ``(x w + b) W_in + b_in = x (w[:, None] W_in) + (b W_in + b_in)``.
    The model computes the same function; ``ln2.hook_normalized`` then holds the normalised
    input whichever side of the affine map a TransformerLens version reads it."""
    for layer in range(n_layers):
        pre, mlp = f"blocks.{layer}.ln2", f"blocks.{layer}.mlp"
        w, w_in = state[f"{pre}.w"], state[f"{mlp}.W_in"]
        if f"{pre}.b" in state:
            state[f"{mlp}.b_in"] = state[f"{mlp}.b_in"] + state[f"{pre}.b"] @ w_in
            state[f"{pre}.b"] = torch.zeros_like(state[f"{pre}.b"])
        state[f"{mlp}.W_in"] = w[:, None] * w_in
        state[f"{pre}.w"] = torch.ones_like(w)


def load(export_dir: Path, fold: bool):
    """circuit-tracer's replacement model of the exported model and transcoders."""
    from circuit_tracer import ReplacementModel
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from transformer_lens import HookedTransformerConfig
    from transformers import AutoTokenizer

    manifest = json.loads((export_dir / "manifest.json").read_text())
    if manifest["format"] not in ("plt", "clt"):
        raise SystemExit(f"this runner loads per-layer transcoders ('plt') or a cross-layer transcoder ('clt'), "
                         f"not {manifest['format']!r}")
    config = json.loads((export_dir / "model" / "config.json").read_text())
    cfg = HookedTransformerConfig(**config, device="cpu", dtype=torch.float32, init_weights=False)
    tokenizer = AutoTokenizer.from_pretrained(export_dir / "tokenizer")
    hooks = dict(feature_input_hook=manifest["feature_input_hook"], feature_output_hook=manifest["feature_output_hook"])
    if manifest["format"] == "clt":
        transcoders = load_clt(str(export_dir / manifest["clt"]), scan=manifest["scan"], device=torch.device("cpu"),
                               dtype=torch.float32, lazy_encoder=False, lazy_decoder=False, **hooks)
    else:
        transcoders = load_transcoder_set(
            {int(L): str(export_dir / path) for L, path in manifest["transcoders"].items()}, scan=manifest["scan"],
            device=torch.device("cpu"), dtype=torch.float32, lazy_encoder=False, lazy_decoder=False, **hooks)
    model = ReplacementModel.from_config(cfg, transcoders, backend="transformerlens", tokenizer=tokenizer)
    state = load_file(export_dir / "model" / "model.safetensors")
    if fold:
        fold_ln2_into_mlp(state, cfg.n_layers)
    # circuit-tracer wraps each MLP and the unembedding in modules of its own.
    renamed = {k.replace(".mlp.", ".mlp.old_mlp.").replace("unembed.", "unembed.old_unembed."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}  # causal masks, from the config
    missing = [k for k in missing if not k.startswith("transcoders.") and k not in buffers]
    if missing or unexpected:
        raise SystemExit(f"exported weights do not fit circuit-tracer's model: missing {missing}, unexpected {unexpected}")
    return model.eval(), manifest


def cpu_seconds(fn, repeats: int) -> tuple[list[float], object]:
    """Process CPU times of ``repeats`` calls of ``fn`` after one warm-up (which counts as a
    run when it took over 30 s: a warm-up only matters for short calls), and the last result."""
    start = time.process_time()
    result = fn()
    first = time.process_time() - start
    times = [first] if first > 30 else []
    while len(times) < repeats:
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return times, result


def node_keys(graph, n_layers: int) -> torch.Tensor:
    """``[n_nodes, 4]``: (kind, layer, pos, index) of each node in circuit-tracer's order:
    selected features, error nodes (layer-major), token embeddings, logits."""
    n_pos = len(graph.input_tokens)
    feats = graph.active_features[graph.selected_features].long()
    rows = [torch.stack([torch.full_like(feats[:, 0], KIND_LATENT), feats[:, 0], feats[:, 1], feats[:, 2]], 1)]
    rows += [torch.tensor([[KIND_ERROR, L, p, -1] for L in range(n_layers) for p in range(n_pos)]).reshape(-1, 4)]
    rows += [torch.tensor([[KIND_EMBED, -1, p, int(t)] for p, t in enumerate(graph.input_tokens.tolist())])]
    rows += [torch.tensor([[KIND_LOGIT, n_layers, n_pos - 1, int(t.vocab_idx)] for t in graph.logit_targets])]
    return torch.cat(rows).long()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    # circuit-tracer's backward hooks sit on module outputs only, which torch remarks on.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    import circuit_tracer
    import transformers
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_node_influence

    after = hook_normalized_after_affine()
    fold = after or args.fold_ln2
    model, manifest = load(args.export_dir, fold)
    reference = load_file(args.export_dir / "reference.safetensors")
    out = {"versions": {"circuit-tracer": circuit_tracer.__version__, "torch": str(torch.__version__),
                        "transformer-lens": _version("transformer-lens"), "transformers": transformers.__version__},
           "hook_normalized_after_affine": after, "ln2_folded": fold, "threads": torch.get_num_threads(),
           "batch": args.batch, "prompts": {}}
    for prompt in manifest["prompts"]:
        tokens = torch.tensor(prompt["tokens"])
        targets = torch.tensor(prompt["logit_ids"])
        with torch.no_grad():
            logits = model(tokens[None])[0, -1]
            forward_times, _ = cpu_seconds(lambda: model(tokens[None]), max(args.repeats, 20))
        ref = reference[f"logits.{prompt['name']}"]
        times, graph = cpu_seconds(lambda: attribute(tokens, model, attribution_targets=targets,
                                                     batch_size=args.batch, verbose=False), args.repeats)
        weights = torch.zeros(graph.adjacency_matrix.shape[0])
        weights[-len(graph.logit_targets):] = graph.logit_probabilities
        out["prompts"][prompt["name"]] = {
            "seconds": times, "forward_seconds": statistics.median(forward_times),
            "logit_error": float((logits - ref).abs().max() / ref.abs().max()),
            "adjacency": graph.adjacency_matrix.float().contiguous(), "nodes": node_keys(graph, manifest["n_layers"]),
            "influence": compute_node_influence(graph.adjacency_matrix, weights).float(),
        }
        print(f"[circuit-tracer] {prompt['name']}: {len(graph.adjacency_matrix)} nodes, median "
              f"{statistics.median(times):.3g} s over {len(times)} runs", file=sys.stderr)
    torch.save(out, args.out)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()

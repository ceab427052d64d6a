"""Export a course model, its tokenizer and its transcoders in a form circuit-tracer loads.

A folder written by :func:`export` holds

* ``model/config.json`` and ``model/model.safetensors``: the ``HookedTransformerConfig``
  fields that define the architecture, and the TransformerLens parameters as the course has
  it (circuit-tracer builds a ``HookedTransformer`` subclass from the config; the runner
  loads these weights into it);
* ``tokenizer/``: ``tokenizer.json`` and a ``tokenizer_config.json`` naming the generic
  ``PreTrainedTokenizerFast`` (the course's transformers 5 saves a class name that
  circuit-tracer's transformers 4.57 does not know);
* per-layer transcoders (``"format": "plt"``): ``transcoders/layer_{L}.safetensors``, one per
  layer, in the layout of circuit-tracer's ``load_relu_transcoder``: ``W_enc [d_sae, d_model]``
  (SAELens stores its transpose), ``W_dec [d_sae, d_model]``, ``b_enc``, ``b_dec``; the
  transcoders read ``ln2.hook_normalized`` and write ``hook_mlp_out``, as the course's do;
* or a cross-layer transcoder (``"format": "clt"``): ``clt/``, circuit-tracer's CLT layout as
  its ``load_clt`` reads it (``utils.clt.CrossLayerTranscoder.to_circuit_tracer``:
  ``W_enc_{L}.safetensors`` with ``W_enc_{L} [d_sae, d_model]``, ``b_enc_{L}``, ``b_dec_{L}``,
  ``threshold_{L}`` (a JumpReLU), and ``W_dec_{L}.safetensors`` with
  ``W_dec_{L} [d_sae, n_layers - L, d_model]``);
* ``manifest.json``: the hooks, the format, and what the runner needs to check the export
  (each prompt's tokens and the course model's logits at its last position).

Which side of ``ln2``'s scale and bias ``ln2.hook_normalized`` sits on differs between
TransformerLens versions; the course's transcoders read it *before* them (TransformerLens
3.x). The runner checks the version circuit-tracer's venv resolves and folds ``ln2``'s
scale and bias into the MLP where that version reads the hook after them, so the same
transcoder input means the same thing on both sides.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors.torch import save_file
from sae_lens import SAE, HookedSAETransformer, Transcoder
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from utils.clt import CrossLayerTranscoder
from utils.transcoders import transcoder_layer

# HookedTransformerConfig fields that fix the computation of the models the course exports;
# everything else keeps circuit-tracer's TransformerLens defaults.
CONFIG_FIELDS = (
    "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "d_vocab_out", "act_fn",
    "normalization_type", "positional_embedding_type", "eps", "attn_only", "gated_mlp", "parallel_attn_mlp",
    "final_rms", "attention_dir", "use_attn_scale", "attn_scale", "default_prepend_bos", "tokenizer_prepends_bos",
    "original_architecture", "model_name",
)
FEATURE_INPUT_HOOK = "ln2.hook_normalized"
FEATURE_OUTPUT_HOOK = "hook_mlp_out"


@dataclass
class Prompt:
    """One prompt to attribute: its name, tokens ``[1, pos]`` (BOS first) and target logits."""

    name: str
    tokens: Int[Tensor, "1 pos"]
    logit_ids: Int[Tensor, " k"]


def export(folder: str | Path, model: HookedSAETransformer, transcoders: Sequence[SAE] | CrossLayerTranscoder,
           prompts: Sequence[Prompt], scan: str) -> Path:
    """Write the model, tokenizer, dictionaries (per-layer transcoders, or a cross-layer
    transcoder) and a manifest with the prompts to ``folder``."""
    folder = Path(folder)
    export_model(folder / "model", model)
    export_tokenizer(folder / "tokenizer", model.tokenizer)
    with torch.no_grad():
        logits = [model(p.tokens)[0, -1] for p in prompts]
    manifest: dict = {"scan": scan, "n_layers": model.cfg.n_layers,
                      "feature_input_hook": FEATURE_INPUT_HOOK, "feature_output_hook": FEATURE_OUTPUT_HOOK}
    if isinstance(transcoders, CrossLayerTranscoder):
        manifest |= {"format": "clt", "clt": export_clt(folder / "clt", transcoders, model)}
    else:
        layers = export_transcoders(folder / "transcoders", transcoders)
        manifest |= {"format": "plt", "transcoders": {str(L): f"transcoders/layer_{L}.safetensors" for L in layers}}
    manifest["prompts"] = [{"name": p.name, "tokens": p.tokens[0].tolist(), "logit_ids": p.logit_ids.tolist()} for p in prompts]
    save_file({f"logits.{p.name}": x.contiguous() for p, x in zip(prompts, logits)}, folder / "reference.safetensors")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def export_model(folder: Path, model: HookedSAETransformer) -> None:
    """``config.json`` (the fields of :data:`CONFIG_FIELDS`) and ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {}
    for name in CONFIG_FIELDS:
        value = getattr(model.cfg, name)
        config[name] = float(value) if name in ("eps", "attn_scale") else value
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    # Parameters only: buffers (causal masks) are rebuilt from the config, and their stored
    # shapes differ between TransformerLens versions.
    state = {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()}
    save_file(state, folder / "model.safetensors")


def export_tokenizer(folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """The fast tokenizer's ``tokenizer.json`` and a config any transformers version reads."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True,
              "model_max_length": int(min(tokenizer.model_max_length, 10**9))}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(tokenizer, name, None) is not None:
            config[name] = str(getattr(tokenizer, name))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def export_transcoders(folder: Path, transcoders: Sequence[SAE]) -> list[int]:
    """One ``layer_{L}.safetensors`` per transcoder (ReLU transcoders only); returns the layers."""
    folder.mkdir(parents=True, exist_ok=True)
    layers = []
    for tc in transcoders:
        if type(tc) is not Transcoder:
            raise ValueError(f"only ReLU transcoders (SAELens Transcoder) are exported, got {type(tc).__name__}")
        if tc.cfg.apply_b_dec_to_input:
            raise ValueError("a transcoder that subtracts b_dec from its input has no circuit-tracer twin")
        layer = transcoder_layer(tc)
        weights = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
        save_file({k: v.detach().cpu().float().contiguous() for k, v in weights.items()},
                  folder / f"layer_{layer}.safetensors")
        layers.append(layer)
    if sorted(layers) != list(range(len(layers))):
        raise ValueError(f"circuit-tracer needs one transcoder per layer from 0, got layers {sorted(layers)}")
    return sorted(layers)


def export_clt(folder: Path, clt: CrossLayerTranscoder, model: HookedSAETransformer) -> str:
    """circuit-tracer's CLT files for ``clt`` (it must read ``ln2.hook_normalized`` and write
    ``hook_mlp_out`` at every layer of ``model``); returns the folder's name."""
    hooks = (clt.cfg.hook_in_at(0).split(".", 2)[-1], clt.cfg.hook_out_at(0).split(".", 2)[-1])
    if hooks != (FEATURE_INPUT_HOOK, FEATURE_OUTPUT_HOOK):
        raise ValueError(f"the CLT must read {FEATURE_INPUT_HOOK} and write {FEATURE_OUTPUT_HOOK}, got {hooks}")
    if clt.cfg.n_layers != model.cfg.n_layers:
        raise ValueError(f"circuit-tracer needs a CLT over every layer ({model.cfg.n_layers}), got {clt.cfg.n_layers}")
    clt.to_circuit_tracer(folder, model_name=model.cfg.model_name)
    return folder.name

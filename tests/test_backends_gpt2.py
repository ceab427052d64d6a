"""Offline checks of the GPT-2 backends (``utils/backends/gpt2.py``).

No hub is reachable here, so the ``gpt2`` backend is checked three ways: every identifier
against the installed SAELens registry and the TransformerLens model list; the conversion of
the public transcoders and the fast failure, on small fakes; and a real load, offline, from
a simulated hub cache with the real repositories' files and random weights (``tests/hub.py``).
The ``gpt2-shaped`` backend is built for one layer and checked for shapes, tokenizer and
splicing.
"""
from __future__ import annotations

import inspect
import sys
import time
import types
import warnings

import numpy as np
import pytest
import torch
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from transformer_lens.loading_from_pretrained import get_official_model_name
from transformer_lens import HookedTransformer
from transformer_lens.supported_models import OFFICIAL_MODEL_NAMES

from tests import hub
from utils.backends import _LOADERS, gpt2

LAYERS = range(gpt2.N_LAYERS)


# ------------------------------------------------------------------ identifiers
def test_model_is_an_official_transformer_lens_model():
    assert gpt2.MODEL_NAME in OFFICIAL_MODEL_NAMES
    assert get_official_model_name(gpt2.MODEL_NAME) == gpt2.MODEL_REPO  # the repo it downloads


@pytest.mark.parametrize("release", [gpt2.RESID_RELEASE, gpt2.ATTN_RELEASE])
def test_release_is_registered_for_gpt2_small(release):
    directory = get_pretrained_saes_directory()
    assert release in directory, f"{release} is not in the installed SAELens registry"
    assert get_official_model_name(directory[release].model) == gpt2.MODEL_NAME


def test_residual_sae_ids_exist_at_every_layer():
    saes_map = get_pretrained_saes_directory()[gpt2.RESID_RELEASE].saes_map
    for layer in LAYERS:
        assert gpt2.RESID_HOOK.format(layer=layer) in saes_map


def test_attention_sae_ids_exist_at_every_layer_and_read_hook_z():
    lookup = get_pretrained_saes_directory()[gpt2.ATTN_RELEASE]
    assert lookup.conversion_func == "connor_rob_hook_z"
    for layer in LAYERS:
        path = lookup.saes_map[gpt2.ATTN_SAE_ID.format(layer=layer)]
        assert f"_L{layer}_Hcat_z_" in path, path  # the checkpoint of this layer's hook_z


def test_registry_still_lacks_gpt2_transcoders():
    """If this fails, SAELens now lists GPT-2 transcoders: use them, not TRANSCODER_REPO."""
    directory = get_pretrained_saes_directory()
    for release, lookup in directory.items():
        if get_official_model_name_or_none(lookup.model) == gpt2.MODEL_NAME:
            assert not any("ln2.hook_normalized" in p for p in lookup.saes_map.values()), release
            assert "transcoder" not in release, release


def get_official_model_name_or_none(name: str) -> str | None:
    """TransformerLens's official name for ``name``, or None if it knows no such model."""
    try:
        return get_official_model_name(name)
    except ValueError:
        return None


def test_model_processing_is_what_each_family_was_trained_on():
    """All three families were trained on TransformerLens's default processing; SAELens
    records it for the residual SAEs only, and nothing contradicts it for the others."""
    defaults = inspect.signature(HookedTransformer.from_pretrained).parameters
    assert gpt2.MODEL_PROCESSING == {k: defaults[k].default for k in gpt2.MODEL_PROCESSING}
    directory = get_pretrained_saes_directory()
    resid = (directory[gpt2.RESID_RELEASE].config_overrides or {})["model_from_pretrained_kwargs"]
    assert resid == {"center_writing_weights": True}
    assert resid.items() <= gpt2.MODEL_PROCESSING.items()
    assert "model_from_pretrained_kwargs" not in (directory[gpt2.ATTN_RELEASE].config_overrides or {})


def test_an_sae_trained_on_other_processing_is_refused(monkeypatch):
    sae = gpt2._meta_sae(8, 16, "blocks.0.hook_resid_pre")
    sae.cfg.metadata.model_from_pretrained_kwargs = {"fold_ln": False}
    monkeypatch.setattr(gpt2.SAE, "from_pretrained", lambda *args, **kwargs: sae)
    with pytest.raises(RuntimeError, match=r"trained on GPT-2 loaded with \{'fold_ln': False\}"):
        gpt2.load_sae(gpt2.RESID_RELEASE, "blocks.0.hook_resid_pre")


def test_backends_are_registered():
    assert _LOADERS["gpt2"] is gpt2.load_gpt2
    assert _LOADERS["gpt2-shaped"] is gpt2.load_gpt2_shaped


def test_bad_layers_and_kinds_are_refused():
    with pytest.raises(ValueError, match="layers 0..11"):
        gpt2.layer_list([12])
    with pytest.raises(ValueError, match="unknown dictionary kinds"):
        gpt2.check_kinds(["mlp"])


# ------------------------------------------------------------------ public transcoders
class LanguageModelSAERunnerConfig:
    """Shaped like the training config pickled in the public checkpoints, whose class lives
    in the authors' training code (``sae_training.config``), which is not installed."""

    __module__ = "sae_training.config"

    def __init__(self):
        self.hook_point = "blocks.3.ln2.hook_normalized"
        self.out_hook_point = "blocks.3.hook_mlp_out"
        self.is_transcoder = True
        self.d_sae = 16
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.run_name = None


def save_fake_checkpoint(path, state: dict[str, torch.Tensor]) -> None:
    """Pickle ``state`` as the public checkpoints do, beside a config from a module that is
    then removed again."""
    package, module = types.ModuleType("sae_training"), types.ModuleType("sae_training.config")
    module.LanguageModelSAERunnerConfig = LanguageModelSAERunnerConfig
    package.config = module
    sys.modules.update({"sae_training": package, "sae_training.config": module})
    try:
        torch.save({"cfg": LanguageModelSAERunnerConfig(), "state_dict": state}, path)
    finally:
        del sys.modules["sae_training"], sys.modules["sae_training.config"]


def test_public_transcoder_is_converted_exactly(tmp_path):
    d_in, d_sae = 8, 16
    g = torch.Generator().manual_seed(0)
    state = {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "b_enc": torch.randn(d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g),
        "b_dec_out": torch.randn(d_in, generator=g),
    }
    path = tmp_path / gpt2.TRANSCODER_FILE.format(layer=3)
    save_fake_checkpoint(path, state)
    transcoder = gpt2.transcoder_from_dunefsky(gpt2.read_dunefsky_checkpoint(path), layer=3)

    x = torch.randn(5, d_in, generator=g)
    acts = torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
    torch.testing.assert_close(transcoder.encode(x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(transcoder(x), acts @ state["W_dec"] + state["b_dec_out"],
                               atol=1e-5, rtol=1e-5)
    assert transcoder.cfg.metadata.hook_name == "blocks.3.ln2.hook_normalized"
    assert transcoder.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"


def test_a_checkpoint_pickling_other_classes_is_refused_by_name(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"cfg": np.float64(0.5), "state_dict": {}}, path)  # a numpy scalar in the config
    with pytest.raises(RuntimeError, match=r"pickles \[.*numpy.*\] besides its config"):
        gpt2.read_dunefsky_checkpoint(path)


# ------------------------------------------------------------------ fast failure
def assert_fails_fast(monkeypatch, match: str) -> None:
    """``load_gpt2`` must raise one short sentence within 2 s and never start a download."""

    def no_download(*args, **kwargs):
        raise AssertionError("load_gpt2 started a download")

    monkeypatch.setattr(gpt2.HookedSAETransformer, "from_pretrained", no_download)
    monkeypatch.setattr(gpt2.SAE, "from_pretrained", no_download)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=match) as raised:
        gpt2.load_gpt2("cpu", layers=[0])
    assert time.perf_counter() - start < 2.0
    message = str(raised.value)
    assert "\n" not in message and message.count(". ") == 0 and message.endswith("."), message
    assert "Colab" in message and "toy" in message


def test_offline_flag_without_a_cache_fails_fast_with_one_sentence(monkeypatch, tmp_path):
    with hub.reading(tmp_path):  # an empty hub cache, offline
        assert_fails_fast(monkeypatch, "Hugging Face hub .* HF_HUB_OFFLINE is set and "
                                       "gpt2/config.json is not in the local hub cache")


def test_offline_cache_without_the_dictionary_fails_fast(monkeypatch, simulated_hub, tmp_path):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "models--gpt2").symlink_to(simulated_hub / "hub" / "models--gpt2")
    with hub.reading(tmp_path):  # a cache holding GPT-2 and no dictionary
        assert_fails_fast(monkeypatch, "HF_HUB_OFFLINE is set and jbloom/GPT2-Small-SAEs-Reformatted/"
                                       "blocks.0.hook_resid_pre/cfg.json is not in the local hub cache")


def test_unreachable_hub_fails_fast_with_one_sentence(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(gpt2, "HUB_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert_fails_fast(monkeypatch, "Hugging Face hub .* does not answer")


# ------------------------------------------------------------------ failures while loading
FILES = [(gpt2.TRANSCODER_REPO, gpt2.TRANSCODER_FILE.format(layer=3))]


def test_a_hub_lost_while_loading_is_unavailable_not_a_failure():
    httpx = pytest.importorskip("httpx")  # huggingface_hub's HTTP client, installed with it (not a course requirement)

    with pytest.raises(gpt2.HubUnavailable, match="stopped answering while the layer-3 transcoder was read"):
        with gpt2.loading("the layer-3 transcoder", FILES):
            try:
                raise httpx.ConnectError("connection refused")
            except httpx.ConnectError as error:
                raise OSError("We couldn't connect to the hub") from error


def test_any_other_failure_names_the_file_and_the_fix_and_is_no_runtime_error():
    with pytest.raises(gpt2.LoadFailed) as raised:
        with gpt2.loading("the layer-3 transcoder", FILES):
            raise RuntimeError("Error(s) in loading state_dict: size mismatch for W_enc")
    message = str(raised.value)
    assert "Loading the layer-3 transcoder failed: RuntimeError: Error(s) in loading state_dict" in message
    assert FILES[0][1] in message and "delete" in message and "run the cell again" in message
    assert not isinstance(raised.value, RuntimeError), "a cell's `except RuntimeError` must not hide it"
    with pytest.raises(gpt2.LoadFailed, match="Memory ran out: restart the runtime"):
        with gpt2.loading("GPT-2 small", FILES):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# ------------------------------------------------------------------ gpt2, from a simulated hub
LAYER = 5  # its attention SAE has 49,152 latents, the others 24,576


@pytest.fixture(scope="module")
def simulated_hub():
    """A hub cache holding GPT-2 small and all three dictionaries at ``LAYER``."""
    return hub.write_hub(hub.HOME, [(kind, LAYER) for kind in gpt2.KINDS])


@pytest.fixture(scope="module")
def from_hub(simulated_hub):
    """``load_gpt2`` at ``LAYER`` from the simulated hub, offline, and the warnings it raised."""
    with hub.reading(simulated_hub), warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        backend = gpt2.load_gpt2("cpu", layers=[LAYER])
    return backend, [str(w.message) for w in raised]


def test_gpt2_loads_offline_from_a_hub_cache(from_hub):
    backend, _ = from_hub
    assert list(backend.saes) == [f"blocks.{LAYER}.hook_resid_pre"]
    assert list(backend.attn_saes) == [f"blocks.{LAYER}.attn.hook_z"]
    assert list(backend.transcoders) == [f"blocks.{LAYER}.ln2.hook_normalized"]
    d_sae = {"resid_sae": 24_576, "attn_sae": 49_152, "transcoder": 24_576}
    for kind, dictionary in zip(gpt2.KINDS, all_dictionaries(backend)):
        assert dictionary.W_enc.shape == (768, d_sae[kind]), kind
        assert dictionary.W_dec.shape == (d_sae[kind], 768), kind
    assert backend.attn_saes[f"blocks.{LAYER}.attn.hook_z"].cfg.reshape_activations == "hook_z"
    transcoder = backend.transcoders[f"blocks.{LAYER}.ln2.hook_normalized"]
    assert transcoder.cfg.metadata.hook_name_out == f"blocks.{LAYER}.hook_mlp_out"
    assert backend.model.to_tokens("Hello world").tolist() == [[50256, 15496, 995]]


def test_gpt2_is_loaded_as_its_dictionaries_were_trained(from_hub):
    backend, raised = from_hub
    model = backend.model
    assert model.cfg.normalization_type == "LNPre"  # fold_ln
    assert model.b_V.abs().max() == 0  # fold_value_biases
    for W in (model.W_E, model.W_pos, model.W_O, model.W_out):  # center_writing_weights
        assert W.mean(-1).abs().max() < 1e-5
    assert model.W_U.mean(-1).abs().max() < 1e-5  # center_unembed
    recorded = backend.saes[f"blocks.{LAYER}.hook_resid_pre"].cfg.metadata.model_from_pretrained_kwargs
    assert recorded == {"center_writing_weights": True}
    assert not [m for m in raised if "model_from_pretrained_kwargs" in m], raised


def test_gpt2_splices_every_dictionary_exactly_with_the_error_term(from_hub):
    backend, _ = from_hub
    model = backend.model
    tokens = model.to_tokens(["The Eiffel Tower is in the city of", "Hello world"])
    acts_hook = f"blocks.{LAYER}.hook_resid_pre.hook_sae_acts_post"
    with torch.no_grad():
        clean = model(tokens)
        with model.saes(saes=all_dictionaries(backend), use_error_term=True):
            assert len(model.acts_to_saes) == 3
            spliced, cache = model.run_with_cache(tokens, names_filter=acts_hook)
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)
    l0 = (cache[acts_hook] > 0).sum(-1).float().mean()
    assert 5 < l0 < 500, f"mean L0 {l0:.0f}: the simulated hub's encoder bias is off"


def test_public_transcoder_file_is_read_with_only_its_config_class_allowed(simulated_hub, from_hub):
    path = hub.snapshot_file(simulated_hub, *gpt2.dictionary_files("transcoder", LAYER)[0])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [gpt2.TRANSCODER_CFG_CLASS]
    state = gpt2.read_dunefsky_checkpoint(path)
    x = torch.randn(3, 768, generator=torch.Generator().manual_seed(0))
    acts = torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
    transcoder = from_hub[0].transcoders[f"blocks.{LAYER}.ln2.hook_normalized"]
    torch.testing.assert_close(transcoder.encode(x), acts, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ gpt2-shaped
@pytest.fixture(scope="module")
def shaped():
    """The shaped backend with all three kinds of dictionary at layer 0 only."""
    return gpt2.load_gpt2_shaped("cpu", layers=[0])


def all_dictionaries(backend) -> list:
    """Every dictionary of ``backend``: residual SAEs, attention SAEs, transcoders."""
    return [*backend.saes.values(), *backend.attn_saes.values(), *backend.transcoders.values()]


def test_shaped_model_has_gpt2_small_config(shaped):
    cfg = shaped.model.cfg
    for key, value in gpt2.GPT2_SMALL.items():
        assert getattr(cfg, key) == value, key
    assert sum(p.numel() for p in shaped.model.parameters()) > 160_000_000


def test_shaped_dictionaries_sit_at_the_gpt2_hooks(shaped):
    assert list(shaped.saes) == ["blocks.0.hook_resid_pre"]
    assert list(shaped.attn_saes) == ["blocks.0.attn.hook_z"]
    assert list(shaped.transcoders) == ["blocks.0.ln2.hook_normalized"]
    for dictionary in all_dictionaries(shaped):
        assert dictionary.W_enc.shape == (768, gpt2.D_SAE)
        assert dictionary.W_dec.shape == (gpt2.D_SAE, 768)
    assert shaped.attn_saes["blocks.0.attn.hook_z"].cfg.reshape_activations == "hook_z"
    transcoder = shaped.transcoders["blocks.0.ln2.hook_normalized"]
    assert transcoder.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    assert not transcoder.cfg.apply_b_dec_to_input


def test_shaped_tokenizer_is_gpt2s(shaped):
    model = shaped.model
    assert model.to_tokens("Hello world").tolist() == [[50256, 15496, 995]]
    assert model.to_tokens("Hello world", prepend_bos=False).tolist() == [[15496, 995]]
    assert model.to_str_tokens(" Hello") == ["<|endoftext|>", " Hello"]
    text = "Transcoders, café & naïve déjà-vu: 1732 to 1799."
    tokens = model.to_tokens(text)[0]
    assert tokens[0].item() == 50256 and (tokens[1:] != 50256).all()
    assert model.to_string(tokens[1:]) == text


def test_shaped_splicing_with_error_term_keeps_logits(shaped):
    model = shaped.model
    tokens = model.to_tokens(["The cat sat on the mat because it was warm", "Hello world"])
    dictionaries = all_dictionaries(shaped)
    with torch.no_grad():
        clean = model(tokens)
        try:
            for dictionary in dictionaries:
                model.add_sae(dictionary, use_error_term=True)
            assert len(model.acts_to_saes) == 3
            acts_hook = "blocks.0.hook_resid_pre.hook_sae_acts_post"
            spliced, cache = model.run_with_cache(tokens, names_filter=acts_hook)
        finally:
            model.reset_saes()
    assert clean.isfinite().all() and clean.std() > 0.1  # random, but not degenerate
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)
    l0 = (cache[acts_hook] > 0).sum(-1).float().mean()
    assert 5 < l0 < 500, f"mean L0 {l0:.0f}: the calibrated encoder bias is off"


def test_shaped_dictionaries_are_seeded():
    acts = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    first = gpt2.shaped_dictionary("resid_sae", 2, acts, d_sae=64, device="cpu")
    again = gpt2.shaped_dictionary("resid_sae", 2, acts, d_sae=64, device="cpu")
    other = gpt2.shaped_dictionary("resid_sae", 3, acts, d_sae=64, device="cpu")
    torch.testing.assert_close(first.W_dec, again.W_dec)
    assert not torch.equal(first.W_dec, other.W_dec)

"""Training dictionaries on the model organism with SAELens (introduced in chapter 06).

- :func:`token_dataset`: generator text as a ``datasets.Dataset`` with one ``tokens``
  column, the pre-tokenized form SAELens's ``ActivationsStore`` reads (``override_dataset``).
- :func:`text_dataset`: text tokenized by any model's tokenizer, cut into rows of one
  length (chapter 06's GPT-2 scale-up trains on the organism's text, GPT-2-tokenized).
- :func:`train_sae`: run SAELens's own ``LanguageModelSAETrainingRunner`` on the toy model
  (``override_model``), recording the loss terms of every step, and return the inference SAE.
- :func:`inference_sae`: a trained ``TrainingSAE`` as the inference class SAELens would save
  (a BatchTopK SAE becomes a JumpReLU SAE), without touching the disk.
- :func:`activation_batches`: an endless stream of activations at some hooks, one row per
  token (BOS left out), for training loops of our own (SAELens has no transcoder trainer).
- :func:`new_transcoder`: an untrained ``Transcoder`` between two hooks, initialised the way
  SAELens initialises its training SAEs (chapter 04's ``transcoder_metrics`` judges one).
- :func:`latent_acts` and :func:`recovery`: a dictionary's latents over text, and the best
  latent per planted label with its AUROC and precision (ground truth).
- :func:`load_sweep`: the committed results of ``python -m benchmarks.training_sweep``.

The dictionaries shipped with the organism were trained by ``utils.toy.training`` (one loop
for all of them, with a steered L1 coefficient); these helpers are the chapter's, not the build's.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
import tqdm.auto
import tqdm.std
from datasets import Dataset
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer, LanguageModelSAETrainingRunner, Transcoder, TranscoderConfig
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE, TrainStepInput, TrainStepOutput
from sae_lens.training import activation_scaler, multi_sae_trainer, sae_trainer
from torch import Tensor

from utils.toy.generator import World

_SAE_LENS_BARS = (sae_trainer, activation_scaler, multi_sae_trainer)  # modules that draw a bar while training
SWEEP_COMMAND = "python -m benchmarks.training_sweep"
SWEEP_RESULTS = Path(__file__).parent / "training_sweep.json"

# What SAELens says about the way this chapter uses it on purpose: a dataset and a model
# passed in rather than named, a dataset of short sequences read several times over.
_EXPECTED_WARNINGS = (
    r"The training dataset contains fewer samples",
    r"All samples in the training dataset have been exhausted",
    r"pretokenized dataset has context_size",  # rows longer than the context are cut, as we ask
    r"To copy construct from a tensor",  # SAELens wraps each dataset row in torch.tensor
    r"\s*This SAE has non-empty model_from_pretrained_kwargs",  # a hub-loading hint; our model is built in memory
)


def token_dataset(world: World, n_seqs: int, seq_len: int, seed: int = 0) -> Dataset:
    """``n_seqs`` generator sequences of ``seq_len`` tokens (BOS first) as a ``Dataset`` with
    one column, ``tokens``: SAELens reads such a dataset as already tokenized and feeds each
    row to the model as it is."""
    tokens = world.corpus(n_seqs, seq_len, seed=seed).tokens
    return Dataset.from_dict({"tokens": tokens.tolist()})


def text_dataset(model: HookedSAETransformer, texts: list[str], context_size: int) -> Dataset:
    """``texts`` tokenized by ``model``'s tokenizer as one stream (BOS before each text), cut
    into rows of ``context_size`` tokens, each row BOS first: the pre-tokenized form
    :func:`token_dataset` gives, for a model with a real tokenizer. The last partial row is
    dropped."""
    bos = model.tokenizer.bos_token_id
    stream = [t for text in texts for t in [bos, *model.tokenizer(text)["input_ids"]]]
    body = context_size - 1
    rows = [[bos, *stream[i:i + body]] for i in range(0, len(stream) - body + 1, body)]
    return Dataset.from_dict({"tokens": rows})


class TrainingBar(tqdm.auto.tqdm):  # type: ignore[misc, valid-type]
    """SAELens's progress bars as the course shows them: a short description, "training"
    (SAELens writes every loss term into it, which wraps the bar over two lines), unit-scaled
    counts ("123k/123k") and a finished run shown
    at 100 %. SAELens's trainer moves its bar only every 100 steps, so a run of 120 steps
    would end at 83 %, red, looking failed; the trainer closes its bar when its loop has
    run to the end, so a close outside an exception completes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("unit_scale", True)
        super().__init__(*args, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        # SAELens writes "<step>| <loss>: <value> | ..." every 100 steps: stale between
        # updates and too long for one line; the bar's count says how far the run is.
        step = (desc or "").split("|")[0].strip()
        super().set_description("training" if step.isdigit() else desc, refresh)

    def close(self) -> None:
        if not self.disable and self.total and self.n < self.total and sys.exc_info()[0] is None:
            self.update(self.total - self.n)
        super().close()


@contextlib.contextmanager
def quiet_sae_lens() -> Iterator[None]:
    """For the duration of a ``with`` block: silence SAELens's notices about overridden
    models and datasets and the warnings listed in ``_EXPECTED_WARNINGS`` (nothing else),
    and turn SAELens's progress bars off when ``TQDM_DISABLE`` is set (its notebook bars
    ignore the variable; see ``utils.progress``), else show them as :class:`TrainingBar`."""
    sae_lens_logger = logging.getLogger("sae_lens")
    level = sae_lens_logger.level
    sae_lens_logger.setLevel(logging.ERROR)
    bars_off = os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    saved = {module: module.tqdm for module in _SAE_LENS_BARS}
    try:
        for module in saved:
            module.tqdm = functools.partial(tqdm.std.tqdm, disable=True) if bars_off else TrainingBar
        with warnings.catch_warnings():
            for message in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        sae_lens_logger.setLevel(level)
        for module, bar in saved.items():
            module.tqdm = bar


@torch.no_grad()
def inference_sae(trained: TrainingSAE[Any]) -> SAE[Any]:
    """The inference SAE that ``trained.save_inference_model`` would write, built in memory:
    same weights, the inference architecture (BatchTopK's learned threshold becomes a
    JumpReLU threshold), evaluation mode."""
    state = {name: t.detach().clone() for name, t in trained.state_dict().items()}
    trained.process_state_dict_for_saving_inference(state)
    sae = SAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state)
    return sae.to(trained.device).eval()


@dataclass
class TrainingRun:
    """What :func:`train_sae` returns: the inference SAE, each loss term per step (keys as
    in SAELens's ``TrainStepOutput.losses``, plus ``l0``), and the wall time in seconds."""

    sae: SAE[Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def _record_steps(sae: TrainingSAE[Any], history: dict[str, list[float]]) -> None:
    """Wrap ``sae.training_forward_pass`` (the one call SAELens's trainer makes per step) so
    that each step's loss terms and L0 are appended to ``history``."""
    forward = sae.training_forward_pass

    def recorded(step_input: TrainStepInput) -> TrainStepOutput:
        output = forward(step_input)
        for name, value in output.losses.items():
            history.setdefault(name, []).append(float(value.item()))
        l0 = (output.feature_acts > 0).float().sum(-1).mean()
        history.setdefault("l0", []).append(float(l0.item()))
        return output

    sae.training_forward_pass = recorded  # type: ignore[method-assign]


def train_sae(cfg: LanguageModelSAERunnerConfig[Any], model: HookedSAETransformer,
              dataset: Dataset | None, seed: int = 0) -> TrainingRun:
    """Train one SAE with SAELens's ``LanguageModelSAETrainingRunner`` on ``model``'s
    activations at ``cfg.hook_name``, reading ``dataset`` (see :func:`token_dataset`), or
    ``cfg.dataset_path`` from the hub when ``dataset`` is None.

    The runner seeds nothing itself, so ``seed`` seeds torch here: it fixes the SAE's
    initial weights and the shuffling of SAELens's activation buffer.
    """
    torch.manual_seed(seed)
    history: dict[str, list[float]] = {}
    start = time.perf_counter()
    with quiet_sae_lens():
        runner = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset)
        _record_steps(runner.sae, history)
        trained = runner.run()
        sae = inference_sae(trained)
    return TrainingRun(sae, history, time.perf_counter() - start)


def activation_batches(model: HookedSAETransformer, world: World, hooks: list[str],
                       batch_seqs: int, seq_len: int, seed: int = 0) -> Iterator[dict[str, Float[Tensor, "token d"]]]:
    """Endless stream of activations at ``hooks``: batch ``t`` reads
    ``world.corpus(batch_seqs, seq_len, seed=seed + t)``, runs the model only as far as
    the last layer it needs, and yields ``{hook: [token, d]}`` with every non-BOS token of
    the batch as one row (attention heads, if any, flattened)."""
    last_layer = max(int(hook.split(".")[1]) for hook in hooks)
    for t in itertools.count(seed):
        tokens = world.corpus(batch_seqs, seq_len, seed=t).tokens
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=last_layer + 1)
        yield {hook: einops.rearrange(cache[hook][:, 1:], "b p ... -> (b p) (...)") for hook in hooks}


def new_transcoder(d_in: int, d_sae: int, d_out: int, hook_in: str, hook_out: str,
                   seed: int = 0, decoder_norm: float = 0.1) -> Transcoder:
    """An untrained ReLU ``Transcoder`` from ``hook_in`` to ``hook_out``.

    Initialised as SAELens initialises its training SAEs: decoder rows in random directions
    with norm ``decoder_norm``, encoder columns likewise (the decoder's transpose when
    ``d_in == d_out``), biases zero.
    """
    generator = torch.Generator().manual_seed(seed)
    metadata = SAEMetadata(hook_name=hook_in, hook_name_out=hook_out)
    transcoder = Transcoder(TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_out,
                                             apply_b_dec_to_input=False, metadata=metadata))
    decoder = torch.randn(d_sae, d_out, generator=generator)
    encoder = decoder.T if d_in == d_out else torch.randn(d_in, d_sae, generator=generator)
    with torch.no_grad():
        transcoder.W_dec.copy_(decoder_norm * decoder / decoder.norm(dim=-1, keepdim=True))
        transcoder.W_enc.copy_(decoder_norm * encoder / encoder.norm(dim=0, keepdim=True))
        transcoder.b_enc.zero_()
        transcoder.b_dec.zero_()
    return transcoder


@torch.no_grad()
def latent_acts(model: HookedSAETransformer, sae: SAE[Any], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "token d_sae"]:
    """Latent activations of ``sae`` (or a transcoder) on its input hook, one row per
    non-BOS token of ``tokens``, in (sequence, position) order."""
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=int(hook.split(".")[1]) + 1)
    return sae.encode(einops.rearrange(cache[hook][:, 1:], "b p ... -> (b p) ..."))


def recovery(
    acts: Float[Tensor, "token d_sae"],
    labels: dict[str, Bool[Tensor, " token"]],
    aurocs: Callable[[Tensor, Tensor], Tensor],
    precision: Callable[[Tensor, Tensor], Tensor],
    min_tokens: int = 5,
) -> dict[str, dict[str, float | int]]:
    """For each label: the latent with the highest AUROC (``aurocs(acts, label)``, chapter
    00's ``latent_aurocs``), that AUROC, that latent's precision (``precision(acts, label)``,
    chapter 06's ``label_precision``), and ``specialists``: how many latents active on at
    least ``min_tokens`` tokens put 90% or more of their activation on the label."""
    active = (acts > 0).sum(0) >= min_tokens
    table = {}
    for name, label in labels.items():
        scores, shares = aurocs(acts, label), precision(acts, label)
        best = int(scores.argmax())
        table[name] = {"latent": best, "auroc": round(float(scores[best]), 4), "precision": round(float(shares[best]), 4),
                       "specialists": int(((shares >= 0.9) & active).sum())}
    return table


def load_sweep(path: Path = SWEEP_RESULTS) -> dict[str, Any]:
    """The committed results of ``python -m benchmarks.training_sweep`` (schema in its docstring)."""
    if not path.exists():
        raise FileNotFoundError(f"no sweep results at {path}: run `{SWEEP_COMMAND}` (several minutes on a CPU)")
    return json.loads(path.read_text())

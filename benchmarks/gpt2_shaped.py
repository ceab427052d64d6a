"""Time and memory of GPT-2 small with 24,576-latent dictionaries, on the gpt2-shaped backend.

    python -m utils.course bench gpt2_shaped --device cuda            # all 12 layers
    python -m utils.course bench gpt2_shaped --device cpu --layers 4  # dictionaries at layers 0..3

Prints one JSON object, then one readable line. Measured: the build time; the parameter
memory of the model and of each kind of dictionary; the time and peak memory of one forward
pass (no gradients) over a batch of random tokens, bare, with every residual SAE spliced in,
and with all three kinds spliced in (residual SAEs, hook_z SAEs, MLP transcoders), each
spliced with its error term so that the logits are the model's own. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the peak resident set size (sampled every
millisecond with psutil) on the CPU; "extra" is that peak minus the memory held before the pass.
On the CPU the allocator keeps memory freed by earlier passes, so read "extra" there as a
rough figure; the CUDA figures are exact.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psutil
import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.backends.gpt2 import N_LAYERS, load_gpt2_shaped

MB = 2**20


def arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--layers", type=int, default=N_LAYERS, help="dictionaries at layers 0..N-1"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=128)


def parameter_mb(modules: Sequence[torch.nn.Module]) -> float:
    """Memory held by the parameters of ``modules``, in MiB."""
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / MB


def rss_bytes() -> int:
    """Resident set size of this process now."""
    return psutil.Process().memory_info().rss


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    """Fill the yielded dict with ``peak_mb`` and ``extra_mb`` (peak minus memory before)."""
    figures: dict[str, float] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield figures
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        before, samples, done = rss_bytes(), [], threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(samples, done))
        sampler.start()
        try:
            yield figures
        finally:
            done.set()
            sampler.join()
        peak = max(samples + [rss_bytes()])
    figures.update(peak_mb=peak / MB, extra_mb=(peak - before) / MB)


def _sample_rss(samples: list[int], done: threading.Event) -> None:
    """Append the resident set size every millisecond until ``done`` is set."""
    while not done.wait(0.001):
        samples.append(rss_bytes())


def forward_figures(
    model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """Seconds and peak memory of one forward pass with ``dictionaries`` spliced in."""
    device = str(tokens.device)
    try:
        for dictionary in dictionaries:
            model.add_sae(dictionary, use_error_term=True)
        assert len(model.acts_to_saes) == len(dictionaries), "a dictionary was not spliced"
        with torch.no_grad(), peak_memory(device) as figures:
            start = time.perf_counter()
            model(tokens)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            figures["seconds"] = time.perf_counter() - start
    finally:
        model.reset_saes()
    return figures


def main(args: argparse.Namespace) -> None:
    """Build the backend, measure, print JSON and a readable line."""
    start = time.perf_counter()
    backend = load_gpt2_shaped(args.device, layers=range(args.layers))
    build_s = time.perf_counter() - start
    resid = list(backend.saes.values())
    every = resid + list(backend.attn_saes.values()) + list(backend.transcoders.values())
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(50257, (args.batch, args.pos), generator=generator).to(args.device)
    forward_figures(backend.model, [], tokens)  # warm-up: first calls allocate workspaces
    report = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "dictionary_layers": args.layers,
        "batch": args.batch,
        "pos": args.pos,
        "build_s": build_s,
        "params_mb": {
            "model": parameter_mb([backend.model]),
            "resid_saes": parameter_mb(resid),
            "attn_saes": parameter_mb(list(backend.attn_saes.values())),
            "transcoders": parameter_mb(list(backend.transcoders.values())),
        },
        "forward": {
            "bare": forward_figures(backend.model, [], tokens),
            "resid_saes": forward_figures(backend.model, resid, tokens),
            "all_kinds": forward_figures(backend.model, every, tokens),
        },
    }
    print(json.dumps(rounded(report), indent=1))
    print(readable(report))


def rounded(tree):
    """``tree`` (nested dicts) with every float rounded to 3 decimals."""
    if isinstance(tree, dict):
        return {key: rounded(value) for key, value in tree.items()}
    return round(tree, 3) if isinstance(tree, float) else tree


def readable(report: dict) -> str:
    """One line summarising ``report``."""
    params = report["params_mb"]
    fwd = report["forward"]
    return (
        f"gpt2-shaped on {report['device']}, dictionaries at {report['dictionary_layers']} layers, "
        f"{report['batch']}x{report['pos']} tokens: built in {report['build_s']:.0f} s; "
        f"parameters {sum(params.values()) / 1024:.2f} GiB (model {params['model']:.0f} MiB); "
        + "; ".join(
            f"forward {name}: {f['seconds']:.1f} s, peak {f['peak_mb'] / 1024:.2f} GiB "
            f"(+{f['extra_mb']:.0f} MiB)"
            for name, f in fwd.items()
        )
    )

"""Time and memory of the ``gpt2`` backend with all 36 dictionaries, read from a simulated hub.

    python -m utils.course bench gpt2_hub                  # CPU; builds the hub first (once, ~6 GB)
    python -m utils.course bench gpt2_hub --device cuda

The simulated hub (``tests/hub.py``) holds the real repositories' files with random weights
of the true sizes, so what a learner's machine does with them (read them, hold them, run
them) costs what it costs with the real ones; only the numbers the model computes mean
nothing. Measured in a fresh process, offline, against that cache: the seconds
``load_backend("gpt2", device)`` takes (GPT-2 small, 12 residual SAEs, 12 hook_z SAEs, 12 MLP
transcoders, read from disk, no download); the peak resident set size of the process after
the load and after one forward pass over random tokens with all 36 dictionaries spliced in
(with their error terms); on CUDA also the peak GPU memory. And the size of the files, which
is what a first download costs. Prints one JSON object, then one readable line.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

GiB = 2**30


def arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--measure", action="store_true", help="(internal) measure in this process")


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def measure(device: str, batch: int, pos: int) -> dict[str, float]:
    """Load the backend from the hub cache in ``HF_HOME`` and run one spliced forward pass."""
    import torch

    from utils.backends import load_backend

    start = time.perf_counter()
    backend = load_backend("gpt2", device)
    figures = {"load_s": time.perf_counter() - start, "rss_after_load_gib": peak_rss_gib()}
    every = [*backend.saes.values(), *backend.attn_saes.values(), *backend.transcoders.values()]
    tokens = torch.randint(50257, (batch, pos), generator=torch.Generator().manual_seed(0))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model = backend.model
    with torch.no_grad(), model.saes(saes=every, use_error_term=True):
        assert len(model.acts_to_saes) == 36, "a dictionary was not spliced"
        start = time.perf_counter()
        model(tokens.to(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        figures["forward_s"] = time.perf_counter() - start
    figures["rss_after_forward_gib"] = peak_rss_gib()
    if device.startswith("cuda"):
        figures["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / GiB
    return figures


def main(args: argparse.Namespace) -> None:
    """Build the hub (if needed), then measure in a child process and report."""
    if args.measure:
        print(json.dumps(measure(args.device, args.batch, args.pos)))
        return
    from tests import hub
    from utils.backends.gpt2 import KINDS, N_LAYERS

    start = time.perf_counter()
    home = hub.write_hub(hub.HOME, [(kind, layer) for kind in KINDS for layer in range(N_LAYERS)])
    build_s = time.perf_counter() - start
    disk = sum(f.stat().st_size for f in (home / "hub").rglob("*") if f.is_file()) / GiB
    with hub.reading(home):  # the child process reads this cache, offline
        child = subprocess.run(
            [sys.executable, "-m", "utils.course", "bench", "gpt2_hub", "--measure", "--device", args.device,
             "--batch", str(args.batch), "--pos", str(args.pos)],
            check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
        )
    report = {"device": args.device, "batch": args.batch, "pos": args.pos, "hub_build_s": build_s,
              "hub_files_gib": disk, **json.loads(child.stdout.strip().splitlines()[-1])}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}, indent=1))
    print(
        f"gpt2 backend, 36 dictionaries, on {args.device}: {disk:.2f} GiB of hub files; loaded "
        f"from disk in {report['load_s']:.0f} s; peak RSS {report['rss_after_load_gib']:.2f} GiB "
        f"after loading, {report['rss_after_forward_gib']:.2f} GiB after one forward pass over "
        f"{args.batch}x{args.pos} tokens with all spliced ({report['forward_s']:.1f} s)"
        + (f"; GPU peak {report['gpu_peak_gib']:.2f} GiB" if "gpu_peak_gib" in report else "")
    )

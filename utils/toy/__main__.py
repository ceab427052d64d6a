"""``python -m utils.toy build`` rebuilds every artifact from seeds (``--only clt``: the
cross-layer transcoders alone, on the saved model, nothing else retrained or rewritten);
``python -m utils.toy explain`` rewrites the explanation table and ``report.json`` from the
saved model and dictionaries (no training); ``python -m utils.toy report`` prints the figures
of merit as JSON."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from utils.toy import ARTIFACTS, EXPLANATIONS, REPORT  # noqa: E402
from utils.toy.build import build, build_clts, explain, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m utils.toy")
    parser.add_argument("command", choices=["build", "explain", "report"])
    parser.add_argument("--root", type=Path, default=ARTIFACTS, help="artifact folder")
    parser.add_argument("--model-steps", type=int, default=2000)
    parser.add_argument("--dictionary-steps", type=int, default=2000)
    parser.add_argument("--keep-model", action="store_true",
                        help="retrain the dictionaries only, on the saved model")
    parser.add_argument("--only", choices=["clt"],
                        help="build only this (clt: the cross-layer transcoders and report.json's clt entry)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine, 2 ran 10x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "build" and args.only == "clt":
        result = build_clts(args.root, args.dictionary_steps)
        print(f"trained the cross-layer transcoders in {result['clt']['build']['wall_time_s']} s")
    elif args.command == "build":
        result = build(args.root, args.model_steps, args.dictionary_steps,
                       retrain_model=not args.keep_model)
        print(f"rebuilt every artifact in {result['build']['wall_time_s']} s")
    elif args.only is not None:
        parser.error("--only goes with build")
    elif args.command == "explain":
        result = explain(args.root)
        print(f"rewrote {args.root / EXPLANATIONS} and {args.root / REPORT}")
    else:
        result = report(args.root)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""``python -m utils.hunt build`` rebuilds every artifact of the hunt model from seeds;
``python -m utils.hunt explain`` rewrites the explanation table, ``truth.json`` and
``report.json`` from the saved model and dictionaries (no training); ``python -m utils.hunt
report`` prints the figures as JSON (the organism's report on the hunt model, plus the
planted tasks' mechanisms under ``planted``)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from utils.hunt import ARTIFACTS, REPORT, TRUTH  # noqa: E402
from utils.hunt.build import DICTIONARY_STEPS, MODEL_STEPS, build, explain, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m utils.hunt")
    parser.add_argument("command", choices=["build", "explain", "report"])
    parser.add_argument("--root", type=Path, default=ARTIFACTS, help="artifact folder")
    parser.add_argument("--model-steps", type=int, default=MODEL_STEPS)
    parser.add_argument("--dictionary-steps", type=int, default=DICTIONARY_STEPS)
    parser.add_argument("--keep-model", action="store_true",
                        help="retrain the dictionaries only, on the saved model")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "build":
        result = build(args.root, args.model_steps, args.dictionary_steps, retrain_model=not args.keep_model)
        print(f"rebuilt every artifact in {result['build']['wall_time_s']} s "
              f"({result['build']['cpu_time_s']} s of CPU)")
    elif args.command == "explain":
        result = explain(args.root)
        print(f"rewrote the explanation table, {args.root / TRUTH} and {args.root / REPORT}")
    else:
        result = report(args.root)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

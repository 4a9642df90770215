"""``zvperf weights write DIR``: a model folder in the official layout with the full-size architecture and seeded
synthetic weights (the official initial scales), for the official inference code to load with its own loader and
for ``--zv-weights DIR``: timings are real, the audio is noise."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.engine.tokenizer import EmiliaTokenizer
from zvperf.engine.vocoder import synthetic_vocos
from zvperf.engine.weights import MODELS, SYNTHETIC, Weights, synthetic_model, write_model_dir
from zvperf.errors import ZvperfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    write = actions.add_parser("write", help="write synthetic full-size weights as an official model folder")
    write.add_argument("directory", type=Path, metavar="DIR", help="the folder to write (created; must be empty)")
    write.add_argument("--model", default="zipvoice_distill", choices=list(MODELS))
    write.add_argument("--seed", type=int, default=0, help="the weights' seed (default 0, as --zv-weights synthetic)")
    write.add_argument("--checkpoint", default="model.pt", choices=["model.pt", "model.safetensors"])


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ZvperfError(f"{directory}: exists and is not an empty folder; name a new one.")
    model, vocabulary = synthetic_model(args.model, args.seed)
    description = f"synthetic (seeded random weights, seed {args.seed})"
    weights = Weights(model, EmiliaTokenizer(vocabulary), synthetic_vocos(args.seed), SYNTHETIC, description)
    write_model_dir(weights, directory, checkpoint=args.checkpoint)
    print(
        f"wrote {args.model} with synthetic weights (seed {args.seed}) to {directory}: {args.checkpoint}, model.json, "
        "tokens.txt, vocos/ (load it with --zv-weights DIR, or the official --model-dir DIR --vocoder-path DIR/vocos)"
    )
    return 0

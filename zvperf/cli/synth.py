"""``zvperf synth``: synthesise one sentence, print the stage timings and the real-time factor."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zvperf.backends import backend_names, check_runnable, get_backend
from zvperf.engine import audio
from zvperf.engine.device import resolve_device
from zvperf.engine.pipeline import STAGES, Synthesizer
from zvperf.engine.precision import DTYPES
from zvperf.engine.weights import LOCAL, MODELS, SYNTHETIC, load_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="zipvoice_distill", choices=list(MODELS))
    p.add_argument("--num-step", type=int, help="Euler steps (default: zipvoice 16, zipvoice_distill 8)")
    p.add_argument("--guidance-scale", type=float, help="default: zipvoice 1.0, zipvoice_distill 3.0")
    p.add_argument("--t-shift", type=float, default=0.5)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--text", default=audio.DEMO_TEXT)
    p.add_argument("--prompt-wav", type=Path, default=audio.DEMO_PROMPT_WAV, help="default: the bundled demo prompt")
    p.add_argument("--prompt-text", help="transcript of --prompt-wav (needed when it is given)")
    p.add_argument("--out", type=Path, default=Path("result.wav"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=list(DTYPES))
    p.add_argument("--backend", default="torch", choices=backend_names(), help="how the decoder runs (default: torch)")
    p.add_argument("--weights", default="auto", help="DIR, hub, synthetic or auto (hub cache, else synthetic)")
    p.add_argument("--vocoder", default="auto", help="DIR (config.yaml + pytorch_model.bin), hub, synthetic or auto")
    p.add_argument("--tokenizer", default="emilia", choices=["emilia", "espeak", "simple"])
    p.add_argument("--lang", default="en-us", help="espeak language, with --tokenizer espeak")
    p.add_argument("--seed", type=int, default=666)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.prompt_text is None:
        if args.prompt_wav != audio.DEMO_PROMPT_WAV:
            raise_missing_transcript(args.prompt_wav)
        args.prompt_text = audio.DEMO_PROMPT_TEXT
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    backend = get_backend(args.backend)
    check_runnable(backend, device, args.precision)
    weights = load_weights(args.model, args.weights, args.vocoder, tokenizer=args.tokenizer, lang=args.lang)
    synthesizer = Synthesizer(weights, device=device, precision=args.precision)
    synthesizer.solver = backend.prepare(synthesizer.model, device, args.precision)
    with torch.inference_mode():
        result = synthesizer.synthesize(
            args.text,
            args.prompt_wav,
            args.prompt_text,
            num_step=args.num_step,
            guidance_scale=args.guidance_scale,
            speed=args.speed,
            t_shift=args.t_shift,
            seed=args.seed,
        )
    label = "synthetic weights: timings are real, this audio is noise" if weights.kind == SYNTHETIC else ""
    audio.write_wav(args.out, result.waveform, comment=label)
    report = {
        "model": args.model,
        "num_step": args.num_step or synthesizer.model.default_num_step,
        "guidance_scale": synthesizer.model.default_guidance_scale
        if args.guidance_scale is None
        else args.guidance_scale,
        "device": device,
        "backend": args.backend,
        "precision": args.precision,
        "weights": weights.kind,
        "weights_source": weights.description,
        "out": str(args.out),
        "audio_seconds": round(result.audio_seconds, 4),
        "frames": result.frames,
        "nfe": result.nfe,
        "timings_s": {k: round(v, 6) for k, v in result.timings.items()},
        "rtf": round(result.rtf, 6),
        "warnings": result.warnings,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for note in result.warnings:
        print(f"warning: {note}")
    if weights.kind == SYNTHETIC:
        print(f"note: synthetic weights ({weights.description}): timings are real, the audio is noise")
    elif weights.kind == LOCAL:
        print(f"note: local weights, not the published checkpoints ({weights.description})")
    print(f"{args.model}, {report['num_step']} steps, {args.backend} on {device} {args.precision}: wrote {args.out}")
    for stage in (*STAGES, "total"):
        print(f"  {stage:<13} {result.timings[stage] * 1000:10.1f} ms")
    print(f"  audio         {result.audio_seconds:10.2f} s")
    print(f"  RTF           {result.rtf:10.4f}  (seconds of compute per second of audio)")
    return 0


def raise_missing_transcript(path: Path) -> None:
    from zvperf.errors import ZvperfError

    raise ZvperfError(f"--prompt-text is required with --prompt-wav {path} (the transcript of the prompt).")

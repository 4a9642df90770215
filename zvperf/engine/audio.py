"""Audio in and out: prompt loading and clean-up, Vocos mel features, wav writing."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from zvperf.errors import ZvperfError

SAMPLE_RATE = 24000
HOP_LENGTH = 256
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 93.75
TARGET_RMS = 0.1
FEAT_SCALE = 0.1  # features are multiplied by this before the model and divided by it before the vocoder


@dataclasses.dataclass
class PromptAudio:
    waveform: torch.Tensor  # (1, samples) mono, 24 kHz, trimmed, loudness-normalised
    original_rms: float  # before normalisation; the output is brought back to it
    warnings: list[str]

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / SAMPLE_RATE


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """(channels, samples) float32 and the sample rate; any format libsndfile reads."""
    path = Path(path)
    if not path.is_file():
        raise ZvperfError(f"{path}: prompt wav not found.")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ZvperfError(f"{path}: not a readable audio file ({exc}).") from None
    if data.shape[0] == 0:
        raise ZvperfError(f"{path}: the audio file is empty (0 samples).")
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def to_mono_24k(waveform: torch.Tensor, rate: int) -> torch.Tensor:
    """Channels averaged, resampled to 24 kHz with torchaudio: (1, samples)."""
    mono = waveform.mean(dim=0, keepdim=True)
    if rate != SAMPLE_RATE:
        mono = torchaudio.functional.resample(mono, orig_freq=rate, new_freq=SAMPLE_RATE)
    return mono


def _pydub():
    """pydub, imported quietly: it looks for ffmpeg at import, but in-memory segments need none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
        import pydub
        import pydub.silence
    return pydub


def _audio_segment(waveform: torch.Tensor):
    """The waveform as a 16-bit pydub AudioSegment (pydub's silence tools work on those, as the reference does)."""
    pcm = (waveform[0].numpy() * 32768.0).clip(-32768, 32767).astype(np.int16)
    return _pydub().AudioSegment(data=pcm.tobytes(), sample_width=2, frame_rate=SAMPLE_RATE, channels=1)


def _from_segment(segment) -> torch.Tensor:
    samples = np.array(segment.get_array_of_samples(), dtype=np.float32) / 32768.0
    return torch.from_numpy(samples)[None, :]


def trim_silence(waveform: torch.Tensor, edges_only: bool, trailing_ms: int = 0) -> torch.Tensor:
    """Remove silence (below -50 dBFS) as the reference does, and optionally pad with silence at the end.

    Inner silences longer than 1 s are shortened (unless ``edges_only``); leading and trailing
    silence is cut to 0.1 s.
    """
    pydub = _pydub()
    segment = _audio_segment(waveform)
    if not edges_only:
        pieces = pydub.silence.split_on_silence(
            segment, min_silence_len=1000, silence_thresh=-50, keep_silence=1000, seek_step=10
        )
        segment = sum(pieces, pydub.AudioSegment.silent(duration=0, frame_rate=SAMPLE_RATE))
    start = max(0, pydub.silence.detect_leading_silence(segment, silence_threshold=-50) - 100)
    end = max(0, pydub.silence.detect_leading_silence(segment.reverse(), silence_threshold=-50) - 100)
    segment = segment[start : len(segment) - end]
    if trailing_ms:
        segment = segment + pydub.AudioSegment.silent(duration=trailing_ms, frame_rate=SAMPLE_RATE)
    return _from_segment(segment)


def rms(waveform: torch.Tensor) -> float:
    return float(waveform.pow(2).mean().sqrt()) if waveform.numel() else 0.0


def prepare_prompt(waveform: torch.Tensor, rate: int, source: str) -> PromptAudio:
    """Mono 24 kHz, silence trimmed, 0.2 s of silence appended, quiet prompts raised to RMS 0.1."""
    if waveform.numel() == 0:
        raise ZvperfError(f"{source}: the prompt has no samples.")
    if not torch.isfinite(waveform).all():
        raise ZvperfError(f"{source}: the prompt contains NaN or infinite samples.")
    trimmed = trim_silence(to_mono_24k(waveform, rate), edges_only=False, trailing_ms=200)
    original = rms(trimmed)
    if original == 0.0:
        raise ZvperfError(f"{source}: the prompt is silent (nothing above -50 dBFS).")
    if original < TARGET_RMS:
        trimmed = trimmed * (TARGET_RMS / original)
    notes = []
    seconds = trimmed.shape[-1] / SAMPLE_RATE
    if seconds > 20:
        notes.append(
            f"the prompt is {seconds:.1f} s long, far over the 1-3 s recommended: "
            "expect much slower synthesis and worse speech; use a shorter prompt"
        )
    elif seconds > 10:
        notes.append(f"the prompt is {seconds:.1f} s long; 1-3 s is recommended (long prompts slow synthesis down)")
    return PromptAudio(trimmed, original, notes)


@dataclasses.dataclass
class MelExtractor:
    """Vocos mel-24khz log-mel features: (frames, 100), one frame per 256 samples."""

    device: str = "cpu"

    def __post_init__(self) -> None:
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=1024, hop_length=HOP_LENGTH, n_mels=100, center=True, power=1
        ).to(self.device)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.transform(waveform.to(self.device))[0]  # (100, frames + 1 with center padding)
        frames = round_frames(waveform.shape[-1])
        mel = mel[:, :frames].clamp(min=1e-7).log().T
        return mel


def round_frames(samples: int) -> int:
    """Frames for ``samples`` the way lhotse counts them (round half up of duration / hop)."""
    return int(math.floor(samples / HOP_LENGTH + 0.5))


def write_wav(path: Path, waveform: torch.Tensor, comment: str = "") -> None:
    """16-bit PCM wav at 24 kHz, with ``comment`` in its INFO chunk; refuses NaN or infinite samples."""
    if not torch.isfinite(waveform).all():
        raise ZvperfError(f"{path}: not written, the synthesised audio contains NaN or infinite samples.")
    samples = waveform.detach().float().cpu().reshape(-1).numpy()
    try:
        with soundfile.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16", format="WAV") as out:
            out.software = "zvperf"
            if comment:
                out.comment = comment
            out.write(samples)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ZvperfError(f"{path}: cannot write the wav ({exc}).") from None


# A prompt made for zvperf with espeak-ng (22.05 kHz, so loading also exercises resampling), so that
# synthesis and the benchmarks run without downloading anything; and the guide's sentence to speak.
DEMO_PROMPT_WAV = Path(__file__).parent / "data" / "demo_prompt.wav"
DEMO_PROMPT_TEXT = "This is a short prompt in a calm and steady voice."
DEMO_TEXT = "The quick brown fox jumps over the lazy dog."

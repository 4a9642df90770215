"""Bad input to synthesis: one clear sentence, a non-zero exit, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from tests.helpers import tiny_weights, write_official_dir
from zvperf.cli import main
from zvperf.engine import audio
from zvperf.engine.pipeline import Synthesizer
from zvperf.errors import ZvperfError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_official_dir(tiny_weights("zipvoice_distill"), tmp_path_factory.mktemp("w") / "model")


def synth(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["synth", "--device", "cpu", "--num-step", "1", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails_with(capsys, expected: str, *args: str) -> str:
    code, _, err = synth(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    return lines[0]


def write_tone(path, seconds, rate=24000, channels=1, amplitude=0.3):
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * 220 * t)
    soundfile.write(str(path), np.stack([wave] * channels, axis=1), rate)
    return path


def test_missing_model_directory(tmp_path, capsys):
    fails_with(capsys, f"{tmp_path / 'nope'}: model directory not found", "--weights", str(tmp_path / "nope"))


@pytest.mark.parametrize("name", ["tokens.txt", "model.json", "model.pt"])
def test_model_directory_missing_a_file(tmp_path, capsys, name):
    directory = write_official_dir(tiny_weights(), tmp_path / "m")
    (directory / name).unlink()
    expected = "neither model.pt nor model.safetensors" if name == "model.pt" else f"model directory has no {name}"
    fails_with(capsys, expected, "--weights", str(directory))


def test_vocoder_directory_missing_its_weights(tmp_path, capsys):
    directory = write_official_dir(tiny_weights(), tmp_path / "m")
    (directory / "vocos" / "pytorch_model.bin").unlink()
    fails_with(
        capsys,
        "the vocoder needs pytorch_model.bin",
        "--weights",
        str(directory),
        "--vocoder",
        str(directory / "vocos"),
    )


def test_unreadable_prompt(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    fails_with(
        capsys,
        f"{bad}: not a readable audio file",
        "--weights",
        str(model_dir),
        "--prompt-wav",
        str(bad),
        "--prompt-text",
        "hi",
    )


def test_missing_prompt(model_dir, tmp_path, capsys):
    fails_with(
        capsys,
        "prompt wav not found",
        "--weights",
        str(model_dir),
        "--prompt-wav",
        str(tmp_path / "x.wav"),
        "--prompt-text",
        "hi",
    )


def test_empty_prompt(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0), 24000)
    fails_with(
        capsys,
        "the audio file is empty",
        "--weights",
        str(model_dir),
        "--prompt-wav",
        str(empty),
        "--prompt-text",
        "hi",
    )


def test_silent_prompt(model_dir, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(24000), 24000)
    fails_with(
        capsys, "the prompt is silent", "--weights", str(model_dir), "--prompt-wav", str(silent), "--prompt-text", "hi"
    )


def test_prompt_without_transcript(model_dir, tmp_path, capsys):
    tone = write_tone(tmp_path / "tone.wav", 1.0)
    fails_with(capsys, "--prompt-text is required", "--weights", str(model_dir), "--prompt-wav", str(tone))


def test_eight_khz_stereo_prompt_is_converted():
    weights = tiny_weights()
    stereo = torch.from_numpy(np.stack([np.sin(np.arange(8000) / 5.0)] * 2).astype(np.float32) * 0.3)
    prompt = Synthesizer(weights).prepare_prompt((stereo, 8000), "a tone")
    # one second at 8 kHz becomes 24 kHz mono, trimmed, with 0.2 s of silence appended
    assert prompt.features.shape[0] == 1
    assert prompt.seconds == pytest.approx(1.2, abs=0.01)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text(model_dir, capsys, text):
    fails_with(capsys, "the text to synthesise is empty", "--weights", str(model_dir), "--text", text)


def test_text_with_no_token_in_the_vocabulary(model_dir, capsys):
    fails_with(capsys, "has no token in the vocabulary", "--weights", str(model_dir), "--text", "### @@@")


def test_long_prompts_warn_louder_past_twenty_seconds():
    weights = tiny_weights()
    synthesizer = Synthesizer(weights)
    tone = torch.from_numpy((0.3 * np.sin(np.arange(24000 * 12) / 7.0)).astype(np.float32))[None]
    twelve = synthesizer.prepare_prompt((tone, 24000), "hello")
    assert len(twelve.warnings) == 1 and "1-3 s is recommended" in twelve.warnings[0]
    long_tone = torch.from_numpy((0.3 * np.sin(np.arange(24000 * 22) / 7.0)).astype(np.float32))[None]
    twenty_two = synthesizer.prepare_prompt((long_tone, 24000), "hello")
    assert len(twenty_two.warnings) == 1 and "far over the 1-3 s recommended" in twenty_two.warnings[0]


def test_prompt_warning_reaches_the_command_output(model_dir, tmp_path, capsys):
    tone = write_tone(tmp_path / "long.wav", 11.0)
    code, out, _ = synth(capsys, "--weights", str(model_dir), "--prompt-wav", str(tone), "--prompt-text", "a long tone",
                         "--out", str(tmp_path / "o.wav"))  # fmt: skip
    assert code == 0 and "warning: the prompt is 11.2 s long" in out


def test_hub_offline_names_the_file_and_the_offline_choice(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = fails_with(
        capsys, "downloading zipvoice_distill/model.pt from the hub repo k2-fsa/ZipVoice failed", "--weights", "hub"
    )
    assert "(HF_HUB_OFFLINE is set)" in error and "--weights synthetic runs offline" in error


def test_nan_output_is_detected_and_not_written(tmp_path, capsys):
    weights = tiny_weights()
    with torch.no_grad():
        weights.model.fm_decoder.out_proj.bias.fill_(float("nan"))
    directory = write_official_dir(weights, tmp_path / "nan")
    out = tmp_path / "out.wav"
    fails_with(capsys, "contains NaN or infinite samples", "--weights", str(directory), "--out", str(out))
    assert not out.exists()


def test_write_wav_refuses_non_finite_samples(tmp_path):
    with pytest.raises(ZvperfError, match="NaN or infinite"):
        audio.write_wav(tmp_path / "x.wav", torch.tensor([0.0, float("inf")]))
    assert not (tmp_path / "x.wav").exists()

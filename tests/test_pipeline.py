"""End-to-end synthesis: weights sources, tokenizers, duration and chunking, the synth command."""

from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from tests.helpers import TINY_VOCOS_CONFIG, tiny_weights, write_official_dir
from zvperf.cli import main
from zvperf.engine import audio
from zvperf.engine.pipeline import STAGES, Synthesizer, add_punctuation, batch_by_duration, chunk_tokens, cross_fade
from zvperf.engine.tokenizer import (
    EmiliaTokenizer,
    EspeakTokenizer,
    SimpleTokenizer,
    _split_pinyin,
    builtin_vocabulary,
    english_normalize,
)
from zvperf.engine.vocoder import save_vocos_dir
from zvperf.engine.weights import load_weights, synthetic_model


@pytest.fixture(scope="module")
def synthesizer():
    return Synthesizer(tiny_weights("zipvoice_distill"))


@pytest.fixture(scope="module")
def prompt(synthesizer):
    return synthesizer.prepare_prompt(audio.DEMO_PROMPT_WAV, audio.DEMO_PROMPT_TEXT)


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------
def test_english_phonemes_of_known_sentences():
    tok = EmiliaTokenizer(builtin_vocabulary())
    assert "".join(tok.tokens("The quick brown fox.")) == "ðə kwˈɪk bɹˈaʊn fˈɑːks."
    assert "".join(tok.tokens("Hello world!")) == "həlˈoʊ wˈɜːld!"


def test_english_numbers_and_abbreviations_are_spelled_out():
    def spoken(text):
        return " ".join(english_normalize(text).split())

    assert spoken("Mr Smith paid $3.50") == "mister Smith paid three dollars, fifty cents"
    assert spoken("in 1999, 45% of 1/2") == "in nineteen ninety-nine , forty-five percent of one half"
    assert spoken("the 21st of 2005") == "the twenty-first of two thousand five"


def test_chinese_pinyin_with_tone_sandhi_and_explicit_pinyin():
    tok = EmiliaTokenizer(builtin_vocabulary())
    assert tok.tokens("你好") == ["n0", "i2", "h0", "ao3"]  # 3-3 tone sandhi
    assert tok.tokens("<zhong1>") == ["zh0", "ong1"]
    assert tok.segments("我们 like 你") == [("我们 ", "zh"), ("like ", "en"), ("你", "zh")]


def test_simple_and_espeak_tokenizers():
    vocab = builtin_vocabulary()
    assert SimpleTokenizer(vocab).tokens("ab c") == ["a", "b", " ", "c"]
    assert "".join(EspeakTokenizer(vocab, "en-us").tokens("Hello")) == "həlˈoʊ"


def test_builtin_vocabulary_covers_espeak_and_pinyin():
    vocab = builtin_vocabulary()
    assert len(vocab) == 358 and vocab.pad_id == 0
    assert {"ð", "ɪ", "zh0", "ong1", "er5"} <= set(vocab.token_ids)
    assert sorted(vocab.token_ids.values()) == list(range(358))


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(
    _installed("piper-phonemize") != "1.1.0" or _installed("pypinyin") is None,
    reason="deriving the vocabulary needs piper-phonemize 1.1.0 (the forks' newer espeak-ng has more symbols) "
    "and pypinyin",
)
def test_the_frozen_vocabulary_is_espeaks_symbols_then_every_pinyin_phone():
    """The data file holds what the official Emilia token set is made of: espeak-ng's phoneme map in its own
    order, then the sorted initials and tone-3 finals of every syllable in pypinyin's dictionary."""
    from piper_phonemize import get_espeak_map
    from pypinyin import pinyin_dict
    from pypinyin.style._tone_convert import tone_to_tone3

    espeak = sorted(get_espeak_map().items(), key=lambda kv: kv[1][0])
    table = {token: ids[0] for token, ids in espeak}
    syllables = {
        tone_to_tone3(reading, neutral_tone_with_five=True)
        for readings in pinyin_dict.pinyin_dict.values()
        for reading in readings.split(",")
    }
    phones = sorted({phone for syllable in syllables for phone in _split_pinyin(syllable)})
    table.update({phone: len(espeak) + offset for offset, phone in enumerate(phones)})
    assert builtin_vocabulary().token_ids == table


def test_english_synthesis_needs_no_chinese_front_end():
    """The built-in vocabulary and English text load none of pypinyin, jieba or cn2an (the GPU check's
    machine has none of them)."""
    code = (
        "import sys\n"
        "from zvperf.engine.tokenizer import EmiliaTokenizer, builtin_vocabulary\n"
        "EmiliaTokenizer(builtin_vocabulary()).tokens('Mr Smith paid $3.50 for 2 apples.')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pypinyin', 'jieba', 'cn2an'}))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------
# Duration, chunking, batching: hand-computed frame counts
# ---------------------------------------------------------------------------------------------
def test_punctuation_is_added_where_missing():
    assert add_punctuation("  hello ") == "hello."
    assert add_punctuation("really?") == "really?"


def test_chunking_splits_at_punctuation_and_merges_short_sentences():
    tokens = list("ab, cd. efgh! ij")
    assert chunk_tokens(tokens, max_tokens=8) == [list("ab, cd. "), list("efgh! ij")]
    assert chunk_tokens(tokens, max_tokens=7) == [list("ab, "), list("cd. "), list("efgh! "), list("ij")]
    assert chunk_tokens(tokens, max_tokens=100) == [tokens]
    assert chunk_tokens(tokens, max_tokens=1) == [list("ab, "), list("cd. "), list("efgh! "), list("ij")]


def test_batches_respect_the_duration_budget_shortest_first():
    chunks = [[0] * 10, [0] * 2, [0] * 5]
    # 1 s per token, 3 s per prompt: [2] then [2, 5] costs 7 + 3 = 10 s; adding 10 would cost 17 + 6
    assert batch_by_duration(chunks, max_seconds=10, prompt_seconds=3, token_seconds=1) == [[1, 2], [0]]
    assert batch_by_duration(chunks, max_seconds=100, prompt_seconds=3, token_seconds=1) == [[1, 2, 0]]


def test_generated_frames_follow_the_ratio_rule_and_speed(synthesizer, prompt):
    vocab = synthesizer.tokenizer.vocabulary
    n_prompt = len(vocab.ids(prompt.tokens))
    text = "Tea for two."
    n_text = len(vocab.ids(synthesizer.tokenizer.tokens(text)))
    for speed in (1.0, 1.5):
        with torch.inference_mode():
            result = synthesizer.synthesize(text, prompt, num_step=1, speed=speed)
        expected = math.ceil(np.float32(prompt.frames) / np.float32(n_prompt) * np.float32(n_text) / np.float32(speed))
        assert result.generated_frames == expected
        assert result.frames == prompt.frames + expected


def test_long_text_is_chunked_and_batched_with_padding(synthesizer, prompt):
    """Each chunk gets prompt + its own ratio frames; the batch is padded to the longest."""
    sentence = "One two three four five six seven eight nine ten eleven twelve. "
    text = sentence * 12  # far more than 25 s of speech at the prompt's rate
    tok = synthesizer.tokenizer
    chunks, _ = synthesizer.chunk_text(text, prompt, 1.0)
    assert len(chunks) > 1
    n_prompt = len(tok.vocabulary.ids(prompt.tokens))
    per_chunk = [
        math.ceil(np.float32(prompt.frames) / np.float32(n_prompt) * np.float32(len(tok.vocabulary.ids(c))))
        for c in chunks
    ]
    for frames in per_chunk:  # prompt + chunk stays near 25 s
        assert (prompt.frames + frames) / audio.FRAMES_PER_SECOND < 27
    with torch.inference_mode():
        result = synthesizer.synthesize(text, prompt, num_step=1)
    assert result.chunks == len(chunks)
    assert result.generated_frames == sum(per_chunk)
    assert result.frames == prompt.frames + max(per_chunk)


def test_cross_fade_overlaps_joints():
    a, b = torch.ones(10), torch.zeros(10)
    out = cross_fade([a, b], overlap=4)
    assert out.shape == (16,)
    assert out[:6].tolist() == [1.0] * 6 and out[-6:].tolist() == [0.0] * 6
    assert out[6:10].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


# ---------------------------------------------------------------------------------------------
# Weights sources
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("checkpoint", ["model.pt", "model.safetensors"])
def test_local_directory_loads_strictly_and_matches_direct_weights(tmp_path, checkpoint):
    direct = tiny_weights("zipvoice", seed=3)
    directory = write_official_dir(direct, tmp_path / "zipvoice", checkpoint)
    loaded = load_weights("zipvoice", str(directory))
    assert loaded.kind == "local"  # random tiny weights in a folder are not the published checkpoints
    assert f"local {directory / 'vocos'}" in loaded.description
    for name, tensor in direct.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    with torch.inference_mode():
        a = Synthesizer(direct).synthesize("Hi there.", audio.DEMO_PROMPT_WAV, audio.DEMO_PROMPT_TEXT, num_step=2)
        b = Synthesizer(loaded).synthesize("Hi there.", audio.DEMO_PROMPT_WAV, audio.DEMO_PROMPT_TEXT, num_step=2)
    assert torch.equal(a.waveform, b.waveform)


def test_hub_source_reads_through_huggingface_hub_cache(tmp_path, monkeypatch):
    """The hub path, offline: files placed in a huggingface_hub cache are found through hf_hub_download."""
    weights = tiny_weights("zipvoice_distill")
    cache = tmp_path / "hub"
    snapshot = cache / "models--k2-fsa--ZipVoice" / "snapshots" / "abc123"
    write_official_dir(weights, snapshot / "zipvoice_distill")
    (cache / "models--k2-fsa--ZipVoice" / "refs").mkdir(parents=True)
    (cache / "models--k2-fsa--ZipVoice" / "refs" / "main").write_text("abc123")
    vocos_snapshot = cache / "models--charactr--vocos-mel-24khz" / "snapshots" / "def456"
    save_vocos_dir(weights.vocoder, TINY_VOCOS_CONFIG, vocos_snapshot)
    (cache / "models--charactr--vocos-mel-24khz" / "refs").mkdir(parents=True)
    (cache / "models--charactr--vocos-mel-24khz" / "refs" / "main").write_text("def456")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for spec in ("hub", "auto"):
        loaded = load_weights("zipvoice_distill", spec)
        assert loaded.kind == "official", loaded.description
        assert "hub k2-fsa/ZipVoice/zipvoice_distill" in loaded.description
    # The hub cache's folder named as a local one: still the published files (the hub client checked their hashes).
    named = load_weights("zipvoice_distill", str(snapshot / "zipvoice_distill"), vocoder=str(vocos_snapshot))
    assert (
        named.kind == "official"
        and f"hub k2-fsa/ZipVoice/zipvoice_distill ({snapshot / 'zipvoice_distill'})" in named.description
    )


def test_synthetic_weights_are_the_full_architecture_and_labelled(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache: auto falls back
    weights = load_weights("zipvoice_distill", "auto")
    assert weights.kind == "synthetic" and "no official weights in the hub cache" in weights.description
    assert sum(p.numel() for p in weights.model.parameters()) == 122_701_668 - 2 * 192  # 358-token vocabulary
    again = load_weights("zipvoice_distill", "synthetic")
    assert torch.equal(again.model.embed.weight, weights.model.embed.weight)  # seeded


# ---------------------------------------------------------------------------------------------
# The synth command
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_synth_command_full_size_synthetic_table_and_json(tmp_path, capsys):
    out = tmp_path / "result.wav"
    assert main(["synth", "--weights", "synthetic", "--num-step", "2", "--device", "cpu", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "synthetic weights" in table and "the audio is noise" in table
    for stage in (*STAGES, "total", "RTF"):
        assert f"  {stage}" in table
    info = soundfile.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1 and info.frames > 0
    with soundfile.SoundFile(str(out)) as wav:
        assert "synthetic weights" in wav.comment

    json_out = tmp_path / "json.wav"
    assert main(["synth", "--weights", "synthetic", "--num-step", "2", "--out", str(json_out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "synthetic" and report["num_step"] == 2 and report["nfe"] == 2
    assert set(report["timings_s"]) == {*STAGES, "total"}
    assert report["rtf"] == pytest.approx(report["timings_s"]["total"] / report["audio_seconds"], rel=1e-3)
    assert report["audio_seconds"] == pytest.approx(soundfile.info(str(json_out)).duration, abs=1e-3)


def test_zvperf_weights_write_makes_a_full_size_official_folder_that_loads_as_local(tmp_path, capsys):
    """The full-size architecture with the synthetic weights of --zv-weights synthetic, in the official layout."""
    folder = tmp_path / "zipvoice_distill"
    assert main(["weights", "write", str(folder), "--model", "zipvoice_distill", "--seed", "3"]) == 0
    assert f"to {folder}: model.pt, model.json, tokens.txt, vocos/" in capsys.readouterr().out
    loaded = load_weights("zipvoice_distill", str(folder))
    assert loaded.kind == "local" and f"local {folder / 'vocos'}" in loaded.description
    expected, _ = synthetic_model("zipvoice_distill", seed=3)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    # Never over something: a second write into the same folder is refused and leaves it as it was.
    before = (folder / "model.pt").stat().st_mtime_ns
    assert main(["weights", "write", str(folder)]) == 2
    assert f"{folder}: exists and is not an empty folder; name a new one." in capsys.readouterr().err
    assert (folder / "model.pt").stat().st_mtime_ns == before

"""Text to token ids, as the official ZipVoice tokenizers do it.

* ``emilia`` (the released models): English through espeak-ng phonemes (piper-phonemize), Chinese
  through jieba words and tone-3 pinyin split into initial and final, ``<pinyin>`` and ``[tag]``
  passthrough, numbers and abbreviations spelled out first.
* ``espeak``: espeak-ng phonemes for any espeak language.
* ``simple``: one token per character.

Tokens that are not in the vocabulary are skipped, as the reference does.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from zvperf.errors import ZvperfError
from zvperf.files import read_text

log = logging.getLogger(__name__)

PAD_TOKEN = "_"
# Sentence and clause punctuation: where chunks may end, and what ends a text that has none.
PUNCTUATION = frozenset(";:,.!?；：，。！？")


class Vocabulary:
    """A ``tokens.txt`` table: one ``token<TAB>id`` per line; ``_`` is the padding token."""

    def __init__(self, token_ids: dict[str, int], source: str = "the built-in vocabulary") -> None:
        if PAD_TOKEN not in token_ids:
            raise ZvperfError(f"{source}: has no padding token {PAD_TOKEN!r}.")
        self.token_ids = token_ids
        self.source = source

    @property
    def pad_id(self) -> int:
        return self.token_ids[PAD_TOKEN]

    def __len__(self) -> int:
        return len(self.token_ids)

    def __contains__(self, token: str) -> bool:
        return token in self.token_ids

    @classmethod
    def from_file(cls, path: Path) -> Vocabulary:
        path = Path(path)
        lines = read_text(path, f"tokens file {path}").splitlines()
        table: dict[str, int] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            token, _, id_text = line.rstrip("\n").rpartition("\t")
            if not _ or not id_text.strip().isdigit():
                raise ZvperfError(f"{path}:{number}: expected 'token<TAB>id', got {line!r}.")
            if token in table:
                raise ZvperfError(f"{path}:{number}: token {token!r} is listed twice.")
            table[token] = int(id_text)
        if not table:
            raise ZvperfError(f"{path}: the tokens file is empty.")
        return cls(table, source=str(path))

    def write(self, path: Path) -> None:
        lines = [f"{token}\t{index}" for token, index in sorted(self.token_ids.items(), key=lambda kv: kv[1])]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token_ids[t] for t in tokens if t in self.token_ids]


class Tokenizer(Protocol):
    vocabulary: Vocabulary

    def tokens(self, text: str) -> list[str]:
        """Text to token strings (punctuation kept, so that long texts can be split at it)."""


# The Emilia token set, frozen: espeak-ng's phoneme symbols as piper-phonemize 1.1.0 numbers them, then every
# pinyin initial and tone-3 final in pypinyin's dictionary. Frozen rather than derived at run time because the
# piper-phonemize forks that have wheels for newer Pythons ship a newer espeak-ng with two more symbols (which
# would shift every pinyin id), and so that English with synthetic weights needs no Chinese front end at all.
# tests/test_pipeline.py derives it again from those packages, where installed, and compares.
BUILTIN_TOKENS = Path(__file__).parent / "data" / "builtin_tokens.txt"


def builtin_vocabulary() -> Vocabulary:
    """The Emilia token set (358 tokens), used with synthetic weights, where no tokens.txt comes with the model."""
    return Vocabulary(Vocabulary.from_file(BUILTIN_TOKENS).token_ids)


def _split_pinyin(syllable: str) -> list[str]:
    """'zhong1' -> ['zh0', 'ong1']: the initial marked with '0' so it never collides with an espeak symbol."""
    from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

    initial = to_initials(syllable, strict=False)
    final = to_finals_tone3(syllable, strict=False, neutral_tone_with_five=True)
    return ([initial + "0"] if initial else []) + ([final] if final else [])


def _is_tone3_pinyin(text: str) -> bool:
    return len(text) > 1 and text[:-1].isalpha() and text[-1] in "12345"


def _espeak(text: str, voice: str) -> list[str]:
    from piper_phonemize import phonemize_espeak

    return [phone for sentence in phonemize_espeak(text, voice) for phone in sentence]


class SimpleTokenizer:
    """Every character is a token; no normalisation."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary

    def tokens(self, text: str) -> list[str]:
        return list(text)


class EspeakTokenizer:
    """espeak-ng phonemes in any language espeak knows (``lang`` as espeak names it, e.g. en-us, de, fr-fr)."""

    def __init__(self, vocabulary: Vocabulary, lang: str = "en-us") -> None:
        self.vocabulary = vocabulary
        self.lang = lang

    def tokens(self, text: str) -> list[str]:
        try:
            return _espeak(text, self.lang)
        except RuntimeError as exc:
            raise ZvperfError(f"espeak-ng cannot phonemize language {self.lang!r} ({exc}).") from None


# Full-width and typographic punctuation mapped to the ASCII the vocabulary has.
_PUNCTUATION_MAP = [
    ("，", ","), ("。", "."), ("！", "!"), ("？", "?"), ("；", ";"), ("：", ":"), ("、", ","),
    ("‘", "'"), ("’", "'"), ("“", '"'), ("”", '"'), ("⋯", "…"), ("···", "…"), ("・・・", "…"), ("...", "…"),
]  # fmt: skip

# A part of the text is one character, or a whole <pinyin> or [tag] group.
_PART = re.compile(r"[<\[].*?[>\]]|.", re.DOTALL)
_SPECIAL = re.compile(r"([<\[].*?[>\]])")


class EmiliaTokenizer:
    """The tokenizer of the released ZipVoice models: English phonemes and Chinese pinyin, mixed freely."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary

    def tokens(self, text: str) -> list[str]:
        for wide, ascii_form in _PUNCTUATION_MAP:
            text = text.replace(wide, ascii_form)
        tokens: list[str] = []
        for segment, kind in self.segments(text):
            if kind == "zh":
                tokens += _chinese_tokens(segment)
            elif kind == "en":
                tokens += _espeak(english_normalize(segment), "en-us")
            elif kind == "pinyin":
                tokens += self._pinyin_tokens(segment)
            elif kind == "tag":
                tokens.append(segment)
            else:
                log.warning("skipping %r: it has no English or Chinese letters", segment)
        return tokens

    @staticmethod
    def segments(text: str) -> list[tuple[str, str]]:
        """Split text into runs of one language ('zh', 'en', 'other'), then split out <pinyin> and [tag] groups.

        Characters of neither language (spaces, digits, punctuation) stay with the run they are in; a
        text that starts with them gives them to the first run that has a language.
        """
        runs: list[list[str]] = []  # [text, kind]
        for part in _PART.findall(text):
            kind = _kind_of(part)
            if runs and (runs[-1][1] == "other" or kind in (runs[-1][1], "other")):
                runs[-1][0] += part
                if runs[-1][1] == "other":
                    runs[-1][1] = kind
            else:
                runs.append([part, kind])
        segments = []
        for run_text, kind in runs:
            for piece in _SPECIAL.split(run_text):
                if not piece:
                    continue
                if piece.startswith("<") and piece.endswith(">"):
                    segments.append((piece, "pinyin"))
                elif piece.startswith("[") and piece.endswith("]"):
                    segments.append((piece, "tag"))
                else:
                    segments.append((piece, kind))
        return segments

    @staticmethod
    def _pinyin_tokens(group: str) -> list[str]:
        syllable = group[1:-1]
        if not _is_tone3_pinyin(syllable):
            log.warning("skipping %s: text in <> must be tone-3 pinyin such as <ni3>", group)
            return []
        return _split_pinyin(syllable)


def _kind_of(part: str) -> str:
    if "\u4e00" <= part <= "\u9fa5" or (part.startswith("<") and part.endswith(">")):
        return "zh"
    if part.isascii() and part.isalpha() and len(part) == 1:
        return "en"
    return "other"


def _chinese_tokens(text: str) -> list[str]:
    import cn2an
    import jieba
    from pypinyin import Style, lazy_pinyin

    jieba.setLogLevel(logging.WARNING)  # it announces building its dictionary at INFO
    words = list(jieba.cut(cn2an.transform(text, "an2cn")))
    tokens: list[str] = []
    for reading in lazy_pinyin(words, style=Style.TONE3, tone_sandhi=True, neutral_tone_with_five=True):
        tokens += _split_pinyin(reading) if _is_tone3_pinyin(reading) else [reading]
    return tokens


# --------------------------------------------------------------------------------------------
# English normalisation: abbreviations and numbers spelled out before phonemisation.
# --------------------------------------------------------------------------------------------
_ABBREVIATIONS = [
    (re.compile(rf"\b{short}\b", re.IGNORECASE), long)
    for short, long in [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
        ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
        ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"), ("etc", "et cetera"),
        ("btw", "by the way"),
    ]
]  # fmt: skip


@functools.lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def _say_number(match: re.Match[str]) -> str:
    n = int(match.group(0))
    words = _inflect().number_to_words
    if 1000 < n < 3000:  # read like a year
        if n == 2000:
            return " two thousand "
        if 2000 < n < 2010:
            return f" two thousand {words(n % 100)} "
        if n % 100 == 0:
            return f" {words(n // 100)} hundred "
        return " " + words(n, andword="", zero="oh", group=2).replace(", ", " ") + " "
    return f" {words(n, andword='')} "


def _say_money(match: re.Match[str]) -> str:
    parts = match.group(1).split(".")
    if len(parts) > 2:
        return f" {match.group(1)} dollars "
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    amounts = [
        f"{value} {unit if value == 1 else unit + 's'}"
        for value, unit in ((dollars, "dollar"), (cents, "cent"))
        if value
    ]
    return f" {', '.join(amounts)} " if amounts else " zero dollars "


def _say_fraction(match: re.Match[str]) -> str:
    numerator, denominator = int(match.group(1)), int(match.group(2))
    words = _inflect().number_to_words
    named = {(1, 2): "one half", (1, 4): "one quarter"}
    if (numerator, denominator) in named:
        return f" {named[numerator, denominator]} "
    if denominator in (2, 4):
        return f" {words(numerator)} {'halves' if denominator == 2 else 'quarters'} "
    return f" {words(numerator)} {_inflect().ordinal(words(denominator))} "


_NUMBER_RULES: Sequence[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"([0-9][0-9,]+[0-9])"), lambda m: m.group(1).replace(",", "")),
    (re.compile(r"£([0-9,]*[0-9]+)"), r"\1 pounds"),
    (re.compile(r"\$([0-9.,]*[0-9]+)"), _say_money),
    (re.compile(r"([0-9]+)/([0-9]+)"), _say_fraction),
    (re.compile(r"([0-9]+\.[0-9]+)"), lambda m: m.group(1).replace(".", " point ")),
    (re.compile(r"([0-9.,]*[0-9]+%)"), lambda m: m.group(1).replace("%", " percent ")),
    (re.compile(r"[0-9]+(st|nd|rd|th)"), lambda m: f" {_inflect().number_to_words(m.group(0))} "),
    (re.compile(r"[0-9]+"), _say_number),
]


def english_normalize(text: str) -> str:
    """Spell out abbreviations (Mr -> mister), money, fractions, decimals, percents, ordinals and numbers."""
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    for pattern, rule in _NUMBER_RULES:
        text = pattern.sub(rule, text)
    return text


TOKENIZERS = {"emilia": EmiliaTokenizer, "espeak": EspeakTokenizer, "simple": SimpleTokenizer}


def make_tokenizer(kind: str, vocabulary: Vocabulary, lang: str = "en-us") -> Tokenizer:
    if kind not in TOKENIZERS:
        raise ZvperfError(f"tokenizer {kind!r} is not one of {', '.join(TOKENIZERS)}.")
    return EspeakTokenizer(vocabulary, lang) if kind == "espeak" else TOKENIZERS[kind](vocabulary)

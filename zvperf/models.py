"""The ZipVoice models (public import path): ``from zvperf.models import ZipVoice, ZipVoiceDistill``."""

from zvperf.engine.models import ZipVoice, ZipVoiceDistill

__all__ = ["ZipVoice", "ZipVoiceDistill"]

"""The one exception type that zvperf shows to users as a single sentence."""

from __future__ import annotations


class ZvperfError(Exception):
    """A problem with the user's input or environment, explained in one sentence.

    The command line prints ``str(error)`` and exits non-zero without a traceback;
    anything else that escapes is a bug and keeps its traceback.
    """

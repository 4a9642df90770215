"""zvperf: ZipVoice inference, timed correctly.

The public surface is small: the models (``zvperf.models``), the synthesis pipeline
(``zvperf.engine.pipeline``), the ``zvperf`` command and the pytest plugin (``zvperf.suite.plugin``).
"""

__version__ = "0.1.0"

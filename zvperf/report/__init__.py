"""The report generator: benchmark JSON -> the optimization guide in markdown (ja/en), with plots."""

LANGS = ("ja", "en")  # one bundled template per language: templates/report.<lang>.md.j2

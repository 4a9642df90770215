"""Render benchmark results into a markdown report through a Jinja2 template, with its plots beside it.

Template context (the same for the bundled ``report.ja.md.j2``/``report.en.md.j2`` and a user's ``--template``):

* ``lang``: ``"ja"`` or ``"en"``; ``files``: the results files' names; ``multi``: more than one hardware key;
  ``synthetic``: some result was measured with synthetic weights.
* ``sections``: one per hardware key, each a dict with ``key``, ``blocks`` (part -> marker name) and the parts
  built by :func:`zvperf.report.tables.section_context`: ``environment``, ``summary``, ``backends``, ``efficiency``,
  ``telemetry``, ``findings``, ``recommendations``, ``flags``, ``plots`` (figure -> PNG path relative to the
  markdown), and ``history``: None without ``--history``, else :func:`zvperf.report.trends.context`'s dict
  (``available``, ``runs``, ``commits``, ``first``, ``last``, ``since``, ``plots`` per model, ``regressions``,
  ``drifting``). Numbers arrive formatted (ms 1 decimal, RTF 4 decimals, speed-up ``10.65x``); ``"-"`` means none.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from zvperf.errors import ZvperfError
from zvperf.files import read_text, write_atomic
from zvperf.history.releases import find_release
from zvperf.report import LANGS, markers, plots, tables, trends
from zvperf.results.schema import load_results


def _escape_cell(value: Any) -> str:
    """A value safe inside a markdown table cell."""
    return str(value).replace("|", "\\|")


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,  # a misspelt name in a template fails instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # markdown, not HTML
    )
    env.filters["cell"] = _escape_cell
    return env


def load_template(lang: str, template: Path | None = None) -> jinja2.Template:
    """The bundled template for ``lang``, or the user's ``template`` file."""
    if template is None:
        return _environment(jinja2.PackageLoader("zvperf.report", "templates")).get_template(f"report.{lang}.md.j2")
    if not template.is_file():
        raise ZvperfError(f"--template {template}: file not found.")
    try:
        return _environment(jinja2.FileSystemLoader(template.parent)).get_template(template.name)
    except jinja2.TemplateSyntaxError as exc:
        raise ZvperfError(f"--template {template}: syntax error on line {exc.lineno} ({exc.message}).") from None
    except UnicodeDecodeError:
        raise ZvperfError(f"--template {template}: not UTF-8 text.") from None


@dataclasses.dataclass
class Report:
    markdown: str
    figures: list[Callable[[Path], None]]  # each draws its figures into the report's folder

    def write_figures(self, directory: Path) -> None:
        for draw in self.figures:
            draw(directory)


@dataclasses.dataclass(frozen=True)
class Request:
    """What to render: the results files, in which language or through which template, and the history to add."""

    paths: list[Path]
    lang: str
    template: Path | None = None  # a Jinja2 template of one's own instead of the bundled one for ``lang``
    history: Path | None = None  # the history folder (``--history``): adds each hardware key's trends
    since: str | None = None  # the release standing regressions are counted from (default: the latest tag)


def build(request: Request, out: Path) -> Report:
    """Read the results (and the history files of their hardware keys), derive the tables and render the markdown
    for a report saved as ``out``."""
    lang, template, history = request.lang, request.template, request.history
    if lang not in LANGS:
        raise ZvperfError(f"--lang {lang!r} is not one of {', '.join(LANGS)}.")
    if history is None and request.since is not None:
        raise ZvperfError("--since counts regressions in the history: it needs --history DIR.")
    if history is not None and not history.is_dir():
        raise ZvperfError(f"--history {history}: folder not found.")
    jinja_template = load_template(lang, template)  # before the results: a bad template fails fast
    files = [load_results(path) for path in request.paths]
    sections = tables.sections(files)
    release = find_release(request.since, Path.cwd()) if history is not None else None
    multi = len(sections) > 1
    figures: list[Callable[[Path], None]] = []
    contexts = []
    for section in sections:
        # One hardware key: plain names (summary, out-steps.png); several: qualified by the key.
        blocks = {part: f"{part}/{section.key}" if multi else part for part in tables.PARTS}
        prefix = f"{out.stem}-{section.key}" if multi else out.stem
        names = plots.plot_names(prefix)
        figures.append(functools.partial(plots.write_plots, section, names=names))
        history_context = None
        if history is not None:
            recorded = trends.load(history, section.key, release)
            history_names = trends.plot_names(prefix, recorded)
            figures.append(functools.partial(plots.write_history_plots, recorded, names=history_names))
            history_context = trends.context(recorded, history_names)
        contexts.append(tables.section_context(section, blocks, names, history_context))
    context = {
        "lang": lang,
        "files": [f.path.name for f in files],
        "multi": multi,
        "synthetic": any(s["environment"]["synthetic"] for s in contexts),
        "sections": contexts,
    }
    try:
        markdown = jinja_template.render(context)
    except jinja2.TemplateError as exc:
        if template is None:
            raise  # a bug in a bundled template, not the user's input
        raise ZvperfError(f"--template {template}: {exc.message or exc}.") from None
    return Report(markdown, figures)


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise ZvperfError(f"{path}: is a folder, not a markdown file.")
    if not path.parent.is_dir():
        raise ZvperfError(f"{path}: its folder {path.parent} does not exist.")


def write_report(request: Request, out: Path) -> None:
    """Render a whole report to ``out`` (overwriting it) and its figures next to it."""
    _check_target(out)
    report = build(request, out)
    report.write_figures(out.parent)
    write_atomic(out, report.markdown)


def update_report(request: Request, target: Path) -> None:
    """Rewrite only the marker blocks of ``target`` with freshly rendered ones; all other bytes stay as they are."""
    document = read_text(target, f"--update {target}")  # bytes as they are: the prose must survive unchanged
    report = build(request, target)
    source = str(request.template or f"the bundled {request.lang} template")
    fresh = markers.contents(report.markdown, source)
    updated = markers.update(document, fresh, str(target))
    report.write_figures(target.parent)
    write_atomic(target, updated)

"""``cxrgan report``: one self-contained HTML page of runs, datasets and studies.

The page is rendered from ``templates/report.html.j2`` with Jinja2 (autoescaped); every image is inlined as a
``data:`` URI and the styles are in the page, so it opens offline, prints, and makes no request. A content
security policy in the page forbids any request other than inline images, so a browser would refuse one even
if an input carried a link.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Sequence

from ..utils.io import write_text_atomic
from .gather import Chapter, gather, run_section


def render(chapters: Sequence[Chapter], notes: Sequence[str], inputs: Sequence[str], title: str = "cxrgan report",
           bare: bool = False) -> str:
    """The HTML text of a report (``bare``: without its header, navigation and chapter titles, to embed a part)."""
    import jinja2

    from ..version import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("cxrgan.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    written = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template("report.html.j2").render(title=title, version=__version__, written=written,
                                                      inputs=list(inputs), chapters=chapters, notes=list(notes), bare=bare)


def build_report(paths: Sequence[str | Path], out: str | Path, title: str = "cxrgan report") -> Path:
    """Gather everything under ``paths`` and write the report to ``out`` (atomically); returns ``out``."""
    chapters, notes = gather(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render(chapters, notes, [str(p) for p in paths], title))
    return out


def run_page(run: str | Path) -> str:
    """The HTML text of a page with one run's summary (status, curves, sample grids, the best checkpoint and why), as
    the report shows it."""
    run = Path(run)
    return render([Chapter("runs", "Run", [run_section(run)])], [], [str(run)], title=f"run {run.name}", bare=True)

"""Headless Chromium through Playwright, for checking what a page really shows (the report, the app).

Playwright's Python package drives the Chromium installed on the machine (``$CXRGAN_CHROMIUM``, else the usual names
on ``PATH``); nothing is downloaded. :func:`chromium` opens a browser; :func:`check_page` loads a file and reports
what the browser saw: every image and whether it decoded, every request other than the file itself and ``data:``
URIs, how much text the page shows, console errors, and optionally a screenshot.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import CxrganError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Evaluated in the page after its load event.
_PROBE = """() => {
  const imgs = Array.from(document.images).map(i => ({src: (i.getAttribute('src') || '').slice(0, 40), alt: i.alt,
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const refs = Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !(u.startsWith('data:') || u.startsWith('#')));
  return {images: imgs, refs: refs, text: document.body ? document.body.innerText.length : 0,
          height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth, title: document.title};
}"""


def find_chromium() -> str | None:
    """The Chromium executable: ``$CXRGAN_CHROMIUM``, else the first of the usual names on ``PATH``."""
    env = os.environ.get("CXRGAN_CHROMIUM")
    if env:
        return shutil.which(env)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def unavailable() -> str | None:
    """Why no browser check can run here (no Playwright package, no Chromium), or ``None`` when one can."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install 'cxrgan[test]')"
    if find_chromium() is None:
        return "no Chromium found (install Debian's chromium package, or set CXRGAN_CHROMIUM)"
    return None


@contextmanager
def chromium(exe: str | None = None) -> Iterator[Any]:
    """A headless Playwright ``Browser`` on the machine's Chromium; closed on exit."""
    why = unavailable() if exe is None else None
    if why:
        raise CxrganError(why)
    from playwright.sync_api import sync_playwright

    args = ["--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions", "--disable-background-networking",
            "--no-first-run", "--no-default-browser-check", "--mute-audio"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe or find_chromium(), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageCheck:
    """What the browser saw on the page."""

    title: str
    images: list[dict[str, Any]]
    requests: list[str]  # every request other than the file itself and data: URIs
    refs: list[str]  # src/href attributes that point outside the page
    text_chars: int
    height: int  # of the whole page, in CSS pixels
    width: int  # of the whole page: wider than the window means it scrolls sideways
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [i for i in self.images if not i["complete"] or i["width"] <= 0]


def check_page(html: str | Path, screenshot: str | Path | None = None, width: int = 1200, height: int = 900,
               full_page: bool = False, timeout: float = 60.0, exe: str | None = None) -> PageCheck:
    """Load the file ``html`` in headless Chromium and report what the page shows (see the module text); write a PNG
    ``screenshot`` of the first ``height`` pixels (or of the whole page with ``full_page``)."""
    html = Path(html).resolve()
    with chromium(exe) as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(timeout * 1000)
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(html.as_uri(), wait_until="load")
        seen = page.evaluate(_PROBE)
        shot = None
        if screenshot is not None:
            shot = Path(screenshot)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=full_page)
    requests = [u for u in requests if not u.startswith("data:") and u != html.as_uri()]
    return PageCheck(seen.get("title", ""), seen.get("images", []), requests, seen.get("refs", []), int(seen.get("text", 0)),
                     int(seen.get("height", 0)), int(seen.get("width", 0)), errors, shot)

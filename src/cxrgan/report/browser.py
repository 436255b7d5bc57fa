"""Open a report in headless Chromium and check it from the page itself.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands on the child's
fd 3, replies on its fd 4, each a JSON message ended by a NUL byte), so no WebSocket client or browser driver
package is needed. :func:`check_page` loads the file, waits for its load event, and reports what the browser
saw: every image and whether it decoded (natural width > 0), every request that was not the file itself or an
inline ``data:`` URI, how much text the page shows, and optionally a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CxrganError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Evaluated in the page after its load event.
_PROBE = """(() => {
  const imgs = Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 40), alt: i.alt,
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const refs = Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !(u.startsWith('data:') || u.startsWith('#')));
  const resources = performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith('data:'));
  return {images: imgs, refs: refs, resources: resources, text: document.body ? document.body.innerText.length : 0,
          height: document.documentElement.scrollHeight,
          width: document.documentElement.scrollWidth, title: document.title};
})()"""


def find_chromium() -> str | None:
    """The Chromium executable: ``$CXRGAN_CHROMIUM``, else the first of the usual names on ``PATH``."""
    env = os.environ.get("CXRGAN_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


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


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, proc: subprocess.Popen, send_fd: int, recv_fd: int, timeout: float):
        self.proc, self.send_fd, self.recv_fd, self.timeout = proc, send_fd, recv_fd, timeout
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.recv_fd], [], [], left)
            if ready:
                chunk = os.read(self.recv_fd, 1 << 20)
                if not chunk:
                    raise CxrganError("Chromium closed its debugging pipe (it may have crashed)")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.send_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise CxrganError(f"Chromium: {method} failed: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, session: str | None = None) -> dict:
        for i, m in enumerate(self.events):
            if m.get("method") == method and (session is None or m.get("sessionId") == session):
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method and (session is None or m.get("sessionId") == session):
                return m
            self.events.append(m)


def _launch(exe: str, profile: str) -> tuple[subprocess.Popen, int, int]:
    cmd_r, cmd_w = os.pipe()  # we write commands, the browser reads them on its fd 3
    res_r, res_w = os.pipe()  # the browser writes replies on its fd 4
    # The child's ends are moved above fd 10 first, so that neither dup2 below overwrites the other.
    high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, res_w))
    os.close(cmd_r)
    os.close(res_w)

    def child_fds() -> None:
        os.dup2(high_r, 3)  # dup2 clears close-on-exec: the browser inherits exactly fds 3 and 4
        os.dup2(high_w, 4)

    args = [exe, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--disable-dev-shm-usage", "--mute-audio",
            "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=child_fds, close_fds=False)
    os.close(high_r)
    os.close(high_w)
    return proc, cmd_w, res_r


def check_page(html: str | Path, screenshot: str | Path | None = None, width: int = 1200, height: int = 900,
               full_page: bool = False, timeout: float = 60.0, exe: str | None = None) -> PageCheck:
    """Load ``html`` in headless Chromium and report what the page shows (see the module text); write a PNG
    ``screenshot`` of the first ``height`` pixels (or of the whole page with ``full_page``)."""
    exe = exe or find_chromium()
    if exe is None:
        raise CxrganError("no Chromium found (install Debian's `chromium` package or set CXRGAN_CHROMIUM)")
    html = Path(html).resolve()
    with tempfile.TemporaryDirectory(prefix="cxrgan-chromium-") as profile:
        proc, send, recv = _launch(exe, profile)
        try:
            cdp = _Pipe(proc, send, recv, timeout)
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            s = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Network", "Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable", session=s)
            cdp.call("Emulation.setDeviceMetricsOverride", session=s, width=width, height=height, deviceScaleFactor=1, mobile=False)
            cdp.call("Page.navigate", session=s, url=html.as_uri())
            cdp.wait_event("Page.loadEventFired", s)
            probe = cdp.call("Runtime.evaluate", session=s, expression=_PROBE, returnByValue=True, awaitPromise=True)
            seen = probe.get("result", {}).get("value") or {}
            requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
            requests = [u for u in requests if not u.startswith("data:") and u != html.as_uri()]
            errors = [e["params"]["entry"].get("text", "") for e in cdp.events
                      if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
            shot = None
            if screenshot is not None:
                if full_page:
                    cdp.call("Emulation.setDeviceMetricsOverride", session=s, width=width,
                             height=min(int(seen.get("height", height)), 16000), deviceScaleFactor=1, mobile=False)
                data = cdp.call("Page.captureScreenshot", session=s, format="png")["data"]
                shot = Path(screenshot)
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(base64.b64decode(data))
            try:
                cdp.call("Browser.close")
            except (CxrganError, TimeoutError, OSError):
                pass
        finally:
            for fd in (send, recv):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return PageCheck(seen.get("title", ""), seen.get("images", []), requests + [u for u in seen.get("resources", []) if u not in requests],
                     seen.get("refs", []), int(seen.get("text", 0)), int(seen.get("height", 0)), int(seen.get("width", 0)), errors, shot)

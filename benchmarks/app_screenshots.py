"""The README's screenshots of ``cxrgan app``, one per tab, taken in the machine's Chromium.

    python benchmarks/app_screenshots.py FOLDER [--out docs] [--upload IMAGE]

FOLDER holds the runs (the demo's, with a semicond run beside them for the code sliders). The Generate tab is
shown on the first semicond run (else the first sampler), the Decompose tab on ``--upload`` (default: the first
test image of the dgm run's dataset, written as a PNG) and the Runs tab on the first run. Writes
``app-generate.png``, ``app-decompose.png`` and ``app-runs.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--upload", type=Path)
    a = ap.parse_args()

    from cxrgan.app.page import free_port, serve
    from cxrgan.data.dataset import PreparedDataset
    from cxrgan.report.browser import chromium

    port = free_port()
    server = serve([a.folder], port=port, block=False)
    ws = server.workspace
    upload = a.upload
    if upload is None:
        ds = PreparedDataset.open(ws.run(ws.names(translators=True)[0]).loaded.info["data_path"])
        rows = ds.indices("test")
        abnormal = [i for i in rows if ds.class_names[int(ds.labels[i])] != "NORMAL"]
        upload = Path(tempfile.mkdtemp()) / "test-image.png"
        Image.fromarray(np.asarray(ds.images[abnormal[0] if abnormal else rows[0]])).save(upload)
    samplers = ws.names(translators=False)
    semicond = [n for n in samplers if ws.run(n).family == "semicond"]
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            if semicond:
                page.get_by_label("run", exact=True).first.click()
                page.get_by_role("option", name=semicond[0]).click()
                page.wait_for_selector("#cxr-code-0 input[type=range]")
            page.locator("#cxr-generate").click()
            page.wait_for_function("document.querySelectorAll('#cxr-gallery img').length == 16")
            page.wait_for_timeout(800)
            page.screenshot(path=str(a.out / "app-generate.png"))
            page.get_by_role("tab", name="Decompose").click()
            page.locator("#cxr-upload input[type=file]").set_input_files([str(upload)])
            page.wait_for_timeout(1000)
            page.locator("#cxr-decompose").click()
            page.wait_for_selector("#cxr-dec-gallery img")
            page.wait_for_timeout(800)
            page.screenshot(path=str(a.out / "app-decompose.png"))
            page.get_by_role("tab", name="Runs").click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(a.out / "app-runs.png"))
    finally:
        server.close()
    for name in ("app-generate", "app-decompose", "app-runs"):
        im = Image.open(a.out / f"{name}.png").convert("RGB")
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
        im.quantize(128, dither=Image.Dither.NONE).save(a.out / f"{name}.png", optimize=True)
        print(f"wrote {a.out / name}.png ({(a.out / f'{name}.png').stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()

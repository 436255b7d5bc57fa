"""``cxrgan app``: the web page (Gradio) over a :class:`~cxrgan.app.workspace.Workspace`.

Three tabs: **Generate** (a run, a class, seeds, truncation, temperature; a semicond run's codes as sliders and a traverse strip;
the set as a zip in ``cxrgan sample``'s format), **Decompose** (uploaded PNG, JPEG or DICOM files through a dgm run:
input, normal image, residual and overlay, with the score against the validation threshold) and **Runs** (the
report's summary of each run).

Nothing leaves the machine: the server binds 127.0.0.1 unless told otherwise, Gradio's analytics and share links are
off, the page loads no font or script from elsewhere, and Hugging Face Hub is set offline. Uploads are held in the
app's private scratch folder only while they are decoded and are deleted then; a DICOM's patient fields are never
read into the page, the log or any file (only its pixels are decoded). Uploads are size-limited.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import CxrganError
from .workspace import MAX_COUNT, Calibration, Workspace

log = logging.getLogger("cxrgan.app")

#: Sliders the page holds for code dimensions (a semicond run has 20 by default); further dimensions stay random.
MAX_SLIDERS = 25

DISCLAIMER = ("**A research tool, not a diagnosis.** The score measures how far a radiograph is from the normal images "
              "the model was trained on; exposure, positioning and scanner differences raise it too.")

_CSS = """
.cxr-note { color: #5b6570; font-size: .9rem; }
.cxr-error { color: #9a5b00; background: #fff6e6; border-left: 3px solid #9a5b00; padding: .3rem .6rem; }
#cxr-runs iframe { width: 100%; height: 900px; border: 1px solid #d8dde3; }
#cxr-dec-gallery .thumbnail-item { aspect-ratio: auto; }
"""


def _private_environment(scratch: Path) -> None:
    """Settings that keep everything on this machine; set before Gradio is imported or a page is built."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(scratch / "uploads")


def _error(exc: Exception) -> str:
    """A request's error as the page shows it (the CLI's message, escaped)."""
    import html

    return f"<p class='cxr-error'>{html.escape(str(exc))}</p>"


def _generate_tab(gr: Any, ws: Workspace) -> tuple[Any, Any, list[Any]] | None:
    """The Generate tab; returns the run menu, its change handler and what it updates (for the page's load event)."""
    samplers = ws.names(translators=False)
    if not samplers:
        gr.Markdown("No run here draws images from noise (train a dcgan, cgan, semicond, bigan, gan or ddpm run).")
        return None
    first = ws.run(samplers[0])
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            run = gr.Dropdown(samplers, value=samplers[0], label="run")
            klass = gr.Dropdown(first.classes, value=(first.classes or [None])[0], label="class",
                                interactive=len(first.classes) > 1)
            seed = gr.Number(0, precision=0, minimum=0, label="first seed (image i has seed first + i)")
            count = gr.Slider(1, MAX_COUNT, 16, step=1, label="images")
            truncation = gr.Slider(0, 3, 0, step=0.1, label="truncation (0 = off; else latents within ±value)")
            temperature = gr.Slider(0.1, 2, 1, step=0.05, label="temperature (latent noise × value; 1 = as trained)",
                                    elem_id="cxr-temperature")
            steps = gr.Slider(2, 100, first.sample_steps or 25, step=1, label="sampling steps (diffusion runs; fewer is faster)",
                              visible=first.sample_steps is not None, elem_id="cxr-steps")
            button = gr.Button("Generate", variant="primary", elem_id="cxr-generate")
        with gr.Column(scale=3):
            status = gr.HTML(elem_id="cxr-gen-status")
            gallery = gr.Gallery(label="samples", columns=8, object_fit="contain", height="auto", elem_id="cxr-gallery")
            with gr.Accordion("latent codes (semicond runs)", open=True, visible=False) as code_box:
                pin = gr.Checkbox(True, label="pin the codes to these sliders (off: each image draws its own codes)")
                sliders = []
                for row in range(0, MAX_SLIDERS, 5):
                    with gr.Row():
                        sliders += [gr.Slider(0, 1, 0, label=f"code {i}", visible=False, elem_id=f"cxr-code-{i}", min_width=140)
                                    for i in range(row, min(row + 5, MAX_SLIDERS))]
                with gr.Row():
                    block = gr.Dropdown([], label="traverse a block (its 5th to 95th percentile, the rest fixed)")
                    traverse_button = gr.Button("Traverse", elem_id="cxr-traverse")
                strip = gr.Image(label="traverse", type="filepath", interactive=False, elem_id="cxr-strip")
            download = gr.File(label="download (PNGs, images.npy and manifest.json, as cxrgan sample writes them)",
                               interactive=False, elem_id="cxr-download")
            command = gr.Markdown(elem_classes=["cxr-note"], elem_id="cxr-command")

    def on_run(name: str):
        entry = ws.run(name)
        sl = ws.code_sliders(name)
        updates = [gr.Slider(minimum=s.low, maximum=s.high, step=s.step, value=s.value, label=s.label, visible=True)
                   for s in sl[:MAX_SLIDERS]]
        updates += [gr.Slider(visible=False)] * (MAX_SLIDERS - len(updates))
        blocks = list(dict.fromkeys(s.block for s in sl))
        return [gr.Dropdown(choices=entry.classes, value=(entry.classes or [None])[0], interactive=len(entry.classes) > 1),
                gr.Slider(value=entry.sample_steps or 25, visible=entry.sample_steps is not None),
                gr.Accordion(visible=bool(sl)), gr.Dropdown(choices=blocks, value=(blocks or [None])[0]), *updates]

    def codes_of(name: str, pinned: bool, values: Sequence[float]) -> dict[str, list[float]] | None:
        sl = ws.code_sliders(name)
        if not sl or not pinned:
            return None
        out: dict[str, list[float]] = {}
        for s, v in zip(sl[:MAX_SLIDERS], values):
            out.setdefault(s.block, []).append(float(v))
        full = {s.block for s in sl[:MAX_SLIDERS]} - {s.block for s in sl[MAX_SLIDERS:]}
        return {b: v for b, v in out.items() if b in full}  # a block is pinned only when all its dimensions have sliders

    def on_generate(name, cls, first_seed, n, psi, temp, n_steps, pinned, *values):
        try:
            steps_used = int(n_steps) if ws.run(name).sample_steps is not None else None
            res = ws.generate(name, cls, int(first_seed or 0), int(n), float(psi) or None, codes_of(name, pinned, values),
                              steps_used, float(temp or 1.0))
        except CxrganError as exc:
            return _error(exc), None, None, ""
        note = f"{len(res.images)} images in {res.seconds:.2f} s. The same set from the command line:\n\n```\n{res.command}\n```"
        return "", [(str(f), cap) for f, cap in zip(res.files, res.captions)], str(res.archive), note

    def on_traverse(name, blk, first_seed, cls):
        try:
            return "", str(ws.traverse_strip(name, blk, int(first_seed or 0), cls))
        except CxrganError as exc:
            return _error(exc), None

    run.change(on_run, run, [klass, steps, code_box, block, *sliders])
    inputs = [run, klass, seed, count, truncation, temperature, steps, pin, *sliders]
    outputs = [status, gallery, download, command]
    button.click(on_generate, inputs, outputs, concurrency_limit=2)
    for s in sliders:
        s.release(on_generate, inputs, outputs, concurrency_limit=2)
    traverse_button.click(on_traverse, [run, block, seed, klass], [status, strip])
    return run, on_run, [klass, steps, code_box, block, *sliders]  # the page fills them for the first run as it opens


def _calibration_text(cal: Calibration | str) -> str:
    if isinstance(cal, str):
        return cal
    spec = "" if cal.val_specificity != cal.val_specificity else f", specificity {cal.val_specificity:.2f} at the threshold"
    return (f"Score **{cal.score}**, threshold **{cal.threshold:.4g}**, chosen on the {cal.source}: validation ROC AUC "
            f"{cal.val_roc_auc:.3f}{spec}.")


def _named(text: str, uploads: Sequence[str]) -> str:
    """``text`` with each upload's temporary path replaced by the file's own name."""
    for p in uploads:
        text = text.replace(str(p), Path(p).name)
    return text


def _decompose_tab(gr: Any, ws: Workspace, max_upload_mb: float) -> None:
    """The Decompose tab: uploads through a dgm run, scored against its validation threshold."""
    translators = ws.names(translators=True)
    gr.Markdown(DISCLAIMER)
    if not translators:
        gr.Markdown("No dgm run here: train one with `cxrgan train --model dgm` (the demo trains one).")
        return
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            run = gr.Dropdown(translators, value=translators[0], label="dgm run")
            files = gr.File(file_count="multiple", type="filepath", label=f"radiographs: PNG, JPEG, DICOM (≤ {max_upload_mb:g} MB)",
                            elem_id="cxr-upload")
            button = gr.Button("Decompose", variant="primary", elem_id="cxr-decompose")
        with gr.Column(scale=3):
            result = gr.Markdown(elem_id="cxr-dec-result")
            gallery = gr.Gallery(label="input · normal image · residual · overlay", columns=1, object_fit="contain",
                                 height="auto", elem_id="cxr-dec-gallery")

    def on_decompose(name, paths):
        paths = [p for p in (paths or []) if p]
        if not paths:
            return "Upload one or more radiographs first.", None
        try:
            rows, cal = ws.decompose(name, paths)
        except CxrganError as exc:
            return f"**Error:** {_named(str(exc), paths)}", None
        finally:
            for p in paths:  # the uploaded copy is not kept once decoded
                Path(p).unlink(missing_ok=True)
        lines = [_calibration_text(cal), ""]
        table = ["| file | score | against the threshold | note |", "|---|---|---|---|"]
        errors, shown = [], []
        for path, r in zip(paths, rows):
            shown_name = Path(path).name
            if r.error:
                errors.append(f"- **{shown_name}** could not be read: {_named(r.error, paths)}")
                continue
            verdict = "-" if r.flagged is None else ("**above**: unlike the normal images" if r.flagged else "below")
            table.append(f"| {shown_name} | {r.score:.4g} | {verdict} | {r.note} |")
            shown.append((r.panel, f"{shown_name}: score {r.score:.4g}" + ("" if r.flagged is None else
                                                                         (", above the threshold" if r.flagged else ", below the threshold"))))
        return "\n".join(lines + (table if shown else []) + [""] + errors), shown or None

    button.click(on_decompose, [run, files], [result, gallery], concurrency_limit=2)


def _runs_tab(gr: Any, ws: Workspace) -> tuple[Any, Any, Any]:
    """The Runs tab; returns the run menu, the function that renders a run's page and the HTML it fills."""
    names = list(ws.runs)
    notes = [e.error for e in ws.runs.values() if e.error] + list(ws.notes)
    if notes:
        gr.Markdown("\n".join(f"- {n}" for n in notes), elem_classes=["cxr-note"])
    pick = gr.Dropdown(names, value=names[0], label="run")
    page = gr.HTML(elem_id="cxr-runs")

    def show(name: str) -> str:
        import html

        return f"<iframe title='run {html.escape(name)}' srcdoc=\"{html.escape(ws.summary_html(name), quote=True)}\"></iframe>"

    pick.change(show, pick, page)
    return pick, show, page


def build_page(ws: Workspace, max_upload_mb: float = 20):
    """The Gradio ``Blocks`` of the app over ``ws`` (``max_upload_mb`` is shown; :func:`serve` enforces it)."""
    import gradio as gr

    with gr.Blocks(title="cxrgan", analytics_enabled=False, delete_cache=(300, 900)) as page:
        gr.Markdown("## cxrgan: generate, steer and decompose chest radiographs")
        with gr.Tab("Generate"):
            gen = _generate_tab(gr, ws)
        with gr.Tab("Decompose"):
            _decompose_tab(gr, ws, max_upload_mb)
        with gr.Tab("Runs"):
            pick, show, html_out = _runs_tab(gr, ws)
        page.load(show, pick, html_out)
        if gen:
            run, on_run, targets = gen
            page.load(on_run, run, targets)
    return page


@dataclass
class AppServer:
    """A running app: its address and how to stop it (which also deletes its scratch folder)."""

    url: str
    page: Any
    workspace: Workspace
    scratch: Path

    def close(self) -> None:
        try:
            self.page.close()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 20,
          device: str = "cpu", block: bool = True) -> AppServer:
    """Start the app over the runs under ``paths`` on ``host:port``; with ``block`` serve until interrupted, else return
    the running :class:`AppServer` (tests, benchmarks)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CxrganError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    scratch = Path(tempfile.mkdtemp(prefix="cxrgan-app-"))  # mode 0700: this user's only
    _private_environment(scratch)
    try:
        import gradio as gr
    except ImportError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise CxrganError("the app needs Gradio: pip install 'cxrgan[app]' (make install brings it)") from None
    try:
        ws = Workspace(paths, scratch / "work", device)
        page = build_page(ws, max_upload_mb)
        theme = gr.themes.Default(font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                                  font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])
        page.queue(default_concurrency_limit=2, max_size=64)
        page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                    max_file_size=f"{max_upload_mb:g}mb", show_error=True, ssr_mode=False, pwa=False, mcp_server=False,
                    footer_links=[], theme=theme, css=_CSS)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    server = AppServer(f"http://{shown}:{port}", page, ws, scratch)
    if not block:
        return server
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("the app listens on %s: anyone who can reach this machine can use it (there is no login)", host)
    print(f"cxrgan app: {server.url}  (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return server

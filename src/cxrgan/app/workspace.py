"""What the app does, without the web page: the runs it serves, drawing sets, steering codes, decomposing uploads.

Everything here is plain Python over the library (:mod:`cxrgan.sample`, :mod:`cxrgan.decompose`,
:mod:`cxrgan.report`), so the page (:mod:`cxrgan.app.page`) only lays it out, and each part is tested without a
browser. A :class:`Workspace` loads every run once, keeps its generated sets in a private scratch folder (the newest
few; older ones are deleted) and serialises access to each network, so concurrent requests are answered in turn.
"""

from __future__ import annotations

import json
import shlex
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..decompose import Calibration, calibrate, collect_inputs, overlay, run_preprocess, score_images
from ..errors import CxrganError
from ..report.gather import discover
from ..report.html import run_page
from ..sample import LoadedRun, load_run, sample, traverse
from ..utils.images import label_font, to_uint8

#: The most images one Generate request draws.
MAX_COUNT = 64


@dataclass
class RunEntry:
    """A run the app serves: its display name, folder and loaded networks (``None`` with ``error`` when it failed)."""

    name: str
    path: Path
    loaded: LoadedRun | None = None
    error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def family(self) -> str:
        return self.loaded.cfg.model.family if self.loaded else "?"

    @property
    def translates(self) -> bool:
        return bool(self.loaded and self.loaded.family.translates)

    @property
    def sample_steps(self) -> int | None:
        """A diffusion run's configured sampling steps (``None`` for a family that draws in one pass)."""
        if not self.loaded or self.loaded.family.sampler_settings() is None:
            return None
        return int(self.loaded.cfg.model.sample_steps)

    @property
    def classes(self) -> list[str]:
        """The classes a Generate request may ask for (one entry, the run's class, for a per-class run)."""
        if not self.loaded:
            return []
        if self.loaded.family.conditional:
            return list(self.loaded.info["class_names"])
        return self.loaded.trained_classes if len(self.loaded.trained_classes) == 1 else []


@dataclass
class CodeSlider:
    """One dimension of a semicond run's code blocks as a slider: its range covers the 1st to 99th percentile."""

    block: str
    dim: int
    dist: str
    low: float
    high: float
    step: float
    value: float

    @property
    def label(self) -> str:
        return f"{self.block}[{self.dim}] ~ {self.dist}"


@dataclass
class GeneratedSet:
    """A Generate request's result: images, a caption per image, the set on disk (``cxrgan sample``'s format), a zip
    of it, and the command that draws the same set."""

    images: np.ndarray
    captions: list[str]
    files: list[Path]  # the set's PNG of each image, in order
    folder: Path
    archive: Path
    command: str
    seconds: float


@dataclass
class Decomposition:
    """One uploaded radiograph: a panel (input, normal image, residual, overlay), its score against the threshold."""

    name: str
    panel: np.ndarray | None = None
    score: float | None = None
    flagged: bool | None = None
    note: str = ""
    error: str = ""


class Workspace:
    """The runs under ``paths`` (run folders, or folders holding them such as the demo's), loaded on ``device``, and a
    scratch folder for the sets the app writes."""

    def __init__(self, paths: Sequence[str | Path], scratch: str | Path, device: str = "cpu", keep_sets: int = 8) -> None:
        found, self.notes = discover(paths)
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.keep_sets = keep_sets
        self._counter = 0
        self._counter_lock = threading.Lock()
        self._calibrations: dict[str, Calibration | str] = {}
        self.anomaly_reports = [p / "anomaly.json" for k, p in found if k == "anomaly" and (p / "anomaly.json").is_file()]
        self.runs: dict[str, RunEntry] = {}
        for kind, path in found:
            if kind != "run":
                continue
            name = path.name if path.name not in self.runs else f"{path.parent.name}/{path.name}"
            entry = RunEntry(name, path)
            try:
                entry.loaded = load_run(path, "best", device)
            except CxrganError as exc:
                entry.error = str(exc)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                entry.error = f"run {path} could not be loaded ({type(exc).__name__}: {exc}); train it again or remove it"
            self.runs[name] = entry
        if not any(e.loaded for e in self.runs.values()):
            raise CxrganError(f"no trained run could be loaded from {', '.join(map(str, paths))}; give run folders "
                              "(cxrgan train --out) or a folder holding them, such as the demo's")

    # -- runs -------------------------------------------------------------------------------------------------
    def run(self, name: str) -> RunEntry:
        entry = self.runs.get(name)
        if entry is None or entry.loaded is None:
            raise CxrganError(f"no loaded run named {name!r}; choose one of {', '.join(self.names())}")
        return entry

    def names(self, translators: bool | None = None) -> list[str]:
        """Names of the loaded runs (only those that translate images, or only those that draw from noise)."""
        return [n for n, e in self.runs.items() if e.loaded and (translators is None or e.translates == translators)]

    def summary_html(self, name: str) -> str:
        """The report's page of run ``name`` (works for runs that failed to load too)."""
        return run_page(self.runs[name].path)

    # -- generate ---------------------------------------------------------------------------------------------
    def code_sliders(self, name: str) -> list[CodeSlider]:
        """One slider per code dimension of a semicond run (none for other families)."""
        space = getattr(self.run(name).loaded.family, "code_space", None)
        if space is None:
            return []
        import torch

        sliders = []
        for b in space.blocks:
            lo, mid, hi = (float(v) for v in b.from_uniform(torch.tensor([0.01, 0.5, 0.99])))
            if b.dist == "bernoulli":
                lo, hi, step, mid = 0.0, 1.0, 1.0, 1.0
            else:
                if b.dist == "uniform":
                    lo, hi = b.params["low"], b.params["high"]
                step = round((hi - lo) / 100, 4) or 0.01
            sliders += [CodeSlider(b.name, d, b.spec(), round(lo, 3), round(hi, 3), step, round(mid, 3)) for d in range(b.dim)]
        return sliders

    def _new_folder(self, kind: str) -> Path:
        with self._counter_lock:
            self._counter += 1
            k = self._counter
        root = self.scratch / kind
        root.mkdir(parents=True, exist_ok=True)
        existing = sorted(root.iterdir(), key=lambda p: p.name)  # names start with the request counter
        for old in existing[: max(0, len(existing) - (self.keep_sets - 1))]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        return root / f"{k:06d}"

    def generate(self, name: str, class_name: str | None, seed: int, count: int, truncation: float | None = None,
                 codes: dict[str, list[float]] | None = None, sample_steps: int | None = None,
                 temperature: float = 1.0) -> GeneratedSet:
        """Draw ``count`` images of ``class_name`` with per-image seeds ``seed .. seed + count - 1`` (``cxrgan sample
        --seed-per-image``); ``codes`` pins a semicond run's blocks; ``sample_steps`` sets a diffusion run's DDIM steps
        (default: its configuration's); ``temperature`` scales the latent noise. The set is written as ``sample``
        writes it."""
        entry = self.run(name)
        if entry.translates:
            raise CxrganError(f"run {name} is a dgm run: it turns radiographs into normal ones; use the Decompose tab")
        if not 1 <= int(count) <= MAX_COUNT:
            raise CxrganError(f"count must be from 1 to {MAX_COUNT}, got {count}")
        classes = [class_name] if class_name else None
        if entry.sample_steps is not None and sample_steps is None:
            sample_steps = entry.sample_steps  # explicit each time: set_sampler keeps what it was given last
        code_text = [f"{b}={','.join(f'{v:g}' for v in vals)}" for b, vals in (codes or {}).items()]
        folder = self._new_folder("sets")
        out = folder / "set"
        t0 = time.perf_counter()
        with entry.lock:
            ds = sample([entry.loaded], out, n=int(count), classes=classes, truncation=truncation, seed=int(seed),
                        codes=code_text, seed_per_image=True, sample_steps=sample_steps, temperature=temperature)
        images = np.asarray(ds.images)
        captions = [f"seed {int(seed) + i}" for i in range(len(images))]
        files = sorted(out.glob("png/*/*.png"), key=lambda p: int(p.stem))
        archive = folder / f"cxrgan-{_slug(name)}-seed{int(seed)}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(out))
        cmd = ["cxrgan", "sample", str(entry.path), "--out", "SET", "--n", str(int(count)), "--seed", str(int(seed)), "--seed-per-image"]
        if class_name:
            cmd += ["--class", class_name]
        if truncation is not None:
            cmd += ["--truncation", f"{truncation:g}"]
        if temperature != 1.0:
            cmd += ["--temperature", f"{temperature:g}"]
        for c in code_text:
            cmd += ["--code", c]
        if sample_steps is not None and sample_steps != entry.sample_steps:
            cmd += ["--sample-steps", str(int(sample_steps))]
        return GeneratedSet(images, captions, files, out, archive, shlex.join(cmd), time.perf_counter() - t0)

    def traverse_strip(self, name: str, block: str, seed: int = 0, class_name: str | None = None) -> Path:
        """The traverse figure of code ``block`` of a semicond run (one row per class, or the chosen class)."""
        entry = self.run(name)
        out = self._new_folder("traverse").with_suffix(".png")
        with entry.lock:
            return traverse(entry.loaded, block, out, steps=8, classes=[class_name] if class_name else None, seed=int(seed))

    # -- decompose --------------------------------------------------------------------------------------------
    def calibration(self, name: str) -> Calibration | str:
        """The threshold to judge run ``name``'s scores by: from a ``cxrgan anomaly`` report of this run and checkpoint
        among the app's folders, else chosen on the validation split of the run's own data; or why there is none."""
        if name in self._calibrations:
            return self._calibrations[name]
        entry = self.run(name)
        found: Calibration | str | None = None
        for report in self.anomaly_reports:
            try:
                s = json.loads(report.read_text())
                same = Path(s["run"]).resolve() == entry.path.resolve() and int(s["checkpoint_step"]) == entry.loaded.step
                if same:
                    m = s["methods"][0]
                    found = Calibration(s["score"], float(m["threshold"]), float(m["val_roc_auc"]), float("nan"),
                                        float(m.get("val_specificity", "nan")), f"validation split of {s['data']} (cxrgan anomaly "
                                        f"report {report}; its test ROC AUC {float(m['roc_auc']):.3f})")
                    break
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if found is None:
            try:
                with entry.lock:
                    found = calibrate(entry.loaded)
            except CxrganError as exc:
                found = f"no validation threshold: {exc}"
        self._calibrations[name] = found
        return found

    def decompose(self, name: str, files: Sequence[str | Path]) -> tuple[list[Decomposition], Calibration | str]:
        """Decompose uploaded files with dgm run ``name``: a :class:`Decomposition` per file (unreadable ones carry the
        CLI's message in ``error``) and the calibration used."""
        entry = self.run(name)
        if not entry.translates:
            raise CxrganError(f"run {name} is a {entry.family} run; decomposition needs a dgm run (cxrgan train --model dgm)")
        cal = self.calibration(name)
        items = collect_inputs([Path(f) for f in files], run_preprocess(entry.loaded), split=None)
        good = [it for it in items if it.image is not None]
        results = {id(it): Decomposition(it.name, note=it.note, error=it.error) for it in items}
        if good:
            with entry.lock:
                scores, normals, residuals = score_images(entry.loaded, np.stack([it.image for it in good]))
            key = cal.score if isinstance(cal, Calibration) else "encoding"
            for k, it in enumerate(good):
                d = results[id(it)]
                d.score = float(scores[key][k])
                d.flagged = d.score >= cal.threshold if isinstance(cal, Calibration) else None
                d.panel = decomposition_panel(it.image, normals[k], residuals[k])
        return [results[id(it)] for it in items], cal


def decomposition_panel(x_u8: np.ndarray, normal: np.ndarray, residual: np.ndarray, tile: int = 192) -> np.ndarray:
    """RGB uint8: input, synthesized normal image, residual and overlay side by side, each ``tile`` px, named below."""
    tiles = [np.repeat(x_u8[..., None], 3, -1), np.repeat(to_uint8(normal)[..., None], 3, -1),
             np.repeat(to_uint8(residual)[..., None], 3, -1), overlay(x_u8, residual)]
    names = ("input", "normal image", "residual", "overlay")
    font = label_font(14)
    canvas = Image.new("RGB", (4 * tile + 3 * 6, tile + 22), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (t, label) in enumerate(zip(tiles, names)):
        canvas.paste(Image.fromarray(t).resize((tile, tile), Image.NEAREST if t.shape[0] < tile else Image.LANCZOS),
                     (i * (tile + 6), 0))
        draw.text((i * (tile + 6) + 4, tile + 3), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:60]

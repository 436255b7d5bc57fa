"""What a report shows: find cxrgan outputs under the given paths and turn each into a section of blocks.

Every kind of output (a prepared dataset or synthetic set, a training run, a ``compare`` folder, an ``evaluate``
folder, a TSTR or augmentation study, an ``anomaly`` or ``decompose`` folder) is recognized by its own files, so
a folder that holds several of them (the demo's) is searched. A section renders whatever its folder still has and
names each file that is missing; a chapter with no input at all is replaced by one line that says which command
fills it. Images are inlined as ``data:`` URIs, so the page makes no request of any kind.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import CxrganError
from ..evaluate.anomaly import PANELS
from .tables import column_title, fmt

log = logging.getLogger("cxrgan.report")

# ------------------------------------------------------------------------------------------------ blocks


@dataclass
class Figure:
    """One image of the page, inlined."""

    title: str
    uri: str
    caption: str = ""
    wide: bool = False  # may take the page's full width (a figure of many panels)
    kind: str = "figure"


@dataclass
class Figures:
    """Images side by side (they wrap on a narrow screen)."""

    items: list[Figure]
    kind: str = "figures"


@dataclass
class Table:
    """Rows of cells; a cell is a string, or ``(value, note)`` with the note in small type below the value."""

    columns: list[str]
    rows: list[list[str | tuple[str, str]]]
    caption: str = ""
    kind: str = "table"


@dataclass
class Facts:
    """Label: value pairs."""

    items: list[tuple[str, str]]
    kind: str = "facts"


@dataclass
class Text:
    text: str
    tone: str = "plain"  # plain, good, warn
    kind: str = "text"


@dataclass
class Pre:
    """Preformatted text folded under a summary line (a configuration, a dataset summary)."""

    summary: str
    text: str
    kind: str = "pre"


Block = Figure | Figures | Table | Facts | Text | Pre


@dataclass
class Section:
    """One input's part of the page: a title, where it came from, blocks, and the files it lacked."""

    title: str
    source: str
    blocks: list[Block] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    anchor: str = ""


@dataclass
class Chapter:
    """A group of sections of one kind; ``absent`` says which command fills it when it has none."""

    key: str
    title: str
    sections: list[Section]
    absent: str = ""


# ------------------------------------------------------------------------------------------------ images


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_figure(path: Path, title: str, caption: str = "") -> Figure | None:
    """A PNG file as an inlined figure; ``None`` when it is absent or not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG"):
        return None
    return Figure(title, png_uri(data), caption)


def drawn_figures(draw: Callable[[Path], Iterable[Path]], titles: dict[str, str]) -> list[Figure]:
    """Figures a writer function puts into a folder (``draw(folder)`` returns the written paths), inlined."""
    with tempfile.TemporaryDirectory(prefix="cxrgan-report-") as tmp:
        written = [p for p in draw(Path(tmp)) if p.name in titles]
        figs = [file_figure(p, titles[p.name]) for p in written]
    return [f for f in figs if f is not None]


def _figures_of(folder: Path, names: Sequence[tuple[str, str]], section: Section) -> None:
    """Add the PNGs ``(file, title)`` of ``folder`` as one row of figures; name those that are missing."""
    found = []
    for name, title in names:
        f = file_figure(folder / name, title)
        if f is None:
            section.missing.append(name)
        else:
            found.append(f)
    if found:
        section.blocks.append(Figures(found))


def _json(path: Path, section: Section) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        section.missing.append(path.name)
    except (OSError, ValueError) as exc:
        section.missing.append(f"{path.name} (unreadable: {exc})")
    return None


def _num(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return ""
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return str(v)


def _pm(mean: Any, std: Any, digits: int = 3) -> str:
    return f"{_num(mean, digits)} ± {_num(std, digits)}" if std not in (None, "") else _num(mean, digits)


# ------------------------------------------------------------------------------------------------ discovery

# The files that mark each kind of output. A kind is recognized by any one of them, so a folder whose files
# were partly deleted is still shown (with the rest named as missing).
MARKERS: dict[str, tuple[str, ...]] = {
    "dataset": ("manifest.json", "images.npy"),
    "run": ("config.yaml", "run.json", "checkpoints"),
    "comparison": ("summary.csv", "summary.md"),
    "evaluation": ("metrics.json", "metrics.md", "closest_pairs.png", "centroids.png"),
    "features": ("check.json",),
    "tstr": ("tstr.json", "tstr.md"),
    "augmentation": ("augment_study.json", "augment_study.md"),
    "anomaly": ("anomaly.json", "box.png", "roc.png"),
    "decomposition": ("overlay", "residual"),
}


def kind_of(folder: Path) -> str | None:
    """The kind of cxrgan output ``folder`` is, or ``None``."""
    if not folder.is_dir():
        return None
    for kind, marks in MARKERS.items():
        if any((folder / m).exists() for m in marks):
            return kind
    return None


def discover(paths: Sequence[str | Path], depth: int = 3) -> tuple[list[tuple[str, Path]], list[str]]:
    """``(kind, folder)`` of every output under ``paths`` (searched ``depth`` levels down), in a stable order,
    and notes on paths that hold none. A path that does not exist is an error."""
    found: list[tuple[str, Path]] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def walk(p: Path, level: int) -> int:
        k = kind_of(p)
        if k is not None:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append((k, p))
            return 1
        if level >= depth or not p.is_dir():
            return 0
        try:
            children = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return 0
        return sum(walk(c, level + 1) for c in children)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CxrganError(f"{p} does not exist; give run directories, datasets or study folders "
                              "(the folders written by cxrgan train, prepare, sample, evaluate, tstr, anomaly, ...)")
        if not p.is_dir():
            notes.append(f"{p} is a file, not a cxrgan output folder; it is left out")
            continue
        if walk(p, 0) == 0:
            notes.append(f"{p} holds no cxrgan output (no run, dataset or study was found in it); it is left out")
    return found, notes


# ------------------------------------------------------------------------------------------------ datasets


def dataset_section(root: Path) -> Section:
    """Counts per class and split, imbalance, preprocessing, skipped files and a preview grid."""
    from ..data import PreparedDataset
    from ..data.splits import SPLIT_NAMES
    from ..data.summary import info_text, preview

    sec = Section("Dataset " + root.name, str(root))
    try:
        ds = PreparedDataset.open(root)
    except CxrganError as exc:
        sec.blocks.append(Text(f"this dataset cannot be opened: {exc}", "warn"))
        sec.missing += [m for m in ("manifest.json", "images.npy", "labels.npy") if not (root / m).exists()]
        return sec
    m = ds.manifest
    src = m.get("source", {})
    if src.get("kind") == "synthetic":
        sec.title = "Synthetic set " + root.name
        runs = src.get("runs") or []
        sec.blocks.append(Facts([("generated from", ", ".join(f"{r.get('run')} (step {r.get('step')})" for r in runs) or str(src.get("path"))),
                                 ("seed", str(src.get("seed", ""))), ("images", f"{len(ds)} x {ds.size} px")]))
    counts = m.get("counts", {})
    totals = {c: sum(counts.get(s, {}).get(c, 0) for s in SPLIT_NAMES) for c in ds.class_names}
    grand = sum(totals.values()) or 1
    rows = [[c, *(str(counts.get(s, {}).get(c, 0)) for s in SPLIT_NAMES), str(totals[c]), f"{100 * totals[c] / grand:.1f}%"]
            for c in ds.class_names]
    nz = [v for v in totals.values() if v]
    imbalance = f"imbalance (largest / smallest class): {max(nz) / min(nz):.2f}" if len(nz) > 1 else ""
    sec.blocks.append(Table(["class", *SPLIT_NAMES, "total", "share"], rows, imbalance))
    if src.get("kind") != "synthetic":
        pre = m.get("preprocess", {})
        sec.blocks.append(Facts([("source", f"{src.get('kind')} ({src.get('path')})"), ("images", f"{len(ds)} x {ds.size} px"),
                                 ("preprocessing", ", ".join(f"{k}={v}" for k, v in pre.items()))]))
    skipped = m.get("skipped") or []
    if skipped:
        reasons = Counter(s.get("reason", "?") for s in skipped)
        sec.blocks.append(Table(["skipped files", "reason"], [[str(n), r] for r, n in reasons.most_common(10)],
                                f"{len(skipped)} file(s) were skipped when the dataset was prepared"))
    what = "random synthetic images per class" if src.get("kind") == "synthetic" else "random training images per class"
    sec.blocks += drawn_figures(lambda d: [preview(ds, d / "preview.png", split="train" if ds.indices("train").size else None)],
                                {"preview.png": what})
    sec.blocks.append(Pre("dataset summary (cxrgan info)", info_text(ds)))
    return sec


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class RunState:
    """What a run directory holds, read without failing on what it lacks."""

    path: Path
    cfg: Any = None
    info: dict | None = None
    rows: list[dict[str, str]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    best: dict | None = None
    problem: str = ""

    @property
    def family(self) -> str:
        return self.cfg.model.family if self.cfg is not None else (self.info or {}).get("family", "?")


def read_run_state(run: Path) -> RunState:
    from ..train import checkpoint as ckpt
    from ..train.metrics import read_metrics
    from ..train.rundir import read_run

    st = RunState(run)
    try:
        st.cfg, st.info = read_run(run)
    except CxrganError as exc:
        st.problem = str(exc)
    if (run / "metrics.csv").is_file():
        try:
            st.rows = [r for r in read_metrics(run / "metrics.csv") if r.get("step")]
        except (OSError, csv.Error) as exc:
            st.problem = st.problem or f"metrics.csv is unreadable ({exc})"
    st.steps = ckpt.list_checkpoints(run)
    try:
        st.best = json.loads((run / "checkpoints" / "best.json").read_text())
    except (OSError, ValueError):
        st.best = None
    return st


def _budget(st: RunState) -> int | None:
    """The run's step budget: its ``steps``, or its epochs over its training images (run.json) when set in epochs."""
    from ..train.rundir import step_budget

    if st.cfg is None:
        return None
    if st.cfg.epochs > 0 and not (st.info or {}).get("train_images"):
        return None  # an epoch budget whose image count was never recorded
    return step_budget(st.cfg, int((st.info or {}).get("train_images", 0)))


def _progress(st: RunState) -> str:
    """``"LAST of BUDGET"`` steps, with the epochs when the budget was set in epochs."""
    last, budget = st.steps[-1] if st.steps else 0, _budget(st)
    epochs = f" ({st.cfg.epochs} epochs)" if st.cfg is not None and st.cfg.epochs > 0 else ""
    return (f"{last} of {budget}" if budget is not None else str(last)) + epochs


def _status(st: RunState) -> tuple[str, str]:
    """(status line, tone)."""
    target = _budget(st)
    logged = int(float(st.rows[-1]["step"])) if st.rows else 0
    if not st.steps:
        return (f"no checkpoint yet (training stopped at or before step {logged}); resume with "
                f"`cxrgan train --out {st.path} --resume`", "warn")
    last = st.steps[-1]
    if target is not None and last < target:
        return (f"interrupted at step {last} of {target}; resume with `cxrgan train --out {st.path} --resume`", "warn")
    return (f"finished: {last} steps", "good")


def _curves(st: RunState) -> list[Figure]:
    from .plots import plot_runs

    names = [("losses.png", "losses (G and D)"), ("d_accuracy.png", "discriminator accuracy"),
             ("quality.png", "sample quality during training (FD, diversity)"), ("family.png", "the family's own terms and figures (panel titles name each)")]
    stored = [file_figure(st.path / "plots" / n, t) for n, t in names]
    fresh = (st.path / "metrics.csv").is_file() and all(
        not (st.path / "plots" / n).is_file() or (st.path / "plots" / n).stat().st_mtime >= (st.path / "metrics.csv").stat().st_mtime - 1
        for n, _ in names[:3])
    if (any(stored) and fresh) or not st.rows:
        figs = [f for f in stored if f is not None]
    else:
        figs = drawn_figures(lambda d: plot_runs({st.path.name: st.rows}, d), dict(names))
    for f in figs:
        f.wide = f.title == names[-1][1]
    return figs


def _collapse_notes(st: RunState) -> list[Text]:
    collapsed = [int(float(r["step"])) for r in st.rows if r.get("collapse") in ("1", "1.0")]
    if not collapsed:
        return []
    ratio = st.cfg.collapse_ratio if st.cfg is not None else None
    steps = ", ".join(map(str, collapsed[:12])) + (" ..." if len(collapsed) > 12 else "")
    return [Text(f"possible mode collapse: sample diversity fell below {ratio} of the real images' at step(s) {steps}. "
                 "These checkpoints are never chosen as best.", "warn")]


def _traversals(st: RunState) -> list[Block]:
    """Code traversals of a family with code blocks (semicond), drawn from the best checkpoint."""
    from ..sample import load_run, traverse

    try:
        loaded = load_run(st.path, "best")
    except CxrganError:
        return []
    space = getattr(loaded.family, "code_space", None)
    if space is None:
        return []
    titles = {f"{b.name}.png": f"code block {b.name} ({b.dist}) swept over its 5th-95th percentiles" for b in space.blocks}
    figs = drawn_figures(lambda d: [traverse(st.path, b.name, d / f"{b.name}.png") for b in space.blocks], titles)
    return [Text("Traversals: each row is a class; along a row one code block moves while the noise and the other "
                 "blocks stay fixed.")] + ([Figures(figs)] if figs else [])


def run_section(run: Path) -> Section:
    """Configuration, status, curves, sample grids, the best checkpoint and why, collapse warnings, traversals."""
    st = read_run_state(run)
    sec = Section(f"Run {run.name}" + (f" ({st.family})" if st.family != "?" else ""), str(run))
    status, tone = _status(st)
    sec.blocks.append(Text(status, tone))
    if st.problem:
        sec.blocks.append(Text(st.problem, "warn"))
        sec.missing += [m for m in ("config.yaml", "run.json") if not (run / m).is_file()]
    if not (run / "metrics.csv").is_file():
        sec.missing.append("metrics.csv")
    facts: list[tuple[str, str]] = []
    if st.cfg is not None:
        c = st.cfg
        facts += [("family", c.model.family), ("classes", ", ".join(c.data.classes) or "all"),
                  ("steps", _progress(st)), ("batch", str(c.batch_size)),
                  ("loss", c.loss.kind), ("precision", str(c.precision)), ("seed", str(c.seed))]
    if st.info:
        facts += [("image size", f"{st.info.get('image_size')} px"), ("dataset", str(st.info.get("data_path", "")))]
        if st.info.get("world_size"):
            facts.append(("processes", str(st.info["world_size"])))
    if st.rows and st.rows[-1].get("img_per_s"):
        speeds = [float(r["img_per_s"]) for r in st.rows if r.get("img_per_s")]
        facts.append(("speed", f"{sorted(speeds)[len(speeds) // 2]:.0f} img/s (median)"))
    if facts:
        sec.blocks.append(Facts(facts))
    if st.best:
        sec.blocks.append(Text(f"best checkpoint: step {st.best.get('step')} — {st.best.get('reason', 'lowest FD')}", "good"))
    elif st.steps:
        sec.blocks.append(Text(f"no best checkpoint recorded; sampling uses the last one (step {st.steps[-1]})"))
    sec.blocks += _collapse_notes(st)
    curves = _curves(st)
    if curves:
        sec.blocks.append(Figures(curves))
    grids = sorted((run / "samples").glob("step-*.png")) if (run / "samples").is_dir() else []
    if grids:
        shown = []
        best_step = st.best.get("step") if st.best else None
        if best_step is not None:
            f = file_figure(run / "samples" / f"step-{int(best_step):08d}.png", f"samples at the best checkpoint (step {best_step})")
            if f:
                shown.append(f)
        last_step = int(grids[-1].stem.split("-")[1])
        if last_step != best_step:
            f = file_figure(grids[-1], f"samples at the last grid (step {last_step})")
            if f:
                shown.append(f)
        sec.blocks.append(Figures(shown))
    else:
        sec.missing.append("samples/")
    if st.steps and st.cfg is not None:
        sec.blocks += _traversals(st)
    try:
        sec.blocks.append(Pre("configuration (config.yaml; `cxrgan train --config` reruns it exactly)",
                              (run / "config.yaml").read_text(encoding="utf-8")))
    except OSError:
        pass
    return sec


def comparison_of_runs(runs: Sequence[Path]) -> Section:
    """The comparative study of several runs: one table of final figures and shared curves."""
    from .compare import SUMMARY_COLUMNS, summarize
    from .plots import plot_runs

    sec = Section("Comparison of runs", ", ".join(str(r) for r in runs))
    rows, metrics = [], {}
    for r in runs:
        st = read_run_state(r)
        if st.cfg is None or not st.rows:
            sec.blocks.append(Text(f"{r} is left out of the table: {st.problem or 'it has no metrics yet'}", "warn"))
            continue
        s = summarize(r, st.rows)
        rows.append([fmt(s.get(k)) for k in SUMMARY_COLUMNS])
        metrics[r.name] = st.rows
    if rows:
        sec.blocks.append(Table([column_title(k) for k in SUMMARY_COLUMNS], rows, "final figures: losses and D accuracy are means over the last 10% "
                                "of logged steps; best FD among checkpoints that kept their diversity"))
        sec.blocks.append(Figures(drawn_figures(lambda d: plot_runs(metrics, d),
                                                {"losses.png": "losses", "d_accuracy.png": "discriminator accuracy",
                                                 "quality.png": "quality during training"})))
    return sec


def compare_folder_section(folder: Path) -> Section:
    sec = Section(f"Comparison {folder.name}", str(folder))
    table = _csv_table(folder / "summary.csv", sec)
    if table:
        sec.blocks.append(table)
    _figures_of(folder, [("samples.png", "samples from each run's best checkpoint (fixed seed)"), ("losses.png", "losses"),
                         ("d_accuracy.png", "discriminator accuracy"), ("quality.png", "quality during training")], sec)
    return sec


def _csv_table(path: Path, sec: Section, limit: int = 50, caption: str = "") -> Table | None:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        sec.missing.append(path.name)
        return None
    except (OSError, csv.Error) as exc:
        sec.missing.append(f"{path.name} (unreadable: {exc})")
        return None
    if not rows:
        return None
    more = len(rows) - 1 - limit
    return Table(rows[0], rows[1 : limit + 1], caption + (f" (first {limit} of {len(rows) - 1} rows)" if more > 0 else ""))


# ------------------------------------------------------------------------------------------------ evaluation

_METRICS = ("fd", "kid", "precision", "recall", "density", "coverage")


def evaluation_section(folder: Path) -> Section:
    """Every metric beside its real-vs-real references, the label agreement, the centroid study and the memorization
    audit."""
    sec = Section(f"Evaluation {folder.name}", str(folder))
    s = _json(folder / "metrics.json", sec)
    if s is not None:
        sec.blocks.append(Facts([("synthetic", str(s.get("synthetic", ""))), ("real", str(s.get("real", "")))]))
        by_key: dict[tuple[str, str], dict[str, dict]] = {}
        validated: dict[str, str] = {}
        for r in s.get("metrics", []):
            by_key.setdefault((r["space"], r["class"]), {})[r["comparison"]] = r
            validated[r["space"]] = r.get("validated", "")
        rows = []
        for (space, cls), comps in by_key.items():
            syn = comps.get("synthetic vs real train")
            if syn is None:
                continue
            halves, test = comps.get("real train half A vs half B", {}), comps.get("real train vs real test", {})
            rows.append([space, validated.get(space, ""), cls, str(syn.get("n_b", ""))]
                        + [(_num(syn.get(k)), f"real {_num(halves.get(k))} / {_num(test.get(k))}") for k in _METRICS])
        sec.blocks.append(Table(["feature space", "validated", "class", "synthetic n", *map(column_title, _METRICS)], rows,
                                "each synthetic figure is followed by its real-vs-real references: two halves of the real "
                                "training split / real training vs real test split. A synthetic set as good as real data "
                                "scores like the references (FD and KID: lower is better; the others: higher)."))
        agree = s.get("label_agreement") or []
        if agree:
            sec.blocks.append(Table(["space", "class", "synthetic n", "put in its class", "real test images", "put elsewhere"],
                                    [[a.get("space", ""), a.get("class", ""), str(a.get("n_synthetic", "")),
                                      f"{100 * float(a.get('synthetic_agreement', 0)):.1f}%",
                                      f"{100 * float(a.get('real_agreement', 0)):.1f}%",
                                      f"{100 * float(a.get('most_confused_share', 0)):.1f}% in {a['most_confused_with']}"
                                      if a.get("most_confused_with") else "-"] for a in agree],
                                    "label agreement: how often the classifier of the space (trained on the real training "
                                    "images) puts a synthetic image in the class it was drawn for, beside how often it puts a "
                                    "real test image in its own class; images of one class that read as another teach a "
                                    "classifier the wrong class"))
        mem = s.get("memorization") or []
        if mem:
            sec.blocks.append(Table(["space", "flagged", "held-out reference", "threshold (1st pct.)"],
                                    [[m.get("space", ""), f"{100 * float(m.get('flagged_fraction', 0)):.2f}%",
                                      f"{100 * float(m.get('reference_fraction', 0)):.2f}%", _num(m.get("threshold_p1"), 4)] for m in mem],
                                    "memorization audit: share of synthetic images closer to a training image than 99% of real "
                                    "held-out images are (the reference: the same share among held-out images themselves)"))
        cen = s.get("centroids")
        if cen:
            own = cen.get("nearest_is_own_class")
            if isinstance(own, dict):
                own = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in own.items())
            sec.blocks.append(Text(f"centroid study in {cen.get('space')}: each synthetic class nearest its own real class centroid? {own}"))
    _figures_of(folder, [("centroids.png", "distances to the real class centroids (autoencoder latent)"),
                         ("closest_pairs.png", "closest synthetic/training pairs (memorization audit)")], sec)
    return sec


def feature_check_section(folder: Path) -> Section:
    """The distortion check of each feature space: passed or which expectations failed, and the figures per
    distortion and strength (a space that fails is not trusted to select checkpoints)."""
    sec = Section(f"Feature-space check {folder.name}", str(folder))
    s = _json(folder / "check.json", sec)
    if s is None:
        return sec
    sec.blocks.append(Table(["feature space", "verdict", "failed expectations"],
                            [[space, "passed" if r.get("passed") else "failed", "; ".join(r.get("failures", []))] for space, r in s.items()],
                            "each space must rank real images distorted by blur, noise, salt-and-pepper, black rectangles and "
                            "mode dropping as worse the stronger the distortion (Heusel et al.'s check of FID)"))
    for space in s:
        table = _csv_table(folder / f"check-{space}.csv", sec, caption=f"{space}: figures against the real training split")
        if table:
            sec.blocks.append(Pre(f"{space}: every distortion and strength", "\n".join(
                "  ".join(f"{c:>10}" for c in row) for row in [table.columns, *table.rows])))
    return sec


# ------------------------------------------------------------------------------------------------ studies


def study_section(folder: Path, stem: str, title: str) -> Section:
    """A TSTR or augmentation study: the table of arms (mean ± std over seeds) and its charts."""
    sec = Section(f"{title} {folder.name}", str(folder))
    s = _json(folder / f"{stem}.json", sec)
    if s is not None:
        facts = [(k.replace("_", " "), _num(v) if isinstance(v, float) else str(v)) for k, v in s.items()
                 if k not in ("rows", "per_seed", "classifier") and not isinstance(v, (dict, list))]
        if facts:
            sec.blocks.append(Facts(facts))
        rows = [[r.get("name", ""), str(r.get("train_images", "")), str(r.get("seeds", "")),
                 _pm(r.get("roc_auc_mean"), r.get("roc_auc_std")), _pm(r.get("balanced_accuracy_mean"), r.get("balanced_accuracy_std")),
                 _pm(r.get("accuracy_mean"), r.get("accuracy_std"))] for r in s.get("rows", [])]
        sec.blocks.append(Table(["arm", "training images", "seeds", "ROC AUC", "balanced accuracy", "accuracy"], rows,
                                "classifiers tested on the real test split; mean ± standard deviation over seeds"))
        if s.get("shift"):
            arms = s.get("rows", [])
            table = [[c.get("name", ""), str(c.get("images", ""))] + [
                _pm(*(fig.get(f"{k}_{x}") for x in ("mean", "std")))
                for a in arms for fig in [a if c.get("kind") == "in-distribution" else a.get("conditions", {}).get(c.get("name"), {})]
                for k in ("roc_auc", "balanced_accuracy")] for c in s["shift"].get("conditions", [])]
            cols = ["test condition", "images"] + [f"{a.get('name')} {k}" for a in arms for k in ("ROC AUC", "balanced accuracy")]
            sec.blocks.append(Table(cols, table, "the same classifiers (and validation thresholds) on the test split moved by "
                                    "each acquisition shift (mild ≈ 1, strong ≈ 2 standard deviations of real radiographs' own "
                                    "spread) and on external test sets; mean ± standard deviation over seeds"))
            summary = s["shift"].get("summary", {})
            facts = [(k.replace("_", " "), _num(v) if isinstance(v, float) else str(v)) for k, v in summary.items()
                     if not isinstance(v, dict)]
            if facts:
                sec.blocks.append(Facts(facts))
    _figures_of(folder, [("roc_auc.png", "ROC AUC"), ("balanced_accuracy.png", "balanced accuracy"),
                         ("confusion.png", "confusion matrices (summed over seeds)")], sec)
    if (folder / "shift.csv").is_file():
        _figures_of(folder, [("shift_roc_auc.png", "ROC AUC per test condition"),
                             ("shift_balanced_accuracy.png", "balanced accuracy per test condition")], sec)
    return sec


# ------------------------------------------------------------------------------------------------ dgm


def anomaly_section(folder: Path) -> Section:
    """Detection figures of the DGM beside the baselines, localization, ROC, box plot and the four panels."""
    sec = Section(f"Anomaly detection {folder.name}", str(folder))
    s = _json(folder / "anomaly.json", sec)
    if s is not None:
        sec.blocks.append(Facts([("run", f"{s.get('run')} (step {s.get('checkpoint_step')})"), ("data", str(s.get("data"))),
                                 ("normal class", str(s.get("normal_class"))), ("score", f"{s.get('score')} (chosen by {s.get('score_chosen_by')})"),
                                 ("test images", f"{s.get('n_test')} ({s.get('n_test_abnormal')} abnormal)")]))
        methods = s.get("methods", [])
        loc = any(m.get("pixel_auc") is not None for m in methods)
        cols = ["method", "ROC AUC", "average precision", "sensitivity", "specificity", "accuracy", "F1", "val ROC AUC"] + (["pixel ROC AUC", "best Dice"] if loc else [])
        rows = [[m.get("method", ""), _num(m.get("roc_auc")), _num(m.get("average_precision")), _num(m.get("sensitivity")),
                 _num(m.get("specificity")), _num(m.get("accuracy")), _num(m.get("f1")), _num(m.get("val_roc_auc"))]
                + ([_num(m.get("pixel_auc")), _num(m.get("best_dice"))] if loc else []) for m in methods]
        sec.blocks.append(Table(cols, rows, "test split; sensitivity, specificity, accuracy and F1 (abnormal = positive) at the "
                                "threshold chosen on the validation split"))
        val, test = s.get("val_roc_auc_by_score") or {}, s.get("test_roc_auc_by_score") or {}
        if val:
            sec.blocks.append(Table(["DGM score", "val ROC AUC", "test ROC AUC"], [[k, _num(v), _num(test.get(k))] for k, v in val.items()],
                                    "every DGM score; the one with the best validation figure is reported above"))
        site = s.get("site_calibration") or {}
        if site.get("rows"):
            sec.blocks.append(Table(["test set", "method", "sensitivity / specificity at the validation threshold",
                                     "at the site threshold"], [
                [r.get("condition", ""), r.get("method", ""),
                 f"{_num(r.get('val_threshold_sensitivity'))} / {_num(r.get('val_threshold_specificity'))}",
                 f"{_num(r.get('site_threshold_sensitivity'))} / {_num(r.get('site_threshold_specificity'))}"] for r in site["rows"]],
                f"thresholds set on {site.get('n_site_normals')} normal images of the test images' site ({site.get('site_normals')}), "
                "calling them normal as often as the validation threshold called the validation normals"))
        shift = s.get("shift") or {}
        if shift.get("rows"):
            names = [m.get("method", "") for m in methods]
            sec.blocks.append(Table(["test condition", "images"] + [f"{n} ROC AUC (sens. / spec.)" for n in names], [
                [r.get("condition", ""), str(r.get("images", ""))] + [
                    f"{_num(r.get(f'{n} roc_auc'))} ({_num(r.get(f'{n} sensitivity'))} / {_num(r.get(f'{n} specificity'))})" for n in names]
                for r in shift["rows"]], "every method on the test split moved by each acquisition shift and on external test sets; "
                "sensitivity and specificity at the threshold chosen on the (unshifted) validation split"))
    _figures_of(folder, [("roc.png", "ROC curves"), ("box.png", "scores per class")], sec)
    if (folder / "shift.csv").is_file():
        _figures_of(folder, [("shift_roc_auc.png", "ROC AUC per test condition")], sec)
    panels = [(f"{name}.png", name.replace("_", " ")) for name in PANELS]
    empty = _empty_panels((s or {}).get("methods") or [{}])
    if empty:
        sec.blocks.append(Facts([("no example", f"{title}: no test image fell in that cell") for name, title in panels if name in empty]))
    _figures_of(folder, [p for p in panels if p[0] not in empty], sec)
    return sec


def _empty_panels(methods: list[dict]) -> set[str]:
    """The example panels an anomaly report has no image for, read off the DGM's sensitivity and specificity at its
    threshold (the first method): a specificity of 1 leaves no normal image judged abnormal, and so on."""
    sens, spec = methods[0].get("sensitivity"), methods[0].get("specificity")
    empty = set()
    if isinstance(spec, (int, float)):
        empty |= {"normal_judged_abnormal.png"} if spec >= 1 else {"normal_judged_normal.png"} if spec <= 0 else set()
    if isinstance(sens, (int, float)):
        empty |= {"abnormal_judged_normal.png"} if sens >= 1 else {"abnormal_judged_abnormal.png"} if sens <= 0 else set()
    return empty


def decomposition_section(folder: Path, limit: int = 8) -> Section:
    """Per image: the synthesized normal image, the residual (disease) map and the overlay; the score table."""
    sec = Section(f"Decomposition {folder.name}", str(folder))
    table = _csv_table(folder / "scores.csv", sec, limit=20, caption="anomaly scores per input")
    names = sorted(p.stem for p in (folder / "overlay").glob("*.png"))[:limit] if (folder / "overlay").is_dir() else []
    for name in names:
        figs = [file_figure(folder / sub / f"{name}.png", f"{name}: {what}") for sub, what in
                (("normal", "synthesized normal"), ("residual", "residual"), ("overlay", "residual on the input"))]
        figs = [f for f in figs if f]
        if figs:
            sec.blocks.append(Figures(figs))
    for sub in ("normal", "residual", "overlay"):
        if not (folder / sub).is_dir():
            sec.missing.append(f"{sub}/")
    if table:
        sec.blocks.append(table)
    return sec


# ------------------------------------------------------------------------------------------------ chapters

ABSENT = {
    "data": "no dataset: `cxrgan prepare SOURCE --out DATA` (or give a run whose dataset still exists)",
    "runs": "no training run: `cxrgan train --model dcgan --data DATA --out RUN`",
    "comparison": "no comparison: give two or more runs (`cxrgan report RUN_A RUN_B ...`) or a `cxrgan compare` folder",
    "evaluation": "no evaluation: `cxrgan evaluate RUN --real DATA --out DIR`",
    "features": "no feature-space check: `cxrgan evaluate --check-features --real DATA --out DIR`",
    "tstr": "no TSTR study: `cxrgan tstr --synthetic SET --real DATA --out DIR`",
    "augmentation": "no augmentation study: `cxrgan augment-study --real DATA --synthetic SET --out DIR`",
    "anomaly": "no anomaly detection: `cxrgan anomaly DGM_RUN --data DATA --out DIR`",
    "decomposition": "no decomposition: `cxrgan decompose DGM_RUN IMAGES... --out DIR`",
}

TITLES = {"data": "Data", "runs": "Training runs", "comparison": "Comparison", "features": "Feature spaces", "evaluation": "Evaluation",
          "tstr": "Train on synthetic, test on real", "augmentation": "Augmentation study", "anomaly": "Anomaly detection",
          "decomposition": "Disease decomposition"}


def _guard(build: Callable[[], Section], title: str, source: Path) -> Section:
    """A section, or a note when building it failed (a report never stops for one bad input)."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - one damaged folder must not lose the rest of the report
        log.debug("section %s failed", source, exc_info=True)
        return Section(title, str(source), [Text(f"this part could not be read: {exc}", "warn")])


def gather(paths: Sequence[str | Path]) -> tuple[list[Chapter], list[str]]:
    """The chapters of a report on ``paths`` and notes on inputs that were left out."""
    found, notes = discover(paths)
    by_kind: dict[str, list[Path]] = {}
    for k, p in found:
        by_kind.setdefault(k, []).append(p)
    datasets = list(by_kind.get("dataset", []))
    known = {d.resolve() for d in datasets}
    for r in by_kind.get("run", []):  # the data each run trained on, when it still exists
        info = read_run_state(r).info or {}
        d = Path(info.get("data_path", "")) if info.get("data_path") else None
        if d is not None and d.resolve() not in known:
            if (d / "manifest.json").is_file():
                datasets.append(d)
                known.add(d.resolve())
            else:
                notes.append(f"the dataset of run {r} ({d}) is not found; its summary is left out")
    builders: dict[str, Callable[[Path], Section]] = {
        "data": dataset_section, "runs": run_section, "comparison": compare_folder_section, "features": feature_check_section,
        "evaluation": evaluation_section,
        "tstr": lambda p: study_section(p, "tstr", "TSTR"), "augmentation": lambda p: study_section(p, "augment_study", "Augmentation study"),
        "anomaly": anomaly_section, "decomposition": decomposition_section}
    inputs = {"data": datasets, "runs": by_kind.get("run", []), "comparison": by_kind.get("comparison", []),
              "features": by_kind.get("features", []), "evaluation": by_kind.get("evaluation", []), "tstr": by_kind.get("tstr", []),
              "augmentation": by_kind.get("augmentation", []), "anomaly": by_kind.get("anomaly", []),
              "decomposition": by_kind.get("decomposition", [])}
    chapters = []
    for key, folders in inputs.items():
        sections = [_guard(lambda p=p: builders[key](p), f"{TITLES[key]}: {p.name}", p) for p in folders]
        if key == "comparison" and len(inputs["runs"]) > 1 and not folders:
            sections.insert(0, _guard(lambda: comparison_of_runs(inputs["runs"]), "Comparison of runs", Path(".")))
        for i, s in enumerate(sections):
            s.anchor = f"{key}-{i}"
        chapters.append(Chapter(key, TITLES[key], sections, "" if sections else ABSENT[key]))
    return chapters, notes

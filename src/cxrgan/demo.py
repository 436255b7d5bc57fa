"""The README's main job: the whole system on the embedded phantom data, ending in one HTML report.

prepare phantoms -> train a DCGAN, a conditional GAN and the DGM (on the normal class) -> sample a labelled
synthetic set -> train the evaluation feature spaces and check them with distortions -> evaluate (FD/KID/PRDC,
centroids, memorization) ->
TSTR -> anomaly detection and decomposition with the DGM -> compare -> ``report.html``.

The demo is a list of named stages (:data:`STAGES`). A stage is skipped when its output is complete and no
stage it depends on ran in this invocation, so running the demo again reuses finished work, and an interrupted
training resumes. The report gathers whatever the demo folder holds, so a new kind of output appears in it
by adding its stage here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .data import Preprocess, PreparedDataset, SourceOptions, prepare
from .data.summary import info_text
from .train import checkpoint as ckpt
from .train.config import load_config
from .utils.io import write_json_atomic


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo (the defaults take about 7 minutes on a 2-core CPU with native bf16; see
    docs/getting-started.md)."""

    size: int = 64
    count: int = 1200  # phantoms in all (NORMAL 40%, PNEUMONIA 30%, COVID 30%)
    width: int = 32  # generator and discriminator channels
    batch_size: int = 32
    steps: dict[str, int] = field(default_factory=lambda: {"dcgan": 600, "cgan": 600, "dgm": 400})
    eval_every: int = 200
    synthetic_per_class: int = 300
    classifier_epochs: int = 6
    ae_epochs: int = 6
    tstr_seeds: int = 1
    baseline_epochs: int = 6
    normal_class: str = "NORMAL"
    precision: str = "auto"  # bf16 where the CPU or GPU has it natively, else fp32
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A shortened demo for tests: 32 px, a few hundred phantoms, tens of steps."""
        return cls(size=32, count=240, width=16, batch_size=16, steps={"dcgan": 20, "cgan": 20, "dgm": 20}, eval_every=10,
                   synthetic_per_class=40, classifier_epochs=1, ae_epochs=1, baseline_epochs=1)


@dataclass
class Stage:
    """One step of the demo: ``done(ctx)`` says whether its output is complete, ``run(ctx)`` makes it."""

    name: str
    done: Callable[["Demo"], bool]
    run: Callable[["Demo"], None]
    after: tuple[str, ...] = ()


@dataclass
class Demo:
    out: Path
    cfg: DemoConfig
    quiet: bool = False
    ran: set[str] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.out / "data" / f"phantom{self.cfg.size}"

    def run_dir(self, family: str) -> Path:
        return self.out / "runs" / family

    @property
    def synthetic(self) -> Path:
        return self.out / "synthetic" / "cgan"

    @property
    def features(self) -> Path:
        return self.out / "features"


class Interrupted(Exception):
    """A training stage was interrupted (Ctrl-C or SIGTERM); its checkpoint is kept."""


# ------------------------------------------------------------------------------------------------ stages


def _prepare(d: Demo) -> None:
    prepare("phantom", d.data, Preprocess(size=d.cfg.size), SourceOptions(count=d.cfg.count, seed=d.cfg.seed), progress=not d.quiet)
    print(info_text(PreparedDataset.open(d.data)))


def _trained(family: str) -> Callable[[Demo], bool]:
    def done(d: Demo) -> bool:
        steps = ckpt.list_checkpoints(d.run_dir(family))
        return bool(steps) and steps[-1] >= d.cfg.steps[family]

    return done


def _train(family: str) -> Callable[[Demo], None]:
    def run(d: Demo) -> None:
        from .report.plots import plot_run
        from .train.loop import train

        c = d.cfg
        overrides = [f"model.family={family}", f"model.g_channels={c.width}", f"model.d_channels={c.width}",
                     f"batch_size={c.batch_size}", f"ckpt_every={c.eval_every}", f"log_every={max(1, c.eval_every // 8)}",
                     "eval_samples=512", f"seed={c.seed}", f"data.path={d.data}", f"steps={c.steps[family]}",
                     f"precision={c.precision}"]
        if family == "dgm":
            overrides.append(f"model.normal_class={c.normal_class}")
        else:
            overrides.append("augment.policy=translation")
        cfg = load_config(None, overrides)
        run_dir = d.run_dir(family)
        have = ckpt.list_checkpoints(run_dir)
        print(f"training {family} for {c.steps[family]} steps ({'resuming from step ' + str(have[-1]) if have else 'new run'}) ...", flush=True)
        result = train(cfg, run_dir, resume=bool(have), progress=not d.quiet, on_end=plot_run)
        if result.interrupted:
            raise Interrupted(f"{family} interrupted at step {result.step}")

    return run


def _sample(d: Demo) -> None:
    from .sample import sample

    sample([d.run_dir("cgan")], d.synthetic, n=d.cfg.synthetic_per_class * len(PreparedDataset.open(d.data).class_names),
           seed=d.cfg.seed, overwrite=True)


def _features(d: Demo) -> None:
    from .evaluate.classifier import ClassifierConfig
    from .evaluate.extractors import ExtractorTraining, train_extractors

    training = ExtractorTraining(ae_epochs=d.cfg.ae_epochs, classifier=ClassifierConfig(epochs=d.cfg.classifier_epochs), seed=d.cfg.seed)
    train_extractors(PreparedDataset.open(d.data), d.features, ("autoencoder", "classifier"), training, progress=not d.quiet)


def _spaces(d: Demo) -> str:
    return f"{d.features / 'classifier'},{d.features / 'autoencoder'},randconv"


def _check_features(d: Demo) -> None:
    from .studies.suite import check_features

    for r in check_features(d.data, _spaces(d), d.out / "feature_check", progress=not d.quiet):
        print(f"{r.space}: {'passed' if r.passed else 'failed: ' + '; '.join(r.failures)}")


def _evaluate(d: Demo) -> None:
    from .studies.suite import evaluate

    evaluate(d.synthetic, d.data, d.out / "evaluation", _spaces(d), seed=d.cfg.seed, progress=not d.quiet)


def _tstr(d: Demo) -> None:
    from .evaluate.classifier import ClassifierConfig
    from .studies.usefulness import tstr

    tstr(d.synthetic, d.data, d.out / "tstr", ClassifierConfig(epochs=d.cfg.classifier_epochs),
         seeds=range(d.cfg.tstr_seeds), progress=not d.quiet)


def _anomaly(d: Demo) -> None:
    from .decompose import anomaly

    anomaly(d.run_dir("dgm"), d.data, d.out / "anomaly", d.cfg.normal_class, baseline_epochs=d.cfg.baseline_epochs, seed=d.cfg.seed)


def _decompose(d: Demo) -> None:
    from .decompose import decompose

    decompose(d.run_dir("dgm"), [d.data], d.out / "decomposition", split="test")


def _compare(d: Demo) -> None:
    from .report.compare import compare

    compare([d.run_dir(f) for f in ("dcgan", "cgan", "dgm")], d.out / "compare")


def _exists(*parts: str) -> Callable[[Demo], bool]:
    return lambda d: d.out.joinpath(*parts).is_file()


STAGES: list[Stage] = [
    Stage("prepare", lambda d: (d.data / "manifest.json").is_file(), _prepare),
    Stage("train dcgan", _trained("dcgan"), _train("dcgan"), ("prepare",)),
    Stage("train cgan", _trained("cgan"), _train("cgan"), ("prepare",)),
    Stage("train dgm", _trained("dgm"), _train("dgm"), ("prepare",)),
    Stage("sample", lambda d: (d.synthetic / "manifest.json").is_file(), _sample, ("train cgan",)),
    Stage("features", lambda d: (d.features / "classifier" / "extractor.json").is_file()
          and (d.features / "autoencoder" / "extractor.json").is_file(), _features, ("prepare",)),
    Stage("check features", _exists("feature_check", "check.json"), _check_features, ("features",)),
    Stage("evaluate", _exists("evaluation", "metrics.json"), _evaluate, ("sample", "features", "check features")),
    Stage("tstr", _exists("tstr", "tstr.json"), _tstr, ("sample",)),
    Stage("anomaly", _exists("anomaly", "anomaly.json"), _anomaly, ("train dgm",)),
    Stage("decompose", _exists("decomposition", "scores.csv"), _decompose, ("train dgm",)),
    Stage("compare", _exists("compare", "summary.md"), _compare, ("train dcgan", "train cgan", "train dgm")),
]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_demo(out: Path, cfg: DemoConfig | None = None, quiet: bool = False) -> Path | None:
    """Run every stage into ``out`` and write ``out/report.html``; returns its path (``None`` if interrupted)."""
    from .report.html import build_report

    cfg = cfg or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out, cfg, quiet)
    saved = out / "demo.json"
    write_json_atomic(saved, asdict(cfg))
    timings: dict[str, float] = {}
    for stage in STAGES:
        if stage.done(demo) and not demo.ran.intersection(stage.after):
            print(f"[{stage.name}] done already, reused", flush=True)
            continue
        print(f"\n[{stage.name}]", flush=True)
        t0 = time.perf_counter()
        try:
            stage.run(demo)
        except Interrupted as exc:
            print(f"{exc}; run the demo again to resume")
            return None
        timings[stage.name] = round(time.perf_counter() - t0, 1)
        write_json_atomic(out / "timings.json", {**_read_json(out / "timings.json"), **timings})
        demo.ran.add(stage.name)
    t0 = time.perf_counter()
    report = build_report([out], out / "report.html", title="cxrgan demo: synthetic chest X-ray phantoms")
    timings["report"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / "timings.json", {**_read_json(out / "timings.json"), **timings})
    print("\nstage times (s): " + ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    print(f"\nthe report: {report.resolve()}")
    print(f"to look and try in the browser: cxrgan app {out}")
    return report

"""The README's main job on the embedded phantom data.

prepare phantoms -> preview grid and class balance -> train a DCGAN long enough for anatomy to appear
(minutes on a CPU) -> sample a labelled synthetic set from the best checkpoint -> comparison figures.
Each stage reuses its output when it is already complete, and an interrupted training resumes.
"""

from __future__ import annotations

from pathlib import Path

from .data import Preprocess, PreparedDataset, SourceOptions, prepare
from .data.summary import balance_summary, info_text, preview
from .train import checkpoint as ckpt
from .train.config import load_config
from .utils.io import write_json_atomic


# Half-width DCGAN, batch 32: 1,200 steps take about 6 minutes on a 2-core CPU, enough for anatomy to appear.
DEMO_TRAINING = ["model.family=dcgan", "model.g_channels=32", "model.d_channels=32", "batch_size=32",
                 "augment.policy=translation", "ckpt_every=300", "log_every=25", "eval_samples=512", "seed=0"]
DEMO_STEPS = 1200


def prepare_demo_data(out: Path, size: int, count: int, quiet: bool) -> PreparedDataset:
    """The phantom dataset of the demo, prepared once and reused on later runs."""
    path = out / f"phantom{size}"
    if (path / "manifest.json").is_file():
        return PreparedDataset.open(path)
    return prepare("phantom", path, Preprocess(size=size), SourceOptions(count=count, seed=0), progress=not quiet)


def run_demo(out: Path, size: int = 64, count: int = 1500, steps: int | None = None, quiet: bool = False) -> None:
    """Run every stage of the demo into ``out`` and print where the results are."""
    from .report.compare import compare
    from .sample import sample
    from .train.loop import train

    out.mkdir(parents=True, exist_ok=True)
    ds = prepare_demo_data(out, size, count, quiet)
    print(info_text(ds))
    preview(ds, out / "preview.png")
    write_json_atomic(out / "class_balance.json", balance_summary(ds))

    steps = steps or DEMO_STEPS
    run = out / "runs" / "dcgan"
    cfg = load_config(None, DEMO_TRAINING + [f"data.path={ds.root}", f"steps={steps}"])
    done = ckpt.list_checkpoints(run)
    if not done or done[-1] < steps:
        print(f"\ntraining DCGAN on {len(ds.indices('train'))} phantoms for {steps} steps "
              f"({'resuming from step ' + str(done[-1]) if done else 'new run'}) ...", flush=True)
        result = train(cfg, run, resume=bool(done), progress=not quiet)
        if result.interrupted:
            print(f"interrupted at step {result.step}; run `make demo` again to resume")
            return
    synth = sample([run], out / "synthetic", n=64, seed=0, overwrite=True)
    compare([run], out / "compare")
    print(f"\ndemo results in {out}/:")
    for f in ("preview.png", "class_balance.json", "runs/dcgan/samples/", "runs/dcgan/plots/losses.png",
              "runs/dcgan/plots/d_accuracy.png", "runs/dcgan/plots/quality.png", "synthetic/png/", "compare/summary.md"):
        print(f"  {out / f}")
    print(f"{len(synth)} synthetic images from checkpoint {synth.manifest['source']['runs'][0]['checkpoint']}")

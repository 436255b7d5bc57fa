"""Speed and load of ``cxrgan app``: answers through its HTTP API, beside the same work done by the library directly.

    python benchmarks/bench_app.py [--runs FOLDER] [--repeats 10] [--concurrent 20]

The app runs as its own process (``cxrgan app FOLDER --port P``), as a user starts it; requests come from
``gradio_client`` on 127.0.0.1. Measured, each as a median over ``--repeats``:

- a Generate request for 16 images (``--count``) at 64 px (target: under 2 s), against ``Workspace.generate`` called in this
  process (the library's work, the reference);
- a decomposition of one uploaded 64 px PNG (target: under 1 s), against ``Workspace.decompose``;
- ``--concurrent`` Generate requests sent at once, twice: every one must be answered without error, and the server's
  memory (proportional set size of its process tree) after the second burst must stay within 10% of the first.

``--runs``: a folder holding a sampler run and a dgm run at 64 px (the demo's); without it, 64 px phantoms are
prepared and a DCGAN and a DGM are trained for a few steps in a temporary folder (speed does not depend on how
long they trained).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import tree_mib  # noqa: E402
from bench_metrics import cpu_line  # noqa: E402


def _runs(folder: Path) -> Path:
    """Tiny 64 px dcgan and dgm runs under ``folder`` (prepared once)."""
    from cxrgan.data import Preprocess, SourceOptions, prepare
    from cxrgan.train.config import load_config
    from cxrgan.train.loop import train

    data = folder / "data"
    prepare("phantom", data, Preprocess(size=64), SourceOptions(count=300, seed=0), progress=False)
    for family, extra in (("dcgan", []), ("dgm", ["model.normal_class=NORMAL"])):
        cfg = load_config(None, [f"model.family={family}", f"data.path={data}", "steps=10", "batch_size=16",
                                 "model.g_channels=32", "model.d_channels=32", "ckpt_every=10", "eval_samples=128", *extra])
        train(cfg, folder / "runs" / family, progress=False)
    return folder


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read(16)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the app did not answer in time")


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, help="a folder with 64 px runs (default: tiny ones trained here)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--count", type=int, default=16, help="images per Generate request (default 16)")
    a = ap.parse_args()

    from gradio_client import Client, handle_file
    from PIL import Image

    from cxrgan.app.page import free_port
    from cxrgan.app.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    folder = a.runs or _runs(tmp / "runs")
    ws = Workspace([folder], tmp / "scratch")
    sampler = next(n for n in ws.names(translators=False) if ws.run(n).loaded.info["image_size"] == 64)
    dgm = ws.names(translators=True)[0]
    klass = (ws.run(sampler).classes or [None])[0]
    png = tmp / "input.png"
    ds_images = np.load(Path(ws.run(dgm).loaded.info["data_path"]) / "images.npy", mmap_mode="r")
    Image.fromarray(np.asarray(ds_images[0])).save(png)

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))}
    proc = subprocess.Popen([sys.executable, "-m", "cxrgan", "--quiet", "app", str(folder), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_up(url, proc)
        client = Client(url, verbose=False)
        gen_args = dict(name=sampler, cls=klass, first_seed=0, n=a.count, psi=0, pinned=True)

        def lib_generate():
            ws.generate(sampler, klass, 0, a.count)

        def app_generate():
            client.predict(*_generate_inputs(gen_args), api_name="/on_generate")

        def lib_decompose():
            ws.decompose(dgm, [png])

        def app_decompose():
            client.predict(dgm, [handle_file(str(png))], api_name="/on_decompose")

        rows = [(f"Generate, {a.count} images at 64 px", _median_s(app_generate, a.repeats), _median_s(lib_generate, a.repeats), 2.0),
                ("Decompose, one 64 px PNG", _median_s(app_decompose, a.repeats), _median_s(lib_decompose, a.repeats), 1.0)]

        bursts = []
        for _ in range(2):
            failures: list[str] = []
            answered = [0]
            lock = threading.Lock()

            def one(seed: int) -> None:
                try:
                    c = Client(url, verbose=False)
                    c.predict(*_generate_inputs({**gen_args, "first_seed": seed}), api_name="/on_generate")
                    with lock:
                        answered[0] += 1
                except Exception as exc:  # every failure is counted and shown
                    failures.append(f"{type(exc).__name__}: {exc}")

            t0 = time.perf_counter()
            threads = [threading.Thread(target=one, args=(s,)) for s in range(a.concurrent)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            bursts.append((answered[0], failures, time.perf_counter() - t0, tree_mib(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(cpu_line())
    print(f"runs: {folder} (sampler {sampler}, dgm {dgm})\n")
    print("| request | app (median s) | library in-process (s) | app / library | target |")
    print("|---|---|---|---|---|")
    for name, app_s, lib_s, target in rows:
        print(f"| {name} | {app_s:.3f} | {lib_s:.3f} | {app_s / lib_s:.2f}x | < {target:g} s: {'met' if app_s < target else 'MISSED'} |")
    print(f"\n{a.concurrent} concurrent Generate requests, twice:")
    for k, (ok, failures, secs, mib) in enumerate(bursts, 1):
        print(f"  burst {k}: {ok}/{a.concurrent} answered, {len(failures)} failed, {secs:.1f} s, server memory {mib:.0f} MiB")
        for f in failures[:3]:
            print(f"    {f}")
    growth = bursts[1][3] / bursts[0][3] - 1
    print(f"  memory after the second burst: {growth:+.1%} of the first ({'flat' if abs(growth) <= 0.10 else 'GROWING'})")


def _generate_inputs(args: dict) -> list:
    """The Generate endpoint's inputs in order: run, class, seed, count, truncation, diffusion steps, pin, then every code
    slider."""
    from cxrgan.app.page import MAX_SLIDERS

    return [args["name"], args["cls"], args["first_seed"], args["n"], args["psi"], 25, args["pinned"], *([0.0] * MAX_SLIDERS)]


if __name__ == "__main__":
    main()

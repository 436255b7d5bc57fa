"""The app: its workspace (sets in sample's format, per-image seeds, code sliders, decomposition of uploads, the
threshold) without a browser, then the page itself driven in the machine's Chromium through Playwright: a grid, a
code slider that changes the image, a DICOM decomposed, a corrupt file's message, and nothing sent off the machine."""

from __future__ import annotations

import json
import logging
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.demo import DemoConfig, run_demo
from cxrgan.errors import CxrganError
from cxrgan.sample import sample
from cxrgan.report.browser import unavailable

from ..data.fixtures import write_dicom
from ..train.helpers import tiny_config

IDENTIFYING = ("Johnathan", "PAT-0001", "ACC98765", "19710203")  # write_dicom's patient fields


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The shortened demo's folder (dcgan, cgan, dgm, an anomaly report) plus tiny semicond and ddpm runs beside its runs."""
    from cxrgan.train.loop import train

    out = tmp_path_factory.mktemp("app") / "demo"
    assert run_demo(out, DemoConfig.quick(), quiet=True) is not None
    train(tiny_config(out / "data" / "phantom32", "semicond", "steps=4"), out / "runs" / "semicond", progress=False)
    train(tiny_config(out / "data" / "phantom32", "ddpm", "steps=2", "model.sample_steps=4", "model.timesteps=100"),
          out / "runs" / "ddpm", progress=False)
    return out


@pytest.fixture(scope="module")
def workspace(runs, tmp_path_factory):
    from cxrgan.app.workspace import Workspace

    return Workspace([runs], tmp_path_factory.mktemp("scratch"))


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    write_dicom(d / "chest.dcm")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    write_dicom(d / "nopixels.dcm", pixels=False)
    (d / "large.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1_200_000))  # over the test app's 1 MB limit
    return {p.name: p for p in d.iterdir()}


# ---------------------------------------------------------------------------------------------- the workspace
def test_workspace_serves_every_run_and_sorts_them_by_what_they_do(workspace):
    assert set(workspace.names()) == {"dcgan", "cgan", "dgm", "semicond", "ddpm"}
    assert workspace.names(translators=True) == ["dgm"]
    assert sorted(workspace.run("cgan").classes) == ["COVID", "NORMAL", "PNEUMONIA"]
    with pytest.raises(CxrganError, match="no loaded run named 'nope'"):
        workspace.run("nope")
    with pytest.raises(CxrganError, match="Decompose tab"):
        workspace.generate("dgm", None, 0, 4)
    with pytest.raises(CxrganError, match="count must be from 1 to 64"):
        workspace.generate("cgan", "NORMAL", 0, 0)


def test_a_generated_set_is_samples_format_and_each_image_comes_back_from_its_seed(workspace, tmp_path):
    res = workspace.generate("cgan", "PNEUMONIA", 10, 6)
    assert res.images.shape == (6, 32, 32) and res.captions[0] == "seed 10" and res.captions[-1] == "seed 15"
    assert "--seed 10 --seed-per-image --class PNEUMONIA" in res.command
    with zipfile.ZipFile(res.archive) as zf:
        names = set(zf.namelist())
    assert {"images.npy", "labels.npy", "manifest.json"} <= names and sum(n.endswith(".png") for n in names) == 6
    manifest = json.loads((res.folder / "manifest.json").read_text())
    assert manifest["source"]["seed_per_image"] is True
    # image 3 of the set is seed 13's image: drawn alone, by the command line's sample, it is the same
    alone = sample([workspace.run("cgan").path], tmp_path / "one", n=1, classes=["PNEUMONIA"], seed=13, seed_per_image=True,
                   device="cpu")
    assert np.array_equal(np.asarray(alone.images[0]), res.images[3])
    again = workspace.generate("cgan", "PNEUMONIA", 10, 6)
    assert np.array_equal(again.images, res.images)
    other = workspace.generate("cgan", "NORMAL", 10, 6)
    assert not np.array_equal(other.images, res.images)  # the class is used
    hot = workspace.generate("cgan", "PNEUMONIA", 10, 2, temperature=1.5)
    assert "--temperature 1.5" in hot.command and not np.array_equal(hot.images, res.images[:2])
    alone = sample([workspace.run("cgan").path], tmp_path / "hot", n=1, classes=["PNEUMONIA"], seed=11, seed_per_image=True,
                   device="cpu", temperature=1.5)
    assert np.array_equal(np.asarray(alone.images[0]), hot.images[1])  # the command it shows draws the same image


def test_a_diffusion_run_samples_with_the_steps_asked_for_and_its_own_otherwise(workspace):
    assert workspace.run("ddpm").sample_steps == 4 and workspace.run("cgan").sample_steps is None
    own = workspace.generate("ddpm", "NORMAL", 0, 2)
    assert "--sample-steps" not in own.command
    fewer = workspace.generate("ddpm", "NORMAL", 0, 2, sample_steps=2)
    assert "--sample-steps 2" in fewer.command and not np.array_equal(fewer.images, own.images)
    again = workspace.generate("ddpm", "NORMAL", 0, 2)  # the run's own steps again, not the last request's
    assert np.array_equal(again.images, own.images)
    with pytest.raises(CxrganError, match="between 1 and the 100"):
        workspace.generate("ddpm", "NORMAL", 0, 2, sample_steps=500)


def test_code_sliders_name_each_dimension_and_steer_the_image(workspace):
    sliders = workspace.code_sliders("semicond")
    assert len(sliders) == 20 and sliders[0].label == "bernoulli[0] ~ bernoulli:5:p=0.5"
    expo = [s for s in sliders if s.block == "exponential"]
    assert expo[0].low >= 0 and expo[0].high > 3 and expo[0].low < expo[0].value < expo[0].high
    assert workspace.code_sliders("cgan") == []
    codes = {b: [s.value for s in sliders if s.block == b] for b in dict.fromkeys(s.block for s in sliders)}
    base = workspace.generate("semicond", "NORMAL", 0, 2, codes=codes)
    codes["exponential"] = [expo[0].high] * 5
    moved = workspace.generate("semicond", "NORMAL", 0, 2, codes=codes)
    assert not np.array_equal(base.images, moved.images)
    assert "--code exponential=" in moved.command
    strip = workspace.traverse_strip("semicond", "normal", class_name="NORMAL")
    assert strip.is_file() and strip.stat().st_size > 200


def test_old_sets_are_deleted_so_the_scratch_folder_stays_bounded(runs, tmp_path):
    from cxrgan.app.workspace import Workspace

    ws = Workspace([runs / "runs" / "dcgan"], tmp_path / "s", keep_sets=3)
    for seed in range(7):
        ws.generate("dcgan", None, seed, 2)
    assert len(list((tmp_path / "s" / "sets").iterdir())) == 3


def test_decomposition_scores_against_the_anomaly_reports_threshold_and_names_bad_files(workspace, uploads):
    rows, cal = workspace.decompose("dgm", [uploads["chest.dcm"], uploads["broken.png"], uploads["nopixels.dcm"]])
    report = json.loads((Path(workspace.anomaly_reports[0])).read_text())
    assert cal.score == report["score"] and cal.threshold == pytest.approx(report["methods"][0]["threshold"])
    ok, broken, empty = rows
    assert ok.error == "" and ok.panel.shape[2] == 3 and ok.panel.shape[1] > 4 * 100
    assert ok.flagged == (ok.score >= cal.threshold)
    assert "broken.png" in broken.error and broken.panel is None
    assert "nopixels.dcm" in empty.error and "pixel" in empty.error.lower()
    for r in rows:
        assert not any(f in (r.note + r.error) for f in IDENTIFYING)
    with pytest.raises(CxrganError, match="needs a dgm run"):
        workspace.decompose("cgan", [uploads["chest.dcm"]])


def test_without_an_anomaly_report_the_threshold_is_chosen_on_the_runs_validation_split(runs, tmp_path):
    from cxrgan.app.workspace import Workspace
    from cxrgan.decompose import Calibration

    ws = Workspace([runs / "runs" / "dgm"], tmp_path / "s")
    cal = ws.calibration("dgm")
    assert isinstance(cal, Calibration) and "phantom32" in cal.source and 0 <= cal.val_specificity <= 1
    assert 0.5 < cal.val_roc_auc <= 1


def test_a_broken_run_is_listed_with_its_reason_and_the_others_still_serve(runs, tmp_path):
    import shutil

    from cxrgan.app.workspace import Workspace

    broken = tmp_path / "runs" / "broken"
    shutil.copytree(runs / "runs" / "dcgan", broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "checkpoints").mkdir()
    shutil.copytree(runs / "runs" / "dcgan", tmp_path / "runs" / "good")
    ws = Workspace([tmp_path / "runs"], tmp_path / "s")
    assert ws.names() == ["good"] and ws.runs["broken"].error
    assert "Run broken" in ws.summary_html("broken") and "<header>" not in ws.summary_html("good")  # the part only
    with pytest.raises(CxrganError, match="no trained run could be loaded"):
        Workspace([broken], tmp_path / "s2")


def test_the_cli_refuses_a_missing_folder_and_a_busy_port(runs, capsys):
    assert main(["app", "/no/such/folder"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["app", str(runs / "runs" / "dcgan"), "--port", str(port)]) == 2
    assert "choose another --port" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- in the browser
NO_BROWSER = unavailable()


@pytest.fixture
def offline(monkeypatch):
    """Fail any connection this process opens to anything but this machine (the app runs in this process)."""
    real = socket.socket.connect
    leaks: list = []

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            leaks.append(address)
            raise OSError(f"the test forbids connections off this machine ({address})")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return leaks


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"{NO_BROWSER}; .ci/run installs Chromium where it can")
def test_the_app_in_a_real_browser(runs, uploads, offline, tmp_path, caplog, capfd):
    from cxrgan.app.page import free_port, serve
    from cxrgan.report.browser import chromium

    caplog.set_level(logging.DEBUG)
    port = free_port()
    server = serve([runs], port=port, max_upload_mb=1, block=False)
    scratch = server.scratch
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.set_default_timeout(60_000)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"http://127.0.0.1:{port}/")

            # Generate: a grid of 16, each with its seed
            page.locator("#cxr-generate").click()
            page.wait_for_function("document.querySelectorAll('#cxr-gallery img').length == 16")
            assert "seed 15" in page.locator("#cxr-gallery").inner_text()
            assert "--seed-per-image" in page.locator("#cxr-command").inner_text()

            # a semicond run: its sliders appear; moving one changes the image
            page.get_by_label("run", exact=True).first.click()
            page.get_by_role("option", name="semicond").click()
            page.wait_for_selector("#cxr-code-5 input[type=range]")
            assert "exponential[0]" in page.locator("#cxr-code-5").inner_text()
            page.locator("#cxr-generate").click()
            page.wait_for_function("document.querySelectorAll('#cxr-gallery img').length == 16 && "
                                   "document.querySelector('#cxr-command').innerText.includes('--code')")
            before = page.locator("#cxr-gallery img").first.get_attribute("src")
            slider = page.locator("#cxr-code-5 input[type=range]")
            slider.fill(str(float(slider.get_attribute("max")) * 0.9))
            slider.dispatch_event("pointerup")
            page.wait_for_function("src => document.querySelector('#cxr-gallery img').getAttribute('src') != src", arg=before)

            # Decompose: a file over the size limit is refused in the page; a DICOM gives the residual panel; a corrupt
            # file gets the CLI's message; the page keeps serving
            page.get_by_role("tab", name="Decompose").click()
            assert "not a diagnosis" in page.inner_text("body")
            page.locator("#cxr-upload input[type=file]").set_input_files([str(uploads["large.png"])])
            page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size')")
            page.locator("#cxr-upload input[type=file]").set_input_files([str(uploads["chest.dcm"]), str(uploads["broken.png"])])
            page.wait_for_function("document.querySelector('#cxr-upload').innerText.includes('broken')")  # name and suffix in two spans
            page.locator("#cxr-decompose").click()
            page.wait_for_selector("#cxr-dec-gallery img")
            result = page.locator("#cxr-dec-result").inner_text()
            assert "chest.dcm" in result and "threshold" in result.lower()
            assert "broken.png could not be read" in result and "corrupt" in result
            assert "cxrgan-app-" not in result  # the upload's temporary path is not shown
            caption = page.locator("#cxr-dec-gallery").inner_text()
            assert "chest.dcm: score" in caption
            alt = page.locator("#cxr-dec-gallery img").first
            assert alt.evaluate("i => i.naturalWidth") > 400  # the four-panel row: input, normal, residual, overlay

            # Runs: the report's summary of a run
            page.get_by_role("tab", name="Runs").click()
            frame = page.frame_locator("#cxr-runs iframe")
            assert "Run cgan" in frame.locator("body").inner_text()

            text = page.content()
            assert not any(f in text for f in IDENTIFYING)
            outside = [u for u in requests if not u.startswith(f"http://127.0.0.1:{port}") and not u.startswith(("data:", "blob:"))]
            assert outside == []
        assert offline == []
        logged = caplog.text + "".join(capfd.readouterr())
        assert not any(f in logged for f in IDENTIFYING)  # nor in any log line or console output
        # the uploads were deleted once decoded, and no file the app wrote holds a patient field
        for f in scratch.rglob("*"):
            if f.is_file():
                assert not f.name.endswith(".dcm"), f
                data = f.read_bytes()
                assert not any(x.encode() in data for x in IDENTIFYING), f
    finally:
        server.close()
    assert not scratch.exists()

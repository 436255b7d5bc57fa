"""``cxrgan report``: a well-formed, self-contained page; each section present when its input is and replaced by a
note when not; damaged inputs rendered with what is missing named; and the page checked in a real browser."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cxrgan.cli import main
from cxrgan.demo import DemoConfig, run_demo
from cxrgan.report.browser import check_page, unavailable
from cxrgan.report.html import build_report

VOID = {"meta", "img", "br", "hr", "link", "input", "source"}


class Page(HTMLParser):
    """Tags, attributes and text of a page; fails on a closing tag that does not match the open one."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.urls: list[str] = []
        self.ids: list[str] = []
        self.imgs = 0
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "data", "poster") and v is not None]
        if "id" in a:
            self.ids.append(a["id"])
        self.imgs += tag == "img"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert page.stack == [], f"unclosed tags {page.stack}"
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    external = [u for u in page.urls if not (u.startswith("data:image/png;base64,") or u.startswith("#"))]
    assert external == [], f"the page refers outside itself: {external[:3]}"
    return page


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Every kind of output, from the shortened demo, plus a tiny augmentation study."""
    from cxrgan.evaluate.classifier import ClassifierConfig
    from cxrgan.studies.usefulness import augment_study

    out = tmp_path_factory.mktemp("report") / "demo"
    assert run_demo(out, DemoConfig.quick(), quiet=True) is not None
    augment_study(out / "data" / "phantom32", [out / "synthetic" / "cgan"], out / "augment", cfg=ClassifierConfig(epochs=1),
                  seeds=[0], progress=False)
    return out


def test_full_report_has_every_section(demo, tmp_path):
    out = build_report([demo], tmp_path / "r.html")
    page = parse(out)
    for anchor in ("data-0", "data-1", "runs-0", "runs-1", "runs-2", "comparison-0", "features-0", "evaluation-0", "tstr-0",
                   "augmentation-0", "anomaly-0", "decomposition-0"):
        assert anchor in page.ids, anchor
    text = page.plain
    assert "no augmentation study" not in text and "missing here" not in text and "could not be read" not in text
    assert "not checked" not in text  # the evaluation names each feature space's verdict from the demo's check
    # What each section must say: the class table, the best checkpoint and why, the references beside each
    # metric, the memorization audit, the arms of both studies, the baselines beside the DGM.
    for needle in ("NORMAL", "PNEUMONIA", "COVID", "imbalance", "finished: 20 steps", "real-vs-real references",
                   "memorization audit", "label agreement", "put in its class", "TRTR", "TSTR", "BR", "GS", "autoencoder",
                   "mean normal image", "normal judged abnormal", "synthesized normal", "config.yaml", "Feature-space check"):
        assert needle in text, needle
    assert page.imgs >= 30


def test_an_empty_confusion_cell_is_said_not_missing():
    from cxrgan.report.gather import _empty_panels

    assert _empty_panels([{"sensitivity": 0.4, "specificity": 1.0}]) == {"normal_judged_abnormal.png"}
    assert _empty_panels([{"sensitivity": 1.0, "specificity": 0.0}]) == {"abnormal_judged_normal.png", "normal_judged_normal.png"}
    assert _empty_panels([{"sensitivity": 0.0, "specificity": 0.5}]) == {"abnormal_judged_abnormal.png"}
    assert _empty_panels([{"sensitivity": 0.7, "specificity": 0.8}]) == set() == _empty_panels([{}])


def test_absent_sections_name_their_command(demo, tmp_path):
    out = build_report([demo / "runs" / "dcgan"], tmp_path / "r.html")
    page = parse(out)
    text = page.plain
    assert "runs-0" in page.ids and "data-0" in page.ids  # the run, and the dataset it trained on
    for cmd in ("cxrgan evaluate --check-features", "cxrgan evaluate", "cxrgan tstr", "cxrgan augment-study", "cxrgan anomaly", "cxrgan decompose",
                "two or more runs"):
        assert cmd in text, cmd
    for anchor in ("evaluation-0", "tstr-0", "anomaly-0", "comparison-0"):
        assert anchor not in page.ids


def test_two_runs_get_a_comparison_table(demo, tmp_path):
    page = parse(build_report([demo / "runs" / "dcgan", demo / "runs" / "cgan"], tmp_path / "r.html"))
    assert "comparison-0" in page.ids
    assert "best FD" in page.plain and "best_fd" not in page.plain and "two or more runs" not in page.plain


def test_semicond_run_shows_its_traversals(demo, tmp_path):
    from cxrgan.train.config import load_config
    from cxrgan.train.loop import train

    run = tmp_path / "semicond"
    cfg = load_config(None, [f"data.path={demo / 'data' / 'phantom32'}", "model.family=semicond", "steps=4", "batch_size=8",
                             "model.g_channels=8", "model.d_channels=8", "ckpt_every=4", "eval_samples=32"])
    train(cfg, run, progress=False)
    page = parse(build_report([run], tmp_path / "r.html"))
    text = page.plain
    assert "Traversals" in text and "could not be read" not in text
    for block in ("bernoulli", "exponential", "uniform", "normal"):
        assert f"({block}) swept over its 5th-95th percentiles" in text, block


def test_a_run_set_in_epochs_reports_its_own_step_budget(demo, tmp_path):
    # A run given --epochs trains epochs x (training images // batch) steps, not the config's default step count.
    import json

    from cxrgan.train.config import load_config
    from cxrgan.train.loop import train

    run = tmp_path / "epochs"
    cfg = load_config(None, [f"data.path={demo / 'data' / 'phantom32'}", "model.family=dcgan", "epochs=2", "batch_size=64",
                             "model.g_channels=8", "model.d_channels=8", "eval_samples=32"])
    res = train(cfg, run, progress=False)
    n = json.loads((run / "run.json").read_text())["train_images"]
    assert res.step == 2 * (n // 64) != cfg.steps
    text = parse(build_report([run], tmp_path / "r.html")).plain
    assert f"{res.step} of {res.step} (2 epochs)" in text and "finished" in text


def test_damaged_inputs_render_what_exists(demo, tmp_path):
    # A run killed before its first checkpoint, a study whose files were deleted, a folder that is no output.
    run = tmp_path / "run"
    shutil.copytree(demo / "runs" / "cgan", run)
    shutil.rmtree(run / "checkpoints")
    (run / "plots" / "losses.png").unlink()
    study = tmp_path / "tstr"
    shutil.copytree(demo / "tstr", study)
    (study / "tstr.json").unlink()
    (study / "roc_auc.png").unlink()
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    page = parse(build_report([run, study, empty], tmp_path / "r.html"))
    text = page.plain
    assert "no checkpoint yet" in text and f"cxrgan train --out {run} --resume" in text
    assert "missing here: tstr.json, roc_auc.png" in text
    assert "balanced accuracy" in text  # what the study still has is shown
    assert f"{empty} holds no cxrgan output" in text
    assert "runs-0" in page.ids and "tstr-0" in page.ids


def test_missing_path_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_cli_writes_the_report(demo, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(demo / "anomaly"), str(demo / "decomposition"), "--out", str(out), "--title", "DGM <test>"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = parse(out)
    assert "DGM <test>" in page.plain  # escaped, and shown as text
    assert "anomaly-0" in page.ids and "decomposition-0" in page.ids


NO_BROWSER = unavailable()
needs_chromium = pytest.mark.skipif(NO_BROWSER is not None, reason=f"{NO_BROWSER}; .ci/run installs Chromium where it can")


@needs_chromium
def test_report_in_a_real_browser(demo, tmp_path):
    report = build_report([demo], tmp_path / "r.html")
    page = parse(report)
    seen = check_page(report, tmp_path / "shot.png", width=1200, height=900)
    assert len(seen.images) == page.imgs and page.imgs >= 30
    assert seen.broken_images == [], seen.broken_images[:2]
    assert seen.requests == [] and seen.refs == []
    assert seen.text_chars > 2000 and seen.height > 5000 and seen.console_errors == []
    from PIL import Image

    shot = Image.open(seen.screenshot).convert("L")
    assert shot.size == (1200, 900)
    lo, hi = shot.getextrema()
    assert hi - lo > 100  # not a blank page
    narrow = check_page(report, width=390, height=844)  # a phone: the page must not scroll sideways
    assert narrow.broken_images == [] and narrow.width <= 390 + 1


@needs_chromium
def test_browser_check_catches_broken_and_external_images(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><body><p>x</p><img src="data:image/png;base64,AAAA">'
                   '<img src="http://127.0.0.1:9/x.png"></body></html>')
    seen = check_page(bad)
    assert len(seen.broken_images) == 2
    assert any(u.startswith("http://127.0.0.1:9/") for u in seen.requests + seen.refs)


def test_family_columns_are_named_in_words():
    from cxrgan.report.tables import column_title

    assert column_title("g_ms").startswith("mode-seeking term") and column_title("fd") == "FD (lower is better)"
    assert column_title("val_auc_encoding") == "validation ROC AUC, encoding score"
    assert column_title("code_bernoulli_acc") == "bernoulli code recovered (accuracy)"
    assert column_title("code_normal_r2") == "normal code recovered (R²)"
    assert column_title("something_new") == "something_new"

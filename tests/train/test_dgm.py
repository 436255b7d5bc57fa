"""The disentangled generative model (dgm): residual identity, what each loss term does, the anomaly metrics
on constructed cases with known answers, both verbs end to end on phantoms, and bad inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.errors import CxrganError
from cxrgan.evaluate import anomaly as am
from cxrgan.models.base import Batch
from cxrgan.models.dgm import SCORES, shift_consensus, shifted, total_variation
from cxrgan.models.registry import build_family
from cxrgan.report.plots import plot_run
from cxrgan.train.loop import train
from cxrgan.train.metrics import read_metrics
from tests.train.helpers import tiny_config



# Tests of G's terms and the shift consensus on a family that no data were bound to: without the standardizer,
# whose atlas comes from the bound training images (its own tests below bind data).
RAW = "model.standardize=none"


def _normals(ds: PreparedDataset, n: int) -> torch.Tensor:
    rows = ds.indices("train", ["NORMAL"])[:n]
    return torch.from_numpy(np.asarray(ds.images[rows])).float().div(127.5).sub(1)[:, None]


def test_residual_identity_and_scores_shape(phantom32):
    fam = build_family(tiny_config(phantom32, "dgm", RAW), 32, 3).eval()
    x = _normals(PreparedDataset.open(phantom32), 6)
    normal, residual = fam.decompose(x)
    assert normal.shape == x.shape and torch.equal(normal + residual, x) or torch.allclose(normal + residual, x, atol=1e-6)
    scores = fam.anomaly_scores(x)
    assert set(scores) == set(SCORES) and all(v.shape == (6,) and torch.isfinite(v).all() for v in scores.values())


def _fit(phantom32, steps: int, **weights) -> tuple[float, float]:
    """Train a tiny DGM's G phase only (no D) on 64 normal phantoms; residual TV and L1 on held-out normals, and
    residual TV on the training images (where the term acts directly)."""
    torch.manual_seed(0)
    fam = build_family(tiny_config(phantom32, "dgm", RAW, *(f"model.{k}={v}" for k, v in weights.items()), "model.adv_weight=0"), 32, 3)
    ds = PreparedDataset.open(phantom32)
    x = _normals(ds, 96)
    train_x, held = x[:64], x[64:]
    opt = torch.optim.Adam(fam.G.parameters(), lr=2e-3)
    for i in range(steps):
        b = train_x[(i * 16) % 64 : (i * 16) % 64 + 16]
        loss, _ = fam.g_phase(Batch(b, torch.zeros(len(b), dtype=torch.long)), lambda t: t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fam.eval()
    with torch.no_grad():
        normal, residual = fam.decompose(held)
        tv_train = total_variation(fam.decompose(train_x)[1])
    return float(tv_train), float((normal - held).abs().mean())


def test_reconstruction_drives_normal_inputs_toward_identity(phantom32):
    tv0, l1_before = _fit(phantom32, 0, rec_weight=20, tv_weight=0)
    _, l1_after = _fit(phantom32, 60, rec_weight=20, tv_weight=0)
    assert l1_after < 0.6 * l1_before, (l1_before, l1_after)


def test_total_variation_term_lowers_the_residuals_variation(phantom32):
    tv_without, _ = _fit(phantom32, 60, rec_weight=20, tv_weight=0)
    tv_with, _ = _fit(phantom32, 60, rec_weight=20, tv_weight=100)
    assert tv_with < 0.9 * tv_without, (tv_without, tv_with)


def test_metrics_on_constructed_cases():
    abnormal = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    perfect = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    assert am.roc_auc(abnormal, perfect) == 1.0 and am.roc_auc(abnormal, -perfect) == 0.0
    assert am.average_precision(abnormal, perfect) == 1.0
    t = am.youden_threshold(abnormal, perfect)
    assert 0.4 < t < 0.6  # the midpoint between the classes
    assert am.rates(abnormal, perfect, t) == (1.0, 1.0)
    # A site threshold restores the specificity a brighter site loses at the validation threshold, from its normal
    # images alone: every score there is 3 higher.
    rng = np.random.default_rng(0)
    val_n, val_a = rng.normal(0, 1, 300), rng.normal(2.5, 1, 300)
    val_scores, val_ab = np.concatenate([val_n, val_a]), np.r_[np.zeros(300, bool), np.ones(300, bool)]
    cut = am.youden_threshold(val_ab, val_scores)
    val_spec = am.rates(val_ab, val_scores, cut)[1]
    site_test = np.concatenate([rng.normal(3, 1, 300), rng.normal(5.5, 1, 300)])
    assert am.rates(val_ab, site_test, cut)[1] < 0.2  # the validation threshold calls most site normals abnormal
    site_cut = am.site_threshold(rng.normal(3, 1, 40), val_spec)
    sens, spec = am.rates(val_ab, site_test, site_cut)
    assert abs(spec - val_spec) < 0.12 and sens > 0.75 and 2 < site_cut - cut < 4
    # The threshold comes from validation; test figures are measured at it (here one normal image is called abnormal).
    op = am.operating_point(abnormal, perfect, abnormal, np.array([0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.8, 0.9]))
    assert op.threshold == t and op.val_sensitivity == 1.0 and op.sensitivity == 1.0 and op.specificity == 0.75
    # 7 of 8 right; F1 = 2 TP / (called + abnormal) = 8 / (5 + 4).
    assert op.accuracy == 7 / 8 and op.f1 == pytest.approx(8 / 9)
    # Half-overlapping scores: AUC computed by hand (pairs ranked right / all pairs).
    mixed = np.array([0.1, 0.5, 0.6, 0.2, 0.55, 0.3, 0.9, 0.8])
    pairs = [(a > n) + 0.5 * (a == n) for a in mixed[abnormal] for n in mixed[~abnormal]]
    assert am.roc_auc(abnormal, mixed) == pytest.approx(np.mean(pairs))
    # Localization: a map equal to the mask is perfect; an inverted one is worst.
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:4, 2:5] = 1
    loc = am.localization(masks.astype(np.float32), masks)
    assert loc["pixel_auc"] == 1.0 and loc["best_dice"] == pytest.approx(1.0)
    assert am.localization(1.0 - masks, masks)["pixel_auc"] == 0.0


def test_patch_memory_baseline_finds_a_patch_no_normal_image_has():
    from cxrgan.data.phantom import render

    normals = np.stack([(render(i, 0, 32)[0] * 255).astype(np.uint8) for i in range(40)])
    test = np.stack([(render(100 + i, 0, 32)[0] * 255).astype(np.uint8) for i in range(8)])
    test[4:, 18:25, 7:14] = 255  # a dense blob in the left lung of the last four
    (scores, maps), = am.patch_memory_scores(normals, [test], memory=2000, standardize="none")
    assert am.roc_auc(np.arange(8) >= 4, scores) == 1.0
    peak = [np.unravel_index(np.argmax(m), m.shape) for m in maps[4:]]
    assert all(16 <= r <= 27 and 5 <= c <= 16 for r, c in peak)  # the map points at the blob
    (standardized, _), = am.patch_memory_scores(normals, [test], memory=2000)  # pose + intensity first, the default
    assert am.roc_auc(np.arange(8) >= 4, standardized) == 1.0


@pytest.fixture(scope="module")
def dgm_run(phantom32, tmp_path_factory):
    out = tmp_path_factory.mktemp("dgm") / "run"
    # At its defaults (standardized inputs). A 160-step model of width 16 draws a fifth to a half of the distinct
    # images real ones hold (Vendi ratio 0.20 at step 80, 0.43 at 160; a real-radiograph run passes 0.5 by step 200),
    # so the eligibility threshold is lowered for the selection rule to have checkpoints to choose from.
    cfg = tiny_config(phantom32, "dgm", "steps=160", "batch_size=32", "model.g_channels=16", "model.d_channels=16",
                      "model.z_dim=32", "ckpt_every=80", "grid_every=80", "eval_samples=64", "collapse_ratio=0.15")
    train(cfg, out, progress=False, on_end=plot_run)
    return out


def test_dgm_trains_on_the_normal_class_and_logs_its_terms(dgm_run, phantom32):
    info = json.loads((dgm_run / "run.json").read_text())
    ds = PreparedDataset.open(phantom32)
    assert info["classes"] == ["NORMAL"] and info["train_images"] == len(ds.indices("train", ["NORMAL"]))
    rows = read_metrics(dgm_run / "metrics.csv")
    logged = [r for r in rows if r["g_rec"]]
    assert logged and all(np.isfinite(float(r[k])) for r in logged for k in ("g_adv", "g_rec", "g_tv", "g_enc", "d_loss"))
    assert float(logged[-1]["g_rec"]) < float(logged[0]["g_rec"])
    evals = [r for r in rows if r["fd"]]
    assert evals and all(0 <= float(r[f"val_auc_{s}"]) <= 1 for r in evals for s in SCORES)
    assert (dgm_run / "plots" / "family.png").is_file()
    # The best checkpoint is chosen by the validation ROC AUC of the best score, not by the FD of reconstructions.
    best = json.loads((dgm_run / "checkpoints" / "best.json").read_text())
    by_step = {int(r["step"]): float(r["val_auc_best"]) for r in evals}
    assert "validation ROC AUC" in best["reason"] and by_step[best["step"]] == max(by_step.values())
    assert all(float(r["val_auc_best"]) == max(float(r[f"val_auc_{s}"]) for s in SCORES) for r in evals)
    grid = Image.open(dgm_run / "samples" / "step-00000160.png")
    assert grid.size[1] > 3 * 4 * 32  # input, normal and residual rows for each of the 4 groups


def test_decompose_end_to_end_with_bad_inputs(dgm_run, phantom32, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(0).random((70, 50)) * 255).astype(np.uint8)).save(folder / "odd size.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "dec"
    assert main(["decompose", str(dgm_run), str(folder), str(phantom32), "--split", "val", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "2 skipped" in printed.out and "notes.txt" in printed.err and "broken.png" in printed.err
    rows = list(csv.DictReader(open(out / "scores.csv")))
    n_val = len(PreparedDataset.open(phantom32).indices("val"))
    assert len(rows) == n_val + 3
    odd = next(r for r in rows if r["origin"].endswith("odd size.png"))
    assert "resized from 50x70 to 32 px" in odd["note"] and float(odd["encoding"]) >= 0
    assert sum(bool(r["error"]) for r in rows) == 2
    for r in rows:
        if not r["error"]:
            for d in ("normal", "residual", "overlay"):
                assert (out / d / f"{r['name']}.png").is_file()
    assert Image.open(out / "overlay" / f"{odd['name']}.png").mode == "RGB"


def test_anomaly_end_to_end_reports_baselines_and_localization(dgm_run, phantom32, tmp_path, capsys):
    out = tmp_path / "an"
    from cxrgan.data.dataset import write_subset

    ds = PreparedDataset.open(phantom32)
    site = write_subset(ds, ds.indices("train", ["NORMAL"])[:40], tmp_path / "site", {"kind": "site normals"}).root
    assert main(["anomaly", str(dgm_run), "--data", str(phantom32), "--out", str(out), "--baseline-epochs", "1",
                 "--shifts", "exposure:strong,noise:0.5", "--site-normals", str(site)]) == 0
    s = json.loads((out / "anomaly.json").read_text())
    # Site thresholds: one per method, applied to the test split (a simulated shift has no site to calibrate on).
    sc = s["site_calibration"]
    assert sc["n_site_normals"] == 40 and set(sc["thresholds"]) == {m["method"] for m in s["methods"]}
    assert {r["condition"] for r in sc["rows"]} == {"test split"} and len(sc["rows"]) == len(s["methods"])
    for r in sc["rows"]:
        m = next(x for x in s["methods"] if x["method"] == r["method"])
        assert r["val_threshold_specificity"] == m["specificity"] and 0 <= r["site_threshold_specificity"] <= 1
    assert "Site thresholds from 40 normal images" in (out / "report.md").read_text()
    # every method under every test condition, with the thresholds chosen on validation
    rows = {r["condition"]: r for r in s["shift"]["rows"]}
    assert list(rows) == ["test split", "exposure:strong", "noise:0.5"]
    for m in s["methods"]:
        assert rows["test split"][f"{m['method']} roc_auc"] == m["roc_auc"]
        assert s["shift"]["summary"][m["method"]]["acquisition_worst_shift"] in ("exposure:strong", "noise:0.5")
    assert rows["noise:0.5"]["mean normal image roc_auc"] != rows["test split"]["mean normal image roc_auc"]
    assert (out / "shift.csv").is_file() and (out / "shift_roc_auc.png").is_file()
    assert "Under the shift protocol" in (out / "report.md").read_text()
    assert [m["method"] for m in s["methods"]][1:] == ["autoencoder", "patch memory (PatchCore-style)", "mean normal image"]
    assert s["score"] == max(s["val_roc_auc_by_score"], key=s["val_roc_auc_by_score"].get)
    for m in s["methods"]:
        assert 0 <= m["roc_auc"] <= 1 and 0 <= m["sensitivity"] <= 1 and 0 <= m["pixel_auc"] <= 1 and 0 <= m["best_dice"] <= 1
    for f in ("roc.png", "box.png", "report.md", "scores.csv", "abnormal_judged_abnormal.png"):
        assert (out / f).is_file(), f
    # The report names the panels there are, and says which cell had no image (none had its panel written).
    from cxrgan.evaluate.anomaly import PANELS

    written = [p for p in PANELS if (out / f"{p}.png").is_file()]
    assert s["figures"] == ["roc.png", "box.png"] + [p + ".png" for p in written]
    text = (out / "report.md").read_text()
    assert all(p + ".png" in text for p in written)
    assert all(p.replace("_", " ") in text and p + ".png" not in text for p in PANELS if p not in written)
    assert "autoencoder" in capsys.readouterr().out
    assert s["score_shift"] == 1 and "consensus of the input shifted by up to 1 px" in (out / "report.md").read_text()
    assert main(["decompose", str(dgm_run), str(phantom32), "--out", str(tmp_path / "one"), "--score-shift", "0"]) == 0
    assert main(["decompose", str(dgm_run), str(phantom32), "--out", str(tmp_path / "nine")]) == 0
    one, nine = ([r for r in csv.DictReader(open(tmp_path / d / "scores.csv"))] for d in ("one", "nine"))
    assert [r["encoding"] for r in one] == [r["encoding"] for r in nine]  # the unshifted pass either way
    assert sum(float(r["peak"]) for r in nine) < sum(float(r["peak"]) for r in one)  # only what every shift agrees on


def test_bad_inputs_get_one_clear_message(dgm_run, phantom32, tmp_path, capsys):
    from cxrgan.decompose import anomaly, decompose

    with pytest.raises(CxrganError, match="not a class of"):
        anomaly(dgm_run, phantom32, tmp_path / "a", normal_class="HEALTHY")
    with pytest.raises(CxrganError, match="--score"):
        anomaly(dgm_run, phantom32, tmp_path / "a", score="psnr")
    assert main(["anomaly", str(dgm_run), "--data", str(phantom32), "--out", str(tmp_path / "a"), "--score-shift", "7"]) == 2
    assert "--score-shift must be from 0 (one pass) to 4 pixels" in capsys.readouterr().err
    assert main(["anomaly", str(dgm_run), "--data", str(phantom32), "--out", str(tmp_path / "a"), "--shifts", "glare"]) == 2
    assert "unknown shift 'glare'" in capsys.readouterr().err
    from cxrgan.data.dataset import write_subset

    ds = PreparedDataset.open(phantom32)
    normals = write_subset(ds, ds.indices("test", ["NORMAL"]), tmp_path / "normals", {"kind": "normal only"})
    with pytest.raises(CxrganError, match="needs both NORMAL and abnormal images"):
        anomaly(dgm_run, phantom32, tmp_path / "a", shifts="none", test_data=[normals.root])
    pneu = write_subset(ds, ds.indices("test", ["PNEUMONIA"]), tmp_path / "pneu", {"kind": "abnormal only"})
    with pytest.raises(CxrganError, match="--site-normals .*: 0 NORMAL image"):
        anomaly(dgm_run, phantom32, tmp_path / "a", shifts="none", site_normals=pneu.root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CxrganError, match="none of the inputs could be read"):
        decompose(dgm_run, [empty, tmp_path / "missing.png"], tmp_path / "d")
    assert main(["sample", str(dgm_run), "--out", str(tmp_path / "s")]) == 2
    assert "decompose" in capsys.readouterr().err
    # A run of another family is refused by decompose.
    other = tmp_path / "dcgan"
    train(tiny_config(phantom32, "dcgan", "steps=2", "ckpt_every=2"), other, progress=False)
    assert main(["decompose", str(other), str(phantom32), "--out", str(tmp_path / "x")]) == 2
    assert "need a dgm run" in capsys.readouterr().err


def test_abnormal_images_train_too_when_asked(phantom32):
    """abnormal_weight > 0 (the paper's set-up): every class trains; abnormal inputs get no reconstruction or
    encoding term (which would teach G to keep the lesion), only D's verdict and a sparse, coherent residual;
    D's real side is drawn from normal images only. With only normal inputs the loss is the normal-only loss."""
    from cxrgan.models.dgm import DGM
    from cxrgan.train.config import load_config
    from cxrgan.train.data import TrainData

    cfg = tiny_config(phantom32, "dgm", "model.abnormal_weight=0.5")
    assert DGM.training_classes(cfg.model) is None and DGM.training_classes(load_config(None, []).model) == ["NORMAL"]
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds, "train", None)
    fam = build_family(cfg, 32, 3)
    fam.bind_data(data)
    normal_idx = ds.class_names.index("NORMAL")
    real = fam._real_normals(64, torch.device("cpu"))
    stored = fam._standard_pool[fam._normal_rows]  # the normal training images in G's frame (standardized inputs)
    pool = torch.from_numpy(stored).float().div(127.5).sub(1)[:, None]
    assert all(any(torch.equal(r, p) for p in pool) for r in real[:8])  # normal images only
    torch.manual_seed(0)
    ab_rows = np.flatnonzero(data.labels != normal_idx)[:8]
    n_rows = fam._normal_rows[:8]
    ident = lambda t: t  # noqa: E731
    _, ab = fam.g_phase(Batch(data.batch(ab_rows, torch.device("cpu"), False).x, torch.from_numpy(data.labels[ab_rows])), ident)
    assert float(ab["g_rec"]) == 0 and float(ab["g_enc"]) == 0
    only_normal = Batch(data.batch(n_rows, torch.device("cpu"), False).x, torch.from_numpy(data.labels[n_rows]))
    fam.eval()  # no spectral-norm power iteration between the two calls
    with torch.no_grad():
        both, _ = fam.g_phase(only_normal, ident)
        fam._normal_rows = None  # the normal-only path
        plain, _ = fam.g_phase(only_normal, ident)
    assert float(both) == pytest.approx(float(plain), rel=1e-5)


def test_shifted_moves_content_and_repeats_the_border():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    down_right = shifted(x, 1, 2)
    assert torch.equal(down_right[0, 0, 1:, 2:], x[0, 0, :-1, :-2])
    assert torch.equal(down_right[0, 0, 0, 2:], x[0, 0, 0, :-2]) and torch.equal(down_right[0, 0, 1:, 0], x[0, 0, :-1, 0])
    assert torch.equal(shifted(shifted(x, -1, 1), 1, -1)[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])


class _ClipAndInvent(torch.nn.Module):
    """A known "synthesizer": removes every density above ``cut`` from its input (the lesion, which moves with the
    input) and invents a one-pixel artifact at a fixed place of its output (which does not)."""

    def __init__(self, cut: float, at: tuple[int, int]) -> None:
        super().__init__()
        self.cut, self.at = cut, at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(max=self.cut)
        out[..., self.at[0], self.at[1]] -= 0.5
        return out


def test_shift_consensus_keeps_the_lesion_and_drops_what_g_invents():
    x = torch.full((1, 1, 32, 32), -0.5)
    x[..., 10:16, 12:18] = 0.5  # the lesion: 6 x 6 px, 0.3 above the cut
    G = _ClipAndInvent(0.2, (24, 6))
    single = x - G(x)
    assert single[0, 0, 24, 6] == 0.5 and torch.allclose(single[..., 10:16, 12:18], torch.tensor(0.3))
    consensus = shift_consensus(x, single, G, 1)
    assert consensus[0, 0, 24, 6] == 0  # the invented pixel is in one place in every output, so the shifts disagree
    torch.testing.assert_close(consensus[..., 10:16, 12:18], single[..., 10:16, 12:18])  # the lesion is kept whole
    assert consensus.max() == pytest.approx(0.3) and (consensus > 0).sum() == 36


def test_scores_use_the_shift_consensus_unless_it_is_off(phantom32):
    x = _normals(PreparedDataset.open(phantom32), 6)
    on = build_family(tiny_config(phantom32, "dgm", RAW), 32, 3).eval()
    off = build_family(tiny_config(phantom32, "dgm", RAW, "model.score_shift=0"), 32, 3).eval()
    off.load_state_dict(on.state_dict())
    n_on, r_on, s_on = on.decompose_and_score(x)
    n_off, r_off, s_off = off.decompose_and_score(x)
    torch.testing.assert_close(n_on + r_on, x, atol=1e-6, rtol=0)  # the identity holds for the consensus maps too
    torch.testing.assert_close(r_off, x - on.decompose(x)[0], atol=1e-6, rtol=0)
    assert (r_on <= r_off + 1e-6).all() and s_on["peak"].sum() < s_off["peak"].sum()
    torch.testing.assert_close(s_on["encoding"], s_off["encoding"])  # from the unshifted pass
    with pytest.raises(CxrganError, match="score_shift"):
        build_family(tiny_config(phantom32, "dgm", "model.score_shift=9"), 32, 3)


def _smooth_chest(n: int = 4, s: int = 48) -> torch.Tensor:
    """Phantom chests on their dark background, ``(n, 1, s, s)`` in [-1, 1]."""
    from cxrgan.data.phantom import render

    return torch.from_numpy(np.stack([render(i, 0, s)[0] for i in range(n)]) * 2 - 1)[:, None]


def test_pose_estimate_undoes_a_known_move_and_quantiles_undo_exposure():
    from cxrgan.data.acquisition import _ncc, estimate_pose, match_quantiles, warp

    x = _smooth_chest(3)
    # Rotated, shifted and scaled within the dark margin around the chest, so that no part of it is lost.
    moved = warp(x, torch.tensor([[0.15, 0.06, -0.05, 0.05], [-0.1, -0.06, 0.0, -0.05], [0.0, 0.0, 0.08, 0.0]]))
    back = torch.cat([warp(moved[i : i + 1], estimate_pose(moved[i : i + 1], x[i : i + 1])) for i in range(3)])
    inner = (slice(None), slice(None), slice(8, 40), slice(8, 40))
    assert (_ncc(back[inner], x[inner]) > 0.96).all() and (_ncc(moved[inner], x[inner]) < 0.85).all()  # 0.97-0.99 vs 0.72-0.84
    u = (x + 1) / 2
    darker = (u ** 1.6) * 2 - 1  # a monotone change of exposure
    reference = x.flatten(1).sort(dim=1).values
    for i in range(3):
        assert torch.allclose(match_quantiles(darker[i : i + 1], reference[i]), x[i : i + 1], atol=1e-6)


def test_standardized_dgm_scores_in_its_frame_and_keeps_the_identity(phantom32, tmp_path):
    for bad in ("tilt", "pose+pose", "intensity+fill"):
        with pytest.raises(CxrganError, match="standardize"):
            build_family(tiny_config(phantom32, "dgm", f"model.standardize={bad}"), 32, 3)
    cfg = tiny_config(phantom32, "dgm", "steps=4", "ckpt_every=4", "model.standardize=pose+intensity")
    train(cfg, tmp_path / "r", progress=False)
    from cxrgan.decompose import load_translator

    fam = load_translator(tmp_path / "r", device="cpu").family
    std = fam.G.standardizer
    assert std is not None and std.fitted  # the atlas came back with G's weights
    ds = PreparedDataset.open(phantom32)
    x = _normals(ds, 6)
    normal, residual, scores = fam.decompose_and_score(x)
    assert torch.allclose(normal.float() + residual, x, atol=1e-5)  # in the input's own frame
    from cxrgan.data.acquisition import AcquisitionParams, apply

    p = AcquisitionParams.identity(6)
    p.dx, p.gamma = torch.full((6,), 0.06), torch.full((6,), 1.3)  # moved and darker
    a, b = std(x)[0], std(apply(x, p))[0]
    inner = (slice(None), slice(None), slice(6, 26), slice(6, 26))
    assert (a - b)[inner].abs().mean() < 0.5 * (x - apply(x, p))[inner].abs().mean()  # the standardizer undoes most of it


def test_pose_margin_keeps_an_uncovered_strip_from_pulling_the_alignment():
    from cxrgan.data.acquisition import AcquisitionParams, apply, estimate_pose
    from cxrgan.nets.standardize import POSE_MARGIN, build_standardizer

    x = _smooth_chest(6, 48) * 0.5 + 0.3  # a grey surround, so the strip a move uncovers (black) stands out
    tmpl = x.mean(0, keepdim=True)
    p = AcquisitionParams.identity(6)
    p.dy, p.dx = torch.tensor([0.08, -0.08, 0.08, -0.08, 0.06, -0.06]), torch.tensor([0.0, 0.0, 0.05, -0.05, 0.0, 0.0])
    moved = apply(x, p)
    errors = {}
    for margin in (0.0, POSE_MARGIN):
        shift = estimate_pose(moved, tmpl, margin=margin) - estimate_pose(x, tmpl, margin=margin)
        errors[margin] = float(torch.cat([shift[:, 1] - 2 * p.dx, shift[:, 2] - 2 * p.dy]).abs().mean())
    assert errors[POSE_MARGIN] < 0.015 and 2 * errors[POSE_MARGIN] < errors[0.0]  # 0.005 against 0.041 half-sides
    with pytest.raises(ValueError, match="margin"):
        estimate_pose(x, tmpl, margin=0.5)
    std = build_standardizer("pose", 48)
    assert float(std.pose_margin) == POSE_MARGIN
    state = {k: v for k, v in std.state_dict().items() if k != "pose_margin"}  # saved before the margin existed
    std.load_state_dict(state)
    assert float(std.pose_margin) == 0.0  # aligns as it was trained to


def test_fill_paints_the_margin_an_aligned_image_leaves_with_the_atlas():
    from cxrgan.data.acquisition import coverage, warp
    from cxrgan.nets.standardize import Standardizer, build_standardizer

    assert torch.equal(coverage(torch.zeros(2, 4), 16), torch.ones(2, 1, 16, 16))  # no move: every pixel covered
    zoomed_out = coverage(torch.tensor([[0.0, 0.0, 0.0, 0.2]]), 32)  # sampling 1.22x wider than the image
    assert zoomed_out[..., 16, 16].item() == 1 and zoomed_out[..., 0, 16].item() == 0 and zoomed_out[..., :, 0].max() == 0
    with pytest.raises(ValueError, match="fill needs pose"):
        Standardizer(32, pose=False, fill=True)
    with pytest.raises(ValueError, match="fill needs pose"):
        build_standardizer("intensity+fill", 32)
    x = _smooth_chest(6, 32) * 0.5 + 0.3  # a grey surround, unlike the black that a margin gets without fill
    black, filled = build_standardizer("pose", 32), build_standardizer("pose+fill", 32)
    for std in (black, filled):
        std.fit(x)
    closer = warp(x, torch.tensor([[0.0, 0.0, 0.0, -0.25]]).expand(6, 4))  # taken closer: the chest fills the frame
    (b, pose_b), (f, pose_f) = black(closer), filled(closer)
    margin_b, margin_f = coverage(pose_b, 32) < 0.01, coverage(pose_f, 32) < 0.01
    assert margin_b.float().mean() > 0.05 and margin_f.float().mean() > 0.05  # aligned back, a margin it never showed
    assert torch.allclose(b[margin_b], torch.full_like(b[margin_b], -1.0), atol=0.05)  # black without fill
    assert torch.allclose(f[margin_f], filled.atlas.expand_as(f)[margin_f], atol=0.02)  # the atlas with it
    inside = coverage(pose_f, 32) > 0.99
    assert torch.allclose(f[inside], warp(closer, pose_f).clamp(-1, 1)[inside], atol=0.02)  # what the image shows stays
    assert (f - x).abs().mean() < (b - x).abs().mean()  # nearer the unmoved chests


def test_standardizing_dgm_looks_up_its_training_images_unless_they_were_augmented(phantom32):
    cfg = tiny_config(phantom32, "dgm", "model.standardize=pose")
    fam = build_family(cfg, 32, 3)
    from cxrgan.train.data import TrainData

    data = TrainData(PreparedDataset.open(phantom32), classes=["NORMAL"])
    fam.bind_data(data)
    rows = torch.arange(5)
    b = data.batch(rows.numpy(), torch.device("cpu"), channels_last=False)
    looked_up, computed = fam._inputs(b), fam.G.standardized(b.x)[0]
    assert (looked_up - computed).abs().max() <= 1.5 / 127.5  # the stored view is the same image, rounded to uint8
    moved = Batch(b.x.flip(-1), b.y, b.rows, augmented=True)  # changed after it was read: standardized afresh
    assert torch.equal(fam._inputs(moved), fam.G.standardized(moved.x)[0])


def test_train_summary_names_the_figure_that_chose_the_best_checkpoint(phantom32, tmp_path, capsys):
    # A DGM's best checkpoint is chosen by validation ROC AUC, not FD: the closing line says so, as best.json does.
    args = ["train", "--model", "dgm", "--data", str(phantom32), "--out", str(tmp_path / "r"), "--steps", "4", "--quiet",
            "--set", "batch_size=8", "--set", "model.g_channels=16", "--set", "model.d_channels=16", "--set", "model.z_dim=16",
            "--set", "ckpt_every=4", "--set", "eval_samples=32", "--set", "collapse_ratio=0"]
    assert main(args) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("trained 4 steps")][0]
    reason = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())["reason"]
    assert "validation ROC AUC of the best anomaly score" in line and "FD" not in line, line
    assert "validation ROC AUC" in reason

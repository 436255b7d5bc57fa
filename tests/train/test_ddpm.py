"""The diffusion family: trains in the one loop with its figures logged, samples deterministically from its initial
noise, classifier-free guidance mixes the branches it should, and its options fail with one clear message."""

import math

import numpy as np

import pytest
import torch

from cxrgan.errors import CxrganError
from cxrgan.models.base import Batch
from cxrgan.models.ddpm import unet_layout
from cxrgan.models.registry import build_family
from cxrgan.report.plots import plot_run
from cxrgan.train.loop import train
from cxrgan.train.metrics import read_metrics

from .helpers import tiny_config

TINY = ("model.sample_steps=4", "model.timesteps=100")


def _family(*extra: str, size: int = 32, classes: int = 2):
    return build_family(tiny_config("unused", "ddpm", *TINY, *extra), size, classes).eval()


def test_unet_depth_follows_the_image_size():
    assert unet_layout(32, 16, 8) == ((16, 32, 32), (False, False, True))
    assert unet_layout(64, 32, 16) == ((32, 64, 64, 128), (False, False, True, True))
    assert len(unet_layout(256, 32, 8)[0]) == 6
    with pytest.raises(ValueError, match="power-of-two"):
        unet_layout(48, 32, 8)


def test_ddpm_trains_in_the_loop_with_its_figures(phantom32, tmp_path):
    res = train(tiny_config(phantom32, "ddpm", *TINY, "precision=bf16"), tmp_path / "run", progress=False, on_end=plot_run)
    assert res.step == 6 and not res.interrupted
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    logged = [r for r in rows if r["denoise_mse"]]
    assert len(logged) == 3 and all(math.isfinite(float(r["denoise_mse"])) and float(r["denoise_mse"]) > 0 for r in logged)
    assert not any(r["d_loss"] for r in rows)  # no discriminator: no D columns, and no empty D panels
    assert any(r["fd"] for r in rows) and any(r["diversity_ratio"] for r in rows)  # the quality monitor's figures
    for f in ("plots/family.png", "plots/quality.png", "samples/step-00000006.png", "checkpoints/last.json"):
        assert (tmp_path / "run" / f).is_file(), f
    assert not (tmp_path / "run" / "plots" / "d_accuracy.png").exists()


def test_the_denoising_loss_learns(phantom32, tmp_path):
    # 60 steps on the phantoms: the noise prediction gets better than predicting zero noise (MSE 1) by a margin.
    train(tiny_config(phantom32, "ddpm", *TINY, "steps=60", "log_every=10", "ckpt_every=60", "optim.lr_g=0.001"),
          tmp_path / "run", progress=False)
    mse = [float(r["denoise_mse"]) for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["denoise_mse"]]
    assert mse[0] > 0.5 and mse[-1] < 0.6 * mse[0], mse


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_the_timesteps(prediction):
    fam = _family(f"model.prediction={prediction}", "model.min_snr_gamma=5")
    t = torch.arange(fam.timesteps)
    alpha_bar = fam.noise.alphas_cumprod.float()
    snr = alpha_bar / (1 - alpha_bar)
    w = fam.loss_weights(t)
    noisy, clean = snr <= 5, snr > 5
    assert noisy.any() and clean.any()
    if prediction == "epsilon":  # Hang et al.: min(SNR, gamma) / SNR, 1 wherever SNR is at most gamma
        assert torch.allclose(w[noisy], torch.ones(int(noisy.sum())))
        assert torch.allclose(w[clean], 5 / snr[clean], rtol=1e-4)
        assert bool((w[1:] >= w[:-1] - 1e-6).all())  # never more weight on a cleaner timestep
    else:  # a velocity target: min(SNR, gamma) / (SNR + 1), at most gamma / (gamma + 1)
        assert torch.allclose(w, snr.clamp(max=5) / (snr + 1), rtol=1e-4)
        assert float(w.max()) <= 5 / 6 + 1e-6


def test_min_snr_weighting_changes_the_loss_not_the_logged_mse():
    fam = _family("model.min_snr_gamma=5")
    batch = Batch(x=torch.rand(16, 1, 32, 32) * 2 - 1, y=torch.zeros(16, dtype=torch.long))
    figures = {}
    for gamma in (0.0, 5.0):
        fam.min_snr_gamma = gamma
        torch.manual_seed(3)  # the same noise and timesteps for both
        loss, logged = fam.phase_loss("G", batch, None)
        figures[gamma] = (float(loss), float(logged["denoise_mse"]))
    assert figures[0.0][0] == pytest.approx(figures[0.0][1])  # unweighted: the loss is the MSE
    assert figures[5.0][1] == pytest.approx(figures[0.0][1])  # the logged MSE stays comparable across settings
    assert figures[5.0][0] < figures[5.0][1]  # weighted: the clean timesteps count for less


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samples_are_a_function_of_their_initial_noise(eta):
    # With eta > 0 every step adds noise, drawn per image from a generator seeded by the image's initial noise.
    fam = _family(f"model.sample_eta={eta}")
    z = fam.sample_z(6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        all6 = fam.generate(z, y)
        first3 = fam.generate(z[:3], y[:3])
    assert all6.shape == (6, 1, 32, 32) and all6.min() >= -1 and all6.max() <= 1
    assert torch.allclose(all6[:3], first3, atol=1e-5)  # an image does not depend on its batch
    assert not torch.allclose(all6[0], all6[2])  # other noise, another image


def test_guidance_mixes_the_conditional_and_unconditional_branches():
    fam = _family()
    z = fam.sample_z(2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1])
    null = torch.full_like(y, fam.num_classes)
    with torch.no_grad():
        for p in fam.G.parameters():  # an untrained class embedding is too small to tell the branches apart
            p.add_(0.05 * torch.randn_like(p))
        fam.set_sampler(guidance=0.0)
        w0 = fam.generate(z, y)
        fam.set_sampler(guidance=1.0)
        uncond, cond = fam.generate(z, null), fam.generate(z, y)
        fam.set_sampler(guidance=3.0)
        w3 = fam.generate(z, y)
    assert torch.allclose(w0, uncond, atol=1e-4)  # weight 0: the unconditional model alone
    assert not torch.allclose(cond, uncond, atol=1e-3) and not torch.allclose(w3, cond, atol=1e-3)
    with pytest.raises(ValueError, match="sample steps"):
        fam.set_sampler(steps=0)
    with pytest.raises(ValueError, match="guidance"):
        fam.set_sampler(guidance=-1)
    with pytest.raises(ValueError, match="eta must be between 0 and 1"):
        fam.set_sampler(eta=2)


@pytest.mark.parametrize("extra, message", [
    (["model.prediction=x0"], "model.prediction must be one of"),
    (["model.schedule=quadratic"], "model.schedule must be one of"),
    (["loss.mode_seeking=0.3"], "a ddpm has no discriminator"),
    (["model.label_dropout=1"], "label_dropout"),
    (["model.min_snr_gamma=-1"], "min_snr_gamma must be 0"),
])
def test_bad_options_fail_with_one_message(phantom32, tmp_path, extra, message):
    with pytest.raises(CxrganError, match=message):
        train(tiny_config(phantom32, "ddpm", *TINY, *extra), tmp_path / "run", progress=False)


def test_d_augmentation_is_refused(phantom32, tmp_path):
    with pytest.raises(CxrganError, match="augment.acquisition"):
        train(tiny_config(phantom32, "ddpm", *TINY, "augment.policy=translation"), tmp_path / "run", progress=False)


@pytest.fixture(scope="module")
def ddpm_run(phantom32, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddpm") / "run"
    train(tiny_config(phantom32, "ddpm", *TINY), run, progress=False)
    return run


def test_sample_chooses_the_sampler_and_records_it(ddpm_run, tmp_path, capsys):
    from cxrgan.cli import main
    from cxrgan.data import PreparedDataset

    assert main(["sample", str(ddpm_run), "--out", str(tmp_path / "s"), "--n", "6", "--sample-steps", "2",
                 "--guidance", "1.5", "--eta", "0.5", "--quiet"]) == 0
    assert "ms per image" in capsys.readouterr().out
    ds = PreparedDataset.open(tmp_path / "s")
    src = ds.manifest["source"]
    assert src["runs"][0]["sample_steps"] == 2 and src["runs"][0]["guidance"] == 1.5 and src["runs"][0]["eta"] == 0.5
    assert src["seconds_per_image"] > 0
    assert len(ds) == 6 and sorted(set(ds.labels.tolist())) == [0, 1, 2]
    assert not (tmp_path / ".s.sampling").exists()  # the chunks are gone once the set is written
    assert main(["sample", str(ddpm_run), "--out", str(tmp_path / "t"), "--n", "2", "--sample-steps", "0", "--quiet"]) == 2
    assert "sample steps must be between 1 and the 100" in capsys.readouterr().err


def test_sampler_options_are_refused_for_a_gan_run(phantom32, tmp_path, capsys):
    from cxrgan.cli import main

    train(tiny_config(phantom32, "dcgan"), tmp_path / "gan", progress=False)
    assert main(["sample", str(tmp_path / "gan"), "--out", str(tmp_path / "s"), "--n", "2", "--guidance", "2", "--quiet"]) == 2
    assert "dcgan run, which draws an image in one pass" in capsys.readouterr().err


def test_an_interrupted_sample_goes_on_from_its_finished_chunks(ddpm_run, tmp_path, monkeypatch):
    from cxrgan import sample as sampling

    straight = sampling.sample([ddpm_run], tmp_path / "straight", n=300, seed=2, png=False)
    real_generate, calls, fail = sampling.generate, [], [True]

    def failing(loaded, z, y, batch=256):
        calls.append(len(z))
        if fail[0] and len(calls) == 2:
            raise RuntimeError("stopped during the second chunk")  # as a kill or a full disk would
        return real_generate(loaded, z, y, batch)

    monkeypatch.setattr(sampling, "generate", failing)
    with pytest.raises(RuntimeError, match="second chunk"):
        sampling.sample([ddpm_run], tmp_path / "resumed", n=300, seed=2, png=False)
    assert not (tmp_path / "resumed").exists() and len(list((tmp_path / ".resumed.sampling").glob("*.npy"))) == 1
    calls.clear()
    fail[0] = False
    resumed = sampling.sample([ddpm_run], tmp_path / "resumed", n=300, seed=2, png=False)
    assert calls == [300 - 256]  # only the unfinished chunk was generated again
    assert np.array_equal(np.asarray(resumed.images), np.asarray(straight.images))
    # A folder left by another request starts over rather than mixing images of two requests.
    (tmp_path / ".again.sampling").mkdir()
    (tmp_path / ".again.sampling" / "request.sha256").write_text("another request\n")
    np.save(tmp_path / ".again.sampling" / "run0-00000.npy", np.zeros((256, 32, 32), np.uint8))
    again = sampling.sample([ddpm_run], tmp_path / "again", n=300, seed=2, png=False)
    assert np.array_equal(np.asarray(again.images), np.asarray(straight.images))

"""Training actually learns: after a short budget, DCGAN samples are far closer to real phantoms than the
untrained generator's, and than noise or a constant image, in a fixed feature space, and they are diverse."""

import numpy as np
import pytest
import torch

from cxrgan.data import PreparedDataset
from cxrgan.evaluate.distribution import frechet_distance, mean_pairwise_distance
from cxrgan.evaluate.features import RandomConvFeatures
from cxrgan.sample import generate, load_run
from cxrgan.train.config import load_config
from cxrgan.train.data import to_model_range
from cxrgan.models.registry import build_family
from cxrgan.train.loop import train
from tests.train.helpers import tiny_config


@pytest.mark.slow
def test_dcgan_learns_phantom_radiographs(phantom32, tmp_path):
    cfg = load_config(None, ["model.family=dcgan", f"data.path={phantom32}", "steps=400", "batch_size=32",
                             "model.g_channels=32", "model.d_channels=32", "ckpt_every=100", "eval_samples=256",
                             "log_every=50", "seed=1"])
    train(cfg, tmp_path / "run", progress=False)
    ds = PreparedDataset.open(phantom32)
    feats = RandomConvFeatures()
    real = feats.embed(to_model_range(torch.from_numpy(np.array(ds.images))))
    n = 400
    g = torch.Generator().manual_seed(123)
    z = torch.randn(n, cfg.model.z_dim, generator=g)
    y = torch.zeros(n, dtype=torch.long)

    trained = load_run(tmp_path / "run", "best")
    fake_u8 = generate(trained, z, y)
    untrained = build_family(cfg, 32, 3).eval()
    with torch.no_grad():
        before = untrained.generate(z).float()

    def fd(images: torch.Tensor) -> float:
        return frechet_distance(feats.embed(images), real)

    fd_trained = fd(to_model_range(torch.from_numpy(fake_u8)))
    fd_untrained = fd(before)
    fd_noise = fd(torch.rand(n, 1, 32, 32, generator=g) * 2 - 1)
    mean_img = to_model_range(torch.from_numpy(np.asarray(ds.images).mean(0).round().astype(np.uint8)[None]))
    fd_constant = fd(mean_img.repeat(n, 1, 1, 1) + 0.01 * torch.randn(n, 1, 32, 32, generator=g))
    train_idx, val_idx = ds.indices("train"), ds.indices("val")
    fd_real_ref = frechet_distance(real[val_idx], real[train_idx])  # two real sets: the floor to aim at
    print(f"FD trained {fd_trained:.3f} untrained {fd_untrained:.3f} noise {fd_noise:.3f} "
          f"constant {fd_constant:.3f} real-vs-real {fd_real_ref:.3f}")
    assert fd_trained < 0.25 * fd_untrained
    assert fd_trained < 0.25 * fd_noise and fd_trained < 0.5 * fd_constant
    # Not a collapsed generator: sample diversity comparable to real diversity, and images differ pixel-wise.
    f_fake = feats.embed(to_model_range(torch.from_numpy(fake_u8[:128])))
    ratio = mean_pairwise_distance(f_fake) / mean_pairwise_distance(real[:128])
    assert ratio > 0.5, ratio
    assert fake_u8.astype(float).std(axis=0).mean() > 8
    # Anatomy: the mediastinum column is brighter than the lung fields, as in real phantoms.
    m = fake_u8.astype(float).mean(0)
    assert m[8:22, 15:17].mean() > m[8:22, 5:9].mean() + 15


def test_ema_generator_gets_batch_norm_statistics_of_its_own_weights(phantom32, tmp_path):
    """The averaged G must not borrow the live G's running statistics: after a run, the saved EMA statistics are
    what the EMA weights themselves produce on the fixed calibration batches, and differ from the live ones."""
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.ema import EMA

    cfg = tiny_config(phantom32, "dcgan", "ema_decay=0.9")
    train(cfg, tmp_path / "run", progress=False)
    tensors, _, _ = ckpt.load_checkpoint(ckpt.resolve(tmp_path / "run", "last"), "dcgan", with_state=False)
    live = {k: v for k, v in tensors.items() if k.startswith("G.") and k.endswith("running_mean")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.G.") and k.endswith("running_mean")}
    assert live and set(live) == set(ema)
    assert any(not torch.allclose(live[k], ema[k]) for k in live)
    # Recomputing the statistics from the saved EMA weights with the same batches reproduces them.
    family = build_family(cfg, 32, 3)
    ckpt.load_modules({"G": family.G}, tensors, prefix="ema.")
    holder = EMA({"G": family.G}, 0.9)
    from cxrgan.data import PreparedDataset
    from cxrgan.train.data import TrainData
    from cxrgan.train.loop import _calibration_batches

    from cxrgan.runtime.execution import autocast, autocast_dtype

    data = TrainData(PreparedDataset.open(phantom32))
    cpu = torch.device("cpu")
    with autocast(cpu, autocast_dtype(cfg.precision, cpu)):  # as the loop does (bf16 where it is native)
        holder.recalibrate("G", _calibration_batches(family, data, cfg, cpu),
                           lambda G, b: family.generate(b[1], torch.from_numpy(data.labels[b[0]]), G=G))
    for k, v in ema.items():
        assert torch.allclose(holder.shadow["G"].state_dict()[k[2:]], v, atol=1e-5), k


def test_ema_warmup_sets_the_early_decay():
    """Step t averages with decay min(decay, (1 + t) / (warmup + t)): a smaller warm-up constant keeps more of the
    past, so the average of a steadily growing weight lags further behind it (about t / (warmup - 1) steps)."""
    from cxrgan.train.ema import EMA

    lags = {}
    for warmup in (10.0, 4.0):
        net = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(net.weight)
        ema = EMA({"G": net}, 0.999, warmup)
        expected = 0.0
        for t in range(60):
            with torch.no_grad():
                net.weight.fill_(float(t + 1))
            ema.update({"G": net}, t)
            d = min(0.999, (1 + t) / (warmup + t))
            expected = d * expected + (1 - d) * (t + 1)
            assert ema.shadow["G"].weight.item() == pytest.approx(expected, rel=1e-6)
        lags[warmup] = 60 - ema.shadow["G"].weight.item()
    assert 4 < lags[10.0] < 9 and 13 < lags[4.0] < 23, lags

"""Each family trains a few steps with finite losses and the right shapes."""

import math

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.errors import CxrganError
from cxrgan.models import family_names, get_family
from cxrgan.models.registry import build_family
from cxrgan.report.plots import plot_run
from cxrgan.train.loop import train
from cxrgan.train.metrics import read_metrics

from .helpers import tiny_config


def test_registry_lists_the_families():
    assert family_names() == ["bigan", "cgan", "dcgan", "ddpm", "dgm", "gan", "semicond"]
    with pytest.raises(CxrganError, match="unknown model 'stylegan'"):
        get_family("stylegan")


@pytest.mark.parametrize("family", ["gan", "dcgan", "cgan", "bigan", "semicond", "dgm"])
def test_family_trains_with_finite_losses(phantom32, tmp_path, family):
    res = train(tiny_config(phantom32, family), tmp_path / "run", progress=False, on_end=plot_run)
    assert res.step == 6 and not res.interrupted
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    logged = [r for r in rows if r["g_loss"]]
    assert len(logged) == 3
    for r in logged:
        for k in ("g_loss", "d_loss", "d_acc_real", "d_acc_fake", "g_grad_norm", "d_grad_norm", "img_per_s"):
            assert math.isfinite(float(r[k])), (k, r)
        assert 0 <= float(r["d_acc_real"]) <= 1
    assert any(r["fd"] for r in rows)
    for f in ("config.yaml", "run.json", "plots/losses.png", "plots/d_accuracy.png", "samples/step-00000006.png",
              "checkpoints/last.json"):
        assert (tmp_path / "run" / f).is_file(), f
    # best.json exists exactly when some checkpoint had at least half the real diversity and half the real number
    # of distinct samples (Vendi) (the selection rule)
    ratios = [min(float(r["diversity_ratio"]), float(r["vendi_ratio"])) for r in rows if r["fd"]]
    best = tmp_path / "run" / "checkpoints" / "best.json"
    assert best.is_file() == any(q >= 0.5 for q in ratios)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_depth_follows_size(size):
    cfg = tiny_config("unused")
    fam = build_family(cfg, size, 3)
    z = fam.sample_z(2)
    x = fam.generate(z)
    assert x.shape == (2, 1, size, size) and x.min() >= -1 and x.max() <= 1
    assert fam.D(x).shape == (2,)


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("family", ["gan", "dcgan", "cgan", "bigan", "semicond", "dgm", "ddpm"])
def test_every_family_builds_for_large_images(family, size):
    # G and D (and E, and the DGM's decomposition) at the sizes people read radiographs at: shapes and ranges.
    cfg = tiny_config("unused", family, "model.g_channels=4", "model.d_channels=4", "model.standardize=none",
                      "model.sample_steps=2")
    fam = build_family(cfg, size, 2).eval()
    with torch.no_grad():
        if family == "dgm":
            x = torch.rand(2, 1, size, size) * 2 - 1
            normal, residual = fam.decompose(x)
            assert normal.shape == x.shape and torch.allclose(normal + residual, x, atol=1e-5)
            return
        y = torch.tensor([0, 1])
        x = fam.generate(fam.sample_z(2), y)
        assert x.shape == (2, 1, size, size) and x.min() >= -1 and x.max() <= 1
        if family == "bigan":
            assert fam.encode(x).shape[0] == 2


def test_cgan_conditions_on_class_and_bigan_encodes():
    # With the embedding beside z the class changes the image from the start; with the default, g_cond=cbn, the
    # class modulation starts at zero (test_cgan_with_class_modulated_batch_norm).
    cfg = tiny_config("unused", "cgan", "model.g_cond=concat")
    cg = build_family(cfg, 32, 3).eval()
    z = cg.sample_z(4)
    a = cg.generate(z, torch.tensor([0, 0, 0, 0]))
    b = cg.generate(z, torch.tensor([2, 2, 2, 2]))
    assert a.shape == (4, 1, 32, 32) and not torch.allclose(a, b)
    with pytest.raises(ValueError):
        cg.generate(z)
    bi = build_family(tiny_config("unused", "bigan"), 32, 3).eval()
    x = bi.generate(bi.sample_z(5))
    assert bi.encode(x).shape == (5, 16)


@pytest.mark.parametrize("extra", [
    ["loss.kind=hinge", "model.spectral_norm=true"],
    ["loss.kind=wgan-gp", "optim.d_steps=2"],
    ["loss.r1_gamma=1.0", "augment.policy=translation,cutout,color"],
    ["ema_decay=0"],
])
def test_training_options(phantom32, tmp_path, extra):
    res = train(tiny_config(phantom32, "dcgan", *extra), tmp_path / "run", progress=False)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["d_loss"]]
    assert res.step == 6 and all(math.isfinite(float(r["d_loss"])) for r in rows)


def test_per_class_training_uses_only_that_class(phantom32, tmp_path):
    res = train(tiny_config(phantom32, "dcgan", "data.classes=[PNEUMONIA]"), tmp_path / "run", progress=False)
    import json

    info = json.loads((tmp_path / "run" / "run.json").read_text())
    from cxrgan.data import PreparedDataset

    ds = PreparedDataset.open(phantom32)
    assert info["train_images"] == len(ds.indices("train", ["PNEUMONIA"])) and res.step == 6


def test_user_errors(phantom32, tmp_path):
    with pytest.raises(CxrganError, match="unknown class 'CANCER'"):
        train(tiny_config(phantom32, "dcgan", "data.classes=[CANCER]"), tmp_path / "a", progress=False)
    with pytest.raises(CxrganError, match="not a prepared dataset|does not exist"):
        train(tiny_config(tmp_path / "nope"), tmp_path / "b", progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(CxrganError, match="already exists and is not empty"):
        train(tiny_config(phantom32), tmp_path / "c", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(CxrganError, match="no CUDA"):
            train(tiny_config(phantom32, "dcgan", "device=cuda"), tmp_path / "d", progress=False)


def test_minibatch_stddev_option(phantom32, tmp_path):
    from cxrgan.nets.blocks import minibatch_stddev

    h = torch.randn(8, 5, 4, 4)
    out = minibatch_stddev(h, group=4)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], h)
    assert float(minibatch_stddev(torch.ones(8, 5, 4, 4))[:, 5].max()) < 1e-3  # identical samples: no spread
    # Karras et al.'s definition, per group of 4 consecutive samples, in either memory layout
    expect = (h.reshape(2, 4, 5, 4, 4).var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3)).repeat_interleave(4)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = minibatch_stddev(h.to(memory_format=layout), group=4)[:, 5]
        assert torch.allclose(got, expect[:, None, None].expand(8, 4, 4), atol=1e-6)
    cfg = tiny_config(phantom32, "cgan", "model.mbstd=true", "model.spectral_norm=true", "loss.kind=hinge")
    fam = build_family(cfg, 32, 3)
    assert fam.D.head.in_channels == fam.D.trunk.out_channels + 1
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])


def test_bigan_joint_discriminator_takes_the_minibatch_stddev(phantom32, tmp_path):
    """With model.mbstd the BiGAN's D reads the spread of the image features in the batch: a batch of one image
    repeated gets a different verdict on that image than the same image inside a varied batch."""
    cfg = tiny_config(phantom32, "bigan", "model.mbstd=true")
    D = build_family(cfg, 32, 3).D.eval()
    plain = build_family(tiny_config(phantom32, "bigan", "model.mbstd=false"), 32, 3).D
    assert D.mbstd and not plain.mbstd
    assert D.joint[0].in_features == plain.joint[0].in_features + 16  # one 4x4 channel more
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(8, 1, 32, 32, generator=g), torch.randn(8, 16, generator=g)
    with torch.no_grad():
        varied = D(x, z)
        same = D(x[:1].expand(8, -1, -1, -1), z)
        assert not torch.allclose(varied[:1], same[:1])
        assert torch.allclose(plain.eval()(x, z)[:1], plain(x[:1].expand(8, -1, -1, -1), z)[:1], atol=1e-6)
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])


@pytest.mark.parametrize("family", ["dcgan", "cgan", "bigan"])
def test_spectral_norm_is_estimated_for_the_initialized_weights(family):
    """Every spectrally normalized layer of a new D divides by an estimate of its own weights' largest singular value
    (torch estimates it when the norm is registered, before the DCGAN init draws the weights again), so an untrained
    D in eval mode gives verdicts of ordinary size, not ones 10^5 times too large."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    torch.manual_seed(0)
    D = build_family(tiny_config("unused", family, "model.spectral_norm=true"), 32, 3).D.eval()
    ratios = []
    for m in D.modules():
        for plist in getattr(m, "parametrizations", {}).values():
            sn = [p for p in plist if isinstance(p, _SpectralNorm)]
            if sn and plist.original.ndim > 1:
                w = sn[0]._reshape_weight_to_matrix(plist.original.detach())
                ratios.append(float(sn[0]._u @ w @ sn[0]._v) / float(torch.linalg.matrix_norm(w, 2)))
    assert len(ratios) >= 4 and min(ratios) > 0.8 and max(ratios) < 1.0 + 1e-4
    x, z, y = torch.randn(8, 1, 32, 32), torch.randn(8, 16), torch.arange(8) % 3
    with torch.no_grad():
        out = D(x, z) if family == "bigan" else D(x, y) if family == "cgan" else D(x)
    assert out.abs().max() < 10


def test_bigan_unary_scores_judge_the_image_and_the_latent_alone(phantom32, tmp_path):
    """With model.unary D returns three verdicts per pair: the joint one, one on the image alone (it ignores z) and
    one on the latent alone (it ignores x); the losses read all three, the logged D accuracy the joint one."""
    from cxrgan.models.bigan import BiGAN

    cfg = tiny_config(phantom32, "bigan", "model.unary=true", "loss.kind=hinge")
    D = build_family(cfg, 32, 3).D.eval()
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(4, 1, 32, 32, generator=g), torch.randn(4, 16, generator=g)
    with torch.no_grad():
        out, other_z, other_x = D(x, z), D(x, torch.randn(4, 16, generator=g)), D(x.flip(-1), z)
    assert out.shape == (4, 3)
    assert torch.equal(out[:, 1], other_z[:, 1]) and not torch.allclose(out[:, 0], other_z[:, 0])
    assert torch.equal(out[:, 2], other_x[:, 2]) and not torch.allclose(out[:, 1], other_x[:, 1])
    real, fake = torch.tensor([[1.0, -1.0, -1.0]] * 2), torch.tensor([[-1.0, 1.0, 1.0]] * 2)
    stats = BiGAN.d_stats(torch.tensor(0.0), real, fake)
    assert float(stats["d_acc_real"]) == 1.0 and float(stats["d_acc_fake"]) == 1.0
    assert build_family(tiny_config(phantom32, "bigan"), 32, 3).D.eval()(x, z).shape == (4,)
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])
    rows = [r for r in read_metrics(tmp_path / "r" / "metrics.csv") if r["d_loss"]]
    assert rows and all(math.isfinite(float(r["d_loss"])) and 0 <= float(r["d_acc_real"]) <= 1 for r in rows)


def test_dcgan_packed_discriminator_judges_packs_of_images(phantom32, tmp_path):
    """With model.pack=2 D reads two images stacked as channels and gives one logit per pack (a pack judged alone
    gets the same verdict as inside the batch; swapping its two images changes it), and a batch that does not divide
    by the pack size is refused with a message."""
    cfg = tiny_config(phantom32, "dcgan", "model.pack=2", "model.d_classes=0")
    D = build_family(tiny_config(phantom32, "dcgan", "model.pack=2", "model.mbstd=false", "model.d_classes=0"), 32, 3).D.eval()
    assert D.trunk.net[0].in_channels == 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 32, 32, generator=g)
    with torch.no_grad():
        out = D(x)
        swapped = D(x.view(4, 2, 1, 32, 32).flip(1).reshape(8, 1, 32, 32))
        alone = D(x[:2])
    assert out.shape == (4,) and torch.allclose(alone, out[:1], atol=1e-5)
    assert not torch.allclose(out, swapped)
    with pytest.raises(ValueError, match="divisible by 2"):
        D(x[:3])
    with pytest.raises(CxrganError, match="model.pack"):
        tiny_config(phantom32, "dcgan", "model.pack=3", "model.d_classes=0").validate()
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])


def test_dcgan_discriminator_head_of_a_hidden_layer(phantom32, tmp_path):
    """model.d_head=H puts a hidden layer of width H between D's last features and its logit: the one-convolution
    head is affine in those features, the hidden-layer head is not; a negative width is refused with a message."""
    D0 = build_family(tiny_config(phantom32, "dcgan", "model.mbstd=false"), 32, 3).D.eval()
    D1 = build_family(tiny_config(phantom32, "dcgan", "model.mbstd=false", "model.d_head=64"), 32, 3).D.eval()
    assert isinstance(D1.head[1], torch.nn.Linear) and D1.head[1].out_features == 64
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(4, D0.trunk.out_channels, 4, 4, generator=g) for _ in range(2))
    with torch.no_grad():
        for D, affine in ((D0, True), (D1, False)):
            mid, ends = D.head(0.5 * (a + b)).flatten(), 0.5 * (D.head(a) + D.head(b)).flatten()
            assert torch.allclose(mid, ends, atol=1e-5) == affine
        assert D1(torch.randn(4, 1, 32, 32, generator=g)).shape == (4,)
    with pytest.raises(CxrganError, match="head width"):
        build_family(tiny_config(phantom32, "dcgan", "model.d_head=-1"), 32, 3)
    res = train(tiny_config(phantom32, "dcgan", "model.d_head=32"), tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])


def test_minibatch_stddev_by_class_sees_a_collapsed_class(phantom32, tmp_path):
    """Grouped over mixed classes, a class drawn as one image hides behind the spread between classes; taken
    within each class, its channel reads 0 while the other class reads its own spread."""
    from cxrgan.nets.blocks import classwise_stddev, minibatch_stddev

    h = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1])
    h[y == 1] = h[1].clone()  # class 1 collapsed to one sample
    out = classwise_stddev(h, y, 2)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    spread0 = float((h[y == 0].flatten(1).var(0, unbiased=False) + 1e-8).sqrt().mean())
    assert torch.allclose(out[y == 0, 3], torch.full((4, 2, 2), spread0), atol=1e-6)
    assert float(out[y == 1, 3].max()) < 1e-3
    assert float(minibatch_stddev(h, group=4)[y == 1, 3].min()) > 0.5  # the grouped statistic misses it
    cfg = tiny_config(phantom32, "cgan", "model.mbstd=true", "model.mbstd_by_class=true", "model.spectral_norm=true", "loss.kind=hinge")
    assert build_family(cfg, 32, 3).D.mbstd_by_class
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    """Detection, faked both ways: AVX-512 alone is not bf16; AVX-512 BF16 or AMX-BF16 is."""
    from cxrgan.runtime.execution import cpu_flags, native_bf16

    cpu = torch.device("cpu")
    assert not native_bf16(cpu, {"avx2", "avx512f", "avx512bw"})
    assert native_bf16(cpu, {"avx2", "avx512f", "avx512_bf16"}) and native_bf16(cpu, {"amx_bf16", "amx_tile"})
    assert not native_bf16(torch.device("meta"), {"avx512_bf16"})
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in cpu_flags(str(fake)) and cpu_flags(str(tmp_path / "missing")) == set()


def test_auto_precision_is_bf16_exactly_where_it_is_native(monkeypatch):
    from cxrgan.runtime import execution as runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device, flags=None: True)
    assert runtime.autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(runtime, "native_bf16", lambda device, flags=None: False)
    assert runtime.autocast_dtype("auto", cpu) is None  # emulated bf16 is ~0.05x: fp32
    assert runtime.autocast_dtype("fp32", cpu) is None and runtime.autocast_dtype("bf16", cpu) is torch.bfloat16


def test_auto_precision_on_cuda_depends_on_the_batch(monkeypatch):
    """On a GPU these small networks are launch-bound at small batches, where autocast's casts cost more than bf16
    saves (H100: batch 64 at 64 px, bf16 0.51x against fp32 0.85x; batch 512, 0.92-0.99x against 0.68-0.70x)."""
    from cxrgan.runtime import execution as runtime

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device, flags=None: True)
    assert runtime.autocast_dtype("auto", cuda, pixels=64 * 64 * 64) is None
    assert runtime.autocast_dtype("auto", cuda, pixels=512 * 64 * 64) is torch.bfloat16
    assert runtime.autocast_dtype("auto", cpu, pixels=64 * 64 * 64) is torch.bfloat16  # a CPU gains at any batch
    assert runtime.autocast_dtype("bf16", cuda, pixels=16) is torch.bfloat16  # asked for explicitly
    monkeypatch.setattr(runtime, "native_bf16", lambda device, flags=None: False)
    assert runtime.autocast_dtype("auto", cuda, pixels=512 * 64 * 64) is None


def test_cgan_with_class_modulated_batch_norm(phantom32, tmp_path):
    """g_cond=cbn: z alone enters G, and each batch norm is followed by a per-class scale and shift that starts
    at zero (so at initialisation both classes draw the same image for the same z, and the classes part as the
    modulation is learned)."""
    from cxrgan.models.cgan import ClassModulation

    cfg = tiny_config(phantom32, "cgan", "model.g_cond=cbn")
    fam = build_family(cfg, 32, 3)
    mods = [m for m in fam.G.modules() if isinstance(m, ClassModulation)]
    assert mods and fam.G.net.net[0].in_channels == cfg.model.z_dim
    z = torch.randn(2, cfg.model.z_dim).repeat(2, 1)
    y = torch.tensor([0, 0, 1, 1])
    fam.G.eval()
    with torch.no_grad():
        same = fam.G(z, y)
        assert torch.allclose(same[:2], same[2:])
        mods[0].bias.weight[1] += 1.0
        assert not torch.allclose(*fam.G(z, y).split(2))
    assert all(m.y is None for m in mods)  # the batch's labels are not kept after a forward
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])
    with pytest.raises(CxrganError, match="g_cond must be concat or cbn"):
        build_family(tiny_config(phantom32, "cgan", "model.g_cond=film"), 32, 3)


def test_mode_seeking_term_pairs_within_a_class_and_punishes_a_generator_that_ignores_its_latent():
    from cxrgan.models.losses import mode_seeking

    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 4, generator=g)
    varied = torch.randn(8, 1, 6, 6, generator=g)
    constant = varied[:1].repeat(8, 1, 1, 1) + 1e-4 * torch.randn(8, 1, 6, 6, generator=g)
    assert mode_seeking(constant, z) > 100 * mode_seeking(varied, z)  # a G that ignores z pays, a varied one little
    # Within classes: the pairs are (0, 2) and (1, 3) here; a difference between classes does not count.
    y = torch.tensor([0, 1, 0, 1])
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 5.0, 0.1, 5.1)])
    zz = torch.zeros(4, 2)
    zz[2:] = 1.0
    assert mode_seeking(x, zz, y).item() == pytest.approx(1 / (0.1 + 1e-5), rel=1e-4)
    assert mode_seeking(x, zz, None).item() < 1e-3  # unconditional: pairs (0, 1) and (2, 3), 5 apart
    assert mode_seeking(x[:2], zz[:2], y[:2]).item() == 0.0  # no pair of one class: nothing to ask


@pytest.mark.parametrize("family", ["dcgan", "cgan", "bigan", "semicond"])
def test_mode_seeking_option_trains_logs_and_resumes_exactly(phantom32, tmp_path, family):
    extra = ("loss.mode_seeking=1", "steps=8", "ckpt_every=4")
    train(tiny_config(phantom32, family, *extra), tmp_path / "a", progress=False)
    train(tiny_config(phantom32, family, *extra[:1], "steps=4", "ckpt_every=4"), tmp_path / "b", progress=False)
    train(tiny_config(phantom32, family, *extra), tmp_path / "b", resume=True, progress=False)
    rows = [r for r in read_metrics(tmp_path / "a" / "metrics.csv") if r.get("g_ms")]
    assert rows and all(math.isfinite(float(r["g_ms"])) and float(r["g_ms"]) > 0 for r in rows)
    from cxrgan.train import checkpoint as ckpt

    wa = ckpt.load_checkpoint(ckpt.resolve(tmp_path / "a", "last"), family, with_state=False)[0]
    wb = ckpt.load_checkpoint(ckpt.resolve(tmp_path / "b", "last"), family, with_state=False)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mode_seeking_is_refused_for_the_dgm(phantom32, tmp_path):
    with pytest.raises(CxrganError, match="mode_seeking needs a generator that draws from noise"):
        train(tiny_config(phantom32, "dgm", "loss.mode_seeking=1"), tmp_path / "a", progress=False)
    with pytest.raises(CxrganError, match="loss.mode_seeking must be at least 0"):
        train(tiny_config(phantom32, "dcgan", "loss.mode_seeking=-1"), tmp_path / "b", progress=False)


def test_pixel_clusters_separate_distinct_kinds_of_image_deterministically():
    """Two kinds of image (bright top half or bright bottom half, with noise and a brightness spread) in 3:1
    proportions fall into two clusters that match the kinds exactly; the same data gives the same clusters, every
    cluster keeps an image, and impossible requests are refused."""
    from cxrgan.models.clusters import pixel_clusters

    rng = np.random.default_rng(0)
    kind = (np.arange(200) % 4 == 0).astype(int)
    images = rng.integers(60, 100, (200, 32, 32)).astype(np.uint8)
    for i, k in enumerate(kind):
        rows = slice(0, 16) if k else slice(16, 32)
        images[i, rows] += np.uint8(rng.integers(80, 120))
    read = lambda rows: images[rows]  # noqa: E731
    a = pixel_clusters(read, len(images), 2, chunk=64)
    assert set(np.unique(a)) == {0, 1}
    assert abs(np.corrcoef(a, kind)[0, 1]) == pytest.approx(1.0)  # the clusters are the kinds (up to naming)
    assert np.array_equal(a, pixel_clusters(read, len(images), 2))
    many = pixel_clusters(read, len(images), 12)
    assert sorted(np.unique(many)) == list(range(12))
    with pytest.raises(ValueError, match="cannot form"):
        pixel_clusters(read, 3, 5)


def test_self_conditioned_dcgan_draws_clusters_in_the_data_proportions(phantom32, tmp_path):
    """model.clusters=K: G is modulated per cluster and D projects the cluster; the prior (saved with G) holds the
    clusters' shares of the training images; latents carry a cluster drawn from it in the last column; real images
    are shown to D with their own cluster; mode seeking pairs within a cluster; `cxrgan sample` draws from a trained run; bad settings are refused."""
    from cxrgan.sample import sample
    from cxrgan.train.data import TrainData
    from cxrgan.data import PreparedDataset

    cfg = tiny_config(phantom32, "dcgan", "model.clusters=4", "loss.r1_gamma=0.1", "loss.mode_seeking=0.3")
    fam = build_family(cfg, 32, 3)
    data = TrainData(PreparedDataset.open(phantom32))
    fam.bind_data(data)
    shares = torch.bincount(fam._cluster_of, minlength=4).float() / len(data)
    assert torch.allclose(fam.G.prior, shares) and float(shares.min()) > 0
    z = fam.sample_z(4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, fam.latent_dim) and fam.latent_dim == 17
    drawn = torch.bincount(z[:, -1].long(), minlength=4).float() / 4000
    assert torch.allclose(drawn, shares, atol=0.03)
    rows = np.array([0, 5, 9])
    x, c = fam.real_inputs(data.batch(rows, torch.device("cpu"), False))
    assert torch.equal(c.argmax(1), fam._cluster_of[rows]) and x.shape == (3, 1, 32, 32)
    with torch.no_grad():  # the cluster changes the image G draws for the same noise
        zz = z[:2].clone()
        zz[:, -1] = 0
        other = zz.clone()
        other[:, -1] = 3
        fam.G.net.modulations[0].bias.weight[3].fill_(1.0)
        assert (fam.G.eval()(zz) - fam.G(other)).abs().max() > 1e-3
    # mode seeking pairs samples within a cluster, at their distance in z alone (the cluster column is an index)
    ms_latents, groups = fam.mode_seeking_pairs(z[:8], torch.zeros(8, dtype=torch.long))
    assert torch.equal(ms_latents, z[:8, :-1]) and torch.equal(groups, z[:8, -1].long())
    res = train(cfg, tmp_path / "r", progress=False)
    assert res.step == 6 and math.isfinite(res.last_eval["fd"])
    out = sample([tmp_path / "r"], tmp_path / "s", n=12, checkpoint="last", device="cpu", png=False)
    assert len(out) == 12
    with pytest.raises(CxrganError, match="clusters and pack"):
        build_family(tiny_config(phantom32, "dcgan", "model.clusters=4", "model.pack=2", "model.d_classes=0"), 32, 3)
    with pytest.raises(CxrganError, match="at least 2"):
        build_family(tiny_config(phantom32, "dcgan", "model.clusters=1"), 32, 3)



@pytest.mark.parametrize("family", ["dcgan", "bigan"])
def test_unconditional_discriminator_that_learns_the_labels(phantom32, tmp_path, family):
    """model.d_classes=w: D's trunk gets a class head trained on the real images' labels (D's loss gains w times its
    cross-entropy, and only then has the head's weights). G stays unconditional, the term is logged, the head stays
    untrained for a subset of one class and is not built for a dataset of one class (the option is the DCGAN's
    default), and settings that cannot work are refused with a message (exact resume: test_resume)."""
    from cxrgan.data import PreparedDataset
    from cxrgan.train.data import TrainData

    plain = build_family(tiny_config(phantom32, family, "model.d_classes=0"), 32, 3)
    assert plain.D.classes is None and not any("classes" in k for k in plain.D.state_dict())
    fam = build_family(tiny_config(phantom32, family, "model.d_classes=0.5"), 32, 3)
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds)
    fam.bind_data(data)
    assert fam.label_head_on and not fam.conditional
    batch = data.batch(np.arange(8), torch.device("cpu"), False)
    same = lambda x: x  # noqa: E731
    loss, stats = fam.d_phase(batch, same)
    assert torch.allclose(loss, stats["d_loss"] + 0.5 * stats["d_class_ce"], atol=1e-6)
    assert abs(float(stats["d_class_ce"]) - math.log(3)) < 0.5  # an untrained head: near chance on three classes
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fam.D.classes.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fam.D.trunk.parameters())  # the trunk learns too
    one_class = TrainData(ds, classes=[ds.class_names[0]])
    fam.bind_data(one_class)  # a per-class run: nothing to tell apart
    assert not fam.label_head_on
    assert "d_class_ce" not in fam.d_phase(one_class.batch(np.arange(8), torch.device("cpu"), False), same)[1]
    train(tiny_config(phantom32, family, "model.d_classes=1"), tmp_path / "r", progress=False)
    rows = [r for r in read_metrics(tmp_path / "r" / "metrics.csv") if r["d_loss"]]
    assert rows and all(math.isfinite(float(r["d_class_ce"])) for r in rows)
    with pytest.raises(CxrganError, match="weight >= 0"):
        build_family(tiny_config(phantom32, family, "model.d_classes=-1"), 32, 3)
    single = build_family(tiny_config(phantom32, family, "model.d_classes=1"), 32, 1)
    assert single.D.classes is None and not single.label_head_on and single.metric_columns == ()
    if family == "dcgan":  # self-conditioned on clusters, D also learns the labels; packs of images cannot
        clustered = build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.clusters=4"), 32, 3)
        clustered.bind_data(data)
        assert "d_class_ce" in clustered.d_phase(batch, same)[1]
        with pytest.raises(CxrganError, match="model.d_classes=0"):
            build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.pack=2"), 32, 3)


@pytest.mark.parametrize("family", ["dcgan", "bigan"])
def test_discriminator_judges_against_the_class_its_head_infers(phantom32, family):
    """model.d_class_projection: D's logit gains <embed^T p, pooled trunk features>, p the class head's verdict held
    fixed (the head learns from the labels alone, the embedding from the adversarial loss). It is off where the head
    has nothing to learn (a per-class run) and goes with the head (exact resume: test_resume)."""
    from cxrgan.data import PreparedDataset
    from cxrgan.train.data import TrainData

    fam = build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.d_class_projection=true"), 32, 3)
    plain = build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.d_class_projection=false"), 32, 3)
    assert plain.D.classes.embed is None and not any("embed" in k for k in plain.D.state_dict())
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds)
    fam.bind_data(data)
    head = fam.D.classes
    assert head.project_on
    fam.D.eval()
    batch = data.batch(np.arange(8), torch.device("cpu"), False)
    inputs = fam.fake_inputs(fam.train_z(8, torch.device("cpu")), batch.y)
    inputs = tuple(t.detach() for t in inputs)
    with torch.no_grad():
        torch.nn.init.normal_(head.embed.parametrizations.weight.original, 0.0, 1.0)  # a term large enough to see

    def logits() -> torch.Tensor:
        out = fam.discriminate(inputs, batch.y)
        return out[:, 0] if out.dim() == 2 else out

    with torch.no_grad():
        with_term = logits()
        head.project_on = False
        without = logits()
        head.project_on = True
        _, h = fam.discriminate_features(inputs, batch.y)
        assert torch.allclose(with_term - without, head.projection(h), atol=1e-5)
        assert (with_term - without).abs().max() > 1e-3
        head.net[-1].bias += torch.tensor([5.0, -5.0, 0.0])  # the head now calls every image class 0
        leaning = logits()
        assert not torch.allclose(leaning, with_term, atol=1e-4)  # the verdict moves the logit, through the term alone
        head.project_on = False
        assert torch.allclose(logits(), without, atol=1e-6)
        head.project_on = True
    fam.D.zero_grad()
    logits().sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in head.net.parameters())  # p is held fixed
    assert head.embed.parametrizations.weight.original.grad.abs().sum() > 0
    fam.bind_data(TrainData(ds, classes=[ds.class_names[0]]))  # a per-class run: an untrained head infers nothing
    assert not head.project_on
    headless = build_family(tiny_config(phantom32, family, "model.d_classes=0", "model.d_class_projection=true"), 32, 3)
    assert headless.D.classes is None  # model.d_classes=0 switches the head off, and its projection with it
    single = build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.d_class_projection=true"), 32, 1)
    assert single.D.classes is None  # one class in the dataset: no head, no term


@pytest.mark.parametrize("family", ["dcgan", "bigan"])
def test_generator_asked_for_the_data_class_shares(phantom32, tmp_path, family):
    """model.g_class_share=w: G's loss gains w times KL(the training subset's class shares || the batch mean of D's
    head's class probabilities on G's images). The term is zero when the batch's shares are the data's, whatever each
    image's verdict, reaches G through the head, is logged, and is off where the head has no labels to learn (exact
    resume: test_resume)."""
    from cxrgan.data import PreparedDataset
    from cxrgan.train.data import TrainData

    fam = build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.g_class_share=2",
                                   "loss.mode_seeking=0"), 32, 3)
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds)
    fam.bind_data(data)
    assert "g_class_kl" in fam.metric_columns
    shares = np.bincount(data.labels, minlength=3) / len(data.labels)
    head = fam.D.classes.net[-1]
    h = torch.randn(16, *fam.D.classes.net[1].normalized_shape)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.from_numpy(np.log(shares)))  # every image gets the data's shares: a balanced batch
        assert float(fam.class_share_divergence(h)) < 1e-6
        head.bias.copy_(torch.tensor([4.0, 0.0, 0.0]))  # every image called class 0
        p = np.exp([4.0, 0.0, 0.0]) / np.exp([4.0, 0.0, 0.0]).sum()
        assert float(fam.class_share_divergence(h)) == pytest.approx(float((shares * np.log(shares / p)).sum()), rel=1e-4)
        head.weight.normal_(0.0, 1.0)  # verdicts that vary by image, and so a batch mean that G can move
    batch = data.batch(np.arange(8), torch.device("cpu"), False)
    same = lambda x: x  # noqa: E731
    loss, stats = fam.g_phase(batch, same)
    assert float(stats["g_class_kl"]) > 0
    assert torch.allclose(loss, stats["g_loss"] + 2 * stats["g_class_kl"], atol=1e-5)
    fam.zero_grad()
    fake = fam.fake_inputs(fam.train_z(8, torch.device("cpu")), batch.y)
    fam.class_share_divergence(fam.discriminate_features(fake, batch.y)[1]).backward()  # the term alone reaches G
    assert all(p.grad is not None for p in fam.G.parameters()) and any(p.grad.abs().sum() > 0 for p in fam.G.parameters())
    one_class = TrainData(ds, classes=[ds.class_names[0]])
    fam.bind_data(one_class)  # a per-class run: no shares to ask for
    assert "g_class_kl" not in fam.g_phase(one_class.batch(np.arange(8), torch.device("cpu"), False), same)[1]
    with pytest.raises(CxrganError, match="weight >= 0"):
        build_family(tiny_config(phantom32, family, "model.d_classes=1", "model.g_class_share=-1"), 32, 3)
    train(tiny_config(phantom32, family, "model.d_classes=1", "model.g_class_share=1"), tmp_path / "r", progress=False)
    rows = [r for r in read_metrics(tmp_path / "r" / "metrics.csv") if r["g_loss"]]
    assert rows and all(math.isfinite(float(r["g_class_kl"])) for r in rows)


def test_the_loop_writes_metrics_and_the_caller_draws_curves(phantom32, tmp_path):
    # The loop knows nothing of the report layer: without a hook a run has metrics but no plots; with the report's
    # plot_run as its hook (as `cxrgan train` passes it) it gets the curves.
    ended = []
    train(tiny_config(phantom32, "gan"), tmp_path / "bare", progress=False, on_end=ended.append)
    assert ended == [tmp_path / "bare"] and (tmp_path / "bare" / "metrics.csv").is_file()
    assert not (tmp_path / "bare" / "plots").exists()
    assert main(["train", "--model", "gan", "--data", str(phantom32), "--out", str(tmp_path / "cli"), "--steps", "2",
                 "--quiet", "--set", "eval_samples=32", "--set", "batch_size=8"]) == 0
    assert (tmp_path / "cli" / "plots" / "losses.png").is_file()

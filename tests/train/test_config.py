import pytest
from torch import nn

from cxrgan.errors import CxrganError
from cxrgan.models.registry import build_family
from cxrgan.train.config import OptimConfig, TrainConfig, default_width, load_config, save_config
from cxrgan.train.loop import train

from .helpers import tiny_config


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  family: cgan\nloss:\n  kind: hinge\nbatch_size: 32\n")
    cfg = load_config(f, ["loss.r1_gamma=0.5", "data.classes=NORMAL,COVID", "model.spectral_norm=true"])
    assert cfg.model.family == "cgan" and cfg.loss.kind == "hinge" and cfg.batch_size == 32
    assert cfg.loss.r1_gamma == 0.5 and cfg.data.classes == ["NORMAL", "COVID"] and cfg.model.spectral_norm is True


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["steps=123", "augment.policy=translation", "data.classes=[A, B]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.digest() == cfg.digest()


@pytest.mark.parametrize("override, match", [
    ("loss.kindd=hinge", "unknown config key"),
    ("nosection.x=1", "unknown config section|unknown config key"),
    ("batch_size=abc", "must be a number"),
    ("steps=1.5", "whole number"),
    ("model.spectral_norm=maybe", "true or false"),
    ("noequals", "expected key=value"),
])
def test_bad_overrides(override, match):
    with pytest.raises(CxrganError, match=match):
        load_config(None, [override])


def test_validation_messages():
    with pytest.raises(CxrganError, match="loss.kind"):
        load_config(None, ["loss.kind=lsgan"]).validate()
    with pytest.raises(CxrganError, match="augment.policy"):
        load_config(None, ["augment.policy=rotate"]).validate()
    with pytest.raises(CxrganError, match="unknown model"):
        load_config(None, ["model.family=vae"]).validate()
    with pytest.raises(CxrganError, match="optim.lr_e at least 0"):
        load_config(None, ["optim.lr_e=-0.001"]).validate()
    with pytest.raises(CxrganError, match="optim.lr_g and optim.lr_d must be above 0"):
        load_config(None, ["optim.lr_d=0"]).validate()
    with pytest.raises(CxrganError, match="ema_warmup must be above 1"):
        load_config(None, ["ema_warmup=1"]).validate()
    assert OptimConfig(lr_g=0.1, lr_d=0.2, lr_e=0.05).rate("G", "E") == 0.05
    assert OptimConfig(lr_g=0.1, lr_d=0.2).rate("G", "E") == 0.1 and OptimConfig(lr_g=0.1, lr_d=0.2, lr_e=0.05).rate("D", "D") == 0.2
    assert isinstance(TrainConfig().validate(), TrainConfig)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(CxrganError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(CxrganError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_family_presets_apply_under_the_users_choices(tmp_path):
    """A family's measured defaults come before the user's YAML, flags and --set; other families are unaffected;
    a saved config reloads to the same run whatever the presets."""
    from cxrgan.train.config import family_preset

    preset = family_preset("cgan")
    assert preset["loss"]["kind"] == "hinge" and preset["model"]["spectral_norm"] is True
    cgan = load_config(None, ["model.family=cgan"])
    assert cgan.loss.kind == "hinge" and cgan.model.spectral_norm and cgan.model.mbstd and cgan.optim.lr_d == 0.0004
    assert cgan.augment.policy == "translation" and cgan.loss.mode_seeking == 0.3
    assert (cgan.steps, cgan.epochs) == (4500, 0)  # its own budget, 80 epochs of the Kermany split; others keep 2,000
    assert load_config(None, ["model.family=cgan", "steps=10"]).steps == 10  # a given budget wins over the preset's
    assert load_config(None, ["model.family=cgan", "epochs=3"]).epochs == 3
    dcgan = load_config(None, ["model.family=dcgan"])
    assert dcgan.loss.kind == "hinge" and dcgan.model.spectral_norm and (dcgan.optim.lr_g, dcgan.optim.lr_d) == (0.0016, 0.0016)
    assert dcgan.model.mbstd and dcgan.ema_decay == 0.999  # its own measured preset (configs/dcgan.yaml)
    assert dcgan.loss.mode_seeking == 0.3 and dcgan.augment.policy == ""  # the CGAN's recipe without its augmentation
    assert dcgan.model.d_classes == 1.0  # and D's trunk also learns the labels (models/label_aware.py)
    assert dcgan.model.d_class_projection  # and judges each image against the class its head infers
    assert dcgan.steps == 2000
    bigan = load_config(None, ["model.family=bigan"])  # configs/bigan.yaml: the CGAN's D recipe, not its G or augmentation
    assert bigan.loss.kind == "hinge" and bigan.model.spectral_norm and (bigan.optim.lr_g, bigan.optim.lr_d, bigan.optim.beta1) == (0.0016, 0.0016, 0.0)
    assert bigan.model.mbstd and bigan.loss.mode_seeking == 0.3  # without them it collapsed at the default width
    assert not bigan.model.unary and bigan.augment.policy == "" and bigan.ema_decay == 0.999
    assert bigan.model.d_classes == 1.0 and bigan.model.d_class_projection  # the label-aware D, with its projection
    assert bigan.model.g_class_share == 1.0 and dcgan.model.g_class_share == 0.0  # G asked for the class shares
    dgm = load_config(None, ["model.family=dgm"])  # inputs standardized: the figures that held under acquisition shifts
    assert dgm.model.standardize == "pose+intensity+fill+smooth" and dcgan.model.standardize == "none"
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  family: cgan\noptim:\n  lr_d: 0.0001\n")
    mine = load_config(f, ["loss.kind=bce"])
    assert mine.optim.lr_d == 0.0001 and mine.loss.kind == "bce" and mine.model.mbstd  # file and --set win; rest is preset
    flagged = load_config(f, ["model.family=dcgan"])  # the flag's family picks the preset; the file's own field still wins
    assert flagged.optim.lr_g == 0.0016 and flagged.model.g_cond == "concat" and flagged.optim.lr_d == 0.0001
    save_config(cgan, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cgan


def test_semicond_preset_starts_from_cgan():
    cfg = load_config(None, ["model.family=semicond"])
    assert cfg.loss.kind == "hinge" and cfg.model.spectral_norm and cfg.augment.policy == "translation"
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (0.0004, 0.0008)  # its own: twice the cgan's learning rates
    assert cfg.model.g_cond == "cbn"  # the class through G's batch norms, as for the cgan
    assert cfg.model.class_weight == 0.0  # its own: no auxiliary-classifier term (the projection D conditions)
    assert cfg.steps == 4500  # and the cgan's budget
    assert cfg.model.codes == ["bernoulli:5:p=0.5", "exponential:5:rate=1", "uniform:5:low=-1,high=1", "normal:5"]


def _widths(family) -> tuple[int, int]:
    """G's channels at half the image size (its last convolution's input) and D's (its first convolution's output)."""
    g = [m for m in family.G.modules() if isinstance(m, nn.ConvTranspose2d)][-1].in_channels
    d = [m for m in family.D.modules() if isinstance(m, nn.Conv2d)][0].out_channels
    return g, d


def test_width_follows_the_image_size_unless_set(phantom32, tmp_path):
    assert [default_width(s) for s in (32, 64, 128, 256)] == [64, 64, 32, 32]
    cfg = load_config(None, ["model.family=cgan"])
    assert (cfg.model.g_channels, cfg.model.d_channels) == (0, 0)
    assert _widths(build_family(cfg, 64, 2)) == (64, 64)
    assert _widths(build_family(cfg, 128, 2)) == (32, 32)
    chosen = load_config(None, ["model.family=cgan", "model.g_channels=48"])
    assert _widths(build_family(chosen, 128, 2)) == (48, 32)
    assert load_config(None, ["model.family=ddpm"]).for_size(128).model.g_channels == 32  # the family's own preset
    with pytest.raises(CxrganError, match="model.g_channels and model.d_channels must be at least 0"):
        load_config(None, ["model.d_channels=-1"]).validate()
    # a run records the width it trained with, so its config.yaml rebuilds the same networks at any later default
    train(tiny_config(phantom32, "dcgan", "model.g_channels=0", "model.d_channels=0", "steps=1"), tmp_path / "run", progress=False)
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert (saved.model.g_channels, saved.model.d_channels) == (64, 64)

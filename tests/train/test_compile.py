"""``compile: true`` trains with torch.compile'd networks (the CPU path of ``cxrgan bench --compile``) and writes
the same checkpoint keys as an eager run, so compiled runs sample, resume and compare like any other."""

from safetensors.torch import load_file

from cxrgan.train.config import load_config
from cxrgan.train.loop import train


def test_compiled_training_keeps_checkpoint_keys(phantom32, tmp_path):
    keys = {}
    for compiled in (False, True):
        cfg = load_config(None, [f"data.path={phantom32}", "model.family=dcgan", "steps=2", "batch_size=8", "precision=fp32",
                                 "model.g_channels=8", "model.d_channels=8", "ckpt_every=2", "eval_samples=32",
                                 f"compile={compiled}"])
        res = train(cfg, tmp_path / str(compiled), progress=False)
        assert res.step == 2
        keys[compiled] = set(load_file(str(tmp_path / str(compiled) / "checkpoints" / "step-00000002" / "weights.safetensors")))
    assert keys[True] == keys[False] and not any("_orig_mod" in k for k in keys[True])

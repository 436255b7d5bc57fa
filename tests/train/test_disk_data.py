"""Training data read from disk batch by batch (data.in_memory=never, automatic beyond 4 GiB) gives the same
batches, and the same training, as data held in memory."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxrgan.data import PreparedDataset
from cxrgan.errors import CxrganError
from cxrgan.train.config import load_config
from cxrgan.train.data import EpochSampler, TrainData
from cxrgan.train.loop import train


def test_disk_rows_equal_memory_rows(phantom32):
    ds = PreparedDataset.open(phantom32)
    mem, disk = TrainData(ds, "train", ["PNEUMONIA"], "always"), TrainData(ds, "train", ["PNEUMONIA"], "never")
    assert mem.images is not None and disk.images is None and disk.reader is not None
    sampler = EpochSampler(len(mem), 16, 0)
    for _ in range(5):
        rows = sampler.next()
        assert np.array_equal(mem.uint8(rows), disk.uint8(rows))
    assert np.array_equal(disk.uint8(np.array([len(disk) - 1, 0])), np.asarray(ds.images[disk.index[[len(disk) - 1, 0]]]))


def test_training_from_disk_equals_training_from_memory(phantom32, tmp_path):
    for mode in ("always", "never"):
        cfg = load_config(None, [f"data.path={phantom32}", "model.family=dcgan", "steps=3", "batch_size=8", "precision=fp32",
                                 "model.g_channels=8", "model.d_channels=8", "ckpt_every=3", "eval_samples=32",
                                 f"data.in_memory={mode}"])
        train(cfg, tmp_path / mode, progress=False)

    a, b = (load_file(str(tmp_path / m / "checkpoints" / "step-00000003" / "weights.safetensors")) for m in ("always", "never"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_in_memory_option_is_checked():
    with pytest.raises(CxrganError, match="data.in_memory must be auto, always or never"):
        load_config(None, ["data.in_memory=sometimes"]).validate()

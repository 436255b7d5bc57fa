import numpy as np

from cxrgan.data.phantom import CLASS_NAMES, PhantomSpec, render


def test_render_is_deterministic_and_in_range():
    a, ma = render(3, 1, size=64, seed=5)
    b, mb = render(3, 1, size=64, seed=5)
    c, _ = render(4, 1, size=64, seed=5)
    assert a.shape == (64, 64) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_masks_mark_disease_only():
    for i in range(6):
        _, normal = render(i, CLASS_NAMES.index("NORMAL"), 64)
        assert normal.sum() == 0
        for name in ("PNEUMONIA", "COVID"):
            img, mask = render(i, CLASS_NAMES.index(name), 64)
            assert mask.sum() > 5, (name, i)


def test_lesions_raise_density_inside_the_mask():
    """Disease is visible: the lesion area is brighter than the same area of the same patient drawn NORMAL."""
    diffs = []
    for i in range(8):
        lab = CLASS_NAMES.index("PNEUMONIA")
        sick, mask = render(i, lab, 64, seed=1)
        assert mask.any()
        # Same anatomy parameters are not shared across labels, so compare to the lung background instead.
        diffs.append(sick[mask == 1].mean() - np.median(sick[20:44, 8:56]))
    assert np.mean(diffs) > 0.02


def test_anatomy_is_structured_not_noise():
    img, _ = render(0, 0, 64)
    # Lungs darker than mediastinum, air outside body darkest: a chest radiograph's basic contrast.
    lungs = img[20:40, 12:22].mean()
    mediastinum = img[20:40, 30:34].mean()
    corner = img[60:64, 0:3].mean()
    assert mediastinum > lungs + 0.1
    assert corner < lungs


def test_spec_labels_follow_mix_exactly():
    labels = PhantomSpec(count=100, mix=(0.5, 0.25, 0.25), seed=0).labels()
    assert np.bincount(labels, minlength=3).tolist() == [50, 25, 25]
    assert np.array_equal(labels, PhantomSpec(count=100, mix=(0.5, 0.25, 0.25), seed=0).labels())

"""Classifier studies end to end on tiny data, feature spaces, the evaluate verb, leaky splits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.data.splits import leaky_groups, names_look_patient_keyed
from cxrgan.errors import CxrganError
from cxrgan.evaluate.classifier import ClassifierConfig, evaluate_classifier, train_classifier
from cxrgan.evaluate.extractors import inception_space
from cxrgan.studies.usefulness import augment_study, tstr, water_fill
from tests.evaluate.helpers import BrightnessClassifier

TINY = ClassifierConfig(width=4, epochs=2, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def synth32(phantom32, tmp_path_factory):
    """A 'synthetic' set: real phantom training images written as a dataset (class names kept)."""
    from cxrgan.data.dataset import write_subset

    ds = PreparedDataset.open(phantom32)
    out = tmp_path_factory.mktemp("synth") / "s"
    write_subset(ds, ds.indices("train")[:150], out, {"kind": "synthetic"})
    return out


def test_classifier_beats_chance_on_separable_phantoms(phantom32):
    ds = PreparedDataset.open(phantom32)
    tr, va, te = (ds.indices(s) for s in ("train", "val", "test"))
    lab = np.asarray(ds.labels)
    cfg = ClassifierConfig(width=8, epochs=8, batch_size=32, device="cpu")
    clf = train_classifier(np.asarray(ds.images[tr]), lab[tr], np.asarray(ds.images[va]), lab[va], ds.class_names, cfg, seed=0)
    m = evaluate_classifier(clf, np.asarray(ds.images[te]), lab[te])
    assert m["balanced_accuracy"] > 0.5 and m["roc_auc"] > 0.75  # chance: 1/3 and 0.5
    assert np.asarray(m["confusion"]).sum() == len(te)
    assert clf.predict_proba(np.asarray(ds.images[te[:5]])).shape == (5, 3)


def test_tstr_and_augment_study_end_to_end(phantom32, synth32, tmp_path):
    res = tstr(synth32, phantom32, tmp_path / "tstr", TINY, seeds=(0,), progress=False)
    assert [r["name"] for r in res["rows"]] == ["TRTR", "TSTR"] and res["roc_auc_ratio"] > 0
    for f in ("tstr.csv", "tstr.md", "tstr.json", "confusion.png", "balanced_accuracy.png"):
        assert (tmp_path / "tstr" / f).is_file(), f
    aug = augment_study(phantom32, [synth32], tmp_path / "aug", minority_fraction=0.3, ratios=(0.5, 1.0), cfg=TINY, seeds=(0,),
                        progress=False)
    names = [r["name"] for r in aug["rows"]]
    assert names == ["BR", "BG", "IR", "RS", "GS@0.5", "GS@1"]
    by = {r["name"]: r for r in aug["rows"]}
    assert by["RS"]["train_images"] == 2 * by["IR"]["train_images"]
    assert by["GS@1"]["train_images"] == 2 * by["IR"]["train_images"]
    assert by["BR"]["train_images"] < by["IR"]["train_images"]
    assert (tmp_path / "aug" / "augment_study.md").is_file()
    saved = json.loads((tmp_path / "aug" / "augment_study.json").read_text())
    assert sum(saved["synthetic_taken"]["GS@1"].values()) == by["IR"]["train_images"]
    assert sum(saved["synthetic_held"].values()) == 150


def test_tstr_reuses_a_matching_trtr_reference_and_refuses_another(phantom32, synth32, tmp_path, monkeypatch):
    import cxrgan.studies.usefulness as usefulness

    first = tstr(synth32, phantom32, tmp_path / "a", TINY, seeds=(0,), progress=False, shifts="noise:mild")
    trained = []
    real_run_arm = usefulness.run_arm
    monkeypatch.setattr(usefulness, "run_arm", lambda name, *a, **k: (trained.append(name), real_run_arm(name, *a, **k))[1])
    again = tstr(synth32, phantom32, tmp_path / "b", TINY, seeds=(0,), progress=False, shifts="noise:mild", reference=tmp_path / "a")
    assert trained == ["TSTR"]  # the real-data arm was not trained again
    assert again["rows"][0] == json.loads(json.dumps(first["rows"][0]))
    assert again["shift"]["summary"]["TRTR roc_auc"] == first["shift"]["summary"]["TRTR roc_auc"]
    saved = json.loads((tmp_path / "b" / "tstr.json").read_text())
    assert saved["trtr_reused_from"] == str(tmp_path / "a") and saved["reference_key"]["seeds"] == [0]
    assert "TRTR" in (tmp_path / "b" / "shift.md").read_text()
    for changed, what in ((dict(seeds=(1,)), "seeds"), (dict(shifts="noise:strong"), "test conditions"),
                          (dict(cfg=ClassifierConfig(width=4, epochs=1, batch_size=32, device="cpu")), "classifier settings")):
        kw = dict(cfg=TINY, seeds=(0,), shifts="noise:mild") | changed
        with pytest.raises(CxrganError, match=what):
            tstr(synth32, phantom32, tmp_path / "c", kw.pop("cfg"), progress=False, reference=tmp_path / "a", **kw)
    with pytest.raises(CxrganError, match="no tstr.json"):
        tstr(synth32, phantom32, tmp_path / "d", TINY, seeds=(0,), progress=False, shifts="noise:mild", reference=tmp_path / "nowhere")


def test_augment_study_reuses_the_real_arms_of_a_matching_reference(phantom32, synth32, tmp_path, monkeypatch):
    import cxrgan.studies.usefulness as usefulness

    kw = dict(minority_fraction=0.3, cfg=TINY, seeds=(0,), progress=False, shifts="noise:mild")
    first = augment_study(phantom32, [synth32], tmp_path / "a", **kw)
    trained = []
    real_run_arm = usefulness.run_arm
    monkeypatch.setattr(usefulness, "run_arm", lambda name, *a, **k: (trained.append(name), real_run_arm(name, *a, **k))[1])
    again = augment_study(phantom32, [synth32], tmp_path / "b", reference=tmp_path / "a", **kw)
    assert trained == ["BG", "GS@1"]  # BR, IR and RS see no synthetic image: taken from the reference
    by_first, by_again = ({r["name"]: r for r in res["rows"]} for res in (first, again))
    for arm in ("BR", "IR", "RS"):
        assert by_again[arm] == json.loads(json.dumps(by_first[arm]))
    saved = json.loads((tmp_path / "b" / "augment_study.json").read_text())
    assert saved["real_arms_reused_from"] == str(tmp_path / "a") and saved["reference_key"]["minority_fraction"] == 0.3
    with pytest.raises(CxrganError, match="minority cut"):
        augment_study(phantom32, [synth32], tmp_path / "c", reference=tmp_path / "a", **(kw | dict(minority_fraction=0.5)))
    with pytest.raises(CxrganError, match="no augment_study.json"):
        augment_study(phantom32, [synth32], tmp_path / "d", reference=tmp_path / "b" / "nowhere", **kw)


def test_a_synthetic_set_of_another_size_is_judged_at_the_real_data_size(phantom32, tmp_path, caplog):
    from cxrgan.data import Preprocess, SourceOptions, prepare
    from cxrgan.data.preprocess import resize_images
    from cxrgan.studies.usefulness import synthetic_by_real_class

    big = tmp_path / "synth64"
    prepare("phantom", big, Preprocess(size=64), SourceOptions(count=90, seed=3), progress=False, workers=1)
    real = PreparedDataset.open(phantom32)
    with caplog.at_level("INFO", logger="cxrgan.studies"):
        x, y = synthetic_by_real_class(big, real)
    assert x.shape == (90, 32, 32) and x.dtype == np.uint8 and len(y) == 90
    assert np.array_equal(x, resize_images(np.asarray(PreparedDataset.open(big).images), 32))
    assert "is 64 px: resized to 32 px" in caplog.text
    res = tstr(big, phantom32, tmp_path / "tstr", TINY, seeds=(0,), progress=False, shifts="none")
    assert res["rows"][1]["train_images"] == 90 and np.isfinite(res["rows"][1]["roc_auc_mean"])


def test_synthetic_needs_and_a_warning_where_a_set_is_too_small(caplog):
    from cxrgan.studies.usefulness import _warn_if_synthetic_repeats, synthetic_needs

    needs = synthetic_needs(np.array([94, 2694]), (0.5, 1))
    assert {k: v.tolist() for k, v in needs.items()} == {"BG": [2600, 0], "GS@0.5": [1394, 0], "GS@1": [2694, 94]}
    with caplog.at_level("WARNING", logger="cxrgan.studies"):
        held = _warn_if_synthetic_repeats(needs, np.repeat([0, 1], [1000, 1000]), ["NORMAL", "PNEUMONIA"])
    assert held["synthetic_held"] == {"NORMAL": 1000, "PNEUMONIA": 1000}
    assert held["synthetic_taken"]["GS@1"] == {"NORMAL": 2694, "PNEUMONIA": 94}
    assert len(caplog.records) == 1  # NORMAL only: 1,000 PNEUMONIA images cover the 94 taken
    text = caplog.records[0].getMessage()
    assert "1000 NORMAL images" in text and "BG 2600, GS@0.5 1394, GS@1 2694" in text and "up to 3 times" in text
    assert "--class NORMAL --n 2694" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cxrgan.studies"):
        _warn_if_synthetic_repeats(needs, np.repeat([0, 1], [2694, 94]), ["NORMAL", "PNEUMONIA"])
    assert not caplog.records


def test_write_imbalanced_says_how_many_synthetic_images_to_sample(phantom32, tmp_path, capsys):
    assert main(["augment-study", "--real", str(phantom32), "--minority-fraction", "0.3", "--synthetic-ratio", "0.5,1",
                 "--write-imbalanced", str(tmp_path / "cut")]) == 0
    ds = PreparedDataset.open(tmp_path / "cut")
    counts = np.bincount(np.asarray(ds.labels)[ds.indices("train")], minlength=len(ds.class_names))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # BG tops every class up to the largest; GS@1 adds one training set's worth, the smallest classes first
    bg, gs1 = counts.max() - counts, water_fill(counts, int(counts.sum()))
    assert (gs1 >= bg).all() and gs1.sum() == counts.sum()
    assert line == ("synthetic images the study's arms take (GS at --synthetic-ratio 0.5,1), per class: "
                    + ", ".join(f"{n} {k}" for n, k in zip(ds.class_names, gs1))
                    + "; sample at least that many of each class so that no image repeats")


def test_label_agreement_counts_synthetic_images_the_classifier_puts_in_another_class():
    from cxrgan.evaluate.extractors import FeatureSpace, randconv_space
    from cxrgan.studies.suite import label_agreement_rows

    space = FeatureSpace(BrightnessClassifier(0.0), "classifier", "bright-0", {"class_names": ["DARK", "BRIGHT"]})
    dark, bright = np.full((4, 8, 8), 40, np.uint8), np.full((4, 8, 8), 220, np.uint8)
    # drawn as DARK: 3 dark and 5 bright images; drawn as BRIGHT: 4 bright; real test: all in their classes
    synth = np.concatenate([dark[:3], bright, bright[:1], bright])
    synth_y = np.array([0] * 8 + [1] * 4)
    rows = label_agreement_rows(space, synth, synth_y, np.concatenate([dark, bright]), np.array([0] * 4 + [1] * 4),
                                ["DARK", "BRIGHT"])
    by = {r["class"]: r for r in rows}
    assert by["DARK"]["synthetic_agreement"] == 3 / 8 and by["DARK"]["real_agreement"] == 1.0
    assert by["DARK"]["most_confused_with"] == "BRIGHT" and by["DARK"]["most_confused_share"] == 5 / 8
    assert by["BRIGHT"]["synthetic_agreement"] == 1.0 and by["BRIGHT"]["most_confused_with"] == ""
    assert by["DARK"]["n_synthetic"] == 8 and by["BRIGHT"]["n_real_test"] == 4
    assert label_agreement_rows(randconv_space(), synth, synth_y, synth, synth_y, ["DARK", "BRIGHT"]) == []


def test_water_fill_levels_smallest_first():
    assert water_fill(np.array([10, 100]), 50).tolist() == [50, 0]
    assert water_fill(np.array([10, 100]), 110).tolist() == [100, 10]
    assert water_fill(np.array([5, 5, 20]), 31).tolist() == [16, 15, 0]


def test_leaky_splits_refused_and_patient_names_detected(phantom32, synth32, tmp_path):
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(phantom32, leaky)
    items = list(PreparedDataset.open(leaky).items())
    items[0]["group"], items[0]["split"] = 0, 0
    items[1]["group"], items[1]["split"] = 0, 2
    (leaky / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    assert leaky_groups(PreparedDataset.open(leaky).items()) == 1
    assert leaky_groups(PreparedDataset.open(phantom32).items()) == 0
    with pytest.raises(CxrganError, match="patient group"):
        tstr(synth32, leaky, tmp_path / "t", TINY, seeds=(0,), progress=False)
    assert names_look_patient_keyed(["PNEUMONIA/person12_bacteria_3.jpeg", "NORMAL/IM-0115-0001.jpeg"]) is not None
    assert names_look_patient_keyed(["00012345_001.png", "00012346_000.png"]) is not None
    assert names_look_patient_keyed(["a.png", "b.png"]) is None


def test_evaluate_cli_end_to_end_and_bad_input(phantom32, synth32, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["--quiet", "evaluate", str(synth32), "--real", str(phantom32), "--out", str(out), "--features", "randconv"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    rows = [r for r in summary["metrics"] if r["class"] == "all"]
    assert {r["comparison"] for r in rows} == {"synthetic vs real train", "real train half A vs half B", "real train vs real test"}
    assert (out / "closest_pairs.png").is_file() and summary["memorization"][0]["space"] == "pixels"
    # the 'synthetic' images are training images: the audit must flag nearly all of them
    assert summary["memorization"][0]["flagged_fraction"] > 0.95
    # randconv has no class head and no autoencoder ran: the CLI names only the files it wrote
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {out}/metrics.md, metrics.csv, metrics.json, closest_pairs.png"
    assert "label_agreement" not in summary and not (out / "label_agreement.md").exists()
    assert main(["evaluate", str(tmp_path / "nope"), "--real", str(phantom32), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(synth32), "--real", str(phantom32), "--out", str(out), "--features", "inception:/no/such.pt"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["tstr", "--synthetic", str(synth32), "--real", str(phantom32), "--out", str(out), "--seeds", "x"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_inception_torchscript_file_is_used(tmp_path):
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)

    path = tmp_path / "incep.pt"
    torch.jit.script(Tiny()).save(str(path))
    space = inception_space(path)
    f = space.embed_u8(np.full((3, 32, 32), 255, np.uint8))
    assert f.shape == (3, 2) and np.allclose(f[:, 0], 255.0) and space.ident.startswith("inception-")


def test_prepare_warns_about_patient_ids_in_file_names(tmp_path, caplog):
    from PIL import Image

    from cxrgan.data import Preprocess, prepare

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for c in ("NORMAL", "PNEUMONIA"):
        (src / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(src / c / f"person{i}_virus_{i}.png")
    with caplog.at_level("WARNING"):
        prepare(src, tmp_path / "d", Preprocess(size=32), progress=False, workers=1)
    assert "look like they carry patient ids" in caplog.text and "person" not in caplog.text.split("pattern")[0]
    caplog.clear()
    from cxrgan.data import SourceOptions

    with caplog.at_level("WARNING"):
        prepare(src, tmp_path / "d2", Preprocess(size=32), SourceOptions(patient_regex=r"(person\d+)_"), progress=False, workers=1)
    assert "patient ids" not in caplog.text


def test_write_imbalanced_cuts_only_the_training_minority(phantom32, tmp_path, capsys):
    ds = PreparedDataset.open(phantom32)
    assert main(["--quiet", "augment-study", "--real", str(phantom32), "--minority-fraction", "0.2",
                 "--write-imbalanced", str(tmp_path / "cut")]) == 0
    cut = PreparedDataset.open(tmp_path / "cut")
    before = ds.manifest["counts"]
    after = cut.manifest["counts"]
    small = min(before["train"], key=before["train"].get)
    assert after["train"][small] == round(0.2 * before["train"][small])
    assert after["val"] == before["val"] and after["test"] == before["test"]
    assert {c: n for c, n in after["train"].items() if c != small} == {c: n for c, n in before["train"].items() if c != small}
    assert cut.manifest["source"]["parent_manifest_sha256"] == ds.manifest_hash


def test_leak_warning_names_only_generators_that_saw_the_cut_class(phantom32, monkeypatch, caplog):
    # A generator trained on the full data warns only if it trained on the class the study cuts (all classes, or
    # that class among its own); a per-class generator of another class saw nothing IR lacks.
    from types import SimpleNamespace

    from cxrgan.studies import usefulness

    ds = PreparedDataset.open(phantom32)
    counts = np.bincount(np.asarray(ds.labels)[ds.indices("train")])
    minority = ds.class_names[int(np.argmin(counts))]
    other = next(c for c in ds.class_names if c != minority)
    sets = {"all": [], "minority": [minority], "other": [other]}
    fake = {name: SimpleNamespace(manifest={"source": {"runs": [{"data_manifest_sha256": ds.manifest_hash, "classes": cls}]}})
            for name, cls in sets.items()}
    monkeypatch.setattr(usefulness.PreparedDataset, "open", staticmethod(lambda p: fake[str(p)]))
    for name, warns in (("all", True), ("minority", True), ("other", False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            usefulness._warn_if_generators_saw_the_cut([name], ds)
        assert ("before that class was cut" in caplog.text) == warns, name

"""The evaluation's measurement without a model or an actor: the confidence filter's count,
the reference subset shared by every model, and measure() on images and typed inputs."""
import numpy as np
import pytest

from jobs.evaluation import splits
from jobs.evaluation.instruments import Classes, reference_subset
from jobs.evaluation.measure import Rows, class_share


def _classes(probabilities):
    return Classes("builtin", {0: "a", 1: "b", 2: "c"}, [2], lambda images: probabilities, np.arange(3),
                   None, None)


def test_the_confidence_filter_is_off_by_default_and_says_what_it_kept():
    from runs.spec import EvalSettings

    assert EvalSettings().confidence == 0
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8], [0.4, 0.3, 0.3]])
    off, on = Rows({}), Rows({})
    class_share(off, _classes(probabilities), None, 0.0, {})
    class_share(on, _classes(probabilities), None, 0.7, {})
    (all_counted,), (filtered,) = off.rows, on.rows
    assert (all_counted["k"], all_counted["n"]) == (2, 4) and "kept" not in all_counted["note"]
    assert (filtered["k"], filtered["n"]) == (1, 2)            # the 0.9 and the 0.8 predictions
    assert "confidence >= 0.7: kept 2 of 4" in filtered["note"]
    assert filtered["ci_low"] < 0.5 < filtered["ci_high"]      # Wilson's interval of 1/2


def test_a_metric_the_registry_does_not_declare_is_never_written():
    from report.metrics import UnknownMetric

    out = Rows({})
    with pytest.raises(UnknownMetric, match="unknown metric 'fid_typo'"):
        out.add("fid_typo", 1.0, "target")
    assert out.rows == []


def test_reference_subsets_are_seeded_and_shared():
    assert list(reference_subset(5, 10)) == [0, 1, 2, 3, 4]
    chosen = reference_subset(1000, 30)
    assert len(set(chosen)) == 30 and list(chosen) == sorted(chosen)
    assert np.array_equal(chosen, reference_subset(1000, 30))
    assert chosen.max() > 100                                   # not the first ones


# ---------------------------------------------------------------- measure() with no actor and no dict
class _MeanColour:
    """A feature extractor stand-in: the mean colour of each image (3 features)."""
    name, identity = "test-mean-colour", "test-mean-colour-1"

    def __call__(self, images_u8, batch_size=100):
        return images_u8.float().mean((2, 3)).double().numpy()


class _Stub:
    def __getitem__(self, name):
        return _MeanColour()


def test_measure_takes_images_and_typed_inputs_only(lpips_weights):
    """A translation product measured outside any worker: PSNR against inputs that differ by
    exactly 10 grey levels, and class preservation counted by a classifier on brightness."""
    import math

    import torch

    from runs.spec import EvalSettings
    from jobs.evaluation.instruments import References, ReferenceSet
    from jobs.evaluation.measure import Pairs, Settings, measure

    g = torch.Generator().manual_seed(0)
    level = torch.tensor([50] * 4 + [200] * 4, dtype=torch.int16).view(8, 1, 1, 1)
    images = (level + torch.randint(-20, 21, (8, 3, 16, 16), generator=g)).to(torch.uint8)
    inputs = (images.to(torch.int16) + 10).to(torch.uint8)       # no pixel clips: at most 230
    bright = lambda x: np.stack([(x.float().mean((1, 2, 3)) <= 127).numpy(),  # noqa: E731
                                 (x.float().mean((1, 2, 3)) > 127).numpy()], 1).astype(float) * 0.8 + 0.1
    # the labels of the inputs as the product takes them (splits.inputs), against predicted 0 0 0 0 1 1 1 1
    labels = np.zeros(8, dtype=int)
    labels[splits.inputs(None, 8, 8)] = [0, 0, 1, 1, 1, 1, 0, 0]
    classes = Classes("builtin", {0: "dark", 1: "bright"}, [1], bright, np.arange(2), labels, None)
    references = References({"target": ReferenceSet(images.flip(0), None)}, classes, images[:2])
    settings = Settings(EvalSettings(kid_subset_size=8, kid_subsets=5), "sdedit", 3,
                        {"run_id": "r", "task": "sdedit", "t0": 0.5}, clipped=(0.25, 8))
    found = measure(images, Pairs(inputs, "source"), references, _Stub(), settings)

    rows = {(r["metric"], r["subset"]): r for r in found.rows}
    assert found.rows[0]["metric"] == "clipped_share" and found.rows[0]["value"] == 0.25
    assert all(r["run_id"] == "r" and r["t0"] == 0.5 for r in found.rows)
    assert rows[("psnr", "all")]["value"] == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert rows[("lpips", "all")]["reference"] == "source" and rows[("lpips", "all")]["extractor"] == "lpips-vgg"
    kept = {s: (rows[("class_preservation", s)]["k"], rows[("class_preservation", s)]["n"])
            for s in ("all", "missing-classes", "present-classes", "class:dark", "class:bright")}
    assert kept == {"all": (4, 8), "missing-classes": (2, 4), "present-classes": (2, 4), "class:dark": (2, 4),
                    "class:bright": (2, 4)}
    assert {("fid", "all"), ("kid", "all")} <= set(rows) and rows[("fid", "all")]["extractor"] == "builtin"
    assert found.items["features_builtin"].shape == (8, 3) and list(found.items["labels"]) == [0, 0, 1, 1, 1, 1, 0, 0]
    assert (found.hits, found.lookups) == (0, 2)                   # the images, and the target set
    again = measure(images, Pairs(inputs, "source"), references, _Stub(), settings)
    assert (again.hits, again.lookups) == (2, 2)                   # both from the feature cache now

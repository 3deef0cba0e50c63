"""The class instrument of a folder pair with labels: networks cross-fitted over the labelled
reference score the real held-out images they never trained on, and the corrected
missing-class share of the held-out rows matches the share the labels give, within its
interval (docs/evaluation-classes.md)."""
import numpy as np
import pytest
from PIL import Image

from factories import class_image

CLASSES = 3
REFERENCE = (80, 80, 50)        # reference images per class: class 2, which the target lacks, ~24 %


def _pair(root):
    rng = np.random.default_rng(0)
    lines = ["file,label"]
    for folder, painted, counts in (("target", True, (12, 12, 0)), ("reference", True, REFERENCE),
                                    ("source", False, (15, 15, 15))):
        (root / folder).mkdir(parents=True)
        for c in range(CLASSES):
            for i in range(counts[c]):
                name = f"{folder}/c{c}_{i:02d}.png"
                Image.fromarray(class_image(c, painted, rng, noise=0.7)).save(root / name)
                lines.append(f"{name},{c}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def instrument(tmp_path_factory):
    from runs.spec import EvalSpec
    from jobs.evaluation import instruments
    from models import evaluation_nets

    root = _pair(tmp_path_factory.mktemp("labelled"))
    spec = EvalSpec(stage="evaluate", role="source", model="run:source",
                    source_data={"kind": "folder", "path": str(root / "source"), "resolution": 16},
                    target_data={"kind": "folder", "path": str(root / "target"), "resolution": 16,
                                 "reference": str(root / "reference"), "labels": str(root / "labels.csv")},
                    settings={"num_samples": 24, "num_translations": 12, "tasks": ["unconditional"]})
    recipe = dict(evaluation_nets.LABELLED_RECIPE)
    evaluation_nets.LABELLED_RECIPE.update(min_steps=60)        # seconds, not a minute
    try:
        classes = instruments.classes_of(spec, instruments.Extractors(), lambda: None)
        references = instruments.references_of(spec, classes)
    finally:
        evaluation_nets.LABELLED_RECIPE.clear()
        evaluation_nets.LABELLED_RECIPE.update(recipe)
    return spec, classes, references


def test_held_out_images_are_scored_by_a_network_that_never_saw_them(instrument):
    from jobs.evaluation.instruments import calibration_positions, floor_positions, reference_subset
    from jobs.evaluation.measure import calibration_sets
    from models.evaluation_nets import reference_folds

    spec, classes, references = instrument
    total = sum(REFERENCE)
    assert classes.extractor == "labelled" and classes.missing == [2]
    assert np.array_equal(classes.folds, reference_folds(total, 2))
    # the two folds split the reference about evenly and are unrelated to the floor's parity
    even, odd = floor_positions(total, spec.settings.max_reference)
    assert np.array_equal(calibration_positions(total, spec.settings.max_reference), odd)
    assert 0.3 < classes.folds[even].mean() < 0.7 and 0.3 < classes.folds[odd].mean() < 0.7
    sets = calibration_sets(spec, references, 40)
    floor = sets["held-out-half"]
    assert np.array_equal(floor.networks, classes.folds[even[reference_subset(len(even), 40)]])
    # a seeded choice of 40, not the first 40 of a listing grouped by class: every class is in
    assert set(floor.labels) == set(sets["source"].labels) == set(range(len(REFERENCE)))
    assert len(references.calls.labels) == len(odd)
    assert "2 networks cross-fitted over the 210 labelled reference images" in classes.description


def test_the_corrected_share_of_the_held_out_rows_matches_the_labels(instrument):
    from jobs.evaluation.measure import Rows, calibration_sets, class_share, classifier_calibration

    spec, classes, references = instrument
    floor = calibration_sets(spec, references, 105)["held-out-half"]
    out = Rows({})
    class_share(out, classes, floor.images, 0.0, {}, calls=references.calls,
                networks=floor.networks, labels=floor.labels)
    raw, corrected = out.rows
    truth = np.isin(floor.labels, [2]).mean()
    assert corrected["metric"] == "missing_class_share_corrected" and corrected["n"] == len(floor.labels)
    assert corrected["ci_low"] <= truth <= corrected["ci_high"], (raw, corrected, truth)
    assert corrected["ci_high"] - corrected["ci_low"] < 0.6
    assert f"the labels say {int(np.isin(floor.labels, [2]).sum())}/{len(floor.labels)}" in corrected["note"]
    # the confusion rows: per-class recall, tpr and fpr as counts on the calibration images
    rates = Rows({})
    classifier_calibration(rates, classes, references.calls, 0.0, "test")
    found = {(r["metric"], r["subset"]): r for r in rates.rows}
    assert {("class_recall", f"class:{c}") for c in range(3)} | {("missing_tpr", "missing-classes"),
                                                                  ("missing_fpr", "present-classes")} <= set(found)
    tpr = found[("missing_tpr", "missing-classes")]
    fpr = found[("missing_fpr", "present-classes")]
    assert tpr["n"] == np.isin(references.calls.labels, [2]).sum() and tpr["value"] > fpr["value"] + 0.2


def test_source_style_calibration_takes_labelled_source_images_the_networks_never_saw(instrument, monkeypatch):
    """The fold networks trained on every labelled source image (45 < max_source): no
    source-style calibration, the target style's rates stand in. With a smaller choice, the
    source-style images are among the other ones only."""
    from jobs.evaluation import instruments
    from models import evaluation_nets
    from models.data.labels import folder_labels

    spec, classes, references = instrument
    assert references.source_calls is None and references.calls_for("source") is references.calls
    monkeypatch.setitem(evaluation_nets.LABELLED_RECIPE, "max_source", 30)
    calls = instruments.source_style_calls(spec, classes)
    target = spec.target_data
    labels = folder_labels(target.labels, target.path, target.reference, spec.source_data.path).source
    trained = evaluation_nets.labelled_source_choice(labels, 30)
    assert len(trained) == 30 and calls.style == "source" and len(calls.positions) > 0
    assert not set(calls.positions) & set(trained)
    assert np.array_equal(calls.labels, labels[calls.positions])
    assert "15 labelled source images outside" in calls.described


def test_the_real_source_rows_take_source_images_no_part_of_the_instrument_saw(instrument, monkeypatch):
    """On a labelled folder pair the real source rows check the source-style correction: their
    images are labelled source images that neither the fold networks trained on nor the
    source-style calibration used. Where too few are left, all source images, said so."""
    import dataclasses

    from jobs.evaluation import instruments
    from jobs.evaluation.measure import calibration_sets
    from models import evaluation_nets
    from models.data import open_dataset
    from models.data.labels import folder_labels

    spec, classes, references = instrument
    target = spec.target_data
    labels = folder_labels(target.labels, target.path, target.reference, spec.source_data.path).source
    source = open_dataset(spec.source_data.model_dump())
    as_bytes = lambda images: {bytes(im.numpy()) for im in images}      # noqa: E731
    # every labelled source image trained the networks (45 < max_source): nothing is left
    note = calibration_sets(spec, references, 5)["source"].note
    assert "only 0 source images left that the classifier never trained on (not 5)" in note
    monkeypatch.setitem(evaluation_nets.LABELLED_RECIPE, "max_source", 30)
    calls = instruments.source_style_calls(spec, classes)
    references = dataclasses.replace(references, source_calls=calls)
    rows = calibration_sets(spec, references, 5)["source"]
    trained = evaluation_nets.labelled_source_choice(labels, 30)
    seen = as_bytes(instruments.stack(source, np.concatenate([trained, calls.positions])))
    assert len(rows.images) == 5 and not as_bytes(rows.images) & seen
    assert as_bytes(rows.images) <= as_bytes(instruments.stack(source, np.flatnonzero(labels >= 0)))
    assert "never trained on, none of the source-style calibration images" in rows.note
    # 15 left, 7 or 8 of them (the even positions) for the rows: 20 asked is too many
    assert "left that the classifier never trained on (not 20)" in calibration_sets(spec, references, 20)["source"].note


def test_a_folder_s_diversity_centres_are_a_seeded_choice_across_its_classes(instrument):
    """The target folder lists its images sorted by path (c0_*, then c1_*): its first 10 are
    all of class 0; the centres are a seeded choice, so both of its classes are among them.
    The built-in target set is a seeded draw already: its first 10."""
    from jobs.evaluation.instruments import diversity_centres
    from models.data.labels import folder_labels

    spec, _, references = instrument
    target = spec.target_data
    labels = folder_labels(target.labels, target.path, target.reference, spec.source_data.path).target
    assert set(labels[:10]) == {0}
    positions, chosen = diversity_centres("folder", len(labels))
    assert len(positions) == 10 == len(set(positions)) and chosen == "a seeded choice of"
    assert set(labels[positions]) == {0, 1}
    assert references.centres_phrase == chosen and len(references.centres) == 10
    assert np.array_equal(diversity_centres("builtin-target", 500)[0], np.arange(10))
    assert np.array_equal(diversity_centres("folder", 7)[0], np.arange(7))

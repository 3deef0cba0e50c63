"""Evaluation splits (`evaluation.splits`): both splits' products are planned, and the two
splits are disjoint in what they measure: noise (other streams of the same seed), translation
inputs (the next N of a seeded permutation of the source test images against its first N) and the held-out reference (two halves of
a seeded permutation; the calibration's floor within the split's own half)."""
import json

import numpy as np
import pytest

from factories import Recorder, eval_spec
from runs.errors import UserError
from runs.spec import EvalSpec
from runs.store import RunFolder
from jobs.evaluation import splits
from jobs.evaluation.manifest import ProductEntry, read_manifest, write_manifest
from jobs.evaluation.plan import Batch, Product, calibration_jobs, check_inputs, plan_batches, plan_products

SPLITS = eval_spec(tasks=["unconditional", "sdedit"], num_translations=8, batch_size=4, num_samples=8,
                   splits=True)


def test_both_splits_products_are_planned_with_their_own_names_and_files(tmp_path):
    spec = EvalSpec.model_validate(SPLITS)
    products = plan_products(spec, [(60, "model")])
    assert [(p.task, p.split) for p in products] == [("unconditional", "validation"), ("unconditional", "test"),
                                                     ("sdedit", "validation"), ("sdedit", "test")]
    assert [p.key for p in products] == ["unconditional_validation_s60", "unconditional_test_s60",
                                         "sdedit_t0.5_validation_s60", "sdedit_t0.5_test_s60"]
    assert len(plan_batches(spec, products)) == 8
    # the calibration is measured once per split (against the split's reference)
    assert [job.split for job in calibration_jobs(spec, tmp_path)] == ["validation", "test"]
    # without splits: one product per task, named as before the setting existed
    plain = EvalSpec.model_validate(eval_spec(tasks=["unconditional", "sdedit"]))
    assert [p.key for p in plan_products(plain, [(60, "model")])] == ["unconditional_s60", "sdedit_t0.5_s60"]
    assert [job.split for job in calibration_jobs(plain, tmp_path)] == [None]


def test_the_splits_inputs_noise_and_reference_halves_are_disjoint():
    spec = EvalSpec.model_validate(SPLITS)
    validation, test = (Product("sdedit", 0.5, None, "m", None, s).inputs(spec, 100) for s in ("validation", "test"))
    assert len(set(test)) == len(set(validation)) == 8 and not set(test) & set(validation)
    assert set(test) | set(validation) <= set(range(100))
    assert list(Product("sdedit", 0.5, None, "m").inputs(spec, 100)) == list(test)       # no split: as test
    assert list(Product("sdedit", 0.5, None, "m", None, "test").inputs(spec, 100)) == list(test)   # every call
    # a seeded draw, not the first images: a folder's sorted listing groups its classes
    assert sorted(test) != list(range(8))
    # the noise of image i: the test split draws the no-split stream, validation its own
    from models.seeding import derived_seed
    for name in ("unconditional", "translation", "ancestral"):
        assert splits.stream(name, "test") == splits.stream(name, None) == name
        seeds = {s: {derived_seed(0, splits.stream(name, s), i) for i in range(100)} for s in splits_of()}
        assert len(seeds["validation"]) == len(seeds["test"]) == 100 and not seeds["validation"] & seeds["test"]
    # the held-out domain: two halves, together all of it, the same for every call
    halves = {s: splits.reference_half(101, s) for s in splits_of()}
    assert not set(halves["validation"]) & set(halves["test"])
    assert sorted({*halves["validation"], *halves["test"]}) == list(range(101))
    assert list(splits.reference_half(101, None)) == list(range(101))
    assert np.array_equal(splits.reference_half(101, "test"), halves["test"])
    assert halves["validation"][:10].tolist() != list(range(10))          # a permutation, not a block


def splits_of():
    return ("validation", "test")


def test_a_batch_samples_its_splits_noise_and_inputs(tmp_path):
    """The worker outside Ray, a network predicting eps = 0 (DDIM then only rescales): its
    first call sees the split's noise; the translation inputs it reads are the split's."""
    import torch

    from jobs.evaluation.worker import EvalWorker
    from models.sampling import indexed_noise

    class Sources(list):
        read: list

        def __getitem__(self, i):
            self.read.append(i)
            return super().__getitem__(i)

    spec = EvalSpec.model_validate(SPLITS)
    worker = EvalWorker(spec.model_dump_json(), str(tmp_path), threads=1)
    sources = Sources(torch.full((3, 16, 16), i, dtype=torch.uint8) for i in range(16))
    worker._sources = sources
    seen = {}
    for split in splits_of():
        for task in ("unconditional", "sdedit"):
            net = Recorder()
            worker._models[f"{task}-{split}"] = net
            sources.read = []
            worker.sample(Batch(Product(task, 0.5 if task == "sdedit" else None, None, f"{task}-{split}", None,
                                        split), 0, 4))
            seen[task, split] = (net.calls[0][0], list(sources.read))
    for split in splits_of():
        expected = indexed_noise(0, splits.stream("unconditional", split), range(4), (3, 16, 16))
        assert torch.equal(seen["unconditional", split][0], expected)
    assert not torch.equal(seen["unconditional", "validation"][0], seen["unconditional", "test"][0])
    for split in splits_of():     # the split's inputs, in their order: the first 4 of its n
        assert seen["sdedit", split][1] == list(splits.inputs(split, spec.settings.num_translations, 16)[:4])
    assert not set(seen["sdedit", "test"][1]) & set(seen["sdedit", "validation"][1])


class Indexed:
    """A data set whose image i holds the value i (mod 256) and whose label is i: the chosen
    indices can be read back from what a function picked."""

    def __init__(self, n):
        import torch
        self.n, self.labels = n, np.arange(n)
        self._torch = torch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self._torch.full((3, 2, 2), int(i) % 256, dtype=self._torch.uint8)


def test_reference_sets_and_the_noise_floor_lie_in_the_splits_half(monkeypatch):
    from jobs.evaluation import instruments, measure

    heldout, target = Indexed(400), Indexed(50)
    for module in (instruments, measure):
        monkeypatch.setattr(module, "open_dataset", lambda spec, split=None: heldout if split == "heldout" else target)
    spec = EvalSpec.model_validate(eval_spec(splits=True, max_reference=60))
    used = {}
    for split in splits_of():
        refs = instruments.references_of(spec, None, split)
        full = set(refs.sets["full-domain"].labels.tolist())
        half = set(splits.reference_half(400, split).tolist())
        assert len(full) == 60 and full <= half
        assert refs.sets["target"].labels.tolist() == list(range(50))        # the target set: shared
        sets = measure.calibration_sets(spec, refs, 20, split)
        floor_images, floor_labels, floor_refs, note, _ = sets["held-out-half"]
        floor_ref = set(floor_refs["full-domain"].labels.tolist())
        assert set(floor_labels.tolist()) <= half and floor_ref <= half and not set(floor_labels) & floor_ref
        assert len(floor_labels) == 20
        used[split] = half
    assert not used["validation"] & used["test"]
    # no split: the whole domain, the floor by parity as before
    plain = EvalSpec.model_validate(eval_spec(max_reference=60))
    sets = measure.calibration_sets(plain, instruments.references_of(plain, None), 20)
    floor = sets["held-out-half"][1]
    # 20 of the even positions, drawn from all of them (not the first 20)
    assert len(set(floor.tolist())) == 20 and (floor % 2 == 0).all() and floor.max() > 200


def test_rows_against_a_shared_target_say_so():
    from jobs.evaluation.measure import Rows

    rows = Rows({"split": "validation"})
    rows.add("fid", 1.0, "target", note="bootstrap")
    rows.add("fid", 1.0, "full-domain")
    rows.add("psnr", 1.0, "source", note="bootstrap")
    assert "target set is the reference of both splits" in rows.rows[0]["note"]
    assert rows.rows[0]["note"].startswith("bootstrap; ")
    assert "half of the held-out domain" in rows.rows[1]["note"] and rows.rows[2]["note"] == "bootstrap"
    plain = Rows({})
    plain.add("fid", 1.0, "target")
    assert plain.rows[0]["note"] is None


def test_too_few_source_images_for_two_splits_is_one_line_naming_the_setting(tmp_path):
    from PIL import Image

    for i in range(5):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
    folder = {"kind": "folder", "path": str(tmp_path), "resolution": 8}
    base = eval_spec(tasks=["sdedit"], num_translations=3, splits=True)
    spec = EvalSpec.model_validate({**base, "source_data": folder})
    with pytest.raises(UserError, match=r"evaluation.num_translations: 3 per split needs 6 .* has 5$"):
        check_inputs(spec)
    check_inputs(EvalSpec.model_validate({**base, "source_data": folder,
                                          "settings": {**base["settings"], "num_translations": 2}}))
    check_inputs(EvalSpec.model_validate({**base, "source_data": folder,
                                          "settings": {**base["settings"], "splits": False}}))
    # without splits too: more translations than source images was an IndexError in an actor
    with pytest.raises(UserError, match=r"evaluation.num_translations: 6 translations need as many .* has 5$"):
        check_inputs(EvalSpec.model_validate({**base, "source_data": folder, "settings": {
            **base["settings"], "splits": False, "num_translations": 6}}))


def test_manifest_entries_carry_their_split_and_items_pair_within_it(tmp_path):
    from jobs.cells import product_paths
    from jobs.paired import final_items

    run = RunFolder(tmp_path / "ev")
    entries = [ProductEntry(f"unconditional_{s}", "unconditional", None, 60, 0, f"u_{s}.npy", f"u_{s}.npz", s)
               for s in splits_of()]
    write_manifest(run, entries)
    assert read_manifest(run) == entries
    (run.path / "items").mkdir()
    for s in splits_of():
        (run.path / "items" / f"u_{s}.npz").write_bytes(b"")
    for s in splits_of():
        assert final_items(run.path, s).products == {("unconditional", None): {0: run.path / "items" / f"u_{s}.npz"}}
        assert product_paths(run.path, "unconditional", None, 60, s) == {0: run.path / "items" / f"u_{s}.npz"}
    assert final_items(run.path).products == {}                  # no entry without a split
    # an older manifest (no split key) reads as no split, and a manifest without splits is
    # written without the key
    old = RunFolder(tmp_path / "old")
    write_manifest(old, [ProductEntry("unconditional", "unconditional", None, 60, 0, "u.npy", "u.npz")])
    assert "split" not in json.loads(old.manifest_path.read_text())["products"][0]
    assert read_manifest(old)[0].split is None

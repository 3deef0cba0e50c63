"""The manifest of an evaluation's products: the final checkpoint of each product, and an
evaluation folder made before manifests existed (a one-line error naming it; the store asks
for it again)."""
import pytest

from runs.errors import UserError
from runs.store import RunFolder
from jobs.evaluation.manifest import ProductEntry, final, read_manifest, write_manifest
from jobs.paired import final_items


def entry(name, task, t0, step, seed=0):
    key = name + (f"_s{step}" if step is not None else "")
    return ProductEntry(name, task, t0, step, seed, f"{key}.npy", f"{key}.npz")


def test_the_final_checkpoint_of_each_product_is_the_largest_step(tmp_path):
    entries = [entry("sdedit_t0.3", "sdedit", 0.3, 1000), entry("sdedit_t0.3", "sdedit", 0.3, 250),
               entry("sdedit_t0.5", "sdedit", 0.5, 250), entry("unconditional", "unconditional", None, None)]
    run = RunFolder(tmp_path / "ev")
    write_manifest(run, entries)
    assert read_manifest(run) == entries                     # t0, None steps and seeds come back as written
    chosen = final(read_manifest(run))
    assert {name: e.ckpt_step for name, e in chosen.items()} == {
        "sdedit_t0.3": 1000, "sdedit_t0.5": 250, "unconditional": None}


def test_an_evaluation_without_a_manifest_is_named_and_evaluated_again(tmp_path):
    old = RunFolder(tmp_path / "ev-old")
    (old.path / "items").mkdir(parents=True)
    (old.path / "items" / "sdedit_t0.5_s100.npz").write_bytes(b"")
    old.metrics_path.write_bytes(b"")
    with pytest.raises(UserError, match=f"{old.path}: no products/manifest.json.*submit the grid again"):
        final_items(old.path)
    # the next submission sees the evaluation as unfinished and runs it again
    assert old.missing_products("evaluate") == ["products/manifest.json"]
    write_manifest(old, [entry("sdedit_t0.5", "sdedit", 0.5, 100)])
    assert old.missing_products("evaluate") == []


def test_a_damaged_manifest_is_named(tmp_path):
    run = RunFolder(tmp_path / "ev")
    run.manifest_path.parent.mkdir(parents=True)
    run.manifest_path.write_text('{"version": 1, "products": [{"task": "sdedit"}]}')
    with pytest.raises(UserError, match="manifest.json: not a manifest of products"):
        read_manifest(run)

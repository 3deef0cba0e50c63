"""Folder datasets with a `reference` folder and a labels CSV: checked at submit (one line,
exit 2), and measured as fully as the built-in pair (full-domain FID/KID and P/R,
calibration rows, class metrics from networks cross-fitted over the labelled reference,
calibrated on held-out reference images, with the corrected missing-class share)."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from factories import class_image, run_module, write_spec
from runs.errors import UserError
from runs.store import Store
from harness.submit import submit

CLASSES = 3


def make_folder_pair(root, target_classes=(0, 1), per_class=(4, 6, 6)):
    """source/, target/, reference/ and labels.csv: the target set lacks class 2.
    per_class: images per class in target, reference, source."""
    rng = np.random.default_rng(0)
    lines = ["file,label"]
    for folder, painted, classes, count in (("target", True, target_classes, per_class[0]),
                                            ("reference", True, range(CLASSES), per_class[1]),
                                            ("source", False, range(CLASSES), per_class[2])):
        (root / folder).mkdir(parents=True)
        for c in classes:
            for i in range(count):
                name = f"{folder}/c{c}_{i}.png"
                Image.fromarray(class_image(c, painted, rng, noise=0.1, third="square")).save(root / name)
                lines.append(f"{name},{c}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------- at submit
def grid_text(root) -> str:
    return f"""name: folders
datasets:
  - name: toy
    source:
      kind: folder
      path: {root / 'source'}
      resolution: 16
      pretrain: {{steps: 10, network: tiny}}
    targets:
      - {{name: red, kind: folder, path: {root / 'target'}, reference: {root / 'reference'},
         labels: {root / 'labels.csv'}}}
methods: [naive]
evaluation: {{extractors: [inception]}}
"""


@pytest.fixture
def refuse_writes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the grid was accepted and would have been written")
    monkeypatch.setattr(Store, "write_grid", refuse)


BAD_LABELS = {
    "missing column": (lambda text: text.replace("file,label", "file,class"), "no `label` column"),
    "unknown file": (lambda text: text + "elsewhere/x.png,1\n", "elsewhere/x.png: not an image of the target"),
    "not an integer": (lambda text: text.replace("target/c0_0.png,0", "target/c0_0.png,zero"),
                       "line 2: label 'zero' is not a whole number"),
    "class without reference images": (
        lambda text: text.replace("source/c2_0.png,2", "source/c2_0.png,7"), "class 7 has no reference images"),
}


@pytest.mark.parametrize("case", BAD_LABELS, ids=list(BAD_LABELS))
def test_a_bad_labels_file_is_one_line_at_submit(case, tmp_path, refuse_writes):
    root = make_folder_pair(tmp_path / "data")
    edit, message = BAD_LABELS[case]
    (root / "labels.csv").write_text(edit((root / "labels.csv").read_text()))
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text(root))
    with pytest.raises(UserError) as err:
        submit(grid, results=tmp_path / "results", executor="local")
    text = str(err.value)
    assert "\n" not in text and "datasets[0].targets[0].labels" in text and message in text, text
    assert not (tmp_path / "results" / "folders").exists()


def test_a_bad_labels_file_exits_2_from_the_command_line(tmp_path):
    root = make_folder_pair(tmp_path / "data")
    (root / "labels.csv").write_text((root / "labels.csv").read_text() + "target/nope.png,0\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text(root))
    proc = run_module("harness.submit", str(grid), "--results", str(tmp_path / "results"), "--executor", "local")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "target/nope.png" in proc.stderr, proc.stderr


def test_labels_need_a_reference_and_give_the_missing_classes(tmp_path):
    from runs.config import load_grid
    from models.data.labels import folder_labels

    root = make_folder_pair(tmp_path / "data")
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text(root).replace(f"reference: {root / 'reference'},", ""))
    with pytest.raises(UserError, match=r"targets\[0\]\.labels: labels need a `reference` folder"):
        load_grid(grid)
    labels = folder_labels(root / "labels.csv", root / "target", root / "reference", root / "source")
    assert labels.missing == [2] and labels.classes == [0, 1, 2]
    assert sorted(set(labels.target.tolist())) == [0, 1] and len(labels.reference) == 18


# ---------------------------------------------------------------- the evaluation
@pytest.mark.slow
def test_a_folder_pair_with_labels_is_measured_like_the_builtin_pair(tmp_path):
    """~130 s on a cold quiet 2-core machine (9 min under a load of 10): Ray, Inception
    features of every set and the labelled classifier's training, because the labels must
    reach every measurement that the built-in pair has."""
    import torch

    from runs.spec import EvalSpec
    from models.networks import build_unet, save_unet

    root = make_folder_pair(tmp_path / "data", per_class=(4, 8, 6))
    torch.manual_seed(0)
    save_unet(build_unet("tiny", 16), tmp_path / "model")
    target = {"kind": "folder", "path": str(root / "target"), "resolution": 16,
              "reference": str(root / "reference"), "labels": str(root / "labels.csv")}
    spec = EvalSpec(stage="evaluate", role="source", model=str(tmp_path / "model"),
                    source_data={"kind": "folder", "path": str(root / "source"), "resolution": 16},
                    target_data=target,
                    # all 18 source images are translated: the sorted listing groups the classes
                    settings={"num_samples": 12, "num_translations": 18, "batch_size": 12, "ddim_steps": 4,
                              "tasks": ["unconditional", "sdedit"], "extractors": ["inception"],
                              "kid_subset_size": 8, "kid_subsets": 5, "max_reference": 24,
                              "lpips_net": "alex"})      # VGG is measured in test_evaluate.py
    run_dir = write_spec(tmp_path / "_runs" / "eval", spec.model_dump(mode="json"))
    run_module("jobs.evaluate", str(run_dir), check=True)
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    models, real = rows[rows.stage == "evaluate"], rows[rows.stage == "calibration"]
    # the full domain is measured: FID/KID and P/R/D/C, and recall/coverage of the missing class
    full = models[models.reference == "full-domain"]
    assert {"fid", "kid", "precision", "recall", "density", "coverage"} <= set(full.metric)
    assert set(full[full.subset == "missing-classes"].metric) == {"recall", "coverage"}
    # class metrics from the harness's own classifier of the labelled data
    share = models[models.metric == "missing_class_share"]
    assert len(share) == 1 and (share.extractor == "labelled").all() and share.n.iloc[0] == 12
    corrected = models[models.metric == "missing_class_share_corrected"]
    assert len(corrected) == 1 and corrected.ci_low.iloc[0] <= corrected.ci_high.iloc[0]
    assert "tpr" in corrected.note.iloc[0] and "on 12 held-out real images" in corrected.note.iloc[0]
    # the networks trained on every labelled source image: the source model is corrected with
    # the target style's rates, and its note says so
    assert "no held-out labelled images in the source's style" in corrected.note.iloc[0]
    kept = models[models.metric == "class_preservation"]
    assert {"all", "missing-classes", "present-classes", "class:2"} <= set(kept.subset)
    assert (kept.extractor == "labelled").all()
    # calibration rows: the three real sets, at each task's sample count
    assert set(real.weighting) == {"target-train", "source", "held-out-half", "classifier-calibration"}
    confusion = real[real.weighting == "classifier-calibration"]
    assert {"class_recall", "missing_tpr", "missing_fpr"} == set(confusion.metric)
    assert confusion.note.str.contains("2 networks cross-fitted over the 24 labelled reference images").all()
    floor = real[(real.weighting == "held-out-half") & (real.metric == "missing_class_share_corrected")]
    assert floor.note.str.contains("the labels say").all()
    assert not floor.note.str.contains("stand in").any()
    assert set(real.task) == {"unconditional", "translation"}
    source_fid = real[(real.metric == "fid") & (real.weighting == "source")]
    assert set(zip(source_fid.task, source_fid.n)) == {("unconditional", 12), ("translation", 18)}
    short = real[(real.metric == "fid") & (real.weighting == "target-train")]
    assert set(short.n) == {8} and short.note.str.contains("only 8 images").all()
    # per-item values beside the metrics, and the reference features for the aggregate
    items = np.load(run_dir / "items" / "sdedit_t0.5.npz")
    assert {"psnr", "ssim", "lpips", "predicted", "labels", "features_inception"} <= set(items.files)
    assert len(items["psnr"]) == 18
    refs = np.load(run_dir / "items" / "references.npz")
    # the full domain: all 24 reference images (max_reference is 24)
    assert list(refs["missing"]) == [2] and refs["features_inception_full-domain"].shape[0] == 24
    assert len(refs["calibration_labels"]) == len(refs["calibration_predicted"]) == 12
    summary = json.loads((run_dir / "eval.json").read_text())
    assert summary["rows"] == len(rows)


def test_reference_and_labels_reach_the_evaluations_but_leave_training_ids_alone(tmp_path):
    from runs.config import load_grid
    from runs.grid import expand

    root = make_folder_pair(tmp_path / "data")
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text(root))
    plain = tmp_path / "plain.yaml"
    plain.write_text(grid_text(root).replace(f"reference: {root / 'reference'},", "")
                     .replace(f"labels: {root / 'labels.csv'}", ""))
    with_labels, without = (expand(load_grid(g), tmp_path) for g in (grid, plain))
    train = lambda plan: {r.run_id for r in plan.runs if r.stage in ("pretrain", "finetune")}  # noqa: E731
    assert train(with_labels) == train(without)
    evaluations = [r.spec for r in with_labels.by_stage("evaluate")]
    assert all(e.target_data.reference == str(root / "reference") and e.target_data.labels == str(root / "labels.csv")
               for e in evaluations)
    assert ({r.run_id for r in with_labels.by_stage("evaluate")}
            .isdisjoint(r.run_id for r in without.by_stage("evaluate")))
    assert ("datasets[0].targets[0].labels", str(root / "labels.csv")) in with_labels.paths

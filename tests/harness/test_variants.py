"""Named variants of a method (`per_method: {sdft/sdft-noaux: {lambda_aux: 0}}`): a unit of
the grid of its own that shares its runs with the method by run id wherever their specs are
the same, and the ablation tables (jobs/ablations.py) that compare it with its method at
matched settings and at each one's selected setting. Bad variants: tests/data/bad-grids/variant-*."""
import io
import json

import pandas as pd
import pytest

from factories import from_a_model_folder, run_module, smoke_grid, write_grid
from harness.executors import Progress
from runs.budget import candidates
from runs.config import load_grid
from runs.grid import expand

LAMBDAS = [0.1, 1.0]


def plan(tmp_path, **per_method):
    grid = smoke_grid(methods=["naive", "sdft"], per_method={"sdft/sdft": {"lambda_distill": LAMBDAS}, **per_method})
    return expand(load_grid(write_grid(tmp_path, grid, f"grid{len(list(tmp_path.iterdir()))}.yaml")))


def test_a_variant_differs_in_its_setting_only_and_is_a_unit_of_its_own(tmp_path):
    base = plan(tmp_path)
    varied = plan(tmp_path, **{"sdft/sdft-noaux": {"lambda_aux": 0.0}})
    # the method's runs (and the source's, naive's, the pretraining) keep their ids
    assert {r.run_id for r in base.runs if r.stage != "aggregate"} < {r.run_id for r in varied.runs}
    own = [r for r in varied.by_stage("finetune") if r.variants == ("sdft-noaux",)]
    assert len(own) == 2 and {r.spec.distill.lambda_aux for r in own} == {0.0}
    assert {r.spec.distill.lambda_distill for r in own} == set(LAMBDAS)
    for run in own:            # the same spec as the method's at that lambda but for lambda_aux
        twin = next(r for r in base.by_stage("finetune") if r.method == "sdft"
                    and r.spec.distill.lambda_distill == run.spec.distill.lambda_distill)
        tied = twin.spec.distill.lambda_distill
        assert run.spec.model_copy(update={"distill": run.spec.distill.model_copy(update={"lambda_aux": tied})}) \
            == twin.spec
    assert candidates(varied) == {"naive": 1, "sdft/sdft": 2, "sdft/sdft-noaux": 2}
    members = varied.by_stage("aggregate")[0].spec.variants
    assert sorted(members.values()) == [("sdft-noaux",)] * 2
    # without variants nothing about the aggregate changes (its id included)
    assert base.by_stage("aggregate")[0].spec.variants == {}
    assert "variants" not in json.dumps(base.by_stage("aggregate")[0].spec.model_dump(mode="json",
                                                                                     exclude_defaults=True))


def test_the_local_progress_line_names_the_variant(tmp_path):
    varied = plan(tmp_path, **{"sdft/sdft-noaux": {"lambda_aux": 0.0}})
    lines = io.StringIO()
    progress = Progress(len(varied.runs), lines)
    for stage in ("finetune", "evaluate"):
        for run in varied.by_stage(stage):
            if run.method == "sdft":
                progress.starting(run, [stage])
    named = [line.split()[2] for line in lines.getvalue().splitlines()]
    assert named == ["sdft/sdft", "sdft/sdft", "sdft/sdft-noaux", "sdft/sdft-noaux"] * 2


def test_a_candidate_a_variant_shares_with_its_method_is_one_run_of_both(tmp_path):
    varied = plan(tmp_path, **{"sdft/sdft-fast": {"lr": [1.0e-3, 3.0e-3]}})    # the grid's lr is 1e-3
    finetunes = varied.by_stage("finetune")
    shared = [r for r in finetunes if r.variants == ("", "sdft-fast")]
    assert len(shared) == 2 and {r.spec.lr for r in shared} == {1.0e-3}
    assert len([r for r in finetunes if r.variants == ("sdft-fast",)]) == 2
    assert len({r.run_id for r in finetunes}) == len(finetunes) == 1 + 2 + 2      # naive, sdft, the new lr
    # the shared runs' evaluations give their rows to both units in the aggregate
    evaluations = {r.depends_on[0]: r.run_id for r in varied.by_stage("evaluate") if r.method == "sdft"}
    members = varied.by_stage("aggregate")[0].spec.variants
    assert all(members[evaluations[r.run_id]] == ("", "sdft-fast") for r in shared)
    assert candidates(varied)["sdft/sdft-fast"] == 4


def test_a_variant_of_a_method_without_weightings_is_named_after_it(tmp_path):
    varied = plan(tmp_path, **{"naive-slow": {"lr": 1.0e-4}})
    assert candidates(varied) == {"naive": 1, "naive-slow": 1, "sdft/sdft": 2}
    slow = [r for r in varied.by_stage("finetune") if r.variants == ("naive-slow",)]
    assert [r.spec.lr for r in slow] == [1.0e-4]


@pytest.mark.slow
def test_a_grid_with_a_variant_runs_end_to_end_with_its_ablation_tables(tmp_path, ray_env):
    """4 fine-tunes of 4 steps from a saved source model (sdft and sdft-noaux, 2 training
    seeds), 5 evaluations with splits and a checkpoint at step 2 (2 candidates each) and the
    aggregate. Slow: 127 s alone on the 2-core machine."""
    results = tmp_path / "results"
    evaluation = {"num_samples": 8, "batch_size": 8, "tasks": ["unconditional"], "ddim_steps": 4,
                  "kid_subset_size": 8, "kid_subsets": 2, "max_reference": 64, "splits": True,
                  "checkpoint_steps": [2], "checkpoint_methods": ["sdft"]}
    grid = write_grid(tmp_path, smoke_grid(name="variants", methods=["sdft"], seeds=[0, 1], finetune__steps=4,
                                           finetune__checkpoint_every=2, evaluation=evaluation,
                                           per_method={"sdft/sdft-noaux": {"lambda_aux": 0.0}},
                                           selection={"baselines": ["sdft/sdft", "sdft/sdft-noaux"]},
                                           **from_a_model_folder(tmp_path)))
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--executor", "local", env=ray_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = results / "variants"
    rows = pd.read_parquet(folder / "metrics.parquet")
    models = rows[rows["stage"] == "evaluate"]
    assert set(models["variant"].dropna()) == {"sdft-noaux"}
    assert set(models.loc[models["variant"].notna(), "p_lambda_aux"]) == {0.0}
    assert set(models.loc[models["variant"].isna() & (models["method"] == "sdft"), "p_lambda_aux"]) == {1.0}
    diffs = pd.read_parquet(folder / "differences.parquet")
    ablation = diffs[diffs["ablation"] == "sdft/sdft-noaux"]
    assert set(ablation["comparison"]) == {"matched", "selected"}
    matched = ablation.loc[ablation["comparison"] == "matched", "model"].unique()
    assert sorted(matched) == ["matched @2 (λa=0 against λa=1)", "matched @4 (λa=0 against λa=1)"]
    assert "training_seed" not in ablation or ablation["training_seed"].isna().all()   # pooled rows only
    fid = ablation[ablation["metric"] == "fid"]       # paired over the 2 training seeds
    assert len(fid) == 3 and fid["seed_runs"].eq(2).all()
    assert fid["seed_interval"].str.contains("paired by training seed").all()
    table = (folder / "tables" / "ablation_sdft-noaux.md").read_text()
    assert "matched @2" in table and "matched @4" in table and "selected: " in table
    assert "seed-level" in (folder / "tables" / "ablation_sdft-noaux_seeds.md").read_text()
    # the variant is a method of its own in the selection and the tables
    selection = (folder / "tables" / "selection.md").read_text()
    assert "sdft/sdft-noaux" in selection and "sdft/sdft @" in selection
    assert "sdft/sdft-noaux: " in (folder / "report.md").read_text()
    # selection.baselines: the differences against each, the first's under the usual names
    assert set(diffs.loc[diffs["ablation"].isna(), "baseline"]) == {"sdft/sdft", "sdft/sdft-noaux"}
    assert "against the selected sdft/sdft " in (folder / "tables" / "differences.md").read_text()
    assert "sdft/sdft-noaux" in (folder / "tables" / "differences_seeds.md").read_text()
    assert "against the selected sdft/sdft-noaux " in (folder / "tables" / "differences_vs_sdft_sdft-noaux.md").read_text()


def test_matched_pairs_equal_lambda_distill_and_selected_pairs_each_ones_choice():
    """The ablation's two comparisons on tidy rows: matched pairs the variant's candidates with
    the method's at the same lambda_distill (lambda_aux, whose values they never share, is the
    variant's own), selected pairs each one's candidate chosen on the validation split."""
    from report.results import tidy
    from report.selection import select, with_variant
    from jobs.ablations import comparisons

    # validation FID: the method is best at lambda 1, the variant at 0.1; the test split reversed
    validation = {(None, 0.1): 3.0, (None, 1.0): 2.0, ("sdft-noaux", 0.1): 2.5, ("sdft-noaux", 1.0): 4.0}
    out = []
    for (variant, lam), value in validation.items():
        for seed in (0, 1):
            for split in ("validation", "test"):
                aux = 0.0 if variant else lam
                out.append(dict(eval_id=f"{variant}{lam}{seed}{split}", method="sdft", weighting="sdft",
                                variant=variant, seed=seed, split=split, ckpt_step=20, task="unconditional",
                                reference="full-domain", extractor="builtin", subset="all", metric="fid",
                                value=value if split == "validation" else 10 - value,
                                p_lambda_distill=lam, p_lambda_aux=aux))
    df = with_variant(tidy(out))
    test = df[df["split"] == "test"]
    base, variant = test[test["variant"].isna()], test[test["variant"].notna()]
    found = comparisons(base, variant, select(df))
    labels = [label for label, _ in found]
    assert labels == [("matched", "matched λd=0.1 (λa=0 against λa=0.1)"),
                      ("matched", "matched λd=1 (λa=0 against λa=1)"),
                      ("selected", "selected: λa=0 λd=0.1 against λa=1 λd=1")]
    for (kind, _), (method_rows, variant_rows) in found:
        assert set(method_rows["split"]) == set(variant_rows["split"]) == {"test"}
        assert set(variant_rows["p_lambda_aux"]) == {0.0} and set(method_rows["variant"].dropna()) == set()
        if kind == "matched":
            assert set(method_rows["p_lambda_distill"]) == set(variant_rows["p_lambda_distill"])
    selected = found[-1][1]
    assert set(selected[0]["p_lambda_distill"]) == {1.0} and set(selected[1]["p_lambda_distill"]) == {0.1}
    # without a selection (no splits) there is no selected comparison
    assert [kind for (kind, _), _ in comparisons(base, variant)] == ["matched", "matched"]

"""The evaluation's plan is pure: products, batches and the measurement's jobs from a spec
and a store folder, with neither Ray nor torch imported."""
import json

import pytest

from factories import eval_spec, finetune_spec, in_fresh_process, write_spec
from runs.spec import EvalSpec, RunSpec
from runs.store import RunFolder
from runs.methods import METHODS
from jobs.evaluation.plan import (Batch, Product, cost_columns, plan_batches, plan_products, product_job, resolve_models,
                                  training_seconds)


def _store(tmp_path, trained: dict) -> tuple:
    """A finished run `source` (30 steps, an EMA snapshot at step 10) and an evaluation folder."""
    store = tmp_path / "_runs"
    run = RunFolder(write_spec(store / "source", {**trained, "steps": 30}))
    run.set_state("done")
    for name in ("model", "model-step00000010"):
        (run.path / name).mkdir()
    return store, RunFolder(write_spec(store / "ev", {}))


SPEC = eval_spec(tasks=["sdedit", "egsde"], t0=[0.3, 0.7], seed=[1, 2], checkpoint_steps=[10],
                 num_translations=40, batch_size=16)


def test_products_are_every_checkpoint_task_t0_and_evaluation_seed(tmp_path):
    store, ev = _store(tmp_path, {"stage": "pretrain"})
    spec = EvalSpec.model_validate(SPEC)
    models, _ = resolve_models(spec, ev.path)
    assert [(step, path.name) for step, path in models] == [(30, "model"), (10, "model-step00000010")]
    products = plan_products(spec, models)
    assert [(p.ckpt_step, p.task, p.t0, p.eval_seed) for p in products] == [
        (step, task, t0, seed) for step in (30, 10) for task in ("sdedit", "egsde") for t0 in (0.3, 0.7)
        for seed in (1, 2)]
    assert products[0] == Product("sdedit", 0.3, 30, str(store / "source" / "model"), 1)
    assert products[0].key == "sdedit_t0.3_e1_s30" and products[-1].key == "egsde_t0.7_e2_s10"
    # 40 translations in batches of 16: 0-16, 16-32, 32-40 for each of the 16 products
    batches = plan_batches(spec, products)
    assert len(batches) == 3 * 16
    assert batches[:3] == [Batch(products[0], 0, 16), Batch(products[0], 16, 32), Batch(products[0], 32, 40)]
    assert len({b.key for b in batches}) == len(batches)


def test_a_products_job_names_its_rows_and_files(tmp_path):
    trained = RunSpec.model_validate(finetune_spec("sdft", distill={"weighting": "min-snr", "lambda_distill": 2.0},
                                                   seed=3)).model_dump(mode="json")
    _, ev = _store(tmp_path, trained)
    spec = EvalSpec.model_validate({**SPEC, "role": "finetuned", "settings": {**SPEC["settings"], "weights": "ema"}})
    models, train_spec = resolve_models(spec, ev.path)
    product = plan_products(spec, models)[-1]
    job = product_job(spec, ev, product, train_spec, ev.path / "products" / f"{product.key}.npy", (0.25, 40))
    assert job.seed == 2 and job.clipped == (0.25, 40) and job.source_samples is None
    assert job.items == str(ev.path / "items" / "egsde_t0.7_e2_s10.npz")
    columns = dict(job.columns)
    assert {k: columns[k] for k in ("run_id", "method", "weighting", "seed", "eval_seed", "ckpt_step", "task",
                                    "t0")} == {"run_id": "source", "method": "sdft", "weighting": "min-snr",
                                               "seed": 3, "eval_seed": 2, "ckpt_step": 10, "task": "egsde",
                                               "t0": 0.7}
    # every declared hyper-parameter that applies has its column (runs.params)
    assert columns["p_lambda_distill"] == 2.0 and columns["p_min_snr_gamma"] == 5.0 and "p_zero_stage" in columns
    # the training cost up to the checkpoint: no seconds in a run without train.jsonl ...
    cost = METHODS["sdft"].cost_at({"lambda_distill": 2.0})
    assert columns["compute_kimg"] == pytest.approx(10 * trained["batch_size"] * cost / 1000)
    assert columns["train_s"] is None
    # ... and the measured ones at its step where the training logged them
    log = [{"step": 10, "loss": 1.0, "train_s": 4.5}, {"step": 30, "loss": 0.5, "train_s": 12.0}]
    (ev.path.parent / "source" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    seconds = training_seconds(spec, ev.path)
    assert seconds == {10: 4.5, 30: 12.0}
    job = product_job(spec, ev, product, train_spec, ev.path / "products" / f"{product.key}.npy", None, seconds)
    assert job.columns["train_s"] == 4.5


def test_a_models_compute_is_counted_at_its_own_settings():
    """The compute column reads the trained run's settings: sdft without its aux term is
    counted at its own, lower cost per step (runs/methods/sdft.py)."""
    def compute(**distill):
        spec = RunSpec.model_validate(finetune_spec("sdft", distill=distill)).model_dump(mode="json")
        return cost_columns(spec, 10, {})["compute_kimg"]
    sdft = METHODS["sdft"]
    assert compute(lambda_aux=0.0) == pytest.approx(10 * 16 * sdft.cost_at({"lambda_aux": 0.0}) / 1000)
    assert compute(lambda_aux=0.5) == pytest.approx(10 * 16 * sdft.cost_at() / 1000)
    assert compute(lambda_aux=0.0) < compute(lambda_aux=0.5)


def test_planning_imports_neither_ray_nor_torch(tmp_path):
    _store(tmp_path, {"stage": "pretrain"})
    found = in_fresh_process(f"""
        import json, sys
        from pathlib import Path
        from runs.spec import EvalSpec, RunSpec
        from jobs.evaluation.plan import plan_batches, plan_products, resolve_models
        spec = EvalSpec.model_validate(json.loads({json.dumps(json.dumps(SPEC))}))
        models, _ = resolve_models(spec, Path({str(tmp_path / '_runs' / 'ev')!r}))
        n = len(plan_batches(spec, plan_products(spec, models)))
        print(n, sorted(m for m in ("ray", "torch") if m in sys.modules))
    """)
    assert found == "48 []"

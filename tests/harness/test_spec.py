import json

import pytest
from pydantic import ValidationError

from factories import eval_spec, finetune_spec, in_fresh_process, pretrain_spec
from runs.spec import DistillSpec, EvalSpec, RunSpec, identity_json

SOURCE = {"kind": "builtin-source"}
TARGET = {"kind": "builtin-target"}


def finetune(method, **extra) -> RunSpec:
    return RunSpec.model_validate(finetune_spec(method, **extra))


# Golden run ids. A run id names a run's folder, so a changed id orphans every finished run
# of that kind, and an id that stays while the computation changes lets an old run pass for
# a new one. If one of these fails, decide: what is computed changed -> bump RECIPE_VERSION
# (runs/spec.py) and update the ids here; only the code's shape changed -> the ids stay.
GOLDEN_SPECS = {
    "pretrain": (pretrain_spec(steps=60), "88f577261d"),
    "naive": (finetune_spec("naive"), "606d39d63a"),
    "sdft": (finetune_spec("sdft"), "68483eb950"),
    "sdft-min-snr": (finetune_spec("sdft", distill={"weighting": "min-snr"}), "c458aed5ff"),
    "scratch": (finetune_spec("scratch"), "0a1c2e364f"),
    "evaluate": (eval_spec(), "e0072337f1"),   # built-in pair, the source model: builtin_eval 2, source_eval 2
}


def validated(spec: dict):
    return (EvalSpec if spec["stage"] == "evaluate" else RunSpec).model_validate(spec)


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_run_ids_are_pinned(name):
    spec, golden = GOLDEN_SPECS[name]
    run = validated(spec)
    assert run.run_id == golden, f"{name}: run id {run.run_id} of {identity_json(run)}"


def test_run_ids_are_the_same_in_a_fresh_process():
    """Another interpreter (another hash seed: set and dict orders may differ) gives the same ids."""
    here = {name: validated(spec).run_id for name, (spec, _) in GOLDEN_SPECS.items()}
    there = in_fresh_process(f"""
        import json
        from runs.spec import EvalSpec, RunSpec
        specs = json.loads({json.dumps({name: spec for name, (spec, _) in GOLDEN_SPECS.items()})!r})
        print(json.dumps({{name: (EvalSpec if spec["stage"] == "evaluate" else RunSpec).model_validate(spec).run_id
                          for name, spec in specs.items()}}))
    """)
    assert json.loads(there) == here


def test_different_settings_give_different_ids():
    assert finetune("naive").run_id != finetune("naive", lr=3e-5).run_id
    assert finetune("naive").run_id != finetune("sdft").run_id
    assert finetune("sdft").run_id != finetune("sdft", distill={"lambda_distill": 0.5}).run_id


def test_settings_that_do_not_apply_are_absent():
    constant = DistillSpec(weighting="constant", gamma_distill=7, k=2)
    assert constant.gamma_distill is None and constant.k is None
    assert DistillSpec(weighting="constant").model_dump() == constant.model_dump()
    assert DistillSpec(weighting="min-snr").min_snr_gamma == 5.0
    assert DistillSpec().gamma_distill == 3.0 and DistillSpec().min_snr_gamma is None


def test_checkpoint_interval_is_not_identity():
    assert finetune("naive").run_id == finetune("naive", checkpoint_every=7).run_id


def test_inconsistent_specs_are_refused():
    with pytest.raises(ValidationError, match="distill"):
        RunSpec.model_validate({"stage": "finetune", "method": "naive", "init": "x", "data": TARGET,
                                "steps": 1, "distill": {}})
    with pytest.raises(ValidationError, match="scratch"):
        RunSpec.model_validate({"stage": "finetune", "method": "scratch", "init": "x", "data": TARGET,
                                "steps": 1})
    with pytest.raises(ValidationError):
        RunSpec.model_validate({"stage": "pretrain", "data": SOURCE, "network": "tiny", "steps": 0})
    with pytest.raises(ValidationError, match="extra"):
        RunSpec.model_validate({"stage": "pretrain", "data": SOURCE, "network": "tiny", "steps": 1,
                                "learning_rate": 1})


def test_harness_does_not_import_torch():
    import subprocess
    import sys
    import pkgutil

    import harness
    import report
    import runs

    # every module of the three torch-free packages, found rather than listed, so a new one
    # cannot slip past
    modules = [m.name for package in (harness, report, runs)
               for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    assert {"harness.submit", "report.tables", "harness.slurm_job", "runs.params"} <= set(modules)
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sampler_settings_default_to_the_paper_and_stay_out_of_the_run_id():
    from runs.spec import EvalSettings, run_id

    s = EvalSettings()
    assert (s.sampler, s.respacing, s.clip_denoised) == ("ddim", None, True)
    assert run_id(EvalSettings(sampler="ddim", clip_denoised=True)) == run_id(s)
    assert run_id(EvalSettings(clip_denoised=False)) != run_id(s)
    assert EvalSettings(sampler="ancestral", respacing="250").respacing == "250"


def test_sampler_settings_are_checked():
    from runs.spec import EvalSettings

    with pytest.raises(ValidationError, match="respacing"):
        EvalSettings(respacing="ddim 40")
    with pytest.raises(ValidationError, match="sampler"):
        EvalSettings(sampler="plms")
    with pytest.raises(ValidationError, match="not both"):
        EvalSettings(respacing="ddim50", ddim_steps=20)
    # the ancestral sampler leaves ddim_steps to the translations
    assert EvalSettings(sampler="ancestral", respacing="250", ddim_steps=20).ddim_steps == 20


def test_solver_samplers_take_their_own_steps_and_leave_ddim_to_the_translations():
    from runs.spec import EvalSettings, run_id

    s = EvalSettings(sampler="dpm-solver++", sampler_steps=15)
    assert (s.solver_steps, s.ddim_steps) == (15, 40)
    assert EvalSettings(sampler="unipc").solver_steps == 40
    assert run_id(s) != run_id(EvalSettings(sampler="unipc", sampler_steps=15))
    with pytest.raises(ValidationError, match="respacing is for the ddim and ancestral"):
        EvalSettings(sampler="unipc", respacing="ddim20")
    with pytest.raises(ValidationError, match="sampler_steps is for"):
        EvalSettings(sampler_steps=20)


def test_evaluation_precision_is_fp32_unless_asked_and_then_in_the_run_id():
    from factories import eval_spec
    from runs.spec import EvalSettings, EvalSpec

    assert EvalSettings().precision == "fp32"
    plain = EvalSpec.model_validate(eval_spec()).run_id
    assert EvalSpec.model_validate(eval_spec(precision="fp32")).run_id == plain
    assert EvalSpec.model_validate(eval_spec(precision="bf16")).run_id not in (
        plain, EvalSpec.model_validate(eval_spec(precision="fp16")).run_id)
    with pytest.raises(ValidationError, match="precision"):
        EvalSettings(precision="fp8")


def test_compile_changes_no_run_id():
    from factories import eval_spec, finetune_spec
    from runs.spec import EvalSpec, RunSpec

    assert EvalSpec.model_validate(eval_spec(compile=True)).run_id == EvalSpec.model_validate(eval_spec()).run_id
    assert RunSpec.model_validate(finetune_spec(compile=False)).run_id == \
        RunSpec.model_validate(finetune_spec()).run_id


# ---------------------------------------------------------------- pinned run ids
# Three fixed specs and their run ids. A change of any of these values means that runs made
# before it are no longer found (or, worse, that runs computed differently are found as
# done): decide whether runs.spec.RECIPE_VERSION must be bumped (a default that alters
# what is computed), or the identity code was changed by mistake, before updating them.
# The pretrain is the demo's (its id is what the shipped source weights are adopted by).
GOLDEN_PRETRAIN = {"stage": "pretrain", "data": {"kind": "builtin-source", "resolution": 16},
                   "network": "small", "steps": 16000, "batch_size": 64, "lr": 2e-4, "ema_decay": 0.9995,
                   "grad_clip": 1.0, "ema_warmup": True, "checkpoint_every": 1000}
GOLDEN_FINETUNE = {"stage": "finetune", "method": "sdft", "init": "/models/ffhq-p2",
                   "data": {"kind": "folder", "path": "/data/metfaces256", "resolution": 256},
                   "distill": {"weighting": "sdft", "lambda_distill": 0.1, "lambda_aux": 0.1},
                   "steps": 10000, "batch_size": 16, "lr": 2e-5, "dropout": 0.1, "ema_decay": 0.9999,
                   "precision": "fp16", "zero_stage": 2, "flip": True}
GOLDEN_EVALUATION = {"stage": "evaluate", "role": "finetuned", "model": "run:0123456789",
                     "source_samples": "run:abcdefabcd",
                     "source_data": {"kind": "folder", "path": "/data/ffhq256", "resolution": 256},
                     "target_data": {"kind": "folder", "path": "/data/metfaces256", "resolution": 256},
                     "settings": {"num_samples": 10000, "extractors": ["inception"]}}


def test_demo_and_paper_run_ids_are_pinned():
    from runs.spec import EvalSpec

    # (recipe 2 with the run spec's defaults taken from runs.params, flips resolved;
    # evaluation recipe 4: the translation inputs and calibration images a seeded draw; a
    # folder evaluation carries no builtin_eval, so the framing of 16 px images left its id
    # (0e46f76088); folder_eval 1, the diversity centres a seeded choice, moved it)
    assert RunSpec.model_validate(GOLDEN_PRETRAIN).run_id == "1c7160e2d1"
    assert RunSpec.model_validate(GOLDEN_FINETUNE).run_id == "0e686149e7"
    assert EvalSpec.model_validate(GOLDEN_EVALUATION).run_id == "d2bc95c5a1"


def test_egsde_low_pass_factor_enters_the_id_only_when_set():
    from runs.spec import EvalSpec, identity_json

    default = EvalSpec.model_validate(eval_spec())
    assert default.settings.egsde_low_pass_factor is None
    assert "egsde_low_pass_factor" not in identity_json(default)
    ids = {EvalSpec.model_validate(eval_spec(egsde_low_pass_factor=f)).run_id for f in (2, 4, 8)}
    assert len(ids | {default.run_id}) == 4
    for bad in (3, 16, True, "4"):
        with pytest.raises(ValidationError, match="egsde_low_pass_factor"):
            EvalSpec.model_validate(eval_spec(egsde_low_pass_factor=bad))


def test_demo_and_reproduce_share_the_pinned_source_model():
    from factories import ROOT
    from runs.config import load_grid
    from runs.grid import expand

    for name in ("demo", "reproduce", "forgetting", "benchmark"):
        plan = expand(load_grid(ROOT / "grids" / f"{name}.yaml"), ROOT / "grids")
        assert [r.run_id for r in plan.by_stage("pretrain")] == [RunSpec.model_validate(GOLDEN_PRETRAIN).run_id]


def test_the_benchmark_trains_the_forgetting_grids_runs_once_for_both():
    """grids/benchmark.yaml's naive and sdft/sdft are grids/forgetting.yaml's runs (the same
    settings, so the same ids), and it runs every method of the registry with a LoRA variant
    of naive and of sdft, one candidate each, at 3 training seeds."""
    from factories import ROOT
    from runs.config import load_grid
    from runs.grid import expand
    from runs.methods import NAMES

    plans = {name: expand(load_grid(ROOT / "grids" / f"{name}.yaml"), ROOT / "grids")
             for name in ("forgetting", "benchmark")}
    finetunes = {name: plan.by_stage("finetune") for name, plan in plans.items()}
    shared = {r.run_id for r in finetunes["forgetting"]}
    assert len(shared) == 6 and shared <= {r.run_id for r in finetunes["benchmark"]}
    units = {}
    for r in finetunes["benchmark"]:
        for variant in r.variants:
            units.setdefault((r.method, variant), []).append(r.spec)
    assert {m for m, _ in units} == set(NAMES) - {"scratch"}
    assert {v for _, v in units if v} == {"naive-lora", "sdft-lora"}
    assert all(len(specs) == 3 for specs in units.values())            # one candidate x 3 seeds
    lora = units[("naive", "naive-lora")] + units[("sdft", "sdft-lora")]
    assert all(s.adapter is not None for s in lora)
    assert all(s.adapter is None for key, specs in units.items() if not key[1] for s in specs)


def test_evaluated_weights_enter_the_id_only_where_they_apply():
    from runs.spec import EvalSpec, identity_json

    finetuned = EvalSpec.model_validate(GOLDEN_EVALUATION)
    assert finetuned.settings.weights == "raw"                      # the official scripts' choice
    assert '"weights":"raw"' in identity_json(finetuned)             # so no older EMA evaluation matches
    ema = EvalSpec.model_validate({**GOLDEN_EVALUATION, "settings": {**GOLDEN_EVALUATION["settings"],
                                                                      "weights": "ema"}})
    assert ema.run_id != finetuned.run_id
    # the source model is evaluated as the fine-tunes start from it: no setting, one id
    source = {**GOLDEN_EVALUATION, "role": "source", "source_samples": None}
    ids = {EvalSpec.model_validate({**source, "settings": {**source["settings"], "weights": w}}).run_id
           for w in ("ema", "raw", None)}
    assert len(ids) == 1 and "weights" not in identity_json(EvalSpec.model_validate(source))
    # a model folder has one set of weights
    folder = EvalSpec.model_validate({**GOLDEN_EVALUATION, "model": "/models/some-unet"})
    assert folder.settings.weights is None


def test_a_respacing_yaml_reads_as_a_number_is_its_step_count():
    """`respacing: 250` in a grid is a YAML integer; docs/grid.md lists "250" as valid."""
    from runs.spec import EvalSettings

    assert EvalSettings(respacing=250) == EvalSettings(respacing="250")
    with pytest.raises(ValueError, match="respacing"):
        EvalSettings(respacing=True)


def test_two_spellings_of_one_evaluation_are_one_run_id():
    """`seed: [3]` is `seed: 3`, and under DDIM `respacing: ddim25` is `ddim_steps: 25` (the
    same timesteps: models/sampling.py): written either way, an evaluation is not run twice."""
    from runs.spec import EvalSettings, run_id
    from models.sampling import sampler_timesteps

    assert run_id(EvalSettings(seed=[3])) == run_id(EvalSettings(seed=3)) != run_id(EvalSettings(seed=[3, 4]))
    assert EvalSettings(seed=[3]).seeds == [3]
    assert run_id(EvalSettings(respacing="ddim40")) == run_id(EvalSettings())
    spelled = EvalSettings(respacing="ddim25")
    assert spelled == EvalSettings(ddim_steps=25) and run_id(spelled) != run_id(EvalSettings())
    assert sampler_timesteps("ddim25", 40, 1000) == sampler_timesteps(None, spelled.ddim_steps, 1000)
    # the ancestral sampler's respacing is its own chain (ddim_steps stays the translations')
    assert EvalSettings(sampler="ancestral", respacing="ddim25").respacing == "ddim25"
    # a respacing that does not hold is named as written, not as a step count
    with pytest.raises(ValidationError, match="respacing"):
        EvalSettings(respacing="ddim37")
    with pytest.raises(ValidationError, match="not both"):
        EvalSettings(respacing="ddim25", ddim_steps=20)


def test_a_t0_that_runs_no_ddim_step_is_refused_by_the_translations_own_steps():
    """Translations run DDIM: with the ancestral sampler they take ddim_steps, not the respacing."""
    from runs.spec import EvalSettings

    with pytest.raises(ValidationError, match=r"t0 0.01 runs round\(0.01 x 40\) = 0"):
        EvalSettings(tasks=["sdedit"], t0=[0.01])
    with pytest.raises(ValidationError, match=r"round\(0.04 x 10\) = 0"):
        EvalSettings(tasks=["sdedit"], t0=[0.04], respacing="ddim10")
    EvalSettings(tasks=["sdedit"], t0=[0.03], respacing="ddim10", sampler="ancestral")   # 1 of 40 steps
    with pytest.raises(ValidationError, match=r"round\(0.005 x 40\) = 0"):
        EvalSettings(tasks=["sdedit"], t0=[0.005], respacing="250", sampler="ancestral")
    EvalSettings(tasks=["unconditional"], t0=[0.001])          # no translation: t0 unused


@pytest.mark.parametrize("respacing, steps", [(None, 40), ("ddim10", 10), ("ddim7", 7), ("ddim250", 250),
                                              ("250", 250), ("50,50", 100), ("10,20,30", 60), ("1000", 1000)])
def test_the_translations_step_count_is_the_samplers(respacing, steps):
    """The count the t0 check uses is the sampler grid's (and the grammar's: ddimN is N,
    section counts add up)."""
    from runs.spec import EvalSettings
    from models.sampling import sampler_timesteps

    settings = EvalSettings(respacing=respacing)
    assert settings.translation_steps == len(sampler_timesteps(respacing, settings.ddim_steps, 1000))
    assert settings.translation_steps == steps


def test_only_evaluations_of_the_built_in_pair_at_16_px_carry_the_builtin_network_version():
    """The framing of 16 px images changed the ids of the evaluations it changes only: a folder
    evaluation (which never uses that network) and one of the pair at 32 px (whose images
    reach the network as they are) keep theirs, so they are not run again."""
    from runs.spec import EvalSpec, identity_json

    assert '"builtin_eval":' in identity_json(EvalSpec.model_validate(eval_spec()))
    assert "builtin_eval" not in identity_json(EvalSpec.model_validate(GOLDEN_EVALUATION))
    at_32 = eval_spec()
    for side in ("source_data", "target_data"):
        at_32[side] = {**at_32[side], "resolution": 32}
    assert "builtin_eval" not in identity_json(EvalSpec.model_validate(at_32))


def test_only_the_source_model_s_calibrated_evaluations_carry_the_source_calibration_version():
    """The source-style calibration changes what the source model's evaluation computes where
    a classifier is calibrated (the built-in pair; a folder target with labels and a
    reference): those take a new id; a fine-tuned model's evaluation (ids measured before
    the change), or one without a calibrated classifier, keeps its id."""
    from runs.spec import EvalSpec, identity_json

    source = eval_spec()
    folder = {"kind": "folder", "path": "/t", "resolution": 16, "reference": "/r"}
    assert '"source_eval":' in identity_json(EvalSpec.model_validate(source))
    labelled = EvalSpec.model_validate({**source, "target_data": {**folder, "labels": "/l.csv"}})
    assert '"source_eval":' in identity_json(labelled)
    assert EvalSpec.model_validate({**source, "role": "finetuned", "model": "run:x"}).run_id == "6e17479ca1"
    for target in (folder, {**folder, "reference": None, "labels": "/l.csv"}):
        assert '"source_eval":' not in identity_json(EvalSpec.model_validate({**source, "target_data": target}))


def test_only_evaluations_against_a_folder_carry_the_folder_version():
    """The diversity centres' seeded choice changes what a folder evaluation computes, not an
    evaluation of the built-in pair (whose first 10 target images are already a seeded draw)."""
    from runs.spec import EvalSpec, identity_json

    assert '"folder_eval":' in identity_json(EvalSpec.model_validate(GOLDEN_EVALUATION))
    assert "folder_eval" not in identity_json(EvalSpec.model_validate(eval_spec()))

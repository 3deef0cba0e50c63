import pytest
from pydantic import ValidationError

from harness.spec import DistillSpec, RunSpec

SOURCE = {"kind": "builtin-source"}
TARGET = {"kind": "builtin-target"}


def finetune(method, **extra):
    base = {"stage": "finetune", "method": method, "data": TARGET, "steps": 100}
    if method == "scratch":
        base["network"] = "tiny"
    else:
        base["init"] = "run:abc"
    if method == "sdft":
        base["distill"] = {}
    return RunSpec.model_validate({**base, **extra})


def test_same_settings_same_id_and_different_settings_differ():
    assert finetune("naive").run_id == finetune("naive").run_id
    assert finetune("naive").run_id != finetune("naive", lr=2e-5).run_id
    assert finetune("naive").run_id != finetune("sdft").run_id


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
    modules = ["spec", "store", "errors", "config", "grid", "submit", "status", "tables", "results",
               "executors", "runtime", "lpips_setup", "inputs", "numbers", "convert"]
    code = (f"import sys; import {', '.join('harness.' + m for m in modules)}; import jobs.entry; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sampler_settings_default_to_the_paper_and_stay_out_of_the_run_id():
    from harness.spec import EvalSettings, run_id

    s = EvalSettings()
    assert (s.sampler, s.respacing, s.clip_denoised) == ("ddim", None, True)
    assert run_id(EvalSettings(sampler="ddim", clip_denoised=True)) == run_id(s)
    assert run_id(EvalSettings(clip_denoised=False)) != run_id(s)
    assert EvalSettings(sampler="ancestral", respacing="250").respacing == "250"


def test_sampler_settings_are_checked():
    from harness.spec import EvalSettings

    with pytest.raises(ValidationError, match="respacing"):
        EvalSettings(respacing="ddim 40")
    with pytest.raises(ValidationError, match="sampler"):
        EvalSettings(sampler="plms")
    with pytest.raises(ValidationError, match="not both"):
        EvalSettings(respacing="ddim50", ddim_steps=20)
    # the ancestral sampler leaves ddim_steps to the translations
    assert EvalSettings(sampler="ancestral", respacing="250", ddim_steps=20).ddim_steps == 20

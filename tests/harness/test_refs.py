"""Run references ("run:<id>"): parsed in one place, written back unchanged, resolved to the
run's folder; a malformed one is refused by the spec field that holds it."""
import pytest
from pydantic import ValidationError

from factories import eval_spec, finetune_spec
from runs.refs import RunRef
from runs.spec import EvalSpec, RunSpec


def test_a_reference_parses_and_writes_back_the_same_text(tmp_path):
    ref = RunRef.parse("run:0123456789")
    assert ref == RunRef("0123456789") and ref.run_id == "0123456789"
    assert str(ref) == "run:0123456789"
    assert ref.resolve(tmp_path).path == tmp_path / "0123456789"


@pytest.mark.parametrize("text", ["/models/ffhq_p2", "runs/abc", "ddim40", None])
def test_anything_else_is_no_reference(text):
    assert RunRef.parse(text) is None


@pytest.mark.parametrize("text", ["run:", "run:..", "run:a/b", "run:../x"])
def test_a_reference_that_names_no_single_run_is_refused(text):
    with pytest.raises(ValueError, match="does not name a run"):
        RunRef.parse(text)


def test_specs_refuse_malformed_references_naming_the_field():
    with pytest.raises(ValidationError, match="init"):
        RunSpec.model_validate(finetune_spec("naive", init="run:../elsewhere"))
    with pytest.raises(ValidationError, match="model"):
        EvalSpec.model_validate({**eval_spec(), "model": "run:"})
    with pytest.raises(ValidationError, match="source_samples"):
        EvalSpec.model_validate({**eval_spec(), "source_samples": "/a/folder"})


def test_specs_hand_out_their_references():
    spec = EvalSpec.model_validate({**eval_spec(), "role": "finetuned", "model": "run:ft",
                                    "source_samples": "run:src"})
    assert (spec.model_ref, spec.source_samples_ref) == (RunRef("ft"), RunRef("src"))
    assert spec.settings.weights == "raw"            # a trained run's evaluation names its weights
    folder = EvalSpec.model_validate({**eval_spec(), "role": "finetuned", "model": "/m"})
    assert folder.model_ref is None and folder.settings.weights is None
    assert RunSpec.model_validate(finetune_spec("naive")).init_ref == RunRef("source")
    assert RunSpec.model_validate(finetune_spec("scratch")).init_ref is None

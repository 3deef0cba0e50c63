"""guided-diffusion's respacing strings, against its own `space_timesteps`."""
import pytest

from guided_reference import space_timesteps
from models.respacing import check_syntax, respaced_timesteps

STRINGS = ["ddim40", "ddim25", "ddim7", "ddim1000", "250", "1000", "7", "50,50", "10,15,20", "3,1,4",
           "333,333,333"]


@pytest.mark.parametrize("respacing", STRINGS)
def test_kept_timesteps_are_guided_diffusions(respacing):
    assert respaced_timesteps(respacing, 1000) == sorted(space_timesteps(1000, respacing))


@pytest.mark.parametrize("respacing", ["ddim37", "600,600", "ddim1"])
def test_impossible_counts_are_refused_as_guided_diffusion_refuses_them(respacing):
    with pytest.raises(ValueError):
        space_timesteps(1000, respacing)
    with pytest.raises(ValueError, match="no integer stride gives exactly|cannot hold"):
        respaced_timesteps(respacing, 1000)


@pytest.mark.parametrize("bad", ["", "ddim", "ddim0", "0", "10,", " 10", "10;20", "ddim40,10", "1.5"])
def test_bad_syntax_is_refused(bad):
    with pytest.raises(ValueError, match="respacing"):
        check_syntax(bad)


def _guided_diffusion_takes(respacing: str) -> bool:
    try:
        space_timesteps(1000, respacing)
    except ValueError:
        return False
    return True


def test_settings_take_every_step_count_guided_diffusion_takes_and_no_other():
    """A grid's ddim_steps, replay_ddim_steps and respacing are checked at submit exactly as
    guided-diffusion's own space_timesteps takes them (before, 1 or 37 passed and failed in
    the job, after the training)."""
    from pydantic import TypeAdapter, ValidationError

    from runs.numbers import DdimSteps
    from runs.spec import EvalSettings

    steps = TypeAdapter(DdimSteps)

    def settings_take(**kw) -> bool:
        try:
            EvalSettings(tasks=["unconditional"], **kw)
        except ValidationError:
            return False
        return True

    refused = []
    for n in range(1, 1001):
        takes = _guided_diffusion_takes(f"ddim{n}")
        assert settings_take(ddim_steps=n) == takes, n
        assert settings_take(respacing=f"ddim{n}") == takes, n
        if not takes:
            refused.append(n)
            with pytest.raises(ValidationError, match=f"exactly {n} of 1000"):
                steps.validate_python(n)
    assert refused[:2] == [1, 37] and len(refused) > 900
    with pytest.raises(ValidationError, match="greater than 0"):    # its bound, not the stride
        steps.validate_python(0)
    for respacing in STRINGS + ["600,600", "1001", "500,501"]:
        assert settings_take(respacing=respacing) == _guided_diffusion_takes(respacing), respacing

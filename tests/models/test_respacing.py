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
    with pytest.raises(ValueError, match="respacing"):
        respaced_timesteps(respacing, 1000)


@pytest.mark.parametrize("bad", ["", "ddim", "ddim0", "0", "10,", " 10", "10;20", "ddim40,10", "1.5"])
def test_bad_syntax_is_refused(bad):
    with pytest.raises(ValueError, match="respacing"):
        check_syntax(bad)


@pytest.mark.parametrize("respacing", STRINGS + ["ddim37", "", "ddim", "0", "10,", " 10", "1.5"])
def test_settings_accept_the_same_grammar(respacing):
    from runs.spec import RESPACING
    from models.respacing import GRAMMAR

    assert bool(RESPACING.fullmatch(respacing)) == bool(GRAMMAR.fullmatch(respacing))

"""diffusers' DPM-Solver++ and UniPC on the project's schedule (models/solvers.py): first-order
DPM-Solver++ on DDIM's grid is DDIM, clipping included; on Gaussian data, whose probability-flow
ODE has a known answer, both solvers land closer to it than DDIM with as many steps and
converge with more; samples depend on their own noise only."""
import pytest
import torch

import factories
from factories import tiny_eps_model
from models.sampling import ddim_sample, ddim_timesteps
from models.schedule import NoiseSchedule
from models.solvers import solver_sample

SOLVERS = ["dpm-solver++", "unipc"]
ABAR = NoiseSchedule().alphas_cumprod
MU, SD = 0.1, 0.5          # the data: N(MU, SD^2) per pixel


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact eps-prediction E[eps | x_t] for N(MU, SD^2) data."""
    a = ABAR[t].view(-1, 1, 1, 1)
    return ((1 - a).sqrt() * (x.double() - a.sqrt() * MU) / (a * SD ** 2 + 1 - a)).float()


def ode_answer(noise: torch.Tensor, t_start: int) -> torch.Tensor:
    """Where the probability-flow ODE takes x_{t_start} = noise: per pixel the flow keeps the
    standardised value, so x0 = MU + SD * (x_t - sqrt(a) MU) / sqrt(a SD^2 + 1 - a)."""
    a = float(ABAR[t_start])
    return (MU + SD * (noise.double() - a ** 0.5 * MU) / (a * SD ** 2 + 1 - a) ** 0.5).float()


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).square().mean().sqrt().item()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [False, True])
def test_first_order_dpm_solver_on_ddims_grid_is_ddim(clip, kind):
    """DPM-Solver-1 in data prediction is DDIM (eta 0), and diffusers' thresholding with
    sample_max_value 1 is DDIM's clip: a random network overshoots, so clipping matters.
    So on either schedule, the solver's betas are the DDIM path's."""
    eps = tiny_eps_model(seed=3)
    noise = factories.noise(3, seed=5)
    schedule = NoiseSchedule(kind=kind)
    ddim = ddim_sample(eps, noise, num_steps=10, clip_denoised=clip, schedule=schedule).images
    dpm = solver_sample(eps, noise, "dpm-solver++", timesteps=ddim_timesteps(10), order=1,
                        clip_denoised=clip, schedule=schedule).images
    # diffusers keeps alpha_bar in float32, the DDIM path in float64
    torch.testing.assert_close(dpm, ddim, rtol=1e-4, atol=1e-4)
    other = ddim_sample(eps, noise, num_steps=10, clip_denoised=not clip, schedule=schedule).images
    assert rms(other, ddim) > 1e-2


@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_beat_ddim_on_a_known_answer_and_converge(solver):
    noise = factories.noise(4, size=8, seed=1)
    truth = ode_answer(noise, 999)        # the solvers start at T-1
    errors = {n: rms(solver_sample(gaussian_eps, noise, solver, n, clip_denoised=False).images, truth)
              for n in (10, 20, 40)}
    ddim20 = rms(ddim_sample(gaussian_eps, noise, 20, clip_denoised=False).images,
                 ode_answer(noise, ddim_timesteps(20)[-1]))
    # measured: DDIM-20 0.068; dpm-solver++ 0.099 / 0.024 / 0.002, unipc 0.095 / 0.022 / 0.003
    assert errors[20] < 0.5 * ddim20
    assert errors[40] < 0.01 < errors[10]


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_samples_depend_on_their_own_noise_only(solver):
    eps = tiny_eps_model(seed=0, learned_variance=True)       # the eps channels are taken
    noise = factories.noise(4, seed=9)
    batch = solver_sample(eps, noise, solver, 8)
    again = solver_sample(eps, noise.clone(), solver, 8)
    alone = solver_sample(eps, noise[2:3], solver, 8)
    assert torch.equal(batch.images, again.images)
    # a batch's convolutions round differently (measured: 3e-5 at most); a sample that depended
    # on its neighbours would differ by whole units
    torch.testing.assert_close(alone.images, batch.images[2:3], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alone.x0_excess, batch.x0_excess[2:3], rtol=1e-4, atol=1e-4)
    # clipped x0 at every step: the last step lands on a clipped x0 prediction
    assert batch.images.abs().max() <= 1.0 + 1e-6
    assert batch.x0_excess.max() > 0      # this random network overshoots before the clip
    unclipped = solver_sample(eps, noise, solver, 8, clip_denoised=False)
    assert unclipped.images.abs().max() > 1.0


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="unknown solver"):
        solver_sample(gaussian_eps, factories.noise(1), "plms", 5)

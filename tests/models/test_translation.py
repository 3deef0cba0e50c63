"""SDEdit and EGSDE as plain functions on DDIM: where they start, which steps they take,
and which way EGSDE's energies push each step, observed through networks that record calls.

The noise schedule is written out here (linear betas 1e-4..0.02, T = 1000, as the paper's
source model) rather than taken from models.schedule, so that the tests check it too."""
import numpy as np
import pytest
import torch

import factories
from factories import Recorder, tiny_eps_model
from models.classifiers import DomainClassifier
from models.sampling import egsde, indexed_noise, low_pass, realism_energy, sdedit, start_index

T = 1000
ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))


def ddim_grid(num_steps: int) -> list[int]:
    """guided-diffusion's `ddimN` for N dividing T: 0, T/N, 2T/N, ..."""
    return list(range(0, T, T // num_steps))


def setup():
    eps = tiny_eps_model(seed=0)
    images = factories.images(3, seed=1)
    noise = indexed_noise(0, "translation", range(3), (3, 16, 16))
    return eps, images, noise


def test_sdedit_at_t0_zero_returns_the_input():
    eps, images, noise = setup()
    assert torch.equal(sdedit(eps, images, noise, t0=0.0).images, images)


def test_sdedit_start_index_is_round_t0_times_steps():
    assert [start_index(t0, 40) for t0 in (0.0, 0.3, 0.5, 1.0)] == [0, 12, 20, 40]
    assert [start_index(t0, 10) for t0 in (0.26, 0.24, 0.05)] == [3, 2, 0]     # round half to even
    with pytest.raises(ValueError, match="t0"):
        start_index(1.5, 40)


@pytest.mark.parametrize("t0,num_steps", [(0.5, 40), (0.3, 40), (0.5, 10), (0.26, 10), (1.0, 10)])
def test_sdedit_runs_the_last_round_t0_n_steps_of_ddim(t0, num_steps):
    """One network call per step, at the grid's timesteps from index round(t0 N) - 1 down to 0."""
    net = Recorder()
    images, noise = factories.images(2), factories.noise(2)
    sdedit(net, images, noise, t0=t0, num_steps=num_steps)
    k = round(t0 * num_steps)
    assert net.timesteps == ddim_grid(num_steps)[:k][::-1]
    assert len(net.calls) == k and net.timesteps[-1] == 0


def test_sdedit_starts_from_the_noise_level_of_its_first_timestep():
    """At t0 = 0.5 of DDIM-40 the first call sees x_t at t = 475: mean sqrt(abar) x0 and
    variance 1 - abar, measured over 196k noise values against the closed form."""
    net = Recorder()
    n, level = 256, 1.0
    images = torch.full((n, 3, 16, 16), level)
    sdedit(net, images, factories.noise(n, seed=11), t0=0.5, num_steps=40)
    x, t = net.calls[0]
    assert set(t.tolist()) == {475}
    mean, var = float(x.double().mean()), float(x.double().var())
    abar = ABAR[475]
    # four standard errors of a mean and of a variance over x.numel() normal values
    mean_tol, var_rel_tol = 4 * ((1 - abar) / x.numel()) ** 0.5, 4 * (2 / x.numel()) ** 0.5
    assert mean == pytest.approx(abar ** 0.5 * level, abs=mean_tol)
    assert var == pytest.approx(1 - abar, rel=var_rel_tol)
    # the neighbouring grid levels (450, 500) lie outside both bands, the mean's by far
    for other in (450, 500):
        assert abs(ABAR[other] ** 0.5 - abar ** 0.5) * level > 2 * mean_tol
        assert abs((1 - ABAR[other]) / (1 - abar) - 1) > var_rel_tol


def test_sdedit_starts_from_the_given_noise():
    """x_t is sqrt(abar) x0 + sqrt(1 - abar) noise with the noise passed in, sample by sample."""
    net = Recorder()
    images, noise = factories.images(3), factories.noise(3, seed=5)
    sdedit(net, images, noise, t0=0.3, num_steps=40)
    x, _ = net.calls[0]
    abar = ABAR[275]
    expected = abar ** 0.5 * images.double() + (1 - abar) ** 0.5 * noise.double()
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)


def test_egsde_without_energies_is_sdedit_from_the_same_noise():
    eps, images, noise = setup()
    features = DomainClassifier().eval().features
    plain = sdedit(eps, images, noise, t0=0.5).images
    guided_off = egsde(eps, images, noise, features, t0=0.5, ls=0.0, li=0.0).images
    assert torch.equal(plain, guided_off)
    guided = egsde(eps, images, noise, features, t0=0.5, ls=500.0, li=2.0).images
    assert not torch.allclose(plain, guided)


def test_faithfulness_energy_pulls_low_frequencies_toward_the_source():
    eps, images, noise = setup()
    features = DomainClassifier().eval().features
    plain = sdedit(eps, images, noise, t0=0.5).images
    faithful = egsde(eps, images, noise, features, t0=0.5, ls=0.0, li=2.0).images
    distance = lambda y: (low_pass(y) - low_pass(images)).square().mean()  # noqa: E731
    assert distance(faithful) < distance(plain)


def stripes(width: int, size: int = 16) -> torch.Tensor:
    """One image of vertical stripes `width` pixels wide, -1 and 1 in turn."""
    row = torch.tensor([1.0 if (i // width) % 2 else -1.0 for i in range(size)])
    return row.expand(1, 3, size, size).clone()


def test_low_pass_keeps_what_is_wider_than_its_factor():
    """Stripes 4 px wide survive a down-sample by 2 or 4 and vanish at 8 (each 8 px cell
    holds one light and one dark stripe); 1 px stripes vanish at every factor."""
    for factor, kept in ((2, True), (4, True), (8, False)):
        out = low_pass(stripes(4), factor)
        assert (float(out.std()) > 0.3) == kept, factor
        assert float(low_pass(stripes(1), factor).abs().max()) < 1e-6
    # without a factor: down to 8 x 8, by 2 at 16 px and by 4 at 32 px
    x16, x32 = stripes(4, 16), stripes(4, 32)
    assert torch.equal(low_pass(x16), low_pass(x16, 2)) and torch.equal(low_pass(x32), low_pass(x32, 4))
    assert not torch.equal(low_pass(x16, 2), low_pass(x16, 4))
    for bad in (3, 0, 32, True):
        with pytest.raises(ValueError, match="low-pass factor"):
            low_pass(x16, bad)


def test_egsde_refuses_a_low_pass_factor_that_does_not_divide_the_image():
    eps, images, noise = setup()
    with pytest.raises(ValueError, match="low-pass factor"):
        egsde(eps, images, noise, DomainClassifier().eval().features, t0=0.5, low_pass_factor=3)


def source_noised(images, noise, t: int) -> torch.Tensor:
    """x_t of the source images with the start noise, from the closed form."""
    return (ABAR[t] ** 0.5 * images.double() + (1 - ABAR[t]) ** 0.5 * noise.double()).float()


def location_cosine(f_y: torch.Tensor, f_x: torch.Tensor) -> torch.Tensor:
    """Per sample: the cosine of the channel vectors at each location, averaged over the
    locations, written as unit vectors' dot products (the shape of EGSDE's own code)."""
    unit = lambda f: f / f.norm(dim=1, keepdim=True)  # noqa: E731
    return (unit(f_y) * unit(f_x)).sum(1).mean((1, 2))


def source_cosine(features, y, images, noise, t: int) -> torch.Tensor:
    """Per sample: the realism energy of y against x_t, the quantity EGSDE's realism term lowers."""
    tt = torch.full((y.shape[0],), t)
    with torch.no_grad():
        return location_cosine(features(y, tt), features(source_noised(images, noise, t), tt))


def test_realism_energy_is_the_per_location_cosine_averaged_over_locations():
    """Half the locations agree (norm 2), half point the opposite way (norm 1): per location
    +1 and -1, mean 0. One cosine over the flattened maps weights locations by their norms
    and gives (2 * 4 - 2 * 1) / (2 * 4 + 2 * 1) = 0.6 instead."""
    a, b = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 0.6, 0.8])
    f_y = torch.stack([a, a, b, b], dim=1).reshape(1, 3, 2, 2)
    f_x = torch.stack([a, a, -b, -b], dim=1).reshape(1, 3, 2, 2)
    flat = torch.nn.functional.cosine_similarity(f_y.flatten(1), f_x.flatten(1))
    assert float(flat) == pytest.approx(0.6)
    assert float(realism_energy(f_y, f_x)) == pytest.approx(0.0, abs=1e-7)
    # per sample; each location's scale does not count; all agreeing gives 1
    scaled = f_y * torch.tensor([1.0, 5.0, 0.5, 3.0]).reshape(1, 1, 2, 2)
    both = realism_energy(torch.cat([scaled, f_x]), torch.cat([f_x, f_x]))
    torch.testing.assert_close(both, torch.tensor([0.0, 1.0]), rtol=0, atol=1e-6)
    # a random map against the form written out by hand
    g = torch.Generator().manual_seed(3)
    f_y, f_x = torch.randn(2, 8, 4, 4, generator=g), torch.randn(2, 8, 4, 4, generator=g)
    torch.testing.assert_close(realism_energy(f_y, f_x), location_cosine(f_y, f_x))


def test_a_small_step_down_the_guidance_gradient_lowers_the_realism_energy():
    """The correction EGSDE subtracts, w_t * ls * grad_y E(y), taken as a small step from a
    y near x_t: E falls, and a step the other way raises it (the sign, not only a change)."""
    features = DomainClassifier().eval().features
    _, images, noise = setup()
    t = 450
    tt, x_t = torch.full((3,), t), source_noised(images, noise, t)
    y = (x_t + 0.3 * factories.noise(3, seed=7)).requires_grad_(True)
    with torch.no_grad():
        f_x = features(x_t, tt)
    energy = lambda z: location_cosine(features(z, tt), f_x)  # noqa: E731
    grad, = torch.autograd.grad(realism_energy(features(y, tt), f_x).sum(), y)
    step = 1e-2 / grad.flatten(1).norm(dim=1).max()
    with torch.no_grad():
        before, down, up = energy(y), energy(y - step * grad), energy(y + step * grad)
    assert (down < before).all() and (up > before).all(), (before, down, up)


def test_egsde_realism_moves_features_away_from_the_source():
    """One guided step from the state an unguided run is in: the cosine similarity of the
    result's features to the noised source image's falls below the unguided step's.

    At the first step y is x_t itself, where the cosine is at its maximum and its gradient 0,
    so both runs hand the same state to the second step (t = 450), whose guidance shows."""
    eps, images, noise = setup()
    features = DomainClassifier().eval().features        # seeded by setup(); untrained is enough
    guided, plain = Recorder(eps), Recorder(eps)
    egsde(guided, images, noise, features, t0=0.5, ls=500.0, li=0.0)
    sdedit(plain, images, noise, t0=0.5)
    torch.testing.assert_close(guided.calls[1][0], plain.calls[1][0], rtol=0, atol=1e-6)
    assert guided.timesteps[1] == 450
    after_guided = source_cosine(features, guided.calls[2][0], images, noise, 450)
    after_plain = source_cosine(features, plain.calls[2][0], images, noise, 450)
    assert (after_guided < after_plain - 1e-4).all(), (after_guided, after_plain)


@pytest.mark.parametrize("factor", [None, 4])
def test_egsde_scales_each_step_by_beta_over_sqrt_alpha(factor):
    """Every step's correction is w_t * grad_y(ls cos + li ||L(y) - L(x_t)||^2) with
    w_t = beta_t / sqrt(alpha_t) of the respaced step (alpha_t = abar_t / abar_prev).

    Observed with an eps = 0 network and no clipping, under which an unguided DDIM step only
    rescales the state by sqrt(abar_prev / abar_t): what is left is the correction."""
    _, images, noise = setup()
    classifier = DomainClassifier().eval()
    net, features = Recorder(), Recorder(classifier.features)
    ls, li, num_steps = 500.0, 2.0, 10
    out = egsde(net, images, noise, features, t0=0.5, ls=ls, li=li, num_steps=num_steps,
                clip_denoised=False, low_pass_factor=factor).images
    grid = ddim_grid(num_steps)
    assert net.timesteps == [400, 300, 200, 100, 0]
    # the energies are evaluated at the step's own t, against x_t of the start noise
    assert features.timesteps == [t for t in net.timesteps for _ in range(2)]
    for (x_t, _), t in zip(features.calls[1::2], net.timesteps):
        torch.testing.assert_close(x_t, source_noised(images, noise, t), rtol=0, atol=1e-5)

    states = [x for x, _ in net.calls] + [out]
    for i, t in enumerate(net.timesteps):
        abar_prev = ABAR[grid[grid.index(t) - 1]] if t else 1.0
        alpha = ABAR[t] / abar_prev
        w_t = (1 - alpha) / alpha ** 0.5
        y = states[i].clone().requires_grad_(True)
        tt, x_t = torch.full((y.shape[0],), t), source_noised(images, noise, t)
        with torch.no_grad():
            f_x = classifier.features(x_t, tt)
        energy = (ls * location_cosine(classifier.features(y, tt), f_x).sum()
                  + li * (low_pass(y, factor) - low_pass(x_t, factor)).square().sum())
        grad, = torch.autograd.grad(energy, y)
        correction = ((abar_prev / ABAR[t]) ** 0.5 * states[i].double() - states[i + 1].double())
        if i == 0:      # y = x_t: both energies are at their minimum, the step is plain DDIM
            assert correction.abs().max() < 1e-5
            continue
        grad = grad.double()
        w_used = float((correction * grad).sum() / grad.square().sum())
        assert w_used == pytest.approx(w_t, rel=1e-3), (t, w_used, w_t)
        # the whole correction lies along the gradient, down the energy
        assert float((correction - w_used * grad).norm() / correction.norm()) < 1e-2, t


def test_indexed_noise_does_not_depend_on_batching():
    a = indexed_noise(0, "unconditional", range(0, 6), (3, 4, 4))
    b = torch.cat([indexed_noise(0, "unconditional", range(0, 2), (3, 4, 4)),
                   indexed_noise(0, "unconditional", range(2, 6), (3, 4, 4))])
    assert torch.equal(a, b)

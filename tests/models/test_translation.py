"""SDEdit and EGSDE as plain functions on DDIM."""
import torch

import factories
from factories import tiny_eps_model
from models.classifiers import DomainClassifier
from models.sampling import egsde, indexed_noise, low_pass, sdedit, start_index


def setup():
    eps = tiny_eps_model(seed=0)
    images = factories.images(3, seed=1)
    noise = indexed_noise(0, "translation", range(3), (3, 16, 16))
    return eps, images, noise


def test_sdedit_at_t0_zero_returns_the_input():
    eps, images, noise = setup()
    assert torch.equal(sdedit(eps, images, noise, t0=0.0).images, images)


def test_sdedit_runs_the_last_steps_of_ddim40():
    assert start_index(0.5, 40) == 20 and start_index(1.0, 40) == 40 and start_index(0.3, 40) == 12
    eps, images, noise = setup()
    out = sdedit(eps, images, noise, t0=0.5).images
    assert out.shape == images.shape and not torch.equal(out, images)


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


def test_indexed_noise_does_not_depend_on_batching():
    a = indexed_noise(0, "unconditional", range(0, 6), (3, 4, 4))
    b = torch.cat([indexed_noise(0, "unconditional", range(0, 2), (3, 4, 4)),
                   indexed_noise(0, "unconditional", range(2, 6), (3, 4, 4))])
    assert torch.equal(a, b)

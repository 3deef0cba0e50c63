"""Learned variance as the official code trains it: the hybrid loss and the SDFT terms
against guided-diffusion's own GaussianDiffusion and UNet (guided-diffusion-sdk)."""
import copy

import pytest
import torch

from factories import tiny_unet
from guided_reference import randomise, sdk_diffusion, sdk_unet
from guided_reference import eps_model as sdk_eps_model
from runs.methods import get
from models.loss import DiffusionLoss
from models.networks import as_eps_model, split_output
from models.schedule import NoiseSchedule
from models.weighting import sdft

# t = 0 takes the decoder NLL branch, the others the KL; 999 is the aux term's noisy end
TIMESTEPS = torch.tensor([0, 1, 7, 120, 500, 871, 999, 0])


def inputs(n=len(TIMESTEPS), seed=1):
    gen = torch.Generator().manual_seed(seed)
    # 8-bit values in [-1, 1], both ends included (the decoder's edge bins)
    x0 = torch.randint(0, 256, (n, 3, 16, 16), generator=gen).float() / 127.5 - 1
    return x0, torch.randn(x0.shape, generator=gen)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_hybrid_loss_equals_guided_diffusions_training_losses(schedule):
    net = randomise(tiny_unet(learned_variance=True), seed=3).eval()
    x0, noise = inputs()
    ours = DiffusionLoss(NoiseSchedule(kind=schedule)).terms(as_eps_model(net), x0, TIMESTEPS, noise)
    with torch.no_grad():
        ref = sdk_diffusion(schedule=schedule).training_losses(lambda x, t: net(x, t).sample, x0, TIMESTEPS, noise=noise)
    torch.testing.assert_close(ours.per_sample.detach(), ref["loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(float(ours.vb.detach()), float(ref["vb"].mean()), rtol=1e-5, atol=1e-5)
    assert float(ours.vb.detach()) > 0.01 * float(ours.diff.detach())          # the variance term is really there


def test_sdft_terms_equal_the_official_formulas_on_guided_diffusions_unet():
    student = sdk_unet(seed=0).train()
    teacher = randomise(copy.deepcopy(student), seed=1).eval().requires_grad_(False)
    x0, noise = inputs()
    lam_d, lam_a, g_d, g_a = 0.7, 0.3, 0.5, 0.2
    loss = get("sdft").build_loss(lambda_distill=lam_d, lambda_aux=lam_a, weighting="sdft",
                                  gamma_distill=g_d, gamma_aux=g_a, k=1.0)
    ours = loss.terms(sdk_eps_model(student), x0, TIMESTEPS, noise, teacher=sdk_eps_model(teacher))

    # training_losses_distill (JiwanHur/SDFT) term by term, from the networks' own outputs
    diffusion = sdk_diffusion()
    abar = torch.from_numpy(diffusion.alphas_cumprod)
    snr = (abar / (1 - abar))[TIMESTEPS].float()
    x_t = diffusion.q_sample(x0, TIMESTEPS, noise=noise)
    with torch.no_grad():
        eps_s, eps_s_noise = student(x_t, TIMESTEPS)[:, :3], student(noise, TIMESTEPS)[:, :3]
        eps_t, eps_t_noise = teacher(x_t, TIMESTEPS)[:, :3], teacher(noise, TIMESTEPS)[:, :3]
        hybrid = diffusion.training_losses(student, x0, TIMESTEPS, noise=noise)["loss"]
    sd = sdft(snr, gamma=g_d, k=1.0) * (eps_t - eps_s).square().mean(dim=(1, 2, 3))
    dasd = sdft(snr, gamma=g_a, k=1.0) * (eps_t_noise - eps_s_noise).square().mean(dim=(1, 2, 3))

    assert float(sd.mean()) > 1e-3 and float(dasd.mean()) > 1e-3     # non-trivial terms
    torch.testing.assert_close(float(ours.distill.detach()), float(sd.mean()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(float(ours.aux.detach()), float(dasd.mean()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.per_sample.detach(), hybrid + lam_d * sd + lam_a * dasd,
                               rtol=1e-5, atol=1e-5)


def test_variance_bound_trains_only_the_variance_channels():
    """The official hybrid loss detaches eps inside L_vb: its gradient reaches the variance
    channels alone, while L_simple reaches the eps channels alone."""
    x0, noise = inputs(4)
    t = torch.tensor([0, 3, 400, 990])
    output = (0.3 * torch.randn(4, 6, 16, 16)).requires_grad_(True)
    terms = DiffusionLoss().terms(lambda x, tt: output, x0, t, noise)
    grad_vb, = torch.autograd.grad(terms.vb, output, retain_graph=True)
    grad_diff, = torch.autograd.grad(terms.diff, output)
    assert grad_vb[:, :3].abs().max() == 0 and grad_vb[:, 3:].abs().max() > 0
    assert grad_diff[:, 3:].abs().max() == 0 and grad_diff[:, :3].abs().max() > 0


def test_teacher_sigma_channels_are_discarded():
    """Only the teacher's eps channels enter the terms: its variance channels can be anything."""
    x0, noise = inputs(4)
    t = torch.tensor([5, 50, 500, 999])
    student = sdk_eps_model(sdk_unet(seed=0))
    teacher = sdk_eps_model(sdk_unet(seed=1))

    def teacher_with_other_sigma(x, tt):
        out = teacher(x, tt)
        return torch.cat([out[:, :3], out[:, 3:] + 5.0], dim=1)

    loss = get("sdft").build_loss(lambda_distill=1.0, lambda_aux=1.0, weighting="constant")
    a = loss.terms(student, x0, t, noise, teacher=teacher)
    b = loss.terms(student, x0, t, noise, teacher=teacher_with_other_sigma)
    assert a.distill.item() > 0
    assert torch.equal(a.per_sample, b.per_sample)


def test_split_output_tells_eps_from_variance_channels():
    out = torch.randn(2, 6, 4, 4)
    eps, var = split_output(out, 3)
    assert torch.equal(eps, out[:, :3]) and torch.equal(var, out[:, 3:])
    eps, var = split_output(out[:, :3], 3)
    assert var is None and eps.shape[1] == 3
    with pytest.raises(ValueError, match="output channels"):
        split_output(torch.randn(2, 4, 4, 4), 3)

"""DDIM (x0 clipped as guided-diffusion clips it) and the ancestral sampler with the learned
variance, against diffusers' DDIMScheduler and guided-diffusion's own sampling loops (on
linear and cosine betas)."""
import pytest
import torch
from diffusers import DDIMScheduler

import factories
from factories import digest, in_fresh_process, tiny_eps_model, tiny_unet
from guided_reference import T, sdk_diffusion, sdk_unet
from guided_reference import eps_model as sdk_eps_model
from models.networks import as_eps_model
from models.sampling import CLIP_TOLERANCE, ancestral_sample, ddim_sample, ddim_timesteps, p_mean_variance
from models.schedule import NoiseSchedule
from models.variance import Chain
from models.respacing import respaced_timesteps


def diffusers_ddim40(net, noise, clip: bool):
    """guided-diffusion's `ddim40` respacing, as diffusers configures it; with `clip`, x0 is
    clipped and eps re-derived from it (guided-diffusion's clip_denoised)."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                              beta_end=0.02, clip_sample=clip, set_alpha_to_one=True, steps_offset=0,
                              timestep_spacing="leading")
    scheduler.set_timesteps(40)
    x = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t).sample, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample
    return x


def test_ddim40_grid_is_guided_diffusions():
    steps = ddim_timesteps(40)
    assert steps[:3] == [0, 25, 50] and steps[-1] == 975 and len(steps) == 40


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_matches_diffusers_scheduler(clip):
    net = tiny_unet(seed=0)
    noise = factories.noise(4, seed=7)
    ours = ddim_sample(as_eps_model(net), noise, num_steps=40, clip_denoised=clip).images
    reference = diffusers_ddim40(net, noise, clip)
    # diffusers keeps alpha_bar in float32, we in float64 (as guided-diffusion): the
    # x0-prediction amplifies that by 1/sqrt(alpha_bar), hence a relative tolerance too.
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    other = diffusers_ddim40(net, noise, not clip)
    assert (ours - other).abs().max() > 1e-2        # clipping changes this model's samples


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_matches_guided_diffusions_ddim_sample_loop(schedule):
    """A random 6-channel ADM: DDIM uses its eps channels, clips x0 and re-derives eps."""
    net = sdk_unet(seed=2)
    noise = factories.noise(3, seed=4)
    ours = ddim_sample(sdk_eps_model(net), noise, respacing="ddim40", clip_denoised=True,
                       schedule=NoiseSchedule(kind=schedule))
    with torch.no_grad():
        steps = list(sdk_diffusion("ddim40", schedule=schedule).ddim_sample_loop_progressive(
            net, noise.shape, noise=noise.clone(), clip_denoised=True))
    torch.testing.assert_close(ours.images, steps[-1]["sample"], rtol=1e-5, atol=1e-5)
    unclipped = ddim_sample(sdk_eps_model(net), noise, respacing="ddim40", clip_denoised=False,
                            schedule=NoiseSchedule(kind=schedule)).images
    assert (unclipped - ours.images).abs().max() > 1e-2
    if schedule == "cosine":        # the schedule is really used: linear betas land elsewhere
        linear = ddim_sample(sdk_eps_model(net), noise, respacing="ddim40", clip_denoised=True).images
        assert (linear - ours.images).abs().max() > 1e-2


def test_last_step_x0_excess_is_guided_diffusions_last_pred_xstart():
    """Without clipping, the reported excess is how far the sdk's last x0 prediction leaves [-1, 1]."""
    net = sdk_unet(seed=5)
    noise = 3 * factories.noise(4, seed=6)
    ours = ddim_sample(sdk_eps_model(net), noise, respacing="ddim10", clip_denoised=False)
    with torch.no_grad():
        last = list(sdk_diffusion("ddim10").ddim_sample_loop_progressive(
            net, noise.shape, noise=noise.clone(), clip_denoised=False))[-1]["pred_xstart"]
    expected = (last.abs() - 1).clamp(min=0).flatten(1).amax(1)
    torch.testing.assert_close(ours.x0_excess, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.clipped(), expected > CLIP_TOLERANCE) and ours.clipped(tolerance=0).all()
    assert not ours.clipped(tolerance=2 * float(expected.max())).any()


@pytest.mark.parametrize("respacing", ["ddim40", "10,5"])
@pytest.mark.parametrize("clip", [True, False])
def test_ancestral_step_equals_guided_diffusions_p_mean_variance(respacing, clip):
    net = sdk_unet(seed=3)
    eps = sdk_eps_model(net)
    diffusion = sdk_diffusion(respacing)
    chain = Chain(NoiseSchedule().alphas_cumprod, respaced_timesteps(respacing, T))
    assert chain.timesteps.tolist() == diffusion.timestep_map
    gen = torch.Generator().manual_seed(8)
    x0 = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    for i in range(len(chain)):
        idx = torch.full((2,), i)
        # a state on the forward process at this step's noise level, so x0 is sometimes clipped
        abar = float(diffusion.alphas_cumprod[i])
        x = abar ** 0.5 * x0 + (1 - abar) ** 0.5 * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            mean, log_var, pred_x0 = p_mean_variance(eps, chain, x, idx, clip_denoised=clip)
            ref = diffusion.p_mean_variance(net, x, idx, clip_denoised=clip)
        torch.testing.assert_close(mean, ref["mean"], rtol=1e-5, atol=1e-5, msg=f"mean at step {i}")
        torch.testing.assert_close(log_var, ref["log_variance"], rtol=1e-5, atol=1e-5,
                                   msg=f"log-variance at step {i}")
        torch.testing.assert_close(pred_x0, ref["pred_xstart"], rtol=1e-5, atol=1e-5)


def test_ancestral_step_of_an_eps_only_model_uses_guided_diffusions_fixed_large_variance():
    net = sdk_unet(seed=4, out_channels=3)
    diffusion = sdk_diffusion("ddim10", learned=False)
    chain = Chain(NoiseSchedule().alphas_cumprod, respaced_timesteps("ddim10", T))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for i in (0, 1, 9):
        idx = torch.full((2,), i)
        with torch.no_grad():
            mean, log_var, _ = p_mean_variance(sdk_eps_model(net), chain, x, idx)
            ref = diffusion.p_mean_variance(net, x, idx, clip_denoised=True)
        torch.testing.assert_close(mean, ref["mean"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_var, ref["log_variance"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip,schedule", [(True, "linear"), (False, "linear"), (True, "cosine")])
def test_ancestral_loop_with_injected_noise_matches_p_sample_loop(clip, schedule):
    net = sdk_unet(seed=6)
    diffusion = sdk_diffusion("ddim25", schedule=schedule)
    noise = factories.noise(2, seed=2)
    # p_sample draws one randn_like(x) per step from the global generator: draw the same
    torch.manual_seed(123)
    step_noise = [torch.randn_like(noise) for _ in range(25)]
    torch.manual_seed(123)
    with torch.no_grad():
        reference = diffusion.p_sample_loop(net, noise.shape, noise=noise.clone(), clip_denoised=clip)
    ours = ancestral_sample(sdk_eps_model(net), noise, NoiseSchedule(kind=schedule), respacing="ddim25",
                            clip_denoised=clip, step_noise=step_noise)
    torch.testing.assert_close(ours.images, reference, rtol=1e-5, atol=1e-5)
    other = ancestral_sample(sdk_eps_model(net), noise, NoiseSchedule(kind=schedule), respacing="ddim25",
                             clip_denoised=clip, step_noise=step_noise[::-1])
    assert (other.images - reference).abs().max() > 1e-2     # the injected noise matters
    if schedule == "cosine":        # the schedule is really used: linear betas land elsewhere
        linear = ancestral_sample(sdk_eps_model(net), noise, respacing="ddim25", clip_denoised=clip,
                                  step_noise=step_noise)
        assert (linear.images - reference).abs().max() > 1e-2


def test_ancestral_noise_per_sample_does_not_depend_on_batching():
    from models.sampling import indexed_generators

    eps = tiny_eps_model(learned_variance=True)
    noise = factories.noise(4, seed=3)
    whole = ancestral_sample(eps, noise, respacing="ddim5", generator=indexed_generators(0, "a", range(4)))
    parts = [ancestral_sample(eps, noise[s], respacing="ddim5",
                              generator=indexed_generators(0, "a", range(4)[s])).images
             for s in (slice(0, 1), slice(1, 4))]
    # convolutions differ by batch size in the last bits; different noise would differ by O(1)
    torch.testing.assert_close(whole.images, torch.cat(parts), rtol=1e-4, atol=1e-4)


def test_ddim_samples_are_the_same_bits_in_a_fresh_process():
    """The same model seed and noise in another interpreter give the same bits. A second call
    in this process would share its RNG state, caches and thread pool, and miss what differs."""
    def sample(noise_seed):
        return ddim_sample(tiny_eps_model(seed=0), factories.noise(2, seed=noise_seed), num_steps=10).images

    here = digest(sample(0))
    there = in_fresh_process(f"""
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        import factories
        from models.sampling import ddim_sample
        images = ddim_sample(factories.tiny_eps_model(seed=0), factories.noise(2, seed=0), num_steps=10).images
        print(factories.digest(images))
    """)
    assert there == here
    assert digest(sample(1)) != here          # the digest sees the samples: other noise, other bits

"""guided-diffusion's own code (the `guided-diffusion-sdk` test dependency) as the reference:
small random UNets and the diffusion objects the official SDFT code builds."""
import warnings

import torch

with warnings.catch_warnings():        # its nn.py uses a deprecated torch.cuda.amp decorator
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion.respace import SpacedDiffusion, space_timesteps
    from guided_diffusion.unet import UNetModel

T = 1000


def randomise(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Every parameter random: guided-diffusion zero-initialises its output layers, which
    would make eps and the variance values 0 and hide errors."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module


def sdk_unet(seed: int, out_channels: int = 6) -> UNetModel:
    """A small ADM (scale-shift norm, resblock up/down, attention at 8 px), random weights."""
    net = UNetModel(image_size=16, in_channels=3, model_channels=32, out_channels=out_channels,
                    num_res_blocks=1, attention_resolutions=(2,), channel_mult=(1, 2),
                    num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True)
    return randomise(net, seed).eval()


def eps_model(net: torch.nn.Module):
    """Our EpsModel view of a guided-diffusion network: (x, t) -> raw output."""
    return lambda x, t: net(x, t).float()


def sdk_diffusion(respacing: str | None = None, learned: bool = True, schedule: str = "linear"):
    """The official configuration: linear betas (or improved-diffusion's cosine), T = 1000,
    eps-prediction, learned-range variance (or fixed "large" without learn_sigma),
    RESCALED_MSE (the hybrid loss)."""
    kwargs = dict(betas=gd.get_named_beta_schedule(schedule, T),
                  model_mean_type=gd.ModelMeanType.EPSILON,
                  model_var_type=gd.ModelVarType.LEARNED_RANGE if learned else gd.ModelVarType.FIXED_LARGE,
                  loss_type=gd.LossType.RESCALED_MSE, rescale_timesteps=False)
    if respacing is None:
        return gd.GaussianDiffusion(**kwargs)
    return SpacedDiffusion(space_timesteps(T, respacing), **kwargs)

"""replay: naive fine-tuning plus the plain diffusion loss on images the source model generated
(prior preservation), so that the model keeps producing what the source produced.

    L = mean_i [ psi(t_i) l(x_i, t_i) + lambda_replay xi(t'_i) l(x'_i, t'_i) ]
    l(x, t) = |eps_theta(sqrt(abar_t) x + sqrt(1 - abar_t) eps, t) - eps|^2   (+ the variance
              bound for a learned-variance network, as models/loss.py's DiffusionLoss)

x_i a target batch, x'_i an equally large batch of replay images, t and t' drawn
independently from U{0..T-1}, one student forward over both.
- `replay_weighting: constant`: psi = xi = 1, DreamBooth's prior-preservation loss (Ruiz et
  al., "DreamBooth: Fine tuning text-to-image diffusion models for subject-driven
  generation", CVPR 2023, eq. 2, with the class prompt's images; unconditional here).
- `replay_weighting: diff-tuning`: xi(t) = 1 - t / T and psi(t) = t / T, the linear choice of
  Diff-Tuning's retention/adaptation weights (Zhong et al., "Diffusion Tuning: Transferring
  diffusion models via chain of forgetting", NeurIPS 2024): the replay (knowledge
  retention) counts at the clean end, where denoising is the same in every domain and the
  source's knowledge transfers, and the target (adaptation) at the noisy end, where the
  content is the domain's. Its official code draws the retention batch's t with probability
  proportional to (T - t) and the target batch's to (t + 1); weighting uniform draws by
  these lines is the same in expectation. Before revision 1 the two were swapped.

The replay images: `replay_images` of them (default 1000), generated once, before the first
fine-tuning step, by the frozen source model with the harness's DDIM sampler
(models/sampling.py: eta 0, `replay_ddim_steps` steps, x0 clipped), from noise seeded by the
image's index only. They depend on the source model and these two settings only, so every
replay run that shares them shares the set: it is cached in the results store under
_cache/replay/, named by a hash of the source model (its run id `run:<id>`, or its folder),
the image size, the count and the steps, as uint8 images (what a saved sample holds). Each
step draws its replay batch uniformly from the set with the step's generator.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Literal

from runs.methods import Method
from runs.numbers import MAX_IMAGES, DdimSteps, Whole
from runs.params import NonNeg, Param

PARAMS = (
    Param("lambda_replay", NonNeg, "number", 1.0, "λreplay", "method"),       # DreamBooth's lambda
    Param("replay_weighting", Literal["constant", "diff-tuning"], "replay_weighting", "constant",
          "replay weights", "method"),
    Param("replay_images", Whole(gt=0, le=MAX_IMAGES), "whole number", 1000, "replay images", "method"),
    # a count guided-diffusion's ddimN can give, as evaluation.ddim_steps (37 is refused)
    Param("replay_ddim_steps", DdimSteps, "whole number", 40, "replay DDIM steps", "method"),
)


# ----------------------------------------------------------------------------
# The replay set.

def replay_key(init: str, shape: tuple[int, ...], images: int, ddim_steps: int, precision: str) -> str:
    """The cache's name for a replay set: what generates it, the source's working precision
    included (the job runs the source in the run's precision; bf16's images are not fp32's)."""
    what = {"init": init, "shape": list(shape), "images": images, "ddim_steps": ddim_steps, "precision": precision}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


def generate_replay(source, count: int, shape: tuple[int, ...], ddim_steps: int, device, chunk: int = 250):
    """`count` images (uint8, N x C x H x W) the source model generates with DDIM from the
    noise of indices 0..count-1 (models/sampling.py's indexed noise, seed 0)."""
    import torch

    from models.data import to_uint8
    from models.networks import as_eps_model, schedule_of, split_output
    from models.sampling import ddim_sample, indexed_noise

    model, schedule = as_eps_model(source), schedule_of(source)
    channels = shape[0]

    def eps(x, t):
        return split_output(model(x, t), channels)[0]      # a learned variance is not needed

    out = []
    for start in range(0, count, chunk):
        noise = indexed_noise(0, "replay", range(start, min(start + chunk, count)), shape).to(device)
        out.append(to_uint8(ddim_sample(eps, noise, num_steps=ddim_steps, schedule=schedule).images.cpu()))
    return torch.cat(out)


def replay_set(source, context, images: int, ddim_steps: int, shape: tuple[int, ...]):
    """The cached replay images of the run's source model, generated (and cached) if absent."""
    from safetensors.torch import load_file, save_file

    from runs.store import store_root_of

    key = replay_key(context.spec.init, shape, images, ddim_steps, context.spec.precision)
    cache = store_root_of(context.run_dir).parent / "_cache" / "replay" / f"{key}.safetensors"
    if cache.is_file():
        return load_file(cache)["images"]
    was_training = source.training
    generated = generate_replay(source.eval(), images, shape, ddim_steps, context.device)
    source.train(was_training)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp")
    save_file({"images": generated.contiguous()}, tmp)
    os.replace(tmp, cache)          # ranks that generated it too replace it with the same images
    return generated


# ----------------------------------------------------------------------------
# The loss.

class ReplayLoss:
    def __init__(self, *, lambda_replay: float, replay_weighting: str, replay_images: int, replay_ddim_steps: int,
                 schedule=None):
        from models.loss import DiffusionLoss

        self.base = DiffusionLoss(schedule)
        self.schedule = self.base.schedule
        self.lambda_replay, self.weighting = lambda_replay, replay_weighting
        self.replay_images, self.replay_ddim_steps = replay_images, replay_ddim_steps
        self.replay = None          # uint8 images, set by `prepare`

    def prepare(self, student, source, context=None, replay=None) -> None:
        """Load (or generate) the replay set; `replay` gives it directly (tests)."""
        if replay is None:
            config = source.config
            shape = (config.in_channels, config.sample_size, config.sample_size)
            replay = replay_set(source, context, self.replay_images, self.replay_ddim_steps, shape)
        self.replay = replay

    def retention_weight(self, t):
        """xi(t): 1, or 1 - t / T (diff-tuning: retention at the clean end)."""
        import torch

        if self.weighting == "constant":
            return torch.ones_like(t, dtype=torch.float32)
        return 1.0 - t.float() / self.schedule.num_timesteps

    def __call__(self, student, images, teacher=None, generator=None):
        import torch

        from models.data import to_model_range

        if self.replay is None:
            raise RuntimeError("replay: prepare(student, source, context) before the first step")
        picks = torch.randint(0, len(self.replay), (images.shape[0],), generator=generator, device=images.device)
        replayed = to_model_range(self.replay[picks.cpu()]).to(images.device, images.dtype)
        t, noise, _ = self.base.sample_inputs(images, generator)
        t_replay, noise_replay, _ = self.base.sample_inputs(replayed, generator)
        return self.terms(student, images, t, noise, replayed, t_replay, noise_replay)

    def terms(self, student, images, t, noise, replayed, t_replay, noise_replay):
        """The loss at given draws (`__call__` makes them): one student forward over both batches."""
        import torch

        from models.loss import LossTerms
        from models.networks import split_output

        b = images.shape[0]
        times, noises = torch.cat([t, t_replay]), torch.cat([noise, noise_replay])
        x_t = self.schedule.add_noise(torch.cat([images, replayed]), noises, times)
        eps, var_values = split_output(student(x_t, times), images.shape[1])
        var_target, var_replay = (None, None) if var_values is None else (var_values[:b], var_values[b:])
        target_each, diff, vb = self.base.diffusion(images, x_t[:b], t, noise, eps[:b], var_target)
        replay_each, _, _ = self.base.diffusion(replayed, x_t[b:], t_replay, noise_replay, eps[b:], var_replay)
        replay_term = self.retention_weight(t_replay) * replay_each
        if self.weighting == "diff-tuning":
            target_each = (1.0 - self.retention_weight(t)) * target_each
        per_sample = target_each + self.lambda_replay * replay_term
        return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb,
                         extra={"replay": replay_term.mean()})


# measured as l2sp's (runs/methods/l2sp.py): the `small` preset at 16 px, batch 32 (and 32
# replay images), a plain torch AdamW step on the 2-core machine, median of 10 steps
# interleaved with naive's: 1.028 s against 0.508 s (the machine was shared, so both were
# slow; the ratio is what counts). The one-off generation of the replay set is not counted.
# revision 1: diff-tuning's weights the right way round (retention at the clean end); every
# replay run gets a new id, since a revision is the method's
METHOD = Method(name="replay", loss=ReplayLoss, params=PARAMS, needs_source_model=True, cost=2.02,
                revision=1)

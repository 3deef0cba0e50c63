"""pairwise: naive fine-tuning that keeps the relative distances between the images the
source model would make (DDPM-PA: Zhu et al., "Few-shot image generation with diffusion
models", 2022; DomainStudio: Zhu et al., "DomainStudio: fine-tuning diffusion models for
domain-driven image generation using limited data", 2023):

    L = L_diff + lambda_pair * L_pair + lambda_hf_pair * L_hf_pair + lambda_hf_mse * L_hf_mse

Each image's predicted clean image x̂0 = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)
(unclipped), from the student and from the frozen source at the same x_t and t. Within a
group of g images, s_ij = cos(x̂0_i, x̂0_j) over the flattened image for j != i, and
p_i = softmax_j(s_ij) (temperature 1: the official code has none), so that

    L_pair    = 1 / (g (g - 1)) sum_i sum_{j != i} p_src_ij (log p_src_ij - log p_ada_ij)

is KL(p_src || p_ada) summed over the rows and divided by the g (g - 1) entries (torch's
KLDivLoss with its default 'mean', as the official code calls it). L_hf_pair is the same on
hf(x̂0), the sum LH + HL + HH of the three high-frequency bands of a one-level orthonormal
Haar transform of each channel (2x2 blocks, stride 2). L_hf_mse is the per-image mean of
(hf(x̂0_ada) - hf(x0))^2, x0 the training image (the official code takes the x̂0 that the
true noise implies, which is x0). The source only gives p_src: no gradient reaches it.

Groups: the official unconditional code compares the 3 images of each GPU's batch (its
batch size and `sim_size`, 3); DDP averages the groups' losses over the GPUs. Here each
process's batch is cut into consecutive groups of `pair_group` images and the two pairwise
terms are the groups' mean; the last batch_size mod pair_group images join no group (they
still train on L_diff and L_hf_mse). A group holds at least 3: in a group of 2 each softmax
has one entry, and the KL is 0.

Defaults: lambda_pair 4, lambda_hf_pair 4, lambda_hf_mse 1 and groups of 3 are the official
unconditional code's (DomainStudio's `pair_weight`, `hf_pair_weight`, `hf_mse_weight` in its
guided_diffusion/script_util.py and its README's training flags, `sim_size` in
gaussian_diffusion.py). The two pairwise terms are one number per step, added to each
image's loss (the batch mean carries them once), as there.

`hf_terms`: as the official code, the high-frequency terms are added only for a network
that learns its variance (`learned-variance`, the default); `always` adds them for every
network. On the built-in pair's fixed-variance 16 px network `always` fails: L_hf_mse,
whose x̂0 error is the eps error / sqrt(SNR), ends at 0.75-0.86 against an L_diff of 0.05,
and the samples leave the target domain (docs/methods.md, "The benchmark grid"). Before
revision 1 every network got them, as `always` does now.
"""
from __future__ import annotations

from typing import Literal

from runs.methods import Method
from runs.numbers import MAX_IMAGES, Whole
from runs.params import NonNeg, Param

# for which networks the high-frequency terms are added
HighFrequencyTerms = Literal["learned-variance", "always"]

PARAMS = (
    Param("lambda_pair", NonNeg, "number", 4.0, "λpair", "method"),
    Param("lambda_hf_pair", NonNeg, "number", 4.0, "λhfpair", "method"),
    Param("lambda_hf_mse", NonNeg, "number", 1.0, "λhfmse", "method"),
    Param("pair_group", Whole(ge=3, le=MAX_IMAGES), "whole number", 3, "pair group", "method"),
    Param("hf_terms", HighFrequencyTerms, "hf_terms", "learned-variance", "HF terms", "method"),
)


# ----------------------------------------------------------------------------
# The pieces: the Haar bands, the in-group similarities, the KL between them.

def haar_bands(x):
    """(LL, LH, HL, HH) of a one-level orthonormal Haar transform of each channel of
    x (N, C, H, W): each 2x2 block [[a, b], [c, d]] gives (a + b + c + d) / 2,
    (b - a + d - c) / 2 (left-right), (c - a + d - b) / 2 (top-bottom), (a - b - c + d) / 2.
    An odd last row or column is left out, as a stride-2 convolution does."""
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (b - a + d - c) / 2, (c - a + d - b) / 2, (a - b - c + d) / 2


def high_frequency(x):
    """LH + HL + HH: the image's high frequencies, as DomainStudio sums them."""
    _, lh, hl, hh = haar_bands(x)
    return lh + hl + hh


def group_similarities(x, group: int):
    """(k, g, g - 1): the cosine similarity of each image to the others of its group, over the
    flattened images, for the k = N // g consecutive groups of x (N, ...)."""
    import torch
    import torch.nn.functional as F

    k = x.shape[0] // group
    flat = F.normalize(x[: k * group].flatten(1).float(), dim=1, eps=1e-8).view(k, group, -1)
    sims = flat @ flat.transpose(1, 2)
    others = ~torch.eye(group, dtype=torch.bool, device=x.device)
    return sims[:, others].view(k, group, group - 1)


def relative_kl(source_sims, adapted_sims):
    """KL(softmax(source) || softmax(adapted)) over each row, as the mean over every entry."""
    log_p, log_q = source_sims.log_softmax(-1), adapted_sims.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).mean()


# ----------------------------------------------------------------------------
# The loss.

class PairwiseLoss:
    def __init__(self, *, lambda_pair: float, lambda_hf_pair: float, lambda_hf_mse: float, pair_group: int,
                 hf_terms: str, schedule=None):
        from models.loss import DiffusionLoss

        self.base = DiffusionLoss(schedule)
        self.schedule = self.base.schedule
        self.lambda_pair, self.lambda_hf_pair, self.lambda_hf_mse = lambda_pair, lambda_hf_pair, lambda_hf_mse
        self.group = pair_group
        self.hf_terms = hf_terms

    def predicted_x0(self, x_t, t, eps):
        abar = self.schedule.alpha_bar(t).view(-1, *([1] * (eps.dim() - 1)))
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def __call__(self, student, images, teacher=None, generator=None):
        t, noise, _ = self.base.sample_inputs(images, generator)
        return self.terms(student, images, t, noise, teacher)

    def terms(self, student, images, t, noise, teacher=None):
        """The loss at given timesteps and noise (`__call__` draws them)."""
        import torch

        from models.loss import LossTerms, per_sample_mean
        from models.networks import split_output

        if teacher is None:
            raise RuntimeError("pairwise: the frozen source model is needed as teacher")
        if images.shape[0] < self.group:
            raise ValueError(f"pairwise: a batch of {images.shape[0]} images per process is smaller than "
                             f"pair_group {self.group}: raise batch_size or lower pair_group")
        x_t = self.schedule.add_noise(images, noise, t)
        channels = images.shape[1]
        eps, var_values = split_output(student(x_t, t), channels)
        per_sample, diff, vb = self.base.diffusion(images, x_t, t, noise, eps, var_values)
        x0 = self.predicted_x0(x_t, t, eps.float())
        with_hf = self.hf_terms == "always" or var_values is not None
        with torch.no_grad():            # the source only gives the target distributions
            eps_source, _ = split_output(teacher(x_t, t), channels)    # sigma channels dropped
            x0_source = self.predicted_x0(x_t, t, eps_source.float())
            sims_source = group_similarities(x0_source, self.group)
            sims_source_hf = group_similarities(high_frequency(x0_source), self.group) if with_hf else None
        pair = relative_kl(sims_source, group_similarities(x0, self.group))
        per_sample = per_sample + self.lambda_pair * pair
        extra = {"pair": pair}
        if with_hf:
            x0_hf = high_frequency(x0)
            hf_pair = relative_kl(sims_source_hf, group_similarities(x0_hf, self.group))
            hf_mse = per_sample_mean((x0_hf - high_frequency(images.float())).square())
            per_sample = per_sample + self.lambda_hf_mse * hf_mse + self.lambda_hf_pair * hf_pair
            extra.update(hf_pair=hf_pair, hf_mse=hf_mse.mean())
        return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb, extra=extra)


# measured as l2sp's (runs/methods/l2sp.py): the `small` preset at 16 px, batch 32, a plain
# torch AdamW step on the 2-core machine, median of 10 steps interleaved with naive's, twice:
# 0.183 s against 0.133 s (1.37) and 0.180 s against 0.126 s (1.43); the extra is one source
# forward without gradient, and the similarities. Again at revision 1, without the
# high-frequency terms (their default on this network): 1.38 and 1.42
# revision 1: the high-frequency terms follow `hf_terms` (before, every network had them)
METHOD = Method(name="pairwise", loss=PairwiseLoss, params=PARAMS, needs_source_model=True, cost=1.40,
                revision=1)

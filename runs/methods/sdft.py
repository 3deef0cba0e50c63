"""sdft: self-distillation fine-tuning (JiwanHur/SDFT), the paper's method.

    L = L_diff + lambda_distill * L_distill + lambda_aux * L_aux
    L_distill = mean(w(t; gamma_distill) * |eps_T(x_t, t) - eps_S(x_t, t)|^2)
    L_aux     = mean(w(t; gamma_aux) * |eps_T(noise, t) - eps_S(noise, t)|^2)

as the official code computes it: the student's output on x_t serves both L_diff and
L_distill, the auxiliary input is the pure-noise tensor itself (at the sampled t, or at
t = T-1 with aux_timestep "final", as the paper's text reads), and the SNR weights
w (models/weighting.py) are not normalised. One student forward runs over the concatenated
batch [x_t; noise] and one teacher forward under inference mode: about 8/3 of a naive step
in arithmetic, never more. The distillation terms compare eps channels only: a learned-
variance teacher's variance channels are discarded.

`distill_target` compares the student and the teacher in another parameterisation than eps
(the paper's second open question), at the same weight w(t). An eps prediction at
x_t = a x0 + s eps (a^2 = abar_t, s^2 = 1 - abar_t, SNR = a^2 / s^2) implies
x0 = (x_t - s eps) / a and v = a eps - s x0, so for a student and a teacher at the same x_t

    |dv|^2 = |d eps|^2 / a^2 = |d eps|^2 (1 + SNR) / SNR,    |dx0|^2 = |d eps|^2 / SNR:

"v" puts more weight on the noisy end, "x0" far more (1/SNR is about 25,000 at t = T-1).
The aux term's input, pure noise at its timestep, is its x_t.
"""
from __future__ import annotations

from typing import Literal, get_args

from runs.methods import Method
from runs.params import NonNeg, Param, Pos

Weighting = Literal["sdft", "constant", "min-snr"]

PARAMS = (
    # the official MetFaces values
    Param("lambda_distill", NonNeg, "number", 0.1, "λd", "method"),
    Param("lambda_aux", NonNeg, "number", 0.1, "λa", "method"),
    Param("gamma_distill", NonNeg, "number", 3.0, "γd", "method", frozenset({"sdft"})),
    Param("gamma_aux", NonNeg, "number", 50.0, "γa", "method", frozenset({"sdft"})),
    Param("k", NonNeg, "number", 1.0, "k", "method", frozenset({"sdft"})),
    Param("min_snr_gamma", Pos, "number", 5.0, "γsnr", "method", frozenset({"min-snr"})),
    # "sampled": the pure-noise aux input at the sampled t (official code); "final": t = T-1
    Param("aux_timestep", Literal["sampled", "final"], "aux_timestep", "sampled", "aux t", "method"),
    # what the distillation terms compare; the default eps is the official loss (and keeps run ids)
    Param("distill_target", Literal["eps", "v", "x0"], "distill_target", "eps", "target", "method"),
)


# ----------------------------------------------------------------------------
# The loss. Settings a weighting does not use are None.

class SDFTLoss:
    """With both lambdas 0 (or no teacher) this is the plain diffusion loss, no teacher pass."""

    def __init__(self, *, weighting: str, lambda_distill: float, lambda_aux: float, aux_timestep: str,
                 distill_target: str, gamma_distill: float | None = None, gamma_aux: float | None = None, k: float | None = None,
                 min_snr_gamma: float | None = None, schedule=None):
        from models.loss import DiffusionLoss
        from models.weighting import WEIGHTINGS

        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {sorted(WEIGHTINGS)}")
        self.base = DiffusionLoss(schedule)
        self.schedule = self.base.schedule
        self.lambda_distill, self.lambda_aux = lambda_distill, lambda_aux
        self.weight_fn = WEIGHTINGS[weighting]
        self.gamma_distill, self.gamma_aux, self.k = gamma_distill, gamma_aux, k
        self.min_snr_gamma = min_snr_gamma
        self.aux_timestep = aux_timestep
        if distill_target not in ("eps", "v", "x0"):
            raise ValueError(f"unknown distill_target {distill_target!r}; expected eps, v or x0")
        self.distill_target = distill_target

    @property
    def needs_teacher(self) -> bool:
        return self.lambda_distill > 0 or self.lambda_aux > 0

    def weight(self, t, gamma: float | None):
        return self.weight_fn(self.schedule.snr(t), gamma=gamma, k=self.k, min_snr_gamma=self.min_snr_gamma)

    def in_target(self, eps, x_t, t):
        """eps, or the x0 or v that an eps prediction at x_t implies."""
        if self.distill_target == "eps":
            return eps
        abar = self.schedule.alpha_bar(t).view(-1, *([1] * (eps.dim() - 1)))
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = (x_t - s * eps) / a
        return x0 if self.distill_target == "x0" else a * eps - s * x0

    def sample_inputs(self, images, generator=None):
        return self.base.sample_inputs(images, generator)

    def __call__(self, student, images, teacher=None, generator=None):
        t, noise, _ = self.sample_inputs(images, generator)
        return self.terms(student, images, t, noise, teacher)

    def terms(self, student, images, t, noise, teacher=None):
        """The loss at given timesteps and noise (`__call__` draws them)."""
        import torch

        from models.loss import LossTerms, per_sample_mean
        from models.networks import split_output

        x_t = self.schedule.add_noise(images, noise, t)
        batch, channels = images.shape[:2]
        with_teacher = teacher is not None and self.needs_teacher
        with_aux = with_teacher and self.lambda_aux > 0
        inputs, times = x_t, t
        if with_aux:
            t_aux = t if self.aux_timestep == "sampled" else torch.full_like(t, self.schedule.num_timesteps - 1)
            inputs, times = torch.cat([x_t, noise]), torch.cat([t, t_aux])
        eps_student, var_values = split_output(student(inputs, times), channels)
        per_sample, diff, vb = self.base.diffusion(
            images, x_t, t, noise, eps_student[:batch], None if var_values is None else var_values[:batch])
        if not with_teacher:
            return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb)

        with torch.inference_mode():
            eps_teacher, _ = split_output(teacher(inputs, times), channels)   # sigma channels dropped
            target_teacher = self.in_target(eps_teacher.float(), inputs, times)
        # Inference tensors may not be saved for backward; the difference below is a normal tensor.
        gap = per_sample_mean((target_teacher - self.in_target(eps_student, inputs, times)).square())
        distill_each = self.weight(t, self.gamma_distill) * gap[:batch]
        per_sample = per_sample + self.lambda_distill * distill_each
        aux = None
        if with_aux:
            aux_each = self.weight(times[batch:], self.gamma_aux) * gap[batch:]
            per_sample = per_sample + self.lambda_aux * aux_each
            aux = aux_each.mean()
        return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb,
                         distill=distill_each.mean(), aux=aux)


def step_cost(*, lambda_distill: float, lambda_aux: float, **_) -> float:
    """A step's seconds relative to naive's: the teacher's pass and the student's over the
    doubled batch [x_t; noise] when the aux term is on, the teacher's pass over x_t alone
    when only the distillation term is, none with both off (the loss skips the teacher).

    Measured side by side (bench/train_step.py --resolution 16 --batch 32: the small preset,
    plain torch). With the aux term: 2.27, 2.43 and 2.27 on the 2-core development machine;
    whole 4,000-step runs of grids/forgetting.yaml took 1,076-1,152 s against naive's
    460-562 s (2,000 steps: 2.28x). Without it (lambda_aux = 0): 1.34, 1.36 and 1.30 on a
    2-core AMD EPYC machine, whose sdft step with it measured 2.22-2.24; whole 600-step
    loops of grids/reproduce-aux.yaml there took 54 s against naive's 37-39 s.
    """
    if lambda_aux > 0:
        return 2.27
    return 1.34 if lambda_distill > 0 else 1.0


METHOD = Method(name="sdft", loss=SDFTLoss, params=PARAMS, needs_source_model=True, cost=step_cost,
                block="distill", weightings=get_args(Weighting))

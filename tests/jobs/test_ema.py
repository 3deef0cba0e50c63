"""jobs/ema.py against diffusers' EMAModel: what is the same and what is not (the reason
the project keeps its own, in its docstring)."""
import torch
from diffusers.training_utils import EMAModel

from jobs.ema import EMA


def trained_steps(n: int = 6):
    """A small module and the weights it has after each of `n` made-up optimizer steps."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    steps = []
    for _ in range(n):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        steps.append([p.detach().clone() for p in module.parameters()])
    return module, steps


def run_both(decay: float, warmup: bool):
    module, steps = trained_steps()
    ours = EMA(module, decay, warmup=warmup)
    # constant: min_decay = decay, and update_after_step=-1 so that the first update is not a
    # plain copy (diffusers returns decay 0 for its first step)
    theirs = EMAModel([p.detach().clone() for p in ours.model.parameters()], decay=decay,
                      min_decay=0.0 if warmup else decay, update_after_step=-1 if not warmup else 0)
    for weights in steps:
        with torch.no_grad():
            for p, w in zip(module.parameters(), weights):
                p.copy_(w)
        ours.update(module)
        theirs.step(module.parameters())
    return list(ours.model.parameters()), theirs.shadow_params


def test_constant_decay_equals_diffusers_ema_model():
    ours, theirs = run_both(0.9, warmup=False)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_warmup_differs_from_diffusers_at_the_first_update_only():
    """diffusers' warm-up gives decay 0 at its first step (a copy of the weights), then
    (1+n)/(10+n); ours gives 1/10 at the first update. A switch would change every run id."""
    module, _ = trained_steps(0)
    ours = EMA(module, 0.9999, warmup=True)
    theirs = EMAModel(module.parameters(), decay=0.9999, min_decay=0.0)
    ours_decays = []
    for n in range(5):
        ours_decays.append(ours.current_decay())
        ours.updates += 1
    theirs_decays = [theirs.get_decay(k) for k in range(1, 6)]
    assert theirs_decays[0] == 0.0 and ours_decays[0] == 0.1
    assert ours_decays[1:] == theirs_decays[1:] == [(1 + n) / (10 + n) for n in range(1, 5)]

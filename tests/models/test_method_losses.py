"""The baselines' losses against their closed forms: l2sp, ewc (and its Fisher), and sdft's
distillation targets (runs/methods/)."""
import copy
import json

import pytest
import torch

from factories import finetune_spec, images, run_module, tiny_unet, write_spec
from runs.methods import get
from runs.methods.ewc import diagonal_fisher, source_fisher
from models.networks import as_eps_model
from models.schedule import NoiseSchedule


@pytest.fixture
def source_and_student():
    source = tiny_unet(seed=0).requires_grad_(False)
    student = copy.deepcopy(source).requires_grad_(True)
    return source, student


def shifted(student, by: float):
    with torch.no_grad():
        for p in student.parameters():
            p.add_(by)
    return student


# ---------------------------------------------------------------- l2sp
def test_l2sp_adds_lambda_times_the_squared_distance_to_the_source(source_and_student):
    source, student = source_and_student
    shifted(student, 0.01)
    count = sum(p.numel() for p in student.parameters())
    loss = get("l2sp").build_loss(lambda_l2sp=0.5)
    loss.prepare(student, source)
    x = images(4)
    terms = loss(as_eps_model(student), x, generator=torch.Generator().manual_seed(2))
    naive = get("naive").build_loss()(as_eps_model(student), x, generator=torch.Generator().manual_seed(2))
    assert terms.extra["l2sp"].item() == pytest.approx(count * 0.01 ** 2, rel=1e-4)
    assert (terms.total - naive.total).item() == pytest.approx(0.5 * count * 0.01 ** 2, rel=1e-4)
    # its gradient is 2 lambda (theta - theta_src) on every weight
    student.zero_grad()
    loss.penalty().backward()
    grads = torch.cat([p.grad.flatten() for p in student.parameters()])
    torch.testing.assert_close(grads, torch.full_like(grads, 2 * 0.01), rtol=1e-3, atol=1e-7)


def test_l2sp_is_naive_at_the_source_weights(source_and_student):
    source, student = source_and_student
    loss = get("l2sp").build_loss(lambda_l2sp=10.0)
    loss.prepare(student, source)
    x = images(4)
    terms = loss(as_eps_model(student), x, generator=torch.Generator().manual_seed(1))
    naive = get("naive").build_loss()(as_eps_model(student), x, generator=torch.Generator().manual_seed(1))
    assert terms.extra["l2sp"].item() == 0.0 and terms.total.item() == pytest.approx(naive.total.item(), abs=1e-7)


# ---------------------------------------------------------------- ewc
def test_ewc_weights_the_pull_by_the_fisher(source_and_student):
    source, student = source_and_student
    shifted(student, 0.02)
    gen = torch.Generator().manual_seed(4)
    fisher = {n: torch.rand(p.shape, generator=gen) for n, p in student.named_parameters()}
    loss = get("ewc").build_loss(lambda_ewc=3.0)
    loss.prepare(student, source, importance=fisher)
    expected = sum(float(f.sum()) for f in fisher.values()) * 0.02 ** 2
    x = images(4)
    terms = loss(as_eps_model(student), x, generator=torch.Generator().manual_seed(2))
    naive = get("naive").build_loss()(as_eps_model(student), x, generator=torch.Generator().manual_seed(2))
    assert terms.extra["ewc"].item() == pytest.approx(expected, rel=1e-4)
    assert (terms.total - naive.total).item() == pytest.approx(3.0 * expected, rel=1e-4)


def test_the_diagonal_fisher_is_the_mean_squared_batch_gradient():
    """A linear model y = w . x with batch loss mean((w . x)^2): the gradient is
    2 mean((w . x) x), so F is the mean over batches of its square, element by element."""
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
    batches = [torch.randn(5, 3, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    fisher = diagonal_fisher(model, lambda net, x: net(x).square().mean(), batches)
    w = model.weight.detach()[0]
    grads = torch.stack([2 * ((x @ w)[:, None] * x).mean(0) for x in batches])
    torch.testing.assert_close(fisher["weight"][0], grads.square().mean(0), rtol=1e-5, atol=1e-7)


def test_the_fisher_is_computed_once_and_cached_by_the_source_run(tmp_path, monkeypatch):
    from runs.spec import RunSpec
    from jobs.train import LossContext

    spec = RunSpec.model_validate(finetune_spec("ewc", ewc={"fisher_batches": 2}, batch_size=4,
                                                source_data={"kind": "builtin-source", "resolution": 16}))
    context = LossContext(spec, tmp_path / "_runs" / "ewc-run", torch.device("cpu"))
    source = tiny_unet(seed=0)
    first = source_fisher(source, context, 2)
    cached = list((tmp_path / "_cache" / "ewc-fisher").iterdir())
    assert len(cached) == 1 and set(first) == {n for n, _ in source.named_parameters()}
    assert all(float(f.sum()) > 0 for f in first.values())
    monkeypatch.setattr("runs.methods.ewc.diagonal_fisher", lambda *a: pytest.fail("recomputed"))
    again = source_fisher(source, context, 2)
    assert all(torch.equal(first[n], again[n]) for n in first)
    # a bf16 run's source has bf16 weights: its own Fisher, not the fp32 one
    monkeypatch.undo()
    bf16 = LossContext(spec.model_copy(update={"precision": "bf16"}), context.run_dir, context.device)
    source_fisher(source.to(torch.bfloat16), bf16, 2)
    assert len(list((tmp_path / "_cache" / "ewc-fisher").iterdir())) == 2


def test_an_ewc_run_trains_with_its_fisher_and_logs_its_penalty(tiny_source):
    """The training job: prepare() on the real networks, the Fisher in the store's cache."""
    spec = finetune_spec("ewc", ewc={"fisher_batches": 2, "lambda_ewc": 1e3}, steps=2, log_every=1,
                         source_data={"kind": "builtin-source", "resolution": 16})
    run_dir = write_spec(tiny_source.parent / "ewc", spec)
    run_module("jobs.train", str(run_dir), check=True)
    rows = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]          # the loss rows (not the first step's timing event)
    assert [r["step"] for r in rows if "loss_ewc" in r] == [1, 2]
    assert rows[0]["loss_ewc"] == 0.0 and rows[1]["loss_ewc"] > 0      # the pull starts at the source
    assert len(list((tiny_source.parent.parent / "_cache" / "ewc-fisher").iterdir())) == 1


# ---------------------------------------------------------------- sdft's distillation targets
@pytest.mark.parametrize("t", [5, 200, 600, 990])
def test_distillation_targets_differ_by_the_known_snr_factors(t):
    """At equal (constant) weights: |dv|^2 = |deps|^2 (1 + SNR) / SNR, |dx0|^2 = |deps|^2 / SNR,
    for the distillation term (input x_t) and the aux term (input: the noise) alike."""
    student, teacher = as_eps_model(tiny_unet(seed=0)), as_eps_model(tiny_unet(seed=1))
    x0 = images(3)
    steps = torch.full((3,), t)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    terms = {target: get("sdft").build_loss(weighting="constant", lambda_distill=1.0, lambda_aux=1.0,
                                            distill_target=target).terms(student, x0, steps, noise, teacher)
             for target in ("eps", "v", "x0")}
    snr = float(NoiseSchedule().snr(torch.tensor([t])))
    for term in ("distill", "aux"):
        eps = getattr(terms["eps"], term).item()
        assert eps > 0
        assert getattr(terms["v"], term).item() == pytest.approx(eps * (1 + snr) / snr, rel=2e-4)
        assert getattr(terms["x0"], term).item() == pytest.approx(eps / snr, rel=2e-4)
    assert terms["v"].diff.item() == terms["eps"].diff.item()          # L_diff stays the eps MSE

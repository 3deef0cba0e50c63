import copy

import pytest
import torch

from factories import images, tiny_unet
from runs.methods import get
from runs.methods.sdft import SDFTLoss
from models.networks import as_eps_model
from models.schedule import NoiseSchedule


def sdft_loss(**settings) -> SDFTLoss:
    """SDFTLoss at the declared settings (runs/methods/sdft.py) with these changes."""
    return get("sdft").build_loss(**settings)


@pytest.fixture
def nets():
    teacher = tiny_unet(seed=0).requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    with torch.no_grad():  # make the student differ from the teacher
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return student, teacher


def separate_terms(loss: SDFTLoss, student, teacher, x, seed):
    """The three terms the long way: separate forwards, explicit weights."""
    t, noise, x_t = loss.sample_inputs(x, torch.Generator().manual_seed(seed))
    eps_s = as_eps_model(student)
    eps_t = as_eps_model(teacher)
    snr = NoiseSchedule().snr(t)
    w_d = (loss.k + snr) ** -loss.gamma_distill
    w_a = (loss.k + snr) ** -loss.gamma_aux
    out_xt = eps_s(x_t, t)
    diff = ((out_xt - noise) ** 2).mean()
    with torch.no_grad():
        teach_xt, teach_noise = eps_t(x_t, t), eps_t(noise, t)
    distill = (w_d * ((teach_xt - out_xt) ** 2).mean(dim=(1, 2, 3))).mean()
    aux = (w_a * ((teach_noise - eps_s(noise, t)) ** 2).mean(dim=(1, 2, 3))).mean()
    return diff, distill, aux


def test_fused_loss_equals_sum_of_separate_terms(nets):
    student, teacher = nets
    loss = sdft_loss(lambda_distill=0.7, lambda_aux=0.3, gamma_distill=0.5, gamma_aux=0.2, k=1.0)
    x = images()
    fused = loss(as_eps_model(student), x, as_eps_model(teacher), generator=torch.Generator().manual_seed(5))
    diff, distill, aux = separate_terms(loss, student, teacher, x, seed=5)
    assert fused.diff.item() == pytest.approx(diff.item(), abs=1e-5)
    assert fused.distill.item() == pytest.approx(distill.item(), abs=1e-5)
    assert fused.aux.item() == pytest.approx(aux.item(), abs=1e-5)
    assert fused.total.item() == pytest.approx((diff + 0.7 * distill + 0.3 * aux).item(), abs=1e-5)
    assert fused.distill.item() > 0 and fused.aux.item() > 0


def test_zero_lambdas_are_the_naive_loss_without_a_teacher_pass(nets):
    student, teacher = nets
    calls = []

    def counting_teacher(x, t):
        calls.append(1)
        return as_eps_model(teacher)(x, t)

    x = images()
    sdft = sdft_loss(lambda_distill=0.0, lambda_aux=0.0)(as_eps_model(student), x, counting_teacher,
                                                        generator=torch.Generator().manual_seed(3))
    naive = get("naive").build_loss()(as_eps_model(student), x, generator=torch.Generator().manual_seed(3))
    assert calls == []
    assert sdft.total.item() == pytest.approx(naive.total.item(), abs=1e-7)


def test_one_student_and_one_teacher_forward(nets):
    student, teacher = nets
    counts = {"student": 0, "teacher": 0}

    def counted(name, net):
        eps = as_eps_model(net)

        def f(x, t):
            counts[name] += 1
            return eps(x, t)
        return f

    sdft_loss(lambda_distill=1.0, lambda_aux=1.0)(counted("student", student), images(),
                                                  counted("teacher", teacher))
    assert counts == {"student": 1, "teacher": 1}


def test_teacher_gets_no_gradient_and_does_not_change(nets):
    student, teacher = nets
    before = copy.deepcopy(teacher.state_dict())
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    loss = sdft_loss(lambda_distill=1.0, lambda_aux=1.0, weighting="constant")
    terms = loss(as_eps_model(student), images(), as_eps_model(teacher))
    terms.total.backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_aux_timestep_final_uses_t_max(nets):
    student, teacher = nets
    seen = []

    def spy(x, t):
        seen.append(t.clone())
        return as_eps_model(teacher)(x, t)

    sdft_loss(lambda_distill=1.0, lambda_aux=1.0, aux_timestep="final")(as_eps_model(student), images(4), spy)
    assert seen[0][4:].tolist() == [999] * 4


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="weighting"):
        sdft_loss(weighting="cosine")

"""pairwise (runs/methods/pairwise.py): the Haar split, the in-group similarity KL and the
whole loss against computations written here in numpy, the gradient reaching the student
only, and a run through the training job."""
import copy
import json

import numpy as np
import pytest
import torch

from factories import finetune_spec, images, run_module, tiny_unet, write_spec
from runs.methods import get
from runs.methods.pairwise import group_similarities, haar_bands, high_frequency, relative_kl
from models.networks import as_eps_model
from models.schedule import NoiseSchedule


# ---------------------------------------------------------------- numpy references
def np_high_frequency(x):
    """LH + HL + HH of each 2x2 block [[a, b], [c, d]], by the filters' sum: (3d - a - b - c) / 2."""
    n, ch, h, w = x.shape
    out = np.zeros((n, ch, h // 2, w // 2))
    for i in range(h // 2):
        for j in range(w // 2):
            a, b = x[:, :, 2 * i, 2 * j], x[:, :, 2 * i, 2 * j + 1]
            c, d = x[:, :, 2 * i + 1, 2 * j], x[:, :, 2 * i + 1, 2 * j + 1]
            out[:, :, i, j] = (3 * d - a - b - c) / 2
    return out


def np_pair_kl(source, adapted):
    """KL(softmax over j != i of cos(source_i, source_j) || the same of adapted), summed over the
    rows and divided by the g (g - 1) entries (torch's KLDivLoss 'mean')."""
    g = len(source)

    def rows(x):
        flat = x.reshape(g, -1).astype(np.float64)
        out = []
        for i in range(g):
            sims = np.array([flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j])
                             for j in range(g) if j != i])
            out.append(np.exp(sims) / np.exp(sims).sum())
        return np.array(out)

    p, q = rows(source), rows(adapted)
    return float((p * np.log(p / q)).sum() / (g * (g - 1)))


# ---------------------------------------------------------------- the pieces
def test_the_haar_bands_of_a_2x2_block():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    ll, lh, hl, hh = (float(b) for b in haar_bands(x))
    assert (ll, lh, hl, hh) == (5.0, 1.0, 2.0, 0.0)          # (10, 2, 4, 0) / 2
    assert float(high_frequency(x)) == 3.0
    # orthonormal: the bands keep the energy; an odd last row and column are left out
    y = torch.randn(2, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    energy = sum(float(b.square().sum()) for b in haar_bands(y))
    assert energy == pytest.approx(float(y[..., :6, :4].square().sum()), rel=1e-6)
    np.testing.assert_allclose(high_frequency(y).numpy(), np_high_frequency(y[..., :6, :4].numpy()),
                               rtol=1e-6, atol=1e-6)


def test_the_similarity_kl_against_numpy():
    g = torch.Generator().manual_seed(3)
    source, adapted = torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, 2, 2, 2, generator=g)
    kl = relative_kl(group_similarities(source, 3), group_similarities(adapted, 3))
    assert float(kl) > 0
    assert float(kl) == pytest.approx(np_pair_kl(source.numpy(), adapted.numpy()), rel=1e-5)
    # the same images, or the same images scaled (cosine sees directions only): no distance
    assert float(relative_kl(group_similarities(source, 3), group_similarities(3.0 * source, 3))) \
        == pytest.approx(0.0, abs=1e-7)
    # two groups of 3 from a batch of 7: the groups' mean, the last image in none
    more = torch.randn(7, 2, 2, 2, generator=g)
    other = torch.randn(7, 2, 2, 2, generator=g)
    want = (np_pair_kl(more[:3].numpy(), other[:3].numpy()) + np_pair_kl(more[3:6].numpy(), other[3:6].numpy())) / 2
    assert float(relative_kl(group_similarities(more, 3), group_similarities(other, 3))) == pytest.approx(want, rel=1e-5)
    # in a pair, each softmax has one entry: nothing to compare
    assert float(relative_kl(group_similarities(source, 2), group_similarities(adapted, 2))) == 0.0


# ---------------------------------------------------------------- the loss
def test_the_pairwise_loss_is_its_closed_form():
    """A student eps = x_t / 2 and a source eps = tanh(2 x_t), 4 images in groups of 3."""
    lp, lh, lm = 0.7, 1.3, 0.2
    loss = get("pairwise").build_loss(lambda_pair=lp, lambda_hf_pair=lh, lambda_hf_mse=lm, hf_terms="always")
    g = torch.Generator().manual_seed(5)
    x, n = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1, torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([3, 250, 600, 900])
    terms = loss.terms(lambda x_t, t: 0.5 * x_t, x, t, n, lambda x_t, t: torch.tanh(2 * x_t))

    abar = NoiseSchedule().alphas_cumprod.double().numpy()[t.numpy()].reshape(-1, 1, 1, 1)
    x0, noise = x.double().numpy(), n.double().numpy()
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    eps_ada, eps_src = 0.5 * x_t, np.tanh(2 * x_t)
    x0_ada = (x_t - np.sqrt(1 - abar) * eps_ada) / np.sqrt(abar)
    x0_src = (x_t - np.sqrt(1 - abar) * eps_src) / np.sqrt(abar)
    diff = ((eps_ada - noise) ** 2).reshape(4, -1).mean(1)
    hf_mse = ((np_high_frequency(x0_ada) - np_high_frequency(x0)) ** 2).reshape(4, -1).mean(1)
    pair = np_pair_kl(x0_src[:3], x0_ada[:3])
    hf_pair = np_pair_kl(np_high_frequency(x0_src[:3]), np_high_frequency(x0_ada[:3]))
    assert pair > 0 and hf_pair > 0
    want = diff + lm * hf_mse + lp * pair + lh * hf_pair
    np.testing.assert_allclose(terms.per_sample.numpy(), want, rtol=2e-4)
    assert float(terms.diff) == pytest.approx(diff.mean(), rel=1e-5)
    assert float(terms.extra["pair"]) == pytest.approx(pair, rel=2e-4)
    assert float(terms.extra["hf_pair"]) == pytest.approx(hf_pair, rel=2e-4)
    assert float(terms.extra["hf_mse"]) == pytest.approx(hf_mse.mean(), rel=2e-4)
    # hf is linear: the MSE is the eps error's high frequencies over the SNR
    snr = (abar / (1 - abar)).reshape(-1)
    eps_hf = (np_high_frequency(eps_ada - noise) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(hf_mse, eps_hf / snr, rtol=1e-9)

    # by default, as the official code, a fixed-variance network gets no high-frequency terms
    plain = get("pairwise").build_loss(lambda_pair=lp, lambda_hf_pair=lh, lambda_hf_mse=lm)
    fixed = plain.terms(lambda x_t, t: 0.5 * x_t, x, t, n, lambda x_t, t: torch.tanh(2 * x_t))
    assert set(fixed.extra) == {"pair"}
    np.testing.assert_allclose(fixed.per_sample.numpy(), diff + lp * pair, rtol=2e-4)
    # and a learned-variance one (eps and the variance's 3 channels) gets them: the same
    # terms as above, beside the variance's own bound
    def learned(x_t, t):
        return torch.cat([0.5 * x_t, torch.zeros_like(x_t)], dim=1)

    with_hf = plain.terms(learned, x, t, n, lambda x_t, t: torch.tanh(2 * x_t))
    no_hf = get("pairwise").build_loss(lambda_pair=lp, lambda_hf_pair=0.0, lambda_hf_mse=0.0).terms(
        learned, x, t, n, lambda x_t, t: torch.tanh(2 * x_t))
    assert float(with_hf.extra["hf_pair"]) == pytest.approx(hf_pair, rel=2e-4)
    np.testing.assert_allclose((with_hf.per_sample - no_hf.per_sample).numpy(), lm * hf_mse + lh * hf_pair,
                               rtol=2e-4, atol=1e-6)


def test_the_gradient_reaches_the_student_only_and_the_source_itself_is_no_distance():
    source = tiny_unet(seed=0).requires_grad_(True)         # would collect gradients if any reached it
    twin = copy.deepcopy(source)
    loss = get("pairwise").build_loss(hf_terms="always")
    x = images(4)
    same = loss(as_eps_model(twin), x, as_eps_model(source), generator=torch.Generator().manual_seed(0))
    assert same.as_floats()["loss_pair"] == pytest.approx(0.0, abs=1e-6)
    assert same.as_floats()["loss_hf_pair"] == pytest.approx(0.0, abs=1e-6)

    student = tiny_unet(seed=1).requires_grad_(True)
    terms = loss(as_eps_model(student), x, as_eps_model(source), generator=torch.Generator().manual_seed(0))
    weights = [p for p in student.parameters()]
    for name in ("pair", "hf_pair", "hf_mse"):          # each term trains the student
        assert float(terms.extra[name].detach()) > 0
        grads = torch.autograd.grad(terms.extra[name], weights, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name
    terms.total.backward()
    assert all(p.grad is None for p in source.parameters())


def test_a_batch_smaller_than_a_group_is_refused():
    loss = get("pairwise").build_loss(pair_group=5)
    model = as_eps_model(tiny_unet())
    with pytest.raises(ValueError, match="batch of 4 images per process is smaller than pair_group 5"):
        loss(model, images(4), model, generator=torch.Generator().manual_seed(0))


def test_a_pairwise_run_trains_and_logs_its_terms(tiny_source):
    spec = finetune_spec("pairwise", pairwise={"lambda_pair": 1.0, "hf_terms": "always"}, steps=2, log_every=1,
                         batch_size=6)
    run_dir = write_spec(tiny_source.parent / "pairwise", spec)
    run_module("jobs.train", str(run_dir), check=True)
    rows = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss_pair"] == pytest.approx(0.0, abs=1e-6)     # the student starts as the source
    assert all(r["loss_hf_mse"] > 0 for r in rows)

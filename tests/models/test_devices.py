"""The evaluation's device and chunk size (models/devices.py), with torch.cuda's facts mocked:
this machine has no GPU."""
import torch

from models import devices

GIB = 2 ** 30


def test_fitting_batch_takes_what_the_free_memory_holds():
    assert devices.fitting_batch(250, GIB, 10 * GIB) == 7            # 0.7 * 10 GiB at 1 GiB each
    assert devices.fitting_batch(250, 1024, 10 * GIB) == 250         # capped at what is wanted
    assert devices.fitting_batch(250, 100 * GIB, 10 * GIB) == 1      # never 0
    assert devices.chunks(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_the_chunk_on_a_cpu_is_the_planned_batch(monkeypatch):
    def no_gpu(*args, **kwargs):
        raise AssertionError("torch.cuda touched on a CPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_gpu)
    assert devices.chunk_size(lambda x: x, torch.zeros(1, 3, 4, 4), 250) == 250
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.eval_device() == torch.device("cpu")


def test_the_chunk_on_a_gpu_follows_the_probed_cost_and_the_free_memory(monkeypatch):
    held, peak = {"now": 3 * GIB}, {"max": 0}
    calls = []

    def call(x):           # the probe: one image allocates half a GiB at its peak
        calls.append(x.shape[0])
        peak["max"] = held["now"] + GIB // 2

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: held["now"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: peak.update(max=held["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak["max"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * GIB, 140 * GIB))
    assert devices.eval_device() == torch.device("cuda")
    assert devices.chunk_size(call, torch.zeros(1, 3, 4, 4), 250, "cuda") == 28     # 0.7 * 20 / 0.5
    assert devices.chunk_size(call, torch.zeros(1, 3, 4, 4), 16, "cuda") == 16
    assert calls == [1, 1]

"""The training job end to end, in subprocesses as it runs on a node."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from factories import ROOT, finetune_spec, pretrain_spec, run_module, tiny_unet, write_spec
from jobs.train import free_port
from runs.store import RunFolder


def ema_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "model" / "diffusion_pytorch_model.safetensors")


def raw_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "model-raw" / "diffusion_pytorch_model.safetensors")


def final_module_weights(run_dir: Path) -> dict:
    tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(run_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=True)
    return state["module"]


def tensorboard_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loss_falls_on_tiny_preset(tmp_path):
    run_dir = write_spec(tmp_path / "_runs" / "fall", pretrain_spec(steps=300, log_every=25))
    run_module("jobs.train", str(run_dir), check=True)
    rows = [r for r in RunFolder(run_dir).log_rows() if "loss" in r]
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    folder = RunFolder(run_dir)
    assert folder.status == "done" and (folder.model_dir / "config.json").is_file()
    assert {"step", "loss", "loss_diff", "lr", "images_per_s"} <= rows[-1].keys()
    # the loop's measured seconds so far, what the tables show as the model's training cost
    assert rows[0]["train_s"] > 0 and [r["train_s"] for r in rows] == sorted(r["train_s"] for r in rows)
    # the same curve in TensorBoard, and the EMA's sample grid at the (only) checkpoint
    acc = tensorboard_events(run_dir)
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in rows]
    assert {"train/lr", "train/ema_decay", "train/images_per_s"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Images("samples/ema")] == [300]


@pytest.mark.slow
def test_sdft_two_processes_zero2_bf16(tiny_source):
    """Stopped at step 6 and resumed: both ranks load the ZeRO-2 shards (weights only).
    Slow: two DeepSpeed ranks started twice, about 26 s on 2 cores (plus the session's tiny
    source model, about 45 s when no earlier test made it)."""
    spec = finetune_spec("sdft", steps=12, zero_stage=2, precision="bf16", checkpoint_every=6, log_every=6)
    run_dir = write_spec(tiny_source.parent / "zero2", spec)
    for extra in (["--stop-after", "6"], []):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(free_port()), "-m", "jobs.train", str(run_dir), *extra],
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    folder = RunFolder(run_dir)
    assert folder.status == "done"
    assert [r["step"] for r in folder.log_rows() if r.get("event") == "resume"] == [6]
    rows = [r for r in folder.log_rows() if "loss" in r]
    assert rows[-1]["step"] == 12 and rows[-1]["loss_distill"] > 0 and rows[-1]["loss_aux"] > 0
    # ZeRO-2 over two ranks partitions the optimizer state: one shard per rank
    shards = list((folder.checkpoints / "step00000012").glob("*optim_states.pt"))
    assert len(shards) == 2
    # the raw weights are the fp32 masters gathered from both ranks' partitions, not the
    # bf16 working copy (which they round to)
    raw, module = raw_weights(run_dir), final_module_weights(run_dir)
    assert all(raw[k].dtype == torch.float32 and torch.equal(raw[k].to(torch.bfloat16), module[k]) for k in raw)
    assert any(not torch.equal(raw[k].to(torch.bfloat16).float(), raw[k]) for k in raw)


def test_a_finetuned_student_trains_with_its_dropout(tiny_source):
    """diffusers' from_pretrained returns its model in eval mode, where dropout does nothing.
    At step 1 the student still has the teacher's weights, so its distillation loss there is
    its dropout's doing alone: none without dropout (up to rounding: 1.8e-33 was measured on
    an AVX2-only CPU, where a forward with grad and one without take different kernels), some
    with it."""
    first = {}
    for dropout in (0.0, 0.3):
        spec = finetune_spec("sdft", steps=1, dropout=dropout, log_every=1, checkpoint_every=1)
        run_dir = write_spec(tiny_source.parent / f"dropout-{dropout}", spec)
        run_module("jobs.train", str(run_dir), check=True)
        first[dropout] = next(r for r in RunFolder(run_dir).log_rows() if "loss" in r)
    assert first[0.0]["loss_distill"] == pytest.approx(0, abs=1e-12)
    assert first[0.0]["loss_aux"] == pytest.approx(0, abs=1e-12)
    assert first[0.3]["loss_distill"] > 1e-6 and first[0.3]["loss_aux"] > 1e-6, first[0.3]


def test_grad_clip_reaches_the_optimizer_step(tmp_path):
    """One step from the same initial weights, data and noise, without and with a clip so small
    that every gradient falls far below Adam's eps: the unclipped step moves the weights by
    about lr, the clipped one by about 1000 times less. Were the clip not applied, the two
    runs would end bitwise equal."""
    lr, moved = 1e-3, {}
    for clip in (None, 1e-9):
        spec = pretrain_spec(steps=1, lr=lr, checkpoint_every=1, **({"grad_clip": clip} if clip else {}))
        run_dir = write_spec(tmp_path / "_runs" / f"clip-{clip}", spec)
        run_module("jobs.train", str(run_dir), check=True)
        moved[clip] = raw_weights(run_dir)
    gap = max(float((moved[None][k] - moved[1e-9][k]).abs().max()) for k in moved[None])
    assert gap > 0.5 * lr, gap


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    """Slow: it trains the same 60 steps twice (killed and resumed, and straight through),
    because only a real SIGKILL mid-run shows the resume (about 35 s alone). A step at a batch
    of 16 (about 60 ms at 16 px) is far longer than the 20 ms poll that times the kill, and the
    kill has 40 steps to land before the run would end. It starts from a seeded tiny network as
    a model folder: what the resume must reproduce does not depend on how trained the starting
    weights are."""
    from models.networks import save_unet

    save_unet(tiny_unet(0), tmp_path / "source16")
    spec = finetune_spec("sdft", steps=60, checkpoint_every=10, log_every=5, batch_size=16,
                         init=str(tmp_path / "source16"))
    store = tmp_path / "_runs"
    reference = write_spec(store / "reference", spec)
    run_module("jobs.train", str(reference), check=True)

    killed = write_spec(store / "killed", spec)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() == "step00000020"):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tag = latest.read_text().strip()
    assert tag in ("step00000020", "step00000030", "step00000040"), tag
    assert RunFolder(killed).status == "running"          # it died; it did not finish

    run_module("jobs.train", str(killed), check=True)
    resumes = [r for r in RunFolder(killed).log_rows() if r.get("event") == "resume"]
    assert len(resumes) == 1 and 0 < resumes[0]["step"] < 60
    assert_bitwise_equal(ema_weights(killed), ema_weights(reference))
    assert_bitwise_equal(raw_weights(killed), raw_weights(reference))
    assert_bitwise_equal(final_module_weights(killed), final_module_weights(reference))
    # the resumed curve holds each logged step once (the steps past the checkpoint that the
    # killed process had logged are dropped), and each checkpoint has one sample grid: the
    # same images as the uninterrupted run's (the same EMA, the same noise)
    resumed, straight = tensorboard_events(killed), tensorboard_events(reference)
    logged = [r["step"] for r in RunFolder(killed).log_rows() if "loss" in r]
    assert [e.step for e in resumed.Scalars("train/loss")] == logged == sorted(set(logged))
    assert [(e.step, e.encoded_image_string) for e in resumed.Images("samples/ema")] == \
        [(e.step, e.encoded_image_string) for e in straight.Images("samples/ema")]


def test_fp16_on_cpu_is_refused_with_exit_2(tmp_path):
    run_dir = write_spec(tmp_path / "_runs" / "fp16", pretrain_spec(steps=5, precision="fp16"))
    proc = run_module("jobs.train", str(run_dir))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "fp16" in last and "GPU" in last


def test_diverging_loss_fails_cleanly_and_keeps_the_checkpoint(tmp_path):
    run_dir = write_spec(tmp_path / "_runs" / "nan", pretrain_spec(steps=50, lr=1e9, grad_clip=None,
                                                                    checkpoint_every=1))
    proc = run_module("jobs.train", str(run_dir))
    assert proc.returncode != 0
    state = RunFolder(run_dir).state()
    assert state["status"] == "failed" and "not finite" in state["error"]
    assert (run_dir / "checkpoints" / "latest").is_file()


def test_missing_init_model_is_a_user_error(tmp_path):
    spec = finetune_spec("sdft", steps=5)
    spec["init"] = str(tmp_path / "no-such-model")
    proc = run_module("jobs.train", str(write_spec(tmp_path / "_runs" / "noinit", spec)))
    assert proc.returncode == 2 and "no-such-model" in proc.stderr.strip().splitlines()[-1]


def test_the_log_window_times_the_first_step_apart_and_keeps_its_loss():
    """The first step's seconds (a compiled one compiles) stay out of the steady rate but in
    train_s, which a resumed run carries on from; its loss counts in the first row's mean."""
    from jobs.train import LogWindow

    clock = iter([0.0, 10.0, 10.0, 12.0, 12.0, 13.0, 13.0])
    window = LogWindow(train_s=5.0, clock=lambda: next(clock))
    window.add({"loss": 4.0})
    assert window.first_step() == 10.0
    window.add({"loss": 2.0})
    assert window.close(batch_size=8) == ({"loss": 3.0}, {"images_per_s": 4.0, "step_s": 2.0, "train_s": 17.0})
    window.add({"loss": 1.0})
    assert window.close(batch_size=8) == ({"loss": 1.0}, {"images_per_s": 8.0, "step_s": 1.0, "train_s": 18.0})


def test_a_run_stopped_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    """Started again from step 0, it redoes the steps the earlier attempt logged. Before, those
    stayed in train.jsonl and TensorBoard, and the loss curve went back to step 1 halfway."""
    spec = pretrain_spec(steps=6, checkpoint_every=5, log_every=1)
    run_dir = write_spec(tmp_path / "_runs" / "early", spec)
    run_module("jobs.train", str(run_dir), "--stop-after", "3", check=True)
    run_module("jobs.train", str(run_dir), check=True)
    rows = RunFolder(run_dir).log_rows()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if r.get("event") == "resume"] == [0]
    assert [e.step for e in tensorboard_events(run_dir).Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


def test_a_log_cut_off_mid_line_does_not_stop_the_resume(tmp_path):
    """A job killed while it appended a row (or a full disk) leaves a last line cut off.
    Before, reading the log raised at every later resume of the run, for good."""
    spec = pretrain_spec(steps=6, checkpoint_every=3, log_every=1)
    run_dir = write_spec(tmp_path / "_runs" / "cut", spec)
    run_module("jobs.train", str(run_dir), "--stop-after", "4", check=True)
    folder = RunFolder(run_dir)
    with open(folder.log_path, "a") as log:
        log.write('{"step": 5, "loss": 0.')
    run_module("jobs.train", str(run_dir), check=True)
    rows = folder.log_rows()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if r.get("event") == "resume"] == [3]

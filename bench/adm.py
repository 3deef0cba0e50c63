"""The paper's network (guided-diffusion ADM, ffhq_p2's architecture, random weights) at work.

    python bench/adm.py [--cpu-only | --gpu-only] [--profile] [--top-ops N]

CPU, always, at 64 px: ffhq_p2's block structure (six levels, channel_mult 1,1,2,2,4,4,
one ResBlock per level, ResBlock up/down sampling, scale-shift norm, attention at
downsampling 16 and in the middle block with 8 heads, learn_sigma) scaled down twice:
- input 256 -> 64 px: every feature map 4x smaller per side; attention at 4 px, not 16 px;
- base width 128 -> 32 (head width 64 -> 16, still 8 heads): 5.9M parameters, not 93.56M.
Together about 1/256 of ffhq_p2's FLOPs per image: the full network at 64 px is 24 GFLOP a
forward, ~3 TFLOP an SDFT step at batch 16, minutes per step on this 2-core machine.
fp32, as the harness trains on CPU (DeepSpeed has no fp16 on CPU).
GPU, when CUDA is available: the real ffhq_p2 network at 256 px in bf16 and in fp16 (the CPU
figures then come from a child process that sees no GPU); without a GPU those figures are
null with the reason.

Figures, per setting:
- SDFT fine-tune step at global batch 16 (lambda_distill = lambda_aux = 1, fused student
  forward over [x_t; noise], teacher under inference mode; the official hybrid loss: L_vb on
  the variance channels, the distillation terms on eps, the teacher's variance dropped),
  DeepSpeed ZeRO-2 + AdamW:
  images/s and peak memory (CPU: the process's peak RSS, which includes the frozen teacher;
  GPU: peak allocated);
- FLOPs of that step counted by torch.utils.flop_counter (matmuls and convolutions, forward
  and backward), the achieved FLOP/s, and MFU over the card's dense bf16 peak;
- deepspeed_over_torch: the DeepSpeed step over a plain-torch step (same precision: fp32 on
  CPU; autocast bf16 / autocast fp16 with a GradScaler on GPU), medians of interleaved
  steps; on CPU also the ratio of process CPU seconds, steadier on a shared machine;
- DDIM-40 samples/s (eps channels, one batch of --cpu/gpu-ddim-batch) and the projected
  time for 10,000 samples at that batch;
- time_share (GPU, or CPU with --profile): one DeepSpeed step's time by op kind; --top-ops N
  also prints (to stderr, not in the JSON) that step's N ops with the most self time.
The last line printed is one flat JSON object: cpu_*, gpu_bf16_*, gpu_fp16_* figures.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from harness.runtime import reexec_with_job_environment

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets, matched
# on torch.cuda.get_device_name(); the first matching entry wins, so specific names go first.
BF16_PEAK = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
]
NO_GPU = "no GPU lent in this session"
PROFILE_CATEGORIES = [  # substrings of aten op names
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "bmm", "softmax")),
    ("group_norm", ("group_norm",)),
    ("convolution", ("convolution", "conv2d", "conv_depthwise")),
    ("linear", ("addmm", "aten::mm")),
    ("optimizer", ("_foreach", "adam")),
]


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK if key in name), None)


def adm_config(resolution: int, width: int = 128):
    """ffhq_p2's flags at another input size and base width. Attention stays at downsampling
    16 and the head count at 8 (head width scales with the base width)."""
    from models.adm import ADMConfig

    return ADMConfig.from_flags({"image_size": resolution, "attention_resolutions": str(resolution // 16),
                                 "num_channels": width, "num_head_channels": width // 2}, preset="ffhq-p2")


def eps_channels(module: torch.nn.Module, dtype: torch.dtype):
    """(x, t) -> all six output channels in float32, as models.networks.as_eps_model: the
    loss and the sampler split eps from the learned variance (split_output)."""
    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return module(x.to(dtype), t).sample.float()
    return eps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device: torch.device) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads) of one call. On a shared
    machine the CPU seconds hold still when other work takes the cores."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    sync(device)                         # GPU work is asynchronous: time it to the end
    return time.perf_counter() - start, time.process_time() - start_cpu


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20      # Linux: KiB


def time_shares(step, device: torch.device, top_ops: int = 0, label: str = "") -> dict[str, float]:
    """Shares of one step's time (self time of the innermost aten ops, on the device for a
    GPU): do attention or GroupNorm dominate? top_ops > 0: also print the top_ops aten ops
    with the most self time (share, calls, category) to stderr."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    totals: dict[str, float] = {}
    ops: list[tuple[float, int, str, str]] = []
    for event in prof.key_averages():
        name = event.key.lower()
        spent = event.self_device_time_total if cuda else event.self_cpu_time_total
        category = next((cat for cat, keys in PROFILE_CATEGORIES if any(k in name for k in keys)), "other")
        if name.startswith("aten::"):      # kernels are counted once, under the op that ran them
            totals[category] = totals.get(category, 0.0) + spent
            ops.append((spent, event.count, category, event.key))
    total = sum(totals.values()) or 1.0
    if top_ops > 0:
        print(f"# {label} top {top_ops} aten ops by self {'device' if cuda else 'CPU'} time of one DeepSpeed step "
              f"({total / 1e3:.1f} ms in aten ops): share, ms, calls, category, op", file=sys.stderr)
        for spent, calls, category, key in sorted(ops, reverse=True)[:top_ops]:
            print(f"#   {spent / total:6.3f} {spent / 1e3:8.2f} {calls:6d}  {category:<11} {key}", file=sys.stderr)
    return {cat: round(v / total, 3) for cat, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def measure(device: torch.device, resolution: int, width: int, precision: str, batch: int, repeats: int,
            ddim_batch: int, profile: bool = False, top_ops: int = 0) -> dict:
    import deepspeed
    from torch.utils.flop_counter import FlopCounterMode

    from models.adm import build_unet
    from harness.methods import get as method
    from models.sampling import ddim_sample

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    torch.manual_seed(0)
    net = build_unet(adm_config(resolution, width)).to(device)      # random weights; dropout 0 as trained
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    if dtype != torch.float32:
        teacher.to(dtype)
    teacher_eps = eps_channels(teacher, dtype)
    images = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    loss = method("sdft").build_loss(lambda_distill=1.0, lambda_aux=1.0)
    out: dict = {"resolution": resolution, "num_channels": width, "batch": batch,
                 "parameters": sum(p.numel() for p in net.parameters())}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_gib()

    # DeepSpeed first, alone: its peak memory is then the training process's own
    student_ds = copy.deepcopy(net)
    engine, *_ = deepspeed.initialize(
        model=student_ds, optimizer=torch.optim.AdamW(student_ds.parameters(), lr=2e-5, weight_decay=0.0),
        config={"train_batch_size": batch, "train_micro_batch_size_per_gpu": batch,
                "zero_optimization": {"stage": 2}, "bf16": {"enabled": precision == "bf16"},
                "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
                "gradient_clipping": 0.0, "steps_per_print": 2**31 - 1})
    ds_eps = eps_channels(engine, dtype)

    def ds_step():
        terms = loss(ds_eps, images, teacher_eps)
        engine.backward(terms.total)
        engine.step()

    ds_step()                                                   # warm-up
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        out["peak_memory_gib"] = round(peak_rss_gib(), 2)
        out["rss_before_models_gib"] = round(rss_before, 2)

    student = copy.deepcopy(net)
    del net
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-5, weight_decay=0.0)
    autocast = precision != "fp32"
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    torch_eps = eps_channels(student, torch.float32)

    def torch_step():
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            terms = loss(torch_eps, images, teacher_eps)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.step(optimizer)
        scaler.update()

    with FlopCounterMode(display=False) as counter:             # also the torch arm's warm-up
        torch_step()
    flops = counter.get_total_flops()

    # interleave the arms so that drift in machine speed hits them alike
    times: dict[str, list[tuple[float, float]]] = {"deepspeed": [], "torch": []}
    for _ in range(repeats):
        times["deepspeed"].append(timed(ds_step, device))
        times["torch"].append(timed(torch_step, device))
    ds_s, torch_s = (statistics.median(w for w, _ in times[k]) for k in ("deepspeed", "torch"))
    out.update({
        "deepspeed_step_s": round(ds_s, 4), "torch_step_s": round(torch_s, 4),
        "images_per_s": round(batch / ds_s, 3),
        "deepspeed_over_torch": round(ds_s / torch_s, 3),
        "step_wall_s": {k: [round(w, 3) for w, _ in v] for k, v in times.items()},
        "flops_per_step": flops, "achieved_flops_per_s": float(f"{flops / ds_s:.3g}"),
    })
    if device.type == "cpu":
        ds_cpu, torch_cpu = (statistics.median(c for _, c in times[k]) for k in ("deepspeed", "torch"))
        out["deepspeed_over_torch_cpu_seconds"] = round(ds_cpu / torch_cpu, 3)
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = bf16_peak(name)
        out["mfu"] = round(flops / ds_s / peak, 4) if peak else None
        out["mfu_reason"] = None if peak else f"no dense bf16 peak on file for {name!r}"
    else:
        out["mfu"] = None
        out["mfu_reason"] = "CPU: MFU is defined over a GPU's dense bf16 peak"
    if profile:
        out["time_share"] = time_shares(ds_step, device, top_ops, label=f"{device.type} {precision}")
    del engine, student_ds, student, optimizer

    # DDIM-40 from the frozen network in the run's precision (it takes the eps channels)
    sampler = eps_channels(teacher, dtype)
    noise = torch.randn(ddim_batch, 3, resolution, resolution, device=device)
    ddim_sample(sampler, noise[:1], num_steps=2)                # warm-up
    ddim_s, _ = timed(lambda: ddim_sample(sampler, noise, num_steps=40), device)
    out.update({"ddim_batch": ddim_batch, "ddim40_s": round(ddim_s, 3),
                "ddim40_samples_per_s": round(ddim_batch / ddim_s, 3),
                "ddim40_10k_projected_s": round(10_000 * ddim_s / ddim_batch, 1)})
    return out


def null_figures(reason: str) -> dict:
    keys = ("images_per_s", "peak_memory_gib", "flops_per_step", "mfu", "deepspeed_over_torch",
            "ddim40_samples_per_s", "ddim40_10k_projected_s")
    return {**{k: None for k in keys}, "reason": reason}


def prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in values.items()}


def cpu_figures_in_child(argv: list[str]) -> dict:
    """On a GPU machine DeepSpeed's accelerator is CUDA: the CPU figures come from a child
    process that sees no GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, __file__, *argv, "--cpu-only"], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return prefixed("cpu", null_figures(f"CPU run failed ({proc.returncode}): {tail[0]}"))
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: v for k, v in figures.items() if k.startswith("cpu_")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16, help="global batch of the fine-tune step")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per arm on CPU (GPU: at least 5)")
    parser.add_argument("--cpu-resolution", type=int, default=64)
    parser.add_argument("--cpu-width", type=int, default=32, help="base width on CPU (ffhq_p2: 128)")
    parser.add_argument("--cpu-ddim-batch", type=int, default=4)
    parser.add_argument("--gpu-resolution", type=int, default=256)
    parser.add_argument("--gpu-ddim-batch", type=int, default=64)
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU figures")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU figures (on a GPU machine)")
    parser.add_argument("--profile", action="store_true", help="time shares by op on CPU too (one more step)")
    parser.add_argument("--top-ops", type=int, default=0, metavar="N",
                        help="with the time shares, print the profiled step's N costliest ops to stderr")
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)   # the allocator settings every job runs with
    start = time.perf_counter()
    use_gpu = torch.cuda.is_available() and not args.cpu_only
    figures: dict = {"threads": torch.get_num_threads()}
    if use_gpu and not args.gpu_only:
        figures.update(cpu_figures_in_child([a for a in sys.argv[1:] if a not in ("--gpu-only", "--cpu-only")]))
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")    # said, not guessed: no warning
    from jobs.train import init_distributed

    init_distributed()
    # (1+SNR)^-50 makes denormal floats in the backward pass; the harness flushes them on CPU
    torch.set_flush_denormal(True)
    if not use_gpu:
        figures.update(prefixed("cpu", measure(torch.device("cpu"), args.cpu_resolution, args.cpu_width, "fp32",
                                               args.batch, args.repeats, args.cpu_ddim_batch, profile=args.profile,
                                               top_ops=args.top_ops)))
    figures["gpu_device"] = torch.cuda.get_device_name() if use_gpu else None
    for precision in ("bf16", "fp16"):
        values = (measure(torch.device("cuda"), args.gpu_resolution, 128, precision, args.batch,
                          max(args.repeats, 5), args.gpu_ddim_batch, profile=True, top_ops=args.top_ops) if use_gpu
                  else {"resolution": args.gpu_resolution, "num_channels": 128, **null_figures(NO_GPU)})
        figures.update(prefixed(f"gpu_{precision}", values))
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

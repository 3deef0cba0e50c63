"""The paper's network (guided-diffusion ADM, ffhq_p2's architecture, random weights) at work.

    python bench/adm.py [--cpu-only | --gpu-only] [--profile] [--top-ops N]
        [--batches 16,64] [--compile off|on|both] [--zero-stage 0|1|2] [--channels-last]
        [--gn-working-precision] [--samplers ddim:40,dpm-solver++:20] [--jsonl FILE] [--cpu-smoke]
    bash bench/gpu_all.sh        # every GPU figure of docs/speed.md, ~8 minutes on an H200

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
  DeepSpeed (ZeRO stage 0, the harness's default; --zero-stage) + AdamW; with --compile, the
  networks compiled in place (models/compiling.py) and the first (compiling) step timed apart:
  images/s and peak memory (CPU: the process's peak RSS, which includes the frozen teacher;
  GPU: peak allocated);
- FLOPs of that step counted by torch.utils.flop_counter (matmuls and convolutions, forward
  and backward), the achieved FLOP/s, and MFU over the card's dense bf16 peak;
- deepspeed_over_torch: the DeepSpeed step over a plain-torch step (same precision: fp32 on
  CPU; autocast bf16 / autocast fp16 with a GradScaler on GPU), medians of interleaved
  steps; on CPU also the ratio of process CPU seconds, steadier on a shared machine;
- samples/s of each of --samplers (DDIM and diffusers' solvers, models/solvers.py; eps
  channels, one batch of --cpu/gpu-ddim-batch) and the projected time for 10,000 samples at
  that batch (keys ddim40_*, dpmpp20_*, unipc20_*);
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
from typing import Callable

import torch

from runs.runtime import reexec_with_job_environment

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets, matched
# on torch.cuda.get_device_name(); the first matching entry wins, so specific names go first.
BF16_PEAK = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
]
NO_GPU = "no GPU lent in this session"
FINETUNE_DROPOUT = 0.1   # the paper's fine-tuning recipe (docs/recipe.md, grids/metfaces.yaml)
PROFILE_CATEGORIES = [  # substrings of aten op names
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "bmm", "softmax")),
    ("group_norm", ("group_norm",)),
    ("convolution", ("convolution", "conv2d", "conv_depthwise")),
    ("linear", ("addmm", "aten::mm")),
    ("optimizer", ("_foreach", "adam")),
]


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK if key in name), None)


def adm_config(resolution: int, width: int = 128, dropout: float = 0.0):
    """ffhq_p2's flags at another input size and base width. Attention stays at downsampling
    16 and the head count at 8 (head width scales with the base width)."""
    from models.adm import ADMConfig

    return ADMConfig.from_flags({"image_size": resolution, "attention_resolutions": str(resolution // 16),
                                 "num_channels": width, "num_head_channels": width // 2, "dropout": dropout},
                                preset="ffhq-p2")


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


def sampler_key(name: str, steps: int) -> str:
    """'ddim', 40 -> 'ddim40'; 'dpm-solver++', 20 -> 'dpmpp20' (a JSON key prefix)."""
    return {"dpm-solver++": "dpmpp"}.get(name, name) + str(steps)


def parse_samplers(text: str) -> list[tuple[str, int]]:
    """'ddim:40,dpm-solver++:20' -> [('ddim', 40), ('dpm-solver++', 20)]."""
    out = []
    for item in filter(None, text.split(",")):
        name, _, steps = item.partition(":")
        if name not in ("ddim", "dpm-solver++", "unipc") or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--samplers: expected ddim|dpm-solver++|unipc:STEPS, got {item!r}")
        out.append((name, int(steps)))
    return out


def measure(device: torch.device, resolution: int, width: int, precision: str, batch: int, repeats: int,
            ddim_batch: int, profile: bool = False, top_ops: int = 0, *, compile: bool = False,
            zero_stage: int = 0, channels_last: bool = False, gn_working: bool = False,
            samplers: list[tuple[str, int]] = (("ddim", 40),), arms: tuple[str, ...] = ("deepspeed", "torch"),
            compile_backend: str = "inductor", step_done: Callable[[dict], None] | None = None) -> dict:
    import deepspeed
    from torch.utils.flop_counter import FlopCounterMode

    from models.adm import build_unet
    from runs.methods import get as method
    from models.compiling import compile_in_place
    from models.layouts import group_norm_in_working_precision, to_channels_last
    from models.sampling import ddim_sample
    from models.solvers import solver_sample

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    # random weights; the student trains with the recipe's fine-tuning dropout, the teacher
    # (eval mode) and the samplers run without it
    net = build_unet(adm_config(resolution, width, dropout=FINETUNE_DROPOUT)).to(device)
    if gn_working:
        group_norm_in_working_precision(net)
    # NHWC after DeepSpeed's set-up: its parameter broadcast views them as contiguous bytes
    layout = to_channels_last if channels_last else (lambda module: module)
    teacher = layout(copy.deepcopy(net)).eval().requires_grad_(False)
    if dtype != torch.float32:
        teacher.to(dtype)
    compile_in_place(teacher, compile, compile_backend)
    teacher_eps = eps_channels(teacher, dtype)
    images = (torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1).contiguous(
        memory_format=memory_format)
    loss = method("sdft").build_loss(lambda_distill=1.0, lambda_aux=1.0)
    out: dict = {"resolution": resolution, "num_channels": width, "batch": batch,
                 "parameters": sum(p.numel() for p in net.parameters()), "compile": compile,
                 "zero_stage": zero_stage, "channels_last": channels_last, "group_norm_working_precision": gn_working,
                 "dropout": FINETUNE_DROPOUT}
    autocast = precision != "fp32"

    def torch_step_of(student, optimizer, scaler, teacher_fn=teacher_eps):
        torch_eps = eps_channels(student, torch.float32)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                terms = loss(torch_eps, images, teacher_fn)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
        return step

    # FLOPs counted on an eager plain-torch step (a compiled graph hides its ops from the
    # counter; `forward` stays eager after an in-place compile)
    counted = layout(copy.deepcopy(net))
    with FlopCounterMode(display=False) as counter:
        torch_step_of(counted, torch.optim.AdamW(counted.parameters(), lr=2e-5, weight_decay=0.0),
                      torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                      teacher_fn=lambda x, t: teacher.forward(x.to(dtype), t).sample.float())()
    flops = counter.get_total_flops()
    del counted
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_gib()

    def record_peak(arm: str) -> None:
        """The peak memory after the first arm's first step: that arm's own (the second arm's
        would add the first's resident copy)."""
        out["peak_memory_arm"] = arm
        if device.type == "cuda":
            out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        else:
            out["peak_memory_gib"] = round(peak_rss_gib(), 2)
            out["rss_before_models_gib"] = round(rss_before, 2)

    steps: dict = {}
    engine = student_ds = None
    if "deepspeed" in arms:
        # DeepSpeed first, alone: its peak memory is then the training process's own (and
        # without this arm no engine holds a model copy and optimizer state on the card)
        student_ds = compile_in_place(copy.deepcopy(net), compile, compile_backend)
        engine, *_ = deepspeed.initialize(
            model=student_ds, optimizer=torch.optim.AdamW(student_ds.parameters(), lr=2e-5, weight_decay=0.0),
            config={"train_batch_size": batch, "train_micro_batch_size_per_gpu": batch,
                    "zero_optimization": {"stage": zero_stage}, "bf16": {"enabled": precision == "bf16"},
                    "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
                    "gradient_clipping": 0.0, "steps_per_print": 2**31 - 1})
        layout(engine.module)
        ds_eps = eps_channels(engine, dtype)

        # `del engine, ds_eps` below empties this closure's cells, freeing the engine before
        # the samplers run; ds_step is not called after it
        def ds_step():
            terms = loss(ds_eps, images, teacher_eps)   # noqa: F821
            engine.backward(terms.total)   # noqa: F821
            engine.step()                  # noqa: F821

        steps["deepspeed"] = ds_step
        out["deepspeed_first_step_s"] = round(timed(ds_step, device)[0], 3)   # warm-up (compiles)
        record_peak("deepspeed")
    if "torch" in arms:
        student = compile_in_place(layout(copy.deepcopy(net)), compile, compile_backend)
        steps["torch"] = torch_step_of(student, torch.optim.AdamW(student.parameters(), lr=2e-5, weight_decay=0.0),
                                       torch.amp.GradScaler(device.type, enabled=precision == "fp16"))
        out["torch_first_step_s"] = round(timed(steps["torch"], device)[0], 3)
        if "peak_memory_gib" not in out:      # alone on the card: its own peak
            record_peak("torch")
    del net

    # interleave the arms so that drift in machine speed hits them alike
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    median = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    # the harness trains through DeepSpeed: its arm is the main figure where it ran
    main_arm = "deepspeed" if "deepspeed" in median else "torch"
    main_s = median[main_arm]
    out.update({
        "main_arm": main_arm,
        "deepspeed_step_s": round(median["deepspeed"], 4) if "deepspeed" in median else None,
        "torch_step_s": round(median["torch"], 4) if "torch" in median else None,
        "images_per_s": round(batch / main_s, 3),
        "deepspeed_over_torch": round(median["deepspeed"] / median["torch"], 3) if len(median) == 2 else None,
        "step_wall_s": {k: [round(w, 3) for w, _ in v] for k, v in times.items()},
        "flops_per_step": flops, "achieved_flops_per_s": float(f"{flops / main_s:.3g}"),
    })
    if device.type == "cpu" and len(median) == 2:
        ds_cpu, torch_cpu = (statistics.median(c for _, c in times[k]) for k in ("deepspeed", "torch"))
        out["deepspeed_over_torch_cpu_seconds"] = round(ds_cpu / torch_cpu, 3)
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = bf16_peak(name)
        out["mfu"] = round(flops / main_s / peak, 4) if peak else None
        out["torch_mfu"] = round(flops / median["torch"] / peak, 4) if peak and "torch" in median else None
        out["mfu_reason"] = None if peak else f"no dense bf16 peak on file for {name!r}"
    else:
        out["mfu"] = None
        out["mfu_reason"] = "CPU: MFU is defined over a GPU's dense bf16 peak"
    if profile:
        out["time_share"] = time_shares(next(iter(steps.values())), device, top_ops,
                                        label=f"{device.type} {precision}")
    del engine, student_ds, steps
    if "deepspeed" in arms:
        del ds_eps
    if step_done is not None and samplers:     # the step's figures kept, should the samplers run out of time
        step_done({**out, "samplers": "not finished"})

    # the samplers from the frozen network in the run's precision (they take the eps channels)
    if compile:
        # the step compiled the teacher at its own batch under inference_mode: a sampler's
        # batch would recompile it with a dynamic batch; afresh, it compiles as an evaluation's does
        torch._dynamo.reset()
    sampler = eps_channels(teacher, dtype)
    noise = torch.randn(ddim_batch, 3, resolution, resolution, device=device).contiguous(memory_format=memory_format)
    out["ddim_batch"] = ddim_batch
    for name, count in samplers:
        def draw(n: int, name=name):
            if name == "ddim":
                return ddim_sample(sampler, noise, num_steps=n)
            return solver_sample(sampler, noise, name, n)
        key = sampler_key(name, count)
        out[f"{key}_first_s"] = round(timed(lambda: draw(2), device)[0], 3)      # warm-up (compiles)
        seconds, _ = timed(lambda: draw(count), device)
        out.update({f"{key}_s": round(seconds, 3), f"{key}_samples_per_s": round(ddim_batch / seconds, 3),
                    f"{key}_10k_projected_s": round(10_000 * seconds / ddim_batch, 1)})
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
    parser.add_argument("--batch", type=int, default=16, help="global batch of the fine-tune step on CPU")
    parser.add_argument("--batches", default="16", help="GPU: comma-separated global batches (e.g. 16,64)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per arm on CPU (GPU: at least 5)")
    parser.add_argument("--cpu-resolution", type=int, default=64)
    parser.add_argument("--cpu-width", type=int, default=32, help="base width on CPU (ffhq_p2: 128)")
    parser.add_argument("--cpu-ddim-batch", type=int, default=4)
    parser.add_argument("--gpu-resolution", type=int, default=256)
    parser.add_argument("--gpu-ddim-batch", type=int, default=64)
    parser.add_argument("--precisions", default="bf16,fp16", help="GPU: comma-separated precisions")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="torch.compile the networks (both: one measurement each way)")
    parser.add_argument("--zero-stage", type=int, choices=(0, 1, 2), default=0,
                        help="DeepSpeed ZeRO stage of the step (0: the harness's default; the files "
                             "measured before it were stage 2)")
    parser.add_argument("--channels-last", action="store_true", help="networks and inputs in NHWC")
    parser.add_argument("--gn-working-precision", action="store_true",
                        help="GroupNorm in the autocast dtype (the plain-torch arm; DeepSpeed's bf16 has no autocast)")
    parser.add_argument("--samplers", default="ddim:40", help="samplers timed, NAME:STEPS, e.g. ddim:40,dpm-solver++:20")
    parser.add_argument("--arms", default="deepspeed,torch", help="which step arms to time")
    parser.add_argument("--compiled-arms", default=None,
                        help="the arms of the compiled measurements (default: --arms); e.g. deepspeed at batch 64")
    parser.add_argument("--jsonl", default=None, help="also append each setting's figures to this file as it ends")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the GPU code path on the CPU at a tiny size (32 px, width 32, batch 2): does it start?")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU figures")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU figures (on a GPU machine)")
    parser.add_argument("--profile", action="store_true", help="time shares by op on CPU too (one more step)")
    parser.add_argument("--top-ops", type=int, default=0, metavar="N",
                        help="with the time shares, print the profiled step's N costliest ops to stderr")
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)   # the allocator settings every job runs with
    start = time.perf_counter()
    samplers = parse_samplers(args.samplers)
    arms = tuple(filter(None, args.arms.split(",")))
    compiled_arms = tuple(filter(None, (args.compiled_arms or args.arms).split(",")))
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    options = dict(zero_stage=args.zero_stage, channels_last=args.channels_last, gn_working=args.gn_working_precision,
                   samplers=samplers)
    use_gpu = torch.cuda.is_available() and not args.cpu_only and not args.cpu_smoke
    layout_suffix = ("_nhwc" if args.channels_last else "") + ("_gnwp" if args.gn_working_precision else "")
    figures: dict = {"threads": torch.get_num_threads()}
    if use_gpu and not args.gpu_only:
        figures.update(cpu_figures_in_child([a for a in sys.argv[1:] if a not in ("--gpu-only", "--cpu-only")]))
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")    # said, not guessed: no warning
    from jobs.train import init_distributed

    init_distributed()
    # (1+SNR)^-50 makes denormal floats in the backward pass; the harness flushes them on CPU
    torch.set_flush_denormal(True)

    # each line says where it was measured: lines of several machines share one file
    where = {"device": torch.cuda.get_device_name() if use_gpu else "cpu", "torch": torch.__version__}

    def record(prefix: str, values: dict) -> None:
        figures.update(prefixed(prefix, values))
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps({"setting": prefix, **where, **values}) + "\n")

    if args.cpu_smoke:       # every GPU setting's code, at a size a CPU runs in seconds (compiled: traced only)
        for compile in compiles:
            for batch in (int(b) for b in args.batches.split(",")):
                prefix = f"smoke_fp32_b{batch}" + layout_suffix + ("_compiled" if compile else "")
                record(prefix, measure(torch.device("cpu"), 32, 32, "fp32", min(batch, 2), 1, 2, compile=compile,
                                       arms=compiled_arms if compile else arms, compile_backend="eager",
                                       step_done=lambda values, prefix=prefix: record(prefix, values),
                                       **{**options, "samplers": [(n, min(k, 3)) for n, k in samplers]}))
        figures["wall_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps(figures))
        return
    if not use_gpu:
        for compile in compiles:
            record("cpu" + ("_compiled" if compile else ""),
                   measure(torch.device("cpu"), args.cpu_resolution, args.cpu_width, "fp32", args.batch,
                           args.repeats, args.cpu_ddim_batch, profile=args.profile, top_ops=args.top_ops,
                           compile=compile, arms=compiled_arms if compile else arms, **options))
    figures["gpu_device"] = torch.cuda.get_device_name() if use_gpu else None
    for precision in filter(None, args.precisions.split(",")):
        for compile in compiles:
            for i, batch in enumerate(int(b) for b in args.batches.split(",")):
                # the paper's batch keeps the old keys (gpu_bf16_mfu ...): the README's table reads them
                prefix = (f"gpu_{precision}" + (f"_b{batch}" if batch != 16 else "") + layout_suffix
                          + ("_compiled" if compile else ""))
                if not use_gpu:     # the printed figures say why they are empty; the log keeps measurements only
                    figures.update(prefixed(prefix, {"resolution": args.gpu_resolution, "num_channels": 128,
                                                     **null_figures(NO_GPU)}))
                    continue
                try:     # the samplers do not depend on the step's batch: timed with the first one only
                    values = measure(torch.device("cuda"), args.gpu_resolution, 128, precision, batch,
                                     max(args.repeats, 5), args.gpu_ddim_batch, profile=not compile,
                                     top_ops=args.top_ops, compile=compile, arms=compiled_arms if compile else arms,
                                     step_done=lambda values, prefix=prefix: record(prefix, values),
                                     **{**options, "samplers": samplers if i == 0 else []})
                except torch.OutOfMemoryError as error:
                    # one setting too large for the card (both arms' models stay resident) must not
                    # cost the settings after it their figures
                    values = {"resolution": args.gpu_resolution, "num_channels": 128, "batch": batch,
                              **null_figures(f"out of memory: {str(error).splitlines()[0]}")}
                torch.cuda.empty_cache()    # after the except block: its traceback held the tensors
                record(prefix, values)
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

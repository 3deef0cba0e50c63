"""Training-step cost, measured side by side in one process (denormals flushed in every arm).

- naive_step_s / sdft_step_s: plain-torch fp32 AdamW steps of the `small` preset at batch 64;
  sdft_over_naive's goal is <= 2.7 (the official code's 8/3: two student and two teacher passes).
  sdft_noaux_over_naive: sdft with lambda_aux = 0, which skips the pure-noise half of the batch
  (the cost runs/methods/sdft.py declares for it).
- deepspeed_over_torch: a DeepSpeed ZeRO-2 bf16 step over a plain-torch AdamW step under bf16
  autocast (naive loss in both); goal <= 1.10.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

from runs.runtime import reexec_with_job_environment


def timed(step, repeats: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()   # GPU work is asynchronous: time it to the end
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)   # the allocator settings every job runs with

    import deepspeed
    from jobs.train import init_distributed
    from runs.methods import get as method
    from models.networks import as_eps_model, build_unet

    torch.set_flush_denormal(True)
    init_distributed()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = build_unet(args.preset, args.resolution).to(device)
    images = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1
    naive_loss = method("naive").build_loss()
    sdft_loss = method("sdft").build_loss(lambda_distill=1.0, lambda_aux=1.0)
    noaux_loss = method("sdft").build_loss(lambda_distill=1.0, lambda_aux=0.0)

    def torch_step(model, opt, loss, teacher=None, autocast=False):
        eps, teach = as_eps_model(model, torch.float32), teacher and as_eps_model(teacher)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                terms = loss(eps, images, teach)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
        return step

    student_naive = copy.deepcopy(net)
    student_sdft = copy.deepcopy(net)
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    naive = torch_step(student_naive, torch.optim.AdamW(student_naive.parameters(), lr=1e-4), naive_loss)
    sdft = torch_step(student_sdft, torch.optim.AdamW(student_sdft.parameters(), lr=1e-4), sdft_loss, teacher)
    student_noaux = copy.deepcopy(net)
    noaux = torch_step(student_noaux, torch.optim.AdamW(student_noaux.parameters(), lr=1e-4), noaux_loss, teacher)

    student_amp = copy.deepcopy(net)
    torch_amp = torch_step(student_amp, torch.optim.AdamW(student_amp.parameters(), lr=1e-4), naive_loss,
                           autocast=True)
    student_ds = copy.deepcopy(net)
    engine, *_ = deepspeed.initialize(
        model=student_ds, optimizer=torch.optim.AdamW(student_ds.parameters(), lr=1e-4),
        config={"train_batch_size": args.batch, "train_micro_batch_size_per_gpu": args.batch,
                "zero_optimization": {"stage": 2}, "bf16": {"enabled": True},
                "gradient_clipping": 1.0, "steps_per_print": 2**31 - 1})
    ds_eps = as_eps_model(engine, torch.bfloat16)

    def ds_step():
        terms = naive_loss(ds_eps, images)
        engine.backward(terms.total)
        engine.step()

    # interleave the arms so that drift in machine speed hits them alike
    arms = {"naive": naive, "sdft": sdft, "sdft_noaux": noaux, "torch_bf16": torch_amp, "deepspeed_bf16": ds_step}
    results = {name: [] for name in arms}
    for _ in range(2):
        for name, step in arms.items():
            results[name].append(timed(step, args.repeats // 2, args.warmup))
    med = {k: statistics.mean(v) for k, v in results.items()}
    print(json.dumps({
        "preset": args.preset, "resolution": args.resolution, "batch": args.batch,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "naive_step_s": round(med["naive"], 4),
        "sdft_step_s": round(med["sdft"], 4),
        "sdft_over_naive": round(med["sdft"] / med["naive"], 3),
        "sdft_noaux_over_naive": round(med["sdft_noaux"] / med["naive"], 3),
        "torch_bf16_step_s": round(med["torch_bf16"], 4),
        "deepspeed_bf16_step_s": round(med["deepspeed_bf16"], 4),
        "deepspeed_over_torch": round(med["deepspeed_bf16"] / med["torch_bf16"], 3),
    }))


if __name__ == "__main__":
    main()

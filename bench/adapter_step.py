"""An adapter's training-step cost relative to its method's full fine-tuning step, measured
side by side in one process (plain-torch fp32 AdamW, denormals flushed, the arms interleaved):
naive and sdft, each on every weight and with LoRA (rank 8, alpha 8, the default targets).

    python bench/adapter_step.py [--preset small] [--resolution 16] [--batch 32] [--repeats 15]

runs/compute.py counts an adapter's run at its method's cost per step on this measurement.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=16)     # the demo's settings
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from runs.adapters import DEFAULT_TARGETS
    from runs.methods import get as method
    from models.adapters import add_lora
    from models.networks import as_eps_model, build_unet

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    net = build_unet(args.preset, args.resolution)
    images = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
    teacher = copy.deepcopy(net).eval().requires_grad_(False)

    def arm(name: str, lora: bool):
        student = copy.deepcopy(net)
        if lora:
            student = add_lora(student, 8, 8.0, DEFAULT_TARGETS)
        loss = method(name).build_loss()
        opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
        eps = as_eps_model(student, torch.float32)
        teach = as_eps_model(teacher) if method(name).needs_source_model else None
        generator = torch.Generator().manual_seed(0)

        def step():
            terms = loss(eps, images, teach, generator=generator)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
        return step

    arms = {f"{name}{'_lora' if lora else ''}": arm(name, lora) for name in ("naive", "sdft") for lora in (False, True)}
    for step in arms.values():                  # warm-up
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, step in arms.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(json.dumps({"preset": args.preset, "resolution": args.resolution, "batch": args.batch,
                      "median_step_s": med, "naive_lora_over_naive": med["naive_lora"] / med["naive"],
                      "sdft_lora_over_sdft": med["sdft_lora"] / med["sdft"]}))


if __name__ == "__main__":
    main()

"""The core demo: pretrain a source model on the built-in pair, fine-tune it with SDFT, and
write a PNG of DDIM samples from the same initial noise for both models.

    python -m jobs.demo_core [--results results] [--pretrain-steps N] [--finetune-steps N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.spec import RunSpec
from harness.store import RUNS_DIR, RunFolder


def ensure_trained(spec: RunSpec, store: Path) -> RunFolder:
    from jobs.train import run

    folder = RunFolder(store / spec.run_id)
    if folder.status != "done":
        folder.write_spec(spec.model_dump(mode="json"))
        run(folder.path)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--finetune-steps", type=int, default=600)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args(argv)

    import torch
    from models.images import save_grid
    from models.networks import as_eps_model, load_unet
    from models.sampling import ddim_sample

    store = Path(args.results) / RUNS_DIR
    source = ensure_trained(RunSpec(stage="pretrain", data={"kind": "builtin-source", "resolution": 16},
                                    network="small", steps=args.pretrain_steps, lr=2e-4), store)
    sdft = ensure_trained(RunSpec(stage="finetune", method="sdft", init=f"run:{source.run_id}",
                                  data={"kind": "builtin-target", "resolution": 16},
                                  distill={"lambda_distill": 1.0, "lambda_aux": 1.0},
                                  steps=args.finetune_steps, lr=1e-4), store)
    noise = torch.randn(args.samples, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    rows = [ddim_sample(as_eps_model(load_unet(f.model_dir).eval()), noise, progress=True)
            for f in (source, sdft)]
    out = save_grid(rows, Path(args.results) / "demo-core" / "samples.png", scale=4)
    print(f"top row: source model, bottom row: SDFT fine-tune, same noise -> {out}")


if __name__ == "__main__":
    main()

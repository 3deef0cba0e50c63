"""Make a grid's pretrained source model into weights the project ships.

    SDFT_SHIPPED_WEIGHTS=0 python -m jobs.ship grids/demo.yaml models/weights/fmnist16-source

Pretrains the grid's (first) source model in the results store unless that run is done
already, then copies its model folder and training log into OUT with a provenance.json:
the run id and spec, the grid file and this command, and the sha256 of every file
(models/shipped.py checks them on use, and adopts the folder only for the same run id).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from runs.config import load_grid
from runs.errors import UserError, exit_on_user_error
from runs.grid import expand
from runs.store import Store
from models.shipped import write_provenance

MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def ship(grid_path: Path, out_dir: Path, results: Path) -> dict:
    plan = expand(load_grid(grid_path), grid_path.resolve().parent)
    pretrains = plan.by_stage("pretrain")
    if not pretrains:
        raise UserError(f"{grid_path}: its source models are given, none is pretrained")
    run = pretrains[0]
    store = Store(results)
    folder = store.run(run.run_id)
    if folder.status != "done":
        store.add_run(plan.grid.name, run.run_id, run.spec.model_dump(mode="json"))
        from jobs.train import run as train

        os.environ["SDFT_SHIPPED_WEIGHTS"] = "0"      # train, do not adopt older shipped weights
        train(folder.path)
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists (remove it to ship again)")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(folder.model_dir / name, tmp / name)
    shutil.copy2(folder.log_path, tmp / "train.jsonl")
    record = write_provenance(tmp, run.run_id, spec=run.spec.model_dump(mode="json"), grid=str(grid_path),
                              dataset=run.dataset,
                              regenerate=f"SDFT_SHIPPED_WEIGHTS=0 python -m jobs.ship {grid_path} {out_dir}")
    os.replace(tmp, out_dir)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.ship", description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    with exit_on_user_error():
        record = ship(args.grid, args.out_dir, args.results)
    print(f"shipped run {record['identity']} into {args.out_dir}")


if __name__ == "__main__":
    main()
    sys.exit(0)

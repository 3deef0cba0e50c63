"""Loss curves and sample grids of a training run, for people to watch: TensorBoard by
default (event files in RUN_DIR/tensorboard, offline), Weights & Biases and MLflow when a
grid's `report_to` names them (optional installs).

train.jsonl stays the record the harness reads; what is written here is for looking at.
On resume, TensorBoard drops the events past the checkpoint (`purge_step`), as
truncate_log does for train.jsonl, so a curve never doubles back. Only rank 0 reports.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from runs.errors import UserError

# report_to name -> the module it needs (the pip package has the same name)
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
# Each checkpoint's sample grid: a few DDIM samples of the EMA from fixed noise, so that
# the grids of successive checkpoints are comparable image by image.
SAMPLE_IMAGES = 8
SAMPLE_DDIM_STEPS = 10


def check_installed(names) -> None:
    """A one-line UserError for a tracker that is asked for and not installed."""
    for name in names:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise UserError(f"report_to: {name} is not installed (pip install {MODULES[name]}), "
                            f"or leave it out of report_to")


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


class Trackers:
    """One writer per tracker named in `names`; `scalars` and `images` go to all of them."""

    def __init__(self, names, run_dir: str | Path, run_id: str, config: dict, start_step: int = 0):
        check_installed(names)
        self.names = tuple(names)
        run_dir = Path(run_dir)
        self.tensorboard = self.wandb = self.mlflow = None
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run drops the events after its checkpoint (step > start_step),
            # and one started again from step 0 those of the attempt before
            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if "wandb" in self.names:
            import wandb

            # the run id as W&B's id: a resumed job continues the same W&B run
            self.wandb = wandb.init(id=run_id, name=run_id, resume="allow", dir=str(run_dir),
                                    config=config, project="sdft-bench")
        if "mlflow" in self.names:
            import mlflow

            found = mlflow.search_runs(filter_string=f"tags.sdft_run_id = '{run_id}'", output_format="list")
            self.mlflow = mlflow.start_run(run_id=found[0].info.run_id if found else None, run_name=run_id,
                                           tags={"sdft_run_id": run_id})
            if not found:
                mlflow.log_params(_flat(config))

    def scalars(self, values: dict[str, float | None], step: int) -> None:
        # a figure not measured at this step (images/s of a window holding only the
        # compiling first step) is left out, not drawn as a value
        values = {k: v for k, v in values.items() if v is not None}
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)
        if self.mlflow is not None:
            import mlflow

            mlflow.log_metrics({f"train.{k}": v for k, v in values.items()}, step=step)

    def images(self, tag: str, batch, step: int) -> None:
        """`batch`: (n, c, h, w) in [-1, 1], shown as one grid."""
        from models.data.base import to_uint8
        from models.images import grid_array

        hwc = grid_array([to_uint8(batch.float().cpu()).numpy()])
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, hwc, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(hwc)}, step=step)
        if self.mlflow is not None:
            import mlflow

            mlflow.log_image(hwc, f"{tag}/step_{step:07d}.png")

    def flush(self) -> None:
        """At each checkpoint: what a crash after it would otherwise lose."""
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            import mlflow

            mlflow.end_run()


def sample_grid(eps_model, shape: tuple[int, int, int], seed: int, device, schedule=None):
    """SAMPLE_IMAGES DDIM samples of `eps_model` (a network of `schedule`) from noise fixed by `seed`."""
    import torch

    from models.sampling import ddim_sample
    from models.seeding import derived_seed

    generator = torch.Generator().manual_seed(derived_seed(seed, "tracking-samples"))
    noise = torch.randn((SAMPLE_IMAGES, *shape), generator=generator).to(device)
    return ddim_sample(eps_model, noise, num_steps=SAMPLE_DDIM_STEPS, schedule=schedule).images

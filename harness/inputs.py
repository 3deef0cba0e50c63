"""Cheap checks, at submit, of the folders a grid names and of the results root.

A dataset folder that is empty or holds an unreadable image, a labels file that does not fit
its folders (models/data/labels.py), or a model folder without a
readable config.json or with truncated weights, would otherwise fail only when its job
runs, hours later on a cluster. A model whose resolution is not the data's would not fail
at all where it matters: the source model's evaluation ends "done" at the wrong size.
Each finding is one line naming the grid file, the field and the file at fault; at submit
it is an error (exit 2, nothing written), in a dry run a warning.
"""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from runs.config import GridConfig
from runs.errors import UserError
from runs.grid import resolve_path
from runs.store import RUNS_DIR

# the weight files diffusers' from_pretrained reads from a model folder, in its order
SAFETENSORS = "diffusion_pytorch_model.safetensors"
SHARDED = "diffusion_pytorch_model.safetensors.index.json"
PICKLED = "diffusion_pytorch_model.bin"


# ---------------------------------------------------------------- the results root
def check_results_root(root: str | Path, grid_path: Path, name: str) -> None:
    """`--results` must be a folder (or not exist yet), and the grid's folder in it must be
    free or a grid's: a grid named README.md would write into results/README.md."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: --results: not a folder")
    runs = root / RUNS_DIR
    if runs.exists() and not runs.is_dir():
        raise UserError(f"{runs}: not a folder (the results root keeps its runs there)")
    entry = root / name
    if not entry.exists() and not entry.is_symlink():
        return
    if not entry.is_dir():
        raise UserError(f"{grid_path}: name: {name!r} is taken by the file {entry}; rename the grid")
    if not (entry / "grid.json").is_file() and any(entry.iterdir()):
        raise UserError(f"{grid_path}: name: {entry} is a folder that is not a grid's (no grid.json); "
                        "rename the grid")


# ---------------------------------------------------------------- model folders
def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as err:   # SafetensorError: a header that is cut off or does not cover the file
        raise ValueError(f"{path}: truncated or not a safetensors file ({err})") from None


def check_weights(folder: Path) -> None:
    """The weight file is whole: the safetensors header covers the file (it is cut off
    otherwise), a sharded index names shards that are whole, a torch zip has its directory."""
    if (folder / SAFETENSORS).is_file():
        return _check_safetensors(folder / SAFETENSORS)
    if (folder / SHARDED).is_file():
        index = _read_json(folder / SHARDED)
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards:
            raise ValueError(f"{folder / SHARDED}: no weight_map naming the shards")
        for shard in shards:
            if not (folder / shard).is_file():
                raise ValueError(f"{folder / shard}: missing (named in {SHARDED})")
            _check_safetensors(folder / shard)
        return None
    if (folder / PICKLED).is_file():
        try:
            with zipfile.ZipFile(folder / PICKLED) as z:   # torch.save's format: the directory is at the end
                z.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(f"{folder / PICKLED}: truncated or not a torch file ({err})") from None
        return None
    raise ValueError(f"{folder}: no weights ({SAFETENSORS}, {SHARDED} or {PICKLED})")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def model_resolution(folder: Path) -> int:
    """The image size a diffusers model folder was built for (config.json's sample_size),
    after checking that the folder holds a readable config and whole weights."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (a diffusers model folder: config.json + weights)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: not a diffusers model folder (no config.json)")
    config = _read_json(config_path)
    size = config.get("sample_size") if isinstance(config, dict) else None
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValueError(f"{config_path}: expected a square sample_size, got {size!r}")
    check_weights(folder)
    if (folder / "diffusion.json").is_file():
        # a converted ADM folder: its channels and schedule must be what the jobs will use
        from models.networks import check_diffusion_info   # torch comes with it: converted folders only

        info = _read_json(folder / "diffusion.json")
        if not isinstance(info, dict):
            raise ValueError(f"{folder / 'diffusion.json'}: expected a JSON object")
        check_diffusion_info(info, config.get("in_channels", 3), config.get("out_channels", 3),
                             str(folder / "diffusion.json"))
    return size


# ---------------------------------------------------------------- the grid's inputs
def check_inputs(grid: GridConfig, base_dir: Path, grid_path: Path, dry_run: bool) -> None:
    """Every model and data folder the grid names, once each, the cheap checks first; at
    submit the first problem is the error. Missing folders are harness.submit.check_paths's."""
    models: list[tuple[str, Path, int]] = []
    images: dict[str, str] = {}          # folder -> the first field naming it
    labels: list[tuple[str, str, str, str, str]] = []   # (field, csv, target, reference, source)
    for i, dataset in enumerate(grid.datasets):
        source = dataset.source
        if source.model is not None:
            models.append((f"datasets[{i}].source", Path(resolve_path(source.model, base_dir)), source.resolution))
        if source.kind == "folder":
            images.setdefault(resolve_path(source.path, base_dir), f"datasets[{i}].source.path")
        for j, target in enumerate(dataset.targets):
            if target.kind == "folder":
                where = f"datasets[{i}].targets[{j}]"
                images.setdefault(resolve_path(target.path, base_dir), f"{where}.path")
                if target.reference is not None:
                    images.setdefault(resolve_path(target.reference, base_dir), f"{where}.reference")
                if target.labels is not None:
                    labels.append((f"{where}.labels", *(resolve_path(p, base_dir) for p in (
                        target.labels, target.path, target.reference, source.path))))

    def problems():
        for where, folder, resolution in models:
            if not folder.exists():
                continue
            try:
                size = model_resolution(folder)
            except ValueError as err:
                yield f"{grid_path}: {where}.model: {err}"
                continue
            if size != resolution:
                yield (f"{grid_path}: {where}.model: the model makes {size} px images (sample_size in "
                       f"{folder / 'config.json'}) but {where}.resolution is {resolution}")
        for folder, where in images.items():
            if not Path(folder).exists():
                continue
            from models.data.folder import DatasetError, scan_images   # torch comes with it: folder grids only

            try:
                scan_images(folder)
            except DatasetError as err:
                yield f"{grid_path}: {where}: {err}"
        for where, csv_path, *folders in labels:
            if not all(Path(p).exists() for p in (csv_path, *folders)):
                continue
            from models.data.labels import LabelsError, folder_labels

            try:
                folder_labels(csv_path, *folders)
            except LabelsError as err:
                yield f"{grid_path}: {where}: {err}"

    for problem in problems():
        if not dry_run:
            raise UserError(problem)
        print(f"warning: {problem}", file=sys.stderr)

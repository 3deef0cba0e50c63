"""The training job: one run spec, one run folder. Pretraining and every fine-tuning method.

    python -m jobs.train RUN_DIR                   # one process (CPU here, a GPU on a node)
    torchrun --nproc_per_node 2 -m jobs.train RUN_DIR

It runs through DeepSpeed (ZeRO 0/1/2, fp32/bf16/fp16) with the frozen teacher outside
the engine, keeps an fp32 EMA, checkpoints every `checkpoint_every` steps and, started
again on the same folder, resumes from the newest checkpoint by itself. Every source of
randomness is derived from (seed, step, rank), so a resumed run ends bitwise where an
uninterrupted one does. The result is the EMA as a diffusers model folder in RUN_DIR/model,
and the raw weights beside it in RUN_DIR/model-raw (jobs/weights.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runs.errors import UserError, exit_on_user_error
from runs.processes import process_identity
from runs.runtime import reexec_with_job_environment
from runs.methods import METHODS
from runs.refs import RunRef
from runs.spec import RunSpec
from runs.store import RunFolder, atomic_write_bytes, store_root_of
from models.seeding import derived_seed


class TrainingDiverged(RuntimeError):
    pass


# ---------------------------------------------------------------- determinism
def global_batch_indices(n: int, batch: int, seed: int, step: int):
    """Indices of the global batch at `step`: consecutive slices of per-epoch permutations.

    A pure function of its arguments, so resuming needs no sampler state.
    """
    import torch

    start = step * batch
    out = []
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, epoch)))
        out.extend(perm[offset:offset + batch - len(out)].tolist())
    return out


def flip_halves(batch, seed: int):
    """Mirror a random half of the images left-right (guided-diffusion's random_flip)."""
    import torch

    chosen = torch.rand(len(batch), generator=torch.Generator().manual_seed(seed)) < 0.5
    return torch.where(chosen[:, None, None, None], batch.flip(-1), batch)


def rank_batch(dataset, spec: RunSpec, step: int, rank: int, world: int):
    """This rank's slice of the global batch at `step` (uint8 images), flipped where the run
    flips; a function of (seed, step, rank) alone."""
    import torch

    micro = spec.batch_size // world
    indices = global_batch_indices(len(dataset), spec.batch_size, spec.seed, step)
    batch = torch.stack([dataset[i] for i in indices[rank * micro:(rank + 1) * micro]])
    if spec.flip:
        batch = flip_halves(batch, derived_seed(spec.seed, step, rank, "flip"))
    return batch


# ---------------------------------------------------------------- set-up
def slurm_job_id() -> str | None:
    """This job's Slurm id as squeue shows it ('12_3' for an array task), or None."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed():
    """DeepSpeed wants the launcher's variables even for one process; set them if absent."""
    import deepspeed
    import torch

    from jobs.deepspeed_ops import use_built_ops

    use_built_ops()             # before DeepSpeed looks for its CPU op

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo",
                                   verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def check_runtime(spec: RunSpec, world_size: int) -> None:
    import torch

    if spec.precision == "fp16" and not torch.cuda.is_available():
        raise UserError("precision fp16 needs a GPU: DeepSpeed has no fp16 on CPU; use bf16 or fp32")
    if spec.batch_size % world_size:
        raise UserError(f"batch_size {spec.batch_size} is not divisible by the {world_size} processes")


def deepspeed_config(spec: RunSpec, world_size: int) -> dict:
    return {
        "train_batch_size": spec.batch_size,
        "train_micro_batch_size_per_gpu": spec.batch_size // world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": spec.grad_clip or 0.0,
        "zero_optimization": {"stage": spec.zero_stage},
        "bf16": {"enabled": spec.precision == "bf16"},
        "fp16": {"enabled": spec.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def resolve_init(init: str, run_dir: Path) -> Path:
    """'run:<id>' is the model of a run in the same store; anything else is a folder path."""
    ref = RunRef.parse(init)
    if ref is not None:
        folder = ref.resolve(store_root_of(run_dir))
        if folder.status != "done" or not folder.model_dir.is_dir():
            raise UserError(f"{folder.path}: the run to start from is not done (status {folder.status})")
        return folder.model_dir
    path = Path(init).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a diffusers model folder (no config.json)")
    return path


def build_networks(spec: RunSpec, run_dir: Path, resolution: int):
    """The student to train (wrapped with its adapter, if the spec has one) and, for a method
    that needs one (sdft), a frozen copy of the starting weights as teacher."""
    import torch
    from models.networks import DTYPES, build_unet, load_unet

    torch.manual_seed(derived_seed(spec.seed, "init"))
    if spec.init is None:
        student = build_unet(spec.network, resolution, dropout=spec.dropout)
    else:
        student = load_unet(resolve_init(spec.init, run_dir), dropout=spec.dropout)
        if student.config.sample_size != resolution:
            raise UserError(f"{spec.init}: model resolution {student.config.sample_size} "
                            f"does not match the data's {resolution}")
    if spec.adapter is not None:
        from models.adapters import add_lora

        a = spec.adapter
        try:
            student = add_lora(student, a.rank, a.alpha, a.targets)
        except ValueError as err:        # peft's: a target that names no module of this network
            raise UserError(f"adapter.targets {a.targets!r}: {err}") from None
    # diffusers' from_pretrained returns its model in eval mode: a student left so would never
    # see its dropout (the paper fine-tunes with 0.1)
    student.train()
    teacher = None
    if spec.method is not None and METHODS[spec.method].needs_source_model:
        teacher = load_unet(resolve_init(spec.init, run_dir), dtype=DTYPES[spec.precision]).eval().requires_grad_(False)
    return student, teacher


def build_loss(spec: RunSpec, schedule=None):
    """The method's loss from its settings (runs.methods), for a network of `schedule`;
    pretraining trains as naive does."""
    method = METHODS[spec.method or "naive"]
    settings = spec.settings.model_dump() if spec.settings is not None else {}
    # the settings a weighting does not use are absent from the spec and from the loss
    return method.build_loss(schedule, **{k: v for k, v in settings.items() if v is not None})


@dataclass(frozen=True)
class LossContext:
    """What a loss's `prepare` may need besides the two networks: the run and its device."""
    spec: RunSpec
    run_dir: Path
    device: object


# ---------------------------------------------------------------- log
def truncate_log(folder: RunFolder, step: int, events: list[dict] = ()) -> None:
    """On resume, drop log rows past the checkpoint (they will be recomputed) and mark it,
    after the checkpoints that were passed over on the way."""
    rows = [r for r in folder.log_rows() if r.get("step", 0) <= step]
    rows += [{**e, "time": time.time()} for e in events]
    rows.append({"event": "resume", "step": step, "time": time.time()})
    atomic_write_bytes(folder.log_path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def trained_seconds(folder: RunFolder, step: int) -> float:
    """The measured training seconds of a resumed run up to its checkpoint: the `train_s` of
    its last log row at or before it (a checkpoint's step is always logged); 0 without one."""
    rows = [r for r in folder.log_rows() if "train_s" in r and r.get("step", 0) <= step]
    return rows[-1]["train_s"] if rows else 0.0


def append_log(folder: RunFolder, row: dict) -> None:
    with open(folder.log_path, "a") as f:
        f.write(json.dumps(row) + "\n")


class LogWindow:
    """The loss terms and wall seconds since the last log row. The first step of a process (a
    compiled one compiles) is timed apart from the steady state; its loss still counts.
    `train_s`: the loop's wall seconds so far (steps, EMA, snapshots, checkpoints; not the
    set-up), carried over resumes: each log row's `train_s`, the cost the tables show."""

    def __init__(self, train_s: float = 0.0, clock=time.perf_counter):
        self.train_s, self.clock = train_s, clock
        self.sums: dict[str, float] = {}
        self.steps = self.timed = 0
        self.start = clock()

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.timed += 1

    def first_step(self) -> float:
        """The seconds of the step just added, which the steady rate leaves out."""
        seconds = self.clock() - self.start
        self.train_s += seconds
        self.start, self.timed = self.clock(), 0
        return seconds

    def close(self, batch_size: int) -> tuple[dict[str, float], dict[str, float | None]]:
        """(mean of each term, the steady rate and the seconds so far); a new window starts."""
        elapsed = self.clock() - self.start
        self.train_s += elapsed
        means = {k: v / self.steps for k, v in self.sums.items()}
        timing = {"images_per_s": self.timed * batch_size / max(elapsed, 1e-9) if self.timed else None,
                  "step_s": elapsed / self.timed if self.timed else None, "train_s": self.train_s}
        self.sums, self.steps, self.timed, self.start = {}, 0, 0, self.clock()
        return means, timing


# ---------------------------------------------------------------- the loop
def train(spec: RunSpec, run_dir: str | Path, *, stop_after: int | None = None) -> Path:
    """Train (or resume) the run in `run_dir`; returns the saved EMA model folder.

    `stop_after` ends the process's work early at that step (tests, preemption drills).
    """
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")   # said, not guessed: no warning
    import deepspeed
    from tqdm.auto import tqdm

    from models.data import open_dataset, to_model_range
    from models.compiling import compile_enabled, compile_in_place
    from models.adapters import parameter_counts
    from models.networks import as_eps_model, schedule_of
    from jobs import checkpoints
    from jobs.ema import EMA
    from jobs.tracking import Trackers, sample_grid
    from jobs.weights import save_both

    folder = RunFolder(run_dir)
    rank, world = init_distributed()
    check_runtime(spec, world)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    if device.type == "cpu":
        # (1+SNR)^-50 makes denormal floats in the backward pass; CPUs crawl on them.
        torch.set_flush_denormal(True)

    dataset = open_dataset(spec.data.model_dump())
    resolution = int(dataset[0].shape[-1])
    student, teacher = build_networks(spec, Path(run_dir), resolution)
    schedule = schedule_of(student)     # the starting weights' (a fresh network's: linear)
    ema = EMA(student, spec.ema_decay, warmup=spec.ema_warmup)
    compiled = compile_enabled(spec.compile)        # after the EMA's copy: it stays eager
    compile_in_place(student, compiled)
    # only what trains (an adapter's weights, or all) goes to the optimizer
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=spec.lr,
                                  weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=student, optimizer=optimizer,
                                      config=deepspeed_config(spec, world))
    ema.model.to(engine.device)
    student_eps = as_eps_model(engine, dtype=next(engine.module.parameters()).dtype)
    teacher_eps = None
    if teacher is not None:
        teacher_eps = as_eps_model(compile_in_place(teacher.to(engine.device), compiled))
    loss_fn = build_loss(spec, schedule)
    if hasattr(loss_fn, "prepare"):      # a loss that reads the weights themselves (l2sp, ewc)
        loss_fn.prepare(engine.module, teacher, LossContext(spec, Path(run_dir), engine.device))

    checkpoints.use_weights_only(engine)
    start, client, skipped = checkpoints.load_newest(engine, folder, rank)
    if client is not None:
        ema.load_state_dict(client["ema"])
    # an attempt that ended before its first checkpoint left step rows too: they are redone
    if rank == 0 and (client is not None or skipped or folder.log_path.is_file()):
        truncate_log(folder, start, skipped)
        print(f"[train {folder.run_id}] resumed from checkpoint at step {start}" if client is not None
              else f"[train {folder.run_id}] no checkpoint{' is whole' if skipped else ' yet'}: training "
                   "from step 0", flush=True)
    # loss curves and sample grids for people (jobs/tracking.py); train.jsonl stays the record
    trackers = Trackers(spec.report_to, run_dir, folder.run_id, spec.model_dump(mode="json"), start) \
        if rank == 0 else None
    if rank == 0:
        folder.set_state("running", step=start, steps=spec.steps, error=None, **process_identity(os.getpid()),
                         job_id=slurm_job_id())

    end = spec.steps if stop_after is None else min(spec.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=spec.steps, disable=rank != 0,
               desc=f"{spec.label} {folder.run_id}", dynamic_ncols=True, mininterval=1.0)
    window = LogWindow(trained_seconds(folder, start) if start > 0 else 0.0)
    for step in bar:
        torch.manual_seed(derived_seed(spec.seed, step, rank, "dropout"))
        images = to_model_range(rank_batch(dataset, spec, step, rank, world)).to(engine.device)
        generator = torch.Generator(device=engine.device).manual_seed(derived_seed(spec.seed, step, rank))
        terms = loss_fn(student_eps, images, teacher_eps, generator=generator)
        values = terms.as_floats()
        if not all(math.isfinite(v) for v in values.values()):
            raise TrainingDiverged(f"loss is not finite at step {step + 1}: {values}; "
                                   f"the last good checkpoint is kept")
        engine.backward(terms.total)
        engine.step()
        ema.update(engine.module)

        window.add(values)
        if step == start:
            if device.type == "cuda":
                torch.cuda.synchronize()
            first_step_s = window.first_step()
            if rank == 0:
                append_log(folder, {"event": "first_step", "at_step": step + 1, "compile": compiled,
                                    "first_step_s": first_step_s, "time": time.time()})
                # what trains: the adapter's weights only, or every weight
                append_log(folder, {"event": "parameters", "at_step": step + 1,
                                    **{f"{k}_parameters": v for k, v in parameter_counts(engine.module).items()},
                                    "time": time.time()})
                # and on which noise levels: the starting weights' schedule (diffusion.json)
                append_log(folder, {"event": "schedule", "at_step": step + 1, **schedule.info(),
                                    "time": time.time()})
        done_steps = step + 1
        # the first step after a resume is always logged: it shows where the run went on from;
        # so are snapshots and checkpoints, whose models' training seconds the tables show
        if rank == 0 and (done_steps % spec.log_every == 0 or done_steps == spec.steps
                          or (start > 0 and step == start) or done_steps in spec.snapshot_steps
                          or done_steps % spec.checkpoint_every == 0):
            means, timing = window.close(spec.batch_size)
            row = {"step": done_steps, **means, "lr": optimizer.param_groups[0]["lr"],
                   "ema_decay": ema.current_decay(), **timing, "time": time.time()}
            append_log(folder, row)
            trackers.scalars({k: v for k, v in row.items() if k not in ("step", "time")}, done_steps)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if done_steps in spec.snapshot_steps and done_steps < spec.steps:
            save_both(ema, engine, folder.snapshot_dir(done_steps), rank)
        if done_steps % spec.checkpoint_every == 0 or done_steps == spec.steps:
            if rank == 0:       # written before the checkpoint, so a run resumed from it has it
                trackers.images("samples/ema", sample_grid(as_eps_model(ema.model), tuple(dataset[0].shape),
                                                           spec.seed, engine.device, schedule), done_steps)
                trackers.flush()
            checkpoints.save(engine, folder, done_steps, {"step": done_steps, "ema": ema.state_dict()}, rank)
            if rank == 0:
                folder.set_state("running", step=done_steps)
    bar.close()
    if trackers is not None:
        trackers.close()

    if end < spec.steps:
        return folder.model_dir
    save_both(ema, engine, folder.model_dir, rank)      # the EMA, and the raw weights
    if rank == 0:
        folder.set_state("done", step=spec.steps)
    torch.distributed.barrier()
    return folder.model_dir


def adopt_shipped(spec: RunSpec, folder: RunFolder) -> Path | None:
    """A pretraining whose run id matches weights the project ships takes them (checked by
    sha256) instead of training for an hour on a CPU; SDFT_SHIPPED_WEIGHTS=0 trains anyway."""
    from models.shipped import find_shipped

    if spec.stage != "pretrain":
        return None
    shipped = find_shipped(spec.run_id)
    if shipped is None:
        return None
    if int(os.environ.get("RANK", 0)) != 0:
        # every rank asks, so that none goes on to wait for the others in training's
        # rendezvous (they all end here); rank 0 alone writes
        return folder.model_dir
    tmp = folder.path / ".model.shipped.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy2(shipped / name, tmp / name)
    shutil.rmtree(folder.model_dir, ignore_errors=True)
    os.replace(tmp, folder.model_dir)
    if (shipped / "train.jsonl").is_file():
        shutil.copy2(shipped / "train.jsonl", folder.log_path)
    folder.set_state("done", step=spec.steps, steps=spec.steps, error=None, weights=f"shipped: {shipped}")
    print(f"[train {folder.run_id}] using the shipped weights {shipped} (same run id; "
          f"SDFT_SHIPPED_WEIGHTS=0 trains instead)", flush=True)
    return folder.model_dir


def run(run_dir: str | Path, stop_after: int | None = None) -> Path:
    """Read the spec from the folder and train; a failure is recorded in state.json."""
    folder = RunFolder(run_dir)
    spec = RunSpec.model_validate(folder.read_spec())
    with folder.recording_failure(record=int(os.environ.get("RANK", 0)) == 0):
        return adopt_shipped(spec, folder) or train(spec, run_dir, stop_after=stop_after)


def slurm_run(run_dir: str | Path) -> Path:
    """One process per Slurm task, with the variables DeepSpeed reads (RANK, MASTER_ADDR...)."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    return run(run_dir)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        reexec_with_job_environment(["-m", "jobs.train", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder holding spec.json")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop (without finishing) once this step is reached")
    args = parser.parse_args(argv)
    from models.data import DatasetError

    with exit_on_user_error(DatasetError, FileNotFoundError):
        run(args.run_dir, stop_after=args.stop_after)


if __name__ == "__main__":
    main()
    sys.exit(0)

"""The evaluate stage: one model's samples, translations and metrics, on Ray.

    python -m jobs.evaluate RUN_DIR          # RUN_DIR/spec.json is an EvalSpec

A pool of Ray actors (one per group of cores; torch threads set explicitly) produces the
samples and translations in batches, then extracts features and measures each product.
Each batch lands in its own file (atomic), so an actor that dies has its batch retried by
Ray (max_task_retries) and a restarted job skips finished batches: no metric is missing or
counted twice. Every retry leaves a second attempt marker in RUN_DIR/attempts/.
Ray starts locally (the default), or joins $SDFT_RAY_ADDRESS / $RAY_ADDRESS if set.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import UserError, exit_on_user_error
from harness.runtime import reexec_with_job_environment
from harness.spec import EvalSpec
from harness.store import RunFolder, atomic_write_json, store_root_of
from jobs.weights import raw_twin

IMAGE_GRID_SIZE = 32     # samples shown in the PNG grids
# `clipped_share` counts a sample when its last-step x0 leaves [-1, 1] by more than this
CLIP_TOLERANCE = 0.0


@dataclass(frozen=True)
class Product:
    """One set of generated images: a task at a noise level from one checkpoint."""
    task: str
    t0: float | None
    ckpt_step: int | None
    model_dir: str
    eval_seed: int | None = None     # set when `evaluation.seed` is a list: one product per seed

    @property
    def key(self) -> str:
        t0 = f"_t{self.t0:g}" if self.t0 is not None else ""
        seed = f"_e{self.eval_seed}" if self.eval_seed is not None else ""
        step = f"_s{self.ckpt_step}" if self.ckpt_step is not None else ""
        return f"{self.task}{t0}{seed}{step}"

    def seed(self, spec: EvalSpec) -> int:
        """The seed of this product's sampling noise."""
        return self.eval_seed if self.eval_seed is not None else spec.settings.seeds[0]


@dataclass(frozen=True)
class Batch:
    product: Product
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{self.product.key}_{self.start:06d}"


# ---------------------------------------------------------------- what to evaluate
def resolve_models(spec: EvalSpec, run_dir: Path) -> tuple[list[tuple[int | None, Path]], dict]:
    """[(checkpoint step, model folder)] and the trained run's spec (empty for a folder):
    RUN_DIR/model (the EMA) or RUN_DIR/model-raw as `evaluation.weights` says."""
    if not spec.model.startswith("run:"):
        path = Path(spec.model)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a diffusers model folder (no config.json)")
        return [(None, path)], {}
    trained = RunFolder(store_root_of(run_dir) / spec.model[4:])
    if trained.status != "done":
        raise UserError(f"{trained.path}: the run to evaluate is not done (status {trained.status})")
    train_spec = trained.read_spec()
    steps = train_spec["steps"]
    # a fine-tuned model's evaluation names the weights; the source model's is its EMA
    raw = spec.settings.weights == "raw"
    final = raw_twin(trained.model_dir) if raw else trained.model_dir
    if not final.is_dir():
        raise UserError(f"{trained.path}: no raw weights ({final.name}/; the run was trained before they "
                        f"were kept): set evaluation.weights: ema, or train the run again")
    models = [(steps, final)]
    for step in sorted(set(spec.settings.checkpoint_steps)):
        if step < steps:
            snapshot = raw_twin(trained.snapshot_dir(step)) if raw else trained.snapshot_dir(step)
            if not snapshot.is_dir():
                raise UserError(f"{trained.path}: no {'raw' if raw else 'EMA'} snapshot at step {step} "
                                f"({snapshot.name}/: trained before checkpoint_steps asked for it)")
            models.append((step, snapshot))
    return models, train_spec


def plan_products(spec: EvalSpec, models) -> list[Product]:
    products = []
    seeds = spec.settings.seeds
    for step, path in models:
        for task in spec.settings.tasks:
            for t0 in ([None] if task == "unconditional" else spec.settings.t0):
                for seed in (seeds if len(seeds) > 1 else [None]):
                    products.append(Product(task, t0, step, str(path), seed))
    return products


def plan_batches(spec: EvalSpec, products: list[Product]) -> list[Batch]:
    s = spec.settings
    batches = []
    for product in products:
        total = s.num_samples if product.task == "unconditional" else s.num_translations
        batches += [Batch(product, i, min(i + s.batch_size, total)) for i in range(0, total, s.batch_size)]
    return batches


# ---------------------------------------------------------------- the actor
class EvalWorker:
    """Runs in a Ray actor process: samples batches, extracts features, measures products."""

    def __init__(self, spec_json: str, run_dir: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.spec = EvalSpec.model_validate_json(spec_json)
        self.run_dir = Path(run_dir)
        self._models: dict[str, object] = {}
        self._extractors: dict[str, object] = {}
        self._sources = None
        self._domain = None
        self._memo: dict[str, object] = {}

    def memo(self, key: str, make):
        """What `make()` returns, made once per actor (reference sets, the classifier)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # -- inputs, loaded once per actor
    def model(self, path: str):
        if path not in self._models:
            from models.networks import as_eps_model, load_unet
            self._models[path] = as_eps_model(load_unet(path).eval().to(self.device))
        return self._models[path]

    def sources(self):
        """Translation inputs: the first num_translations source-domain test images."""
        if self._sources is None:
            from models.data import open_dataset
            data = self.spec.source_data.model_dump()
            split = "source_test" if data["kind"] == "builtin-source" else None
            self._sources = open_dataset(data, split=split)
        return self._sources

    def extractor(self, name: str):
        if name not in self._extractors:
            from models.features import EXTRACTORS
            self._extractors[name] = EXTRACTORS[name]()
        return self._extractors[name]

    def domain_features(self):
        if self._domain is None:
            from models.evaluation_nets import domain_classifier
            self._domain = domain_classifier(self.spec.source_data.model_dump(),
                                             self.spec.target_data.model_dump()).to(self.device).features
        return self._domain

    # -- work
    def sample(self, batch: Batch) -> str:
        import numpy as np
        import torch

        from models.data import to_model_range, to_uint8
        from models.sampling import ancestral_sample, ddim_sample, egsde, indexed_generators, indexed_noise, sdedit

        out = self.run_dir / "work" / f"{batch.key}.npy"
        if out.is_file():
            return str(out)
        attempts = self.run_dir / "attempts"
        attempts.mkdir(exist_ok=True)
        (attempts / f"{batch.key}.{os.getpid()}").write_text(f"{time.time()}\n")

        s, p = self.spec.settings, batch.product
        seed = p.seed(self.spec)
        model = self.model(p.model_dir)
        indices = range(batch.start, batch.stop)
        # translations always run DDIM; the respacing is theirs only when DDIM is the sampler
        ddim = dict(num_steps=s.ddim_steps, clip_denoised=s.clip_denoised,
                    respacing=s.respacing if s.sampler == "ddim" else None)
        if p.task == "unconditional":
            res = self.resolution()
            noise = indexed_noise(seed, "unconditional", indices, (3, res, res)).to(self.device)
            if s.sampler == "ancestral":
                sampled = ancestral_sample(model, noise, respacing=s.respacing, clip_denoised=s.clip_denoised,
                                           generator=indexed_generators(seed, "ancestral", indices))
            else:
                sampled = ddim_sample(model, noise, **ddim)
        else:
            x0 = to_model_range(torch.stack([self.sources()[i] for i in indices])).to(self.device)
            noise = indexed_noise(seed, "translation", indices, tuple(x0.shape[1:])).to(self.device)
            if p.task == "sdedit":
                sampled = sdedit(model, x0, noise, t0=p.t0, **ddim)
            else:
                sampled = egsde(model, x0, noise, self.domain_features(), t0=p.t0, ls=s.egsde_ls,
                                li=s.egsde_li, low_pass_factor=s.egsde_low_pass_factor, **ddim)
        out.parent.mkdir(exist_ok=True)
        # the last step's x0 excess first: a batch whose images exist has it too
        excess = out.with_name(f"{batch.key}.x0.npy")
        tmp = out.with_name(f".{excess.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, sampled.x0_excess.cpu().numpy())
        os.replace(tmp, excess)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, to_uint8(sampled.images).cpu().numpy())
        os.replace(tmp, out)
        return str(out)

    def resolution(self) -> int:
        return int(self.spec.target_data.model_dump().get("resolution", 32))

    def features(self, images_path: str, extractor: str):
        """(features, cache hit) of a stored image set."""
        import numpy as np
        import torch

        from models.features import cached_features
        return cached_features(self.extractor(extractor), torch.from_numpy(np.load(images_path)))

    def measure(self, job: dict) -> tuple[list[dict], dict[str, int]]:
        """Metric rows of one product, and the feature cache's counts."""
        from jobs.measure import measure_calibration, measure_product
        return measure_calibration(self, job) if job.get("calibration") else measure_product(self, job)


# ---------------------------------------------------------------- the driver
def ray_init():
    """Join $SDFT_RAY_ADDRESS (or $RAY_ADDRESS) if set, else start a Ray of our own here."""
    import ray

    address = os.environ.get("SDFT_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="ERROR")
    else:
        cpus = int(os.environ.get("SDFT_EVAL_CPUS") or os.environ.get("SLURM_CPUS_ON_NODE")
                   or os.cpu_count() or 1)
        # "local": always a new instance of our own, never another job's that runs beside us
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR",
                 object_store_memory=256 * 1024 * 1024)
    return ray


def actor_layout(nodes: list[dict]) -> tuple[int, int, int]:
    """(actors, threads each, GPUs each): one actor per GPU, else one per group of cores,
    sized so that every actor fits on one node."""
    resources = [n["Resources"] for n in nodes if n["Alive"]]
    cpus = [max(1, int(r.get("CPU", 1))) for r in resources]
    gpus = [int(r.get("GPU", 0)) for r in resources]
    if sum(gpus):
        threads = max(1, min(c // g for c, g in zip(cpus, gpus) if g))
        return sum(gpus), threads, 1
    threads = max(1, min(int(os.environ.get("SDFT_EVAL_THREADS", 2)), *cpus))
    return sum(c // threads for c in cpus), threads, 0


def sample_rows(images, sources=None, per_row: int = 16) -> list:
    """PNG rows: samples 16 to a row; translations as pairs of rows, source above translation."""
    import torch

    from models.data import to_model_range

    shown = to_model_range(torch.from_numpy(images[:IMAGE_GRID_SIZE]))
    rows = [shown[i:i + per_row] for i in range(0, len(shown), per_row)]
    if sources is None:
        return rows
    inputs = to_model_range(torch.stack([sources[i] for i in range(len(shown))]))
    return [r for i, row in enumerate(rows) for r in (inputs[i * per_row:i * per_row + len(row)], row)]


def save_products(run: RunFolder, spec: EvalSpec, products: list[Product], batches: list[Batch]) -> dict[str, Path]:
    """Concatenate each product's batches into products/<key>.npy and a PNG grid."""
    import numpy as np

    from models.data import open_dataset
    from models.images import save_grid

    data = spec.source_data.model_dump()
    sources = open_dataset(data, split="source_test" if data["kind"] == "builtin-source" else None)
    paths = {}
    for product in products:
        parts = sorted((b for b in batches if b.product == product), key=lambda b: b.start)
        images = np.concatenate([np.load(run.path / "work" / f"{b.key}.npy") for b in parts])
        path = run.path / "products" / f"{product.key}.npy"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npy")
        np.save(tmp, images)
        os.replace(tmp, path)
        paths[product.key] = path
        rows = sample_rows(images, None if product.task == "unconditional" else sources)
        save_grid(rows, run.samples_dir / f"{product.key}.png", scale=3)
    return paths


def clipped_share(run: RunFolder, product: Product, batches: list[Batch]) -> tuple[float, int] | None:
    """(share of samples whose last-step x0 left [-1, 1], n); None for batches sampled before
    the sampler reported it."""
    import numpy as np

    files = [run.path / "work" / f"{b.key}.x0.npy" for b in batches if b.product == product]
    if not all(f.is_file() for f in files):
        return None
    excess = np.concatenate([np.load(f) for f in files])
    return float((excess > CLIP_TOLERANCE).mean()), len(excess)


def check_sampler(spec: EvalSpec) -> None:
    """A respacing the schedule cannot hold fails here, before any actor starts."""
    from models.sampling import sampler_timesteps
    from models.schedule import NoiseSchedule

    s = spec.settings
    try:
        sampler_timesteps(s.respacing, s.ddim_steps, NoiseSchedule().num_timesteps)
        sampler_timesteps(None, s.ddim_steps, NoiseSchedule().num_timesteps)
    except ValueError as e:
        raise UserError(f"evaluation.respacing / ddim_steps: {e}") from None


def evaluate(spec: EvalSpec, run_dir: str | Path) -> Path:
    from tqdm.auto import tqdm

    from harness.report.results import write_metrics

    run = RunFolder(run_dir)
    check_sampler(spec)
    models, train_spec = resolve_models(spec, run.path)
    products = plan_products(spec, models)
    batches = plan_batches(spec, products)
    run.set_state("running", step=0, steps=len(batches), host=socket.gethostname(), pid=os.getpid(),
                  error=None)
    ray = ray_init()
    try:
        from ray.util import ActorPool

        n_actors, threads, gpus = actor_layout(ray.nodes())
        ray_nodes = len([n for n in ray.nodes() if n["Alive"]])
        Worker = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=3, max_task_retries=3)(EvalWorker)
        actors = [Worker.remote(spec.model_dump_json(), str(run.path), threads) for _ in range(n_actors)]
        pool = ActorPool(actors)
        todo = [b for b in batches if not (run.path / "work" / f"{b.key}.npy").is_file()]
        done = len(batches) - len(todo)
        for _ in tqdm(pool.map_unordered(lambda a, b: a.sample.remote(b), todo), total=len(todo),
                      desc=f"evaluate {run.run_id}", mininterval=1.0):
            done += 1
            run.set_state("running", step=done)
        paths = save_products(run, spec, products, batches)

        jobs = [dict(product=asdict(p), key=p.key, path=str(paths[p.key]), train_spec=train_spec,
                     eval_seed=p.seed(spec), items=str(run.path / "items" / f"{p.key}.npz"),
                     source_samples=source_samples_path(spec, run.path, p),
                     clipped=clipped_share(run, p, batches)) for p in products]
        jobs += calibration_jobs(spec, run.path)
        rows, cache = [], {"hits": 0, "lookups": 0}
        for product_rows, counts in pool.map_unordered(lambda a, j: a.measure.remote(j), jobs):
            rows += product_rows
            cache = {k: cache[k] + counts[k] for k in cache}
    finally:
        ray.shutdown()
    write_metrics(run.metrics_path, rows, run_id=run.run_id)
    attempts = {}
    for marker in (run.path / "attempts").glob("*.*"):
        attempts.setdefault(marker.name.rsplit(".", 1)[0], []).append(marker.name)
    retries = sum(len(v) - 1 for v in attempts.values())
    atomic_write_json(run.path / "eval.json", {
        "batches": len(batches), "ray_nodes": ray_nodes, "actors": n_actors, "threads_per_actor": threads,
        "retries": retries, "retried_batches": sorted(
            k for k, v in attempts.items() if len(v) > 1),
        "feature_lookups": cache["lookups"], "feature_cache_hits": cache["hits"], "rows": len(rows)})
    run.set_state("done", step=len(batches))
    return run.metrics_path


def source_samples_path(spec: EvalSpec, run_dir: Path, product: Product) -> str | None:
    """The source model's unconditional samples (same noise), for the paired distances."""
    if spec.source_samples is None or product.task != "unconditional":
        return None
    from jobs.paired import KEY

    source = RunFolder(store_root_of(run_dir) / spec.source_samples[4:])
    found = []
    for path in sorted((source.path / "products").glob("unconditional*.npy")):
        match = KEY.match(path.stem)
        seed = int(match["eval_seed"]) if match and match["eval_seed"] else None
        if match and seed == product.eval_seed:
            found.append(path)
    return str(found[0]) if found else None


def calibration_jobs(spec: EvalSpec, run_dir: Path) -> list[dict]:
    """The source model's evaluation measures real data once per target (calibration rows):
    where a full domain exists, at the sample counts of the model rows."""
    target = spec.target_data.model_dump()
    if spec.role != "source" or not (target["kind"] == "builtin-target" or target.get("reference")):
        return []
    s = spec.settings
    sizes = {"unconditional": s.num_samples} if "unconditional" in s.tasks else {}
    if set(s.tasks) - {"unconditional"}:
        sizes["translation"] = s.num_translations
    return [dict(calibration=True, sizes=sizes, items_dir=str(run_dir / "items"))]


def run(run_dir: str | Path) -> Path:
    folder = RunFolder(run_dir)
    spec = EvalSpec.model_validate(folder.read_spec())
    with folder.recording_failure():
        return evaluate(spec, run_dir)


def slurm_run(run_dir: str | Path) -> Path | str:
    """One task: Ray starts inside the job on its cores (or joins $SDFT_RAY_ADDRESS). Several
    tasks (nodes): one Ray node per task, the head and the driver on the first
    (jobs/ray_cluster.py). A requeued evaluation skips the batches it has."""
    import submitit

    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    env = submitit.JobEnvironment()
    if env.num_tasks == 1:
        return run(run_dir)
    from jobs.ray_cluster import slurm_ray_cluster

    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
    gpus = len([d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d])
    with slurm_ray_cluster(env.global_rank, env.num_tasks, Path(run_dir) / "ray", cpus, gpus) as address:
        if address is None:
            return "ray worker"
        os.environ["SDFT_RAY_ADDRESS"] = address
        return run(run_dir)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        reexec_with_job_environment(["-m", "jobs.evaluate", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="evaluation run folder holding spec.json")
    args = parser.parse_args(argv)
    from models.data import DatasetError

    with exit_on_user_error(DatasetError, FileNotFoundError):
        run(args.run_dir)


if __name__ == "__main__":
    main()

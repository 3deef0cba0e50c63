"""What an evaluation makes and measures, decided before anything runs: the models to load,
the products (task x t0 x evaluation seed x split x checkpoint), their batches, and the typed
hand-offs to the measurement (`ProductJob`, `CalibrationJob`).

Pure: no Ray, no torch (the sampler check imports the schedule when called); it reads the
store only to find the trained run's folders and the source model's samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from runs import compute, params
from runs.methods import settings_of, weighting_of
from runs.errors import UserError
from runs.spec import EvalSpec
from runs.store import RunFolder, store_root_of
from jobs.evaluation import splits
from jobs.evaluation.manifest import final, read_manifest
from jobs.weights import raw_twin


@dataclass(frozen=True)
class Product:
    """One set of generated images: a task at a noise level from one checkpoint."""
    task: str
    t0: float | None
    ckpt_step: int | None
    model_dir: str
    eval_seed: int | None = None     # set when `evaluation.seed` is a list: one product per seed
    split: str | None = None         # "validation" or "test" under `evaluation.splits` (jobs/evaluation/splits.py)

    @property
    def name(self) -> str:
        """Task, t0, seed and split: what the checkpoints of one model have in common."""
        t0 = f"_t{self.t0:g}" if self.t0 is not None else ""
        seed = f"_e{self.eval_seed}" if self.eval_seed is not None else ""
        split = f"_{self.split}" if self.split is not None else ""
        return f"{self.task}{t0}{seed}{split}"

    @property
    def key(self) -> str:
        """The product's files are named by it (work/, products/, items/, samples/)."""
        return self.name + (f"_s{self.ckpt_step}" if self.ckpt_step is not None else "")

    def seed(self, spec: EvalSpec) -> int:
        """The seed of this product's sampling noise."""
        return self.eval_seed if self.eval_seed is not None else spec.settings.seeds[0]

    def inputs(self, spec: EvalSpec, total: int):
        """The indices of this product's translation inputs among the `total` source test images."""
        return splits.inputs(self.split, spec.settings.num_translations, total)


@dataclass(frozen=True)
class Batch:
    product: Product
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{self.product.key}_{self.start:06d}"


@dataclass(frozen=True)
class ProductJob:
    """One product to measure, once its images are saved."""
    product: Product
    seed: int                                  # of the sampling noise (the rows' eval_seed)
    columns: Mapping[str, object]              # the columns every row of the product shares
    images: str                                # products/<key>.npy
    items: str                                 # where the per-item values go: items/<key>.npz
    record: str                                # work/<key>.rows.json (jobs/evaluation/measured.py)
    source_samples: str | None = None          # the source model's samples from the same noise
    clipped: tuple[float, int] | None = None   # (share of samples whose last x0 left [-1, 1], n)


@dataclass(frozen=True)
class CalibrationJob:
    """Real data measured as the models are (the source model's evaluation only)."""
    sizes: Mapping[str, int]       # task -> n, the model rows' sample count: "unconditional", "translation"
    items_dir: str
    record: str                    # work/calibration[-<split>].rows.json (jobs/evaluation/measured.py)
    split: str | None = None       # measured against this split's reference (jobs/evaluation/splits.py)


# ---------------------------------------------------------------- the models
def resolve_models(spec: EvalSpec, run_dir: Path) -> tuple[list[tuple[int | None, Path]], dict]:
    """[(checkpoint step, model folder)] and the trained run's spec (empty for a folder):
    RUN_DIR/model (the EMA) or RUN_DIR/model-raw as `evaluation.weights` says."""
    ref = spec.model_ref
    if ref is None:
        path = Path(spec.model)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a diffusers model folder (no config.json)")
        return [(None, path)], {}
    trained = ref.resolve(store_root_of(run_dir))
    if trained.status != "done":
        raise UserError(f"{trained.path}: the run to evaluate is not done (status {trained.status})")
    train_spec = trained.read_spec()
    steps = train_spec["steps"]
    # a fine-tuned model's evaluation names the weights; the source model's is its EMA
    raw = spec.settings.weights == "raw"
    final_dir = raw_twin(trained.model_dir) if raw else trained.model_dir
    if not final_dir.is_dir():
        raise UserError(f"{trained.path}: no raw weights ({final_dir.name}/; the run was trained before they "
                        f"were kept): set evaluation.weights: ema, or train the run again")
    models = [(steps, final_dir)]
    for step in sorted(set(spec.settings.checkpoint_steps) | set(spec.settings.curve_steps)):
        if step < steps:
            snapshot = raw_twin(trained.snapshot_dir(step)) if raw else trained.snapshot_dir(step)
            if not snapshot.is_dir():
                asked = "checkpoint_steps" if step in spec.settings.checkpoint_steps else "curve_steps"
                raise UserError(f"{trained.path}: no {'raw' if raw else 'EMA'} snapshot at step {step} "
                                f"({snapshot.name}/: trained before {asked} asked for it)")
            models.append((step, snapshot))
    return models, train_spec


def training_seconds(spec: EvalSpec, run_dir: Path) -> dict[int, float]:
    """The trained run's measured training seconds at each logged step (train.jsonl's
    `train_s`, jobs/train.py); empty for a model folder and for runs trained before it was kept."""
    ref = spec.model_ref
    if ref is None:
        return {}
    trained = ref.resolve(store_root_of(run_dir))
    return {r["step"]: r["train_s"] for r in trained.log_rows() if "train_s" in r and "step" in r}


def cost_columns(train_spec: dict, step: int | None, seconds: Mapping[int, float]) -> dict:
    """A fine-tuned model's training cost up to its checkpoint: `compute_kimg` (naive kimg,
    runs.compute) and the measured `train_s`; none for the source model."""
    if train_spec.get("stage") != "finetune" or step is None:
        return {}
    return {"compute_kimg": compute.kimg(train_spec["method"], step, train_spec["batch_size"],
                                         settings_of(train_spec)),
            "train_s": seconds.get(step)}


def announce_solver(spec: EvalSpec) -> None:
    """Says that a solver draws only the unconditional samples. (A step count or respacing the
    schedule cannot hold never gets here: runs.spec refuses it at submit.)"""
    s = spec.settings
    translations = sorted(set(s.tasks) - {"unconditional"})
    if s.sampler in ("dpm-solver++", "unipc") and translations:
        print(f"[evaluate] sampler {s.sampler} ({s.solver_steps} steps) draws the unconditional samples; "
              f"{' and '.join(translations)} keep DDIM ({s.ddim_steps} steps): their guidance is a DDIM step's",
              flush=True)


def check_inputs(spec: EvalSpec) -> None:
    """The translations need num_translations distinct source test images (with splits,
    both splits' 2 x num_translations): fewer fail here, before any actor starts."""
    s = spec.settings
    if set(s.tasks) <= {"unconditional"}:
        return
    from models.data import open_dataset

    data = spec.source_data.model_dump()
    available = len(open_dataset(data, split="source_test" if data["kind"] == "builtin-source" else None))
    if s.splits and available < 2 * s.num_translations:
        raise UserError(f"evaluation.num_translations: {s.num_translations} per split needs "
                        f"{2 * s.num_translations} source test images for evaluation.splits, the source has "
                        f"{available}")
    if available < s.num_translations:
        raise UserError(f"evaluation.num_translations: {s.num_translations} translations need as many source "
                        f"test images, the source has {available}")


# ---------------------------------------------------------------- products and batches
def curve_only(spec: EvalSpec, step: int | None, final_step: int | None) -> bool:
    """Whether a checkpoint is evaluated for the forgetting curve alone (not the final model,
    not an early-stopping candidate): its unconditional samples of the reported split only,
    its rows in curve.parquet, apart from the metrics that tables and selection read."""
    s = spec.settings
    return step is not None and step != final_step and step in s.curve_steps and step not in s.checkpoint_steps


def plan_products(spec: EvalSpec, models) -> list[Product]:
    products = []
    seeds = spec.settings.seeds
    final_step = models[0][0] if models else None
    for step, path in models:
        curve = curve_only(spec, step, final_step)
        tasks = ["unconditional"] if curve else spec.settings.tasks
        # the curve is reported on the test split (or on no split), as the tables are
        split_names = spec.settings.split_names[-1:] if curve else spec.settings.split_names
        for task in tasks:
            for t0 in ([None] if task == "unconditional" else spec.settings.t0):
                for seed in (seeds if len(seeds) > 1 else [None]):
                    for split in split_names:
                        products.append(Product(task, t0, step, str(path), seed, split))
    return products


def plan_batches(spec: EvalSpec, products: list[Product]) -> list[Batch]:
    s = spec.settings
    batches = []
    for product in products:
        total = s.num_samples if product.task == "unconditional" else s.num_translations
        batches += [Batch(product, i, min(i + s.batch_size, total)) for i in range(0, total, s.batch_size)]
    return batches


# ---------------------------------------------------------------- what to measure
def identity(spec: EvalSpec, train_spec: dict, product: Product,
             seconds: Mapping[int, float] | None = None) -> dict:
    """The columns that name a product's rows: the model, its training settings and cost, the product."""
    ref = spec.model_ref
    return {
        "run_id": ref.run_id if ref is not None else spec.model,
        "method": train_spec.get("method") or "source",
        "weighting": weighting_of(train_spec),
        "seed": train_spec.get("seed"),
        "eval_seed": product.seed(spec),
        "ckpt_step": product.ckpt_step,
        "task": product.task,
        "t0": product.t0,
        # absent without splits, so that those rows stay as they were (tidy() fills it in)
        **({"split": product.split} if product.split is not None else {}),
        **params.columns(train_spec),
        **cost_columns(train_spec, product.ckpt_step, seconds or {}),
    }


def product_job(spec: EvalSpec, run: RunFolder, product: Product, train_spec: dict, images: Path,
                clipped: tuple[float, int] | None = None,
                seconds: Mapping[int, float] | None = None) -> ProductJob:
    return ProductJob(product, product.seed(spec), identity(spec, train_spec, product, seconds), str(images),
                      str(run.path / "items" / f"{product.key}.npz"), str(run.path / "work" / f"{product.key}.rows.json"),
                      source_samples_path(spec, run.path, product), clipped)


def source_samples_path(spec: EvalSpec, run_dir: Path, product: Product) -> str | None:
    """The source model's unconditional samples (same noise), for the paired distances: the
    final product of the same seed and split its evaluation's manifest lists."""
    if spec.source_samples is None or product.task != "unconditional":
        return None
    source = spec.source_samples_ref.resolve(store_root_of(run_dir))
    seed = product.seed(spec)
    found = [e for e in final(read_manifest(source)).values()
             if e.task == "unconditional" and e.eval_seed == seed and e.split == product.split]
    return str(source.path / "products" / found[0].file) if found else None


def calibration_jobs(spec: EvalSpec, run_dir: Path) -> list[CalibrationJob]:
    """The source model's evaluation measures real data once per target (calibration rows):
    where a full domain exists, at the sample counts of the model rows; with splits, once
    per split, against that split's half of the full domain."""
    target = spec.target_data.model_dump()
    if spec.role != "source" or not (target["kind"] == "builtin-target" or target.get("reference")):
        return []
    s = spec.settings
    sizes = {"unconditional": s.num_samples} if "unconditional" in s.tasks else {}
    if set(s.tasks) - {"unconditional"}:
        sizes["translation"] = s.num_translations
    return [CalibrationJob(sizes, str(run_dir / "items"),
                           str(run_dir / "work" / f"calibration{'-' + split if split else ''}.rows.json"), split)
            for split in s.split_names]

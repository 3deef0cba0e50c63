"""The Ray actor of the evaluate stage: it loads models and inputs once, samples batches, and
hands each product's images with the typed inputs to jobs.evaluation.measure.

Each batch lands in its own file (atomic), so a batch an actor was killed holding is
sampled again by Ray (max_task_retries) and a restarted job skips finished batches. Every
attempt leaves a marker in RUN_DIR/attempts/ (<batch>.<pid>).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from runs.spec import EvalSpec
from jobs.evaluation.plan import Batch, CalibrationJob, ProductJob


class EvalWorker:
    """Runs in a Ray actor process (or plainly, in tests): what it loads, it loads once."""

    def __init__(self, spec_json: str, run_dir: str, threads: int):
        import torch

        from jobs.evaluation.instruments import Extractors

        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        from models.devices import eval_device

        self.device = eval_device()
        self.spec = EvalSpec.model_validate_json(spec_json)
        self.run_dir = Path(run_dir)
        self.extractors = Extractors()
        self._models: dict[str, object] = {}
        self._schedules: dict[str, object] = {}     # each model's noise schedule
        self._chunks: dict[str, int] = {}
        self._eager: dict[str, object] = {}
        self._sources = None
        self._domain: dict[object, object] = {}     # by noise schedule
        self._references = {}
        from report.results import git_sha
        self.commit = git_sha()         # stamps each record: once per actor, not per product

    # -- inputs, loaded once per actor
    def model(self, path: str):
        if path not in self._models:
            from models.compiling import compile_enabled, compile_in_place
            from models.networks import as_eps_model, load_unet, schedule_of
            net = load_unet(path).eval().to(self.device)
            self._schedules[path] = schedule_of(net)
            precision = self.spec.settings.precision
            # `forward` itself stays eager after an in-place compile: the memory probe runs it,
            # in the sampling precision (bf16 activations take half the memory of fp32's)
            self._eager[path] = as_eps_model(net.forward, next(net.parameters()).dtype, autocast=precision)
            self._models[path] = as_eps_model(compile_in_place(net, compile_enabled(self.spec.settings.compile)),
                                              autocast=precision)
        return self._models[path]

    def sources(self):
        """Translation inputs: the source-domain test images (a product takes its split's,
        Product.inputs)."""
        if self._sources is None:
            from models.data import open_dataset
            data = self.spec.source_data.model_dump()
            split = "source_test" if data["kind"] == "builtin-source" else None
            self._sources = open_dataset(data, split=split)
        return self._sources

    def domain_features(self, schedule):
        """EGSDE's domain classifier, trained on images noised as `schedule` noises them."""
        if schedule not in self._domain:
            from models.evaluation_nets import domain_classifier
            self._domain[schedule] = domain_classifier(self.spec.source_data.model_dump(),
                                                       self.spec.target_data.model_dump(),
                                                       schedule).to(self.device).features
        return self._domain[schedule]

    def references(self, split: str | None = None):
        """The reference sets, classes and diversity centres every product (of a split) is
        measured against."""
        if split not in self._references:
            from jobs.evaluation.instruments import classes_of, references_of
            if self._references:
                classes = next(iter(self._references.values())).classes
            else:
                classes = classes_of(self.spec, self.extractors, self.sources)
            self._references[split] = references_of(self.spec, classes, split)
        return self._references[split]

    def resolution(self) -> int:
        return int(self.spec.target_data.model_dump().get("resolution", 32))

    # -- work
    def sample(self, batch: Batch) -> str:
        """Sample one batch into work/<batch>.npy (skipped when it exists); its path."""
        import torch

        from jobs.evaluation.sample import sample_batch, write_batch
        from models.data import to_model_range
        from models.devices import chunks
        from models.sampling import Sampled

        out = self.run_dir / "work" / f"{batch.key}.npy"
        if out.is_file():
            return str(out)
        attempts = self.run_dir / "attempts"
        attempts.mkdir(exist_ok=True)
        (attempts / f"{batch.key}.{os.getpid()}").write_text(f"{time.time()}\n")

        p = batch.product
        model = self.model(p.model_dir)
        schedule = self._schedules.get(p.model_dir)     # None (a network set from outside): linear
        x0 = domain = None
        if p.task != "unconditional":
            inputs = p.inputs(self.spec, len(self.sources()))
            x0 = to_model_range(torch.stack([self.sources()[inputs[i]] for i in range(batch.start, batch.stop)]))
            x0 = x0.to(self.device)
        if p.task == "egsde":
            domain = self.domain_features(schedule)
        # on a GPU the batch goes through in chunks that fit its memory (the same images)
        parts = [sample_batch(model, Batch(p, a, b), p.seed(self.spec), self.spec.settings, self.resolution(),
                              self.device, x0=None if x0 is None else x0[a - batch.start:b - batch.start],
                              domain=domain, schedule=schedule)
                 for a, b in chunks(batch.start, batch.stop, self.chunk(p.model_dir, batch.stop - batch.start))]
        sampled = Sampled(torch.cat([s.images for s in parts]), torch.cat([s.x0_excess for s in parts]))
        return str(write_batch(out, sampled))

    def chunk(self, path: str, wanted: int) -> int:
        """Images per network call for the model at `path`: `wanted` on a CPU, on a GPU what its
        free memory holds (probed once per model; EGSDE's gradients take about as much again)."""
        import torch

        from models.devices import chunk_size

        if self.device.type != "cuda":
            return wanted
        if path not in self._chunks:
            self.model(path)
            # probed eagerly: a compiled probe would compile for a batch of one
            model, size = self._eager[path], self.resolution()
            one = torch.zeros(1, 3, size, size, device=self.device)
            t = torch.full((1,), 500, dtype=torch.long, device=self.device)
            self._chunks[path] = max(1, chunk_size(lambda x: model(x, t), one, 1 << 20) // 2)
        return min(wanted, self._chunks[path])

    def measure(self, job: ProductJob | CalibrationJob) -> tuple[list[dict], dict[str, int]]:
        """Metric rows of one product (or the calibration), and the feature cache's counts;
        the per-item values are saved under items/, the rows in the job's record."""
        import numpy as np
        import torch

        from jobs.evaluation.instruments import stack
        from jobs.evaluation.measure import Pairs, Settings, measure, measure_calibration, save_items
        from jobs.evaluation.measured import write_record

        if isinstance(job, CalibrationJob):
            found = measure_calibration(job.sizes, self.spec, self.references(job.split), self.extractors,
                                        job.split)
            for name, items in found.files.items():
                save_items(Path(job.items_dir) / name, items)
            write_record(job.record, found.rows, found.counts, self.commit)
            return found.rows, found.counts
        references = self.references(job.product.split)
        images = torch.from_numpy(np.load(job.images))
        if job.product.task != "unconditional":
            inputs = job.product.inputs(self.spec, len(self.sources()))[:len(images)]
            pairs = Pairs(stack(self.sources(), inputs), "source")
        elif job.source_samples:
            pairs = Pairs(torch.from_numpy(np.load(job.source_samples)), "source-model")
        else:
            pairs = None
        settings = Settings(self.spec.settings, job.product.task, job.seed, job.columns, job.clipped,
                            job.product.split)
        found = measure(images, pairs, references, self.extractors, settings)
        save_items(job.items, found.items)
        write_record(job.record, found.rows, found.counts, self.commit)      # after its items: a record means both
        return found.rows, found.counts

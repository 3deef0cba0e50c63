"""EGSDE's ls, li and low-pass factor, swept on validation data of the built-in pair.

    python bench/egsde_sweep.py MODEL_DIR [MODEL_DIR ...] [--n 300] [--t0 0.5]

The criterion, fixed before the sweep: the lowest validation FID (builtin features, against
a held-out half of the painted domain), averaged over the models given; PSNR to the source
image is reported beside it, and ls = li = 0 is plain SDEdit, the baseline EGSDE must beat.
Validation data are the evaluate stage's own validation split (jobs/evaluation/splits.py),
disjoint from the test split the tables report: source test images [n, 2n), the noise
stream "translation-validation", and the validation half of the held-out domain. One setting for every model (the issue's rule). The last line is one
JSON object of figures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch

SOURCE = {"kind": "builtin-source", "resolution": 16, "seed": 0}
TARGET = {"kind": "builtin-target", "missing_classes": [5, 8, 9], "resolution": 16, "seed": 0, "size": 500}
LS = (0.0, 10.0, 50.0, 100.0, 500.0)
LI = (0.0, 0.5, 2.0)
FACTORS = (2, 4, 8)


def settings() -> list[tuple[float, float, int | None]]:
    """(ls, li, low-pass factor); without the faithfulness term the factor does nothing."""
    out = [(ls, 0.0, None) for ls in LS]
    return out + [(ls, li, f) for ls, li, f in itertools.product(LS, LI, FACTORS) if li > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--t0", type=float, default=0.5)
    args = parser.parse_args()

    from jobs.evaluation import splits
    from models import metrics
    from models.data import open_dataset, to_model_range, to_uint8
    from models.evaluation_nets import domain_classifier
    from models.features import BuiltinExtractor
    from models.networks import as_eps_model, load_unet
    from models.sampling import egsde, indexed_noise

    torch.set_flush_denormal(True)
    sources = open_dataset(SOURCE, split="source_test")
    inputs_u8 = torch.stack([sources[i] for i in splits.inputs(splits.VALIDATION, args.n, len(sources))])
    x0 = to_model_range(inputs_u8)
    # image i of a split draws noise i of the split's stream, as the evaluate stage samples it
    noise = indexed_noise(0, splits.stream("translation", splits.VALIDATION), range(args.n), tuple(x0.shape[1:]))
    heldout = open_dataset(TARGET, split="heldout")
    half = splits.reference_half(len(heldout), splits.VALIDATION)
    extractor = BuiltinExtractor()
    reference = extractor(torch.stack([heldout[int(i)] for i in half]))
    domain = domain_classifier(SOURCE, TARGET).features
    models = {path: as_eps_model(load_unet(path).eval()) for path in args.models}

    start, rows = time.perf_counter(), []
    for ls, li, factor in settings():
        fids, psnrs = [], []
        for path, model in models.items():
            out = to_uint8(egsde(model, x0, noise, domain, t0=args.t0, ls=ls, li=li,
                                 low_pass_factor=factor).images)
            fids.append(metrics.fid(extractor(out), reference))
            psnrs.append(float(np.mean(metrics.psnr(inputs_u8, out, value_range=(0, 255)))))
        rows.append({"ls": ls, "li": li, "low_pass_factor": factor, "fid": float(np.mean(fids)),
                     "psnr": float(np.mean(psnrs)), "fid_per_model": [round(f, 3) for f in fids]})
        print(f"ls={ls:g} li={li:g} factor={factor}: FID {rows[-1]['fid']:.3f}  PSNR {rows[-1]['psnr']:.2f}",
              flush=True)
    best = min(rows, key=lambda r: r["fid"])
    sdedit = next(r for r in rows if r["ls"] == 0 and r["li"] == 0)
    print(json.dumps({"models": args.models, "n": args.n, "t0": args.t0, "criterion": "lowest mean validation FID",
                      "selected": {k: best[k] for k in ("ls", "li", "low_pass_factor", "fid", "psnr")},
                      "sdedit": {k: sdedit[k] for k in ("fid", "psnr")},
                      "paper_setting": next({k: r[k] for k in ("fid", "psnr")} for r in rows
                                            if r["ls"] == 500 and r["li"] == 2 and r["low_pass_factor"] == 2),
                      "settings": len(rows), "seconds": round(time.perf_counter() - start, 1),
                      "sweep": rows}))


if __name__ == "__main__":
    main()

"""Does a source model keep the footwear classes apart? The builtin classifier's accuracy on
the model's SDEdit reconstructions (t0 = 0.3) of real held-out grey sandal, sneaker and
ankle-boot images (the classes a 16 px model may blur together; goal >= 0.8).

    python bench/source_classes.py MODEL_DIR [--resolution 16] [--per-class 100]

The same classifier on the real images gives the ceiling. SDEdit as the evaluate job runs
it: DDIM-40 grid, x0 clipping, indexed "translation" noise of seed 0. 95 % Wilson
intervals. The last line is one JSON object of figures.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

FOOTWEAR = {5: "sandal", 7: "sneaker", 9: "ankle boot"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--t0", type=float, default=0.3)
    args = parser.parse_args()

    from models.data.base import to_model_range, to_uint8
    from models.data.builtin import builtin_split
    from models.features import BuiltinExtractor
    from models.intervals import wilson
    from models.networks import as_eps_model, load_unet
    from models.sampling import indexed_noise, sdedit

    torch.set_flush_denormal(True)
    classifier = BuiltinExtractor()
    grey = builtin_split("source_test", args.resolution)
    labels = np.asarray(grey.labels)
    chosen = np.concatenate([np.flatnonzero(labels == c)[:args.per_class] for c in FOOTWEAR])
    real = torch.stack([grey[int(i)] for i in chosen])              # uint8, as the dataset gives
    model = as_eps_model(load_unet(args.model_dir).eval())
    start = time.perf_counter()
    x0 = to_model_range(real)
    noise = indexed_noise(0, "translation", range(len(chosen)), tuple(x0.shape[1:]))
    with torch.no_grad():
        recon = torch.cat([sdedit(model, x0[i:i + 100], noise[i:i + 100], t0=args.t0).images
                           for i in range(0, len(x0), 100)])
    seconds = time.perf_counter() - start
    truth = labels[chosen]
    figures: dict = {"model": args.model_dir, "resolution": args.resolution, "t0": args.t0,
                     "images": int(len(chosen)), "seconds": round(seconds, 1)}
    for name, images in (("real", real), ("reconstructed", to_uint8(recon))):
        predicted = classifier.classify(images).argmax(1)
        correct = predicted == truth
        overall = wilson(int(correct.sum()), len(correct))
        figures[f"accuracy_{name}"] = round(overall.value, 3)
        figures[f"accuracy_{name}_ci"] = [round(overall.low, 3), round(overall.high, 3)]
        for c, cls in FOOTWEAR.items():
            mask = truth == c
            figures[f"accuracy_{name}_{cls.replace(' ', '_')}"] = round(float(correct[mask].mean()), 3)
    figures["goal_met"] = figures["accuracy_reconstructed"] >= 0.8
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

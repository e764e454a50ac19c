"""Benchmark: the demo's Dice with each inference runtime (issue 19: "demo Dice unchanged to 0.5 points").

    python benchmarks/demo_dice_runtimes.py [--demo-out demo_out]

Takes the package `make demo` (``python -m medssl.demo``) wrote to ``<demo-out>/model`` and segments Colin27 with
``--runtime torch --precision float32`` (the reference), ``torch`` bf16 autocast and ``auto`` (OpenVINO, bf16 where
the CPU has AMX/AVX-512-BF16), scores each against the demo's region labels per hemisphere, as the demo does, and
writes ``benchmarks/results/demo_dice_runtimes.json`` with the differences to float32 in Dice points.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

RUNS = [("torch", "float32"), ("torch", "bfloat16"), ("auto", "auto")]


def score(demo_out: Path, runtime: str, precision: str) -> dict:
    """Right/left mean Dice (points) of one runtime's prediction, its label agreement input and its wall time."""
    from medssl.demo.__main__ import hemisphere_dice
    from medssl.demo.brain_regions import find_demo_data
    from medssl.inference.predictor import Predictor
    from medssl.io.volume_io import read_image

    t1 = find_demo_data()["t1"]
    predictor = Predictor.from_package(demo_out / "model", "cpu", runtime, precision)
    t0 = time.perf_counter()
    labels = predictor.predict([str(t1)]).labels
    seconds = time.perf_counter() - t0
    truth = read_image(demo_out / "data" / "regions.seg.nrrd", "region labels")
    right, left = hemisphere_dice(labels, truth, "right"), hemisphere_dice(labels, truth, "left")
    return {"choice": predictor.choice.describe(predictor.device), "seconds": round(seconds, 2),
            "right_dice": 100 * float(np.mean(list(right.values()))),
            "left_dice": 100 * float(np.mean(list(left.values()))), "labels": sitk.GetArrayFromImage(labels)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-out", default="demo_out", help="the demo's output folder (default demo_out)")
    args = p.parse_args()
    demo_out = Path(args.demo_out)
    if not (demo_out / "model" / "metadata.json").is_file():
        print(f"error: {demo_out}/model is not a package; run 'make demo' first (or pass --demo-out)", file=sys.stderr)
        return 2
    runs = {f"{r}/{q}": score(demo_out, r, q) for r, q in RUNS}
    ref = runs["torch/float32"]
    for name, run in runs.items():
        run["agreement_with_float32"] = float(np.mean(run.pop("labels") == ref["labels"])) if run is not ref else 1.0
    ref.pop("labels")
    for name, run in runs.items():
        run["right_minus_float32"] = round(run["right_dice"] - ref["right_dice"], 3)
        run["left_minus_float32"] = round(run["left_dice"] - ref["left_dice"], 3)
        ok = max(abs(run["right_minus_float32"]), abs(run["left_minus_float32"])) <= 0.5
        print(f"{name:16s} right {run['right_dice']:.2f} left {run['left_dice']:.2f} "
              f"({run['right_minus_float32']:+.3f} / {run['left_minus_float32']:+.3f} points; labels agree "
              f"{100 * run['agreement_with_float32']:.3f} %; {run['seconds']:.1f} s; target within 0.5: "
              f"{'meets' if ok else 'MISSES'}) - {run['choice']}")
    out = Path(__file__).parent / "results" / "demo_dice_runtimes.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "package": str(demo_out / "model"), "runs": runs},
                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

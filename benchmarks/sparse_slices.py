"""Benchmark: how much Dice do a few painted slices keep against full labels (``--sparse-slices``)?

    python benchmarks/sparse_slices.py [--every 5 10 20] [--inits scratch mae3d] [--steps 300] [--seeds 0]
        [--pretrain-steps 600] [--jobs 2] [--reuse-pretraining] [--out /tmp/medssl_sparse_slices]

The demo task of `medssl.demo` (Colin27 + AAL regions, left hemisphere labelled, right hemisphere never
labelled). "full" trains on every axial slice of the left hemisphere (the demo's label map); "every N" keeps
only every N-th axial slice painted (the others are blank, as a user who painted every N-th slice leaves
them) and trains with ``sparse_slices: axial``. Every run uses the demo's fine-tuning recipe and the same step
budget, from scratch and from mae3d pretraining (`label_efficiency.pretrain_job`, the demo's pretraining);
the right-hemisphere mean Dice against the full labels is reported, and the ratio to "full" (target: every
10th slice keeps >= 95 %). Runs are separate processes with one torch thread each; results go to
``<out>/results.json``. The defaults take about 2 hours on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_efficiency import pretrain_job, run_all  # noqa: E402  (the demo's pretraining, one thread)


def sparse_label_file(data: Path, every: int) -> Path:
    """The demo's left-hemisphere label map with only every ``every``-th axial slice painted (others 0)."""
    import numpy as np
    import SimpleITK as sitk

    from medssl.data.sparse import named_axis
    from medssl.demo.brain_regions import region_labels
    from medssl.io.labels import write_label_map
    from medssl.io.volume_io import read_image

    out = data / f"regions_left_every{every}.seg.nrrd"
    if out.exists():
        return out
    full = read_image(data / "regions_left.seg.nrrd", "label map")
    axis = named_axis(full, "axial")
    arr = sitk.GetArrayFromImage(full)
    keep = np.zeros(arr.shape[2 - axis], bool)
    keep[every // 2::every] = True
    shape = [1, 1, 1]
    shape[2 - axis] = -1
    sparse = sitk.GetImageFromArray(np.where(keep.reshape(shape), arr, 0).astype(arr.dtype))
    sparse.CopyInformation(full)
    return write_label_map(sparse, region_labels(), out)


def finetune_job(init: str, backbone: str, every: Optional[int], seed: int, out: str, args: Dict) -> Dict:
    """Fine-tune the demo task on full (``every=None``) or sparse labels; right/left-hemisphere mean Dice (%).
    A finished run with the same settings in ``out`` is reused (a later call can add densities)."""
    import numpy as np
    import torch

    record = Path(out) / "benchmark_run.json"
    settings = {"backbone": backbone, "every": every, "seed": seed, "steps": args["steps"], "lr": args["lr"]}
    if record.exists() and json.loads(record.read_text())["settings"] == settings:
        return json.loads(record.read_text())["result"]

    torch.set_num_threads(1)
    from medssl.demo.__main__ import finetune_overrides, hemisphere_dice, prepare_data
    from medssl.inference.predictor import Predictor
    from medssl.io.volume_io import read_image
    from medssl.train.finetune import finetune

    t0 = time.time()
    files = prepare_data(Path(args["out"]) / "demo")
    labels = files["train_labels"] if every is None else sparse_label_file(files["train_labels"].parent, every)
    overrides = finetune_overrides(args["steps"], args["lr"])
    overrides["loop"].update(checkpoint_every=10**6, seed=seed)
    overrides["seed"] = seed
    if every is not None:
        overrides["sparse_slices"] = "axial"
    package = finetune([str(files["t1"])], [str(labels)], out, backbone=backbone, preset="quick",
                       overrides=overrides, device="cpu", overwrite=True)
    pred = Predictor.from_package(package, "cpu").predict([str(files["t1"])])
    truth = read_image(files["regions"], "region labels")
    right, left = hemisphere_dice(pred.labels, truth, "right"), hemisphere_dice(pred.labels, truth, "left")
    result = {"init": init, "labels": "full" if every is None else f"every {every}", "seed": seed,
              "right_dice": 100 * float(np.mean(list(right.values()))),
              "left_dice": 100 * float(np.mean(list(left.values()))), "seconds": round(time.time() - t0, 1)}
    record.write_text(json.dumps({"settings": settings, "result": result}))
    return result


def report(runs: List[Dict], inits: List[str], rows: List[str]) -> Dict:
    """Print right-hemisphere Dice per label density and init (mean over seeds) and the ratio to full."""
    import statistics

    table: Dict[str, Dict[str, float]] = {}
    print("\nright-hemisphere (never labelled) mean Dice, % (ratio to full labels):")
    print(f"  {'labels':<10}" + "".join(f"{i:>22}" for i in inits))
    for row in rows:
        table[row] = {i: statistics.mean(r["right_dice"] for r in runs if r["labels"] == row and r["init"] == i)
                      for i in inits}
    for row in rows:
        cells = [f"{table[row][i]:>12.1f} ({table[row][i] / table['full'][i]:6.1%})" for i in inits]
        print(f"  {row:<10}" + "".join(f"{c:>22}" for c in cells))
    for i in inits:
        if "every 10" in table:
            ratio = table["every 10"][i] / table["full"][i]
            print(f"  {i}: every 10th slice keeps {ratio:.1%} of the full-label Dice "
                  f"({'meets' if ratio >= 0.95 else 'misses'} the 95 % target)")
    return table


def main(argv: Optional[List[str]] = None) -> int:
    from medssl.demo.__main__ import DEFAULTS as DEMO

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, nargs="+", default=[5, 10, 20], help="painted slice intervals")
    ap.add_argument("--inits", nargs="+", default=["scratch", "mae3d"], choices=["scratch", "mae3d"])
    ap.add_argument("--steps", type=int, default=DEMO["steps"], help="fine-tuning steps (the demo's)")
    ap.add_argument("--lr", type=float, default=DEMO["lr"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pretrain-steps", type=int, default=DEMO["pretrain_steps"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--reuse-pretraining", action="store_true", help="keep an earlier pretraining export in --out")
    ap.add_argument("--out", default="/tmp/medssl_sparse_slices")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSSL_HOME", str(out / "home"))
    params = {**vars(args), "backbone": DEMO["backbone"], "patch": DEMO["patch"][0], "spacing": DEMO["spacing"][0]}
    t0 = time.time()
    backbones = {"scratch": DEMO["backbone"]}
    pre = []
    if "mae3d" in args.inits:
        from medssl.demo.unlabelled import unlabelled_scans

        pre = run_all(1, [(pretrain_job, "mae3d", unlabelled_scans(), str(out / "pretrain_mae3d"), params)])
        backbones["mae3d"] = pre[0]["export"]
    densities: List[Optional[int]] = [None, *args.every]
    calls = [(finetune_job, init, backbones[init], every, seed,
              str(out / f"ft_{init}_{every or 'full'}_s{seed}"), params)
             for init in args.inits for every in densities for seed in args.seeds]
    runs = run_all(args.jobs, calls)
    rows = ["full", *[f"every {n}" for n in args.every]]
    table = report(runs, args.inits, rows)
    result = {"settings": params, "pretraining": pre, "runs": runs, "right_dice": table,
              "wall_seconds": round(time.time() - t0, 1)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"\nwall time {result['wall_seconds']:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: does self-supervised pretraining on unlabelled real scans help the few-label demo task?

    python benchmarks/label_efficiency.py [--methods mae3d volume_fusion] [--pretrain-steps 600]
        [--finetune-steps 100 300] [--finetune-lr 0.01] [--seeds 0 1 2] [--backbone resenc:tiny] [--patch 48]
        [--spacing 3] [--jobs 2] [--exclude-demo-subject] [--reuse-pretraining] [--out /tmp/medssl_label_efficiency]

The defaults take about 80 minutes on two CPU cores (pretraining ~19 min, fine-tuning ~61 min).

1. Pretraining: every method runs `medssl.train.pretrain.pretrain` with its CPU preset on the unlabelled
   real volumes (Colin27 T1 from mricron-data, MNI152 2009a T1 from nilearn, the ITK KmeansTest T1 and
   nibabel's anatomical test image), with the same number of steps (the CPU budget), backbone, patch and
   spacing. ``--exclude-demo-subject`` leaves Colin27 (the demo's test subject) out of pretraining.
2. Fine-tuning: the demo task of `medssl.demo` (Colin27 + AAL regions, labels on the left hemisphere only,
   the right hemisphere carries the ignore label; the demo's learning rate, mirroring, patch and spacing), with
   the same step budget, from scratch and from each export (``--backbone RUN/export``), for several seeds and
   one or more budgets; then the right-hemisphere mean Dice, which the network never saw labelled, is measured
   on the full prediction.
3. Report: Dice per seed and init, mean pretrained - scratch difference (target >= +5 Dice points) and the
   pretraining runs' loader-wait fraction (target <= 5 %).

Runs are independent processes (``--jobs`` at a time), each with one torch thread (small tensors on a shared
CPU are faster that way). Results go to ``<out>/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List

def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def pretrain_job(method: str, images: List[str], out: str, args: Dict) -> Dict:
    """One pretraining run through the demo's `pretrained_backbone` (the recipe the demo starts from; with
    ``--reuse-pretraining`` an export of the same settings in ``out`` is kept); returns its wall time, loss,
    steps and loader-wait fraction."""
    _single_thread()
    from medssl.demo.__main__ import pretrained_backbone

    record = pretrained_backbone(Path(out), method, args["pretrain_steps"], args["backbone"], "cpu", None,
                                 [args["spacing"]] * 3, [args["patch"]] * 3, scans=images,
                                 reuse=args["reuse_pretraining"])
    meta = json.loads((Path(record["export"]) / "metadata.json").read_text())
    return {"method": method, "export": record["export"], "seconds": record["seconds"], "steps": meta["steps"],
            "data_wait_fraction": meta["data_wait_fraction"], "final_loss": meta["final_losses"].get("loss")}


def finetune_job(init: str, backbone: str, seed: int, steps: int, out: str, args: Dict) -> Dict:
    """Fine-tune the demo task (its recipe: `medssl.demo.__main__.finetune_overrides`) from ``backbone`` for
    ``steps`` with ``seed``; returns the right- and left-hemisphere mean Dice (%)."""
    _single_thread()
    import numpy as np
    import torch

    from medssl.demo.__main__ import finetune_overrides, hemisphere_dice, prepare_data
    from medssl.inference.predictor import Predictor
    from medssl.io.volume_io import read_image
    from medssl.train.finetune import finetune

    torch.manual_seed(seed)
    t0 = time.time()
    files = prepare_data(Path(out).parent / "demo_data")
    overrides = finetune_overrides(steps, args["finetune_lr"], [args["spacing"]] * 3, [args["patch"]] * 3)
    overrides["loop"].update(checkpoint_every=10**6, seed=seed)
    overrides["seed"] = seed
    package = finetune([str(files["t1"])], [str(files["train_labels"])], out, backbone=backbone, preset="quick",
                       overrides=overrides, device="cpu", overwrite=True)
    pred = Predictor.from_package(package, "cpu").predict([str(files["t1"])])
    truth = read_image(files["regions"], "region labels")
    right, left = hemisphere_dice(pred.labels, truth, "right"), hemisphere_dice(pred.labels, truth, "left")
    return {"init": init, "seed": seed, "steps": steps, "right_dice": 100 * float(np.mean(list(right.values()))),
            "left_dice": 100 * float(np.mean(list(left.values()))), "seconds": round(time.time() - t0, 1)}


def run_all(jobs: int, calls: List[tuple]) -> List[Dict]:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fn, *a) for fn, *a in calls]
        return [f.result() for f in futures]


def print_pretraining(pre: List[Dict]) -> None:
    print("\npretraining (same steps for every method):")
    for p in pre:
        print(f"  {p['method']:<14} {p['steps']} steps {p['seconds']:>7.1f} s  final loss {p['final_loss']:.4f}  "
              f"loader wait {100 * p['data_wait_fraction']:.2f} %")


def report_budget(methods: List[str], fine: List[Dict], seeds: List[int], steps: int) -> Dict:
    """Print one fine-tuning budget's table (right-hemisphere Dice per seed and init); returns its summary."""
    inits = ["scratch"] + methods
    dice = {(r["init"], r["seed"]): r["right_dice"] for r in fine if r["steps"] == steps}
    left = {(r["init"], r["seed"]): r["left_dice"] for r in fine if r["steps"] == steps}
    print(f"\n{steps} fine-tuning steps: right-hemisphere (unseen) mean Dice, % (left, trained, in brackets):")
    print("  seed  " + "".join(f"{i:>22}" for i in inits))
    for s in seeds:
        print(f"  {s:<6}" + "".join(f"{dice[(i, s)]:>14.2f} ({left[(i, s)]:5.1f})" for i in inits))
    means = {i: statistics.mean(dice[(i, s)] for s in seeds) for i in inits}
    print("  mean  " + "".join(f"{means[i]:>22.2f}" for i in inits))
    summary = {"mean_right_dice": means, "per_seed": {f"{i}/{s}": dice[(i, s)] for i in inits for s in seeds},
               "mean_left_dice": {i: statistics.mean(left[(i, s)] for s in seeds) for i in inits}}
    for m in methods:
        diffs = [dice[(m, s)] - dice[("scratch", s)] for s in seeds]
        summary[f"{m}_minus_scratch"] = {"mean": statistics.mean(diffs), "per_seed": diffs}
        verdict = "meets" if statistics.mean(diffs) >= 5 else "misses"
        print(f"  {m} - scratch: {statistics.mean(diffs):+.2f} Dice points (per seed "
              f"{', '.join(f'{d:+.2f}' for d in diffs)}); {verdict} the +5 target")
    return summary


def report(pre: List[Dict], fine: List[Dict], seeds: List[int], budgets: List[int]) -> Dict:
    """Print the tables; returns the summary (one entry per fine-tuning budget)."""
    print_pretraining(pre)
    methods = [p["method"] for p in pre]
    summary = {f"finetune_{n}_steps": report_budget(methods, fine, seeds, n) for n in budgets}
    worst = max(p["data_wait_fraction"] for p in pre)
    print(f"\n  worst loader-wait fraction {100 * worst:.2f} % ({'meets' if worst <= 0.05 else 'misses'} the 5 % target)")
    return summary


def main(argv: List[str] | None = None) -> int:
    from medssl.demo.__main__ import DEFAULTS as DEMO

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["mae3d", "volume_fusion"])
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--finetune-steps", type=int, nargs="+", default=[100, 300], help="one or more budgets")
    ap.add_argument("--finetune-lr", type=float, default=DEMO["lr"], help="fine-tuning learning rate (the demo's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backbone", default=DEMO["backbone"])
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--spacing", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--exclude-demo-subject", action="store_true")
    ap.add_argument("--reuse-pretraining", action="store_true", help="keep the exports of an earlier run in --out")
    ap.add_argument("--out", default="/tmp/medssl_label_efficiency")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSSL_HOME", str(out / "home"))
    params = vars(args)
    t0 = time.time()
    from medssl.demo.unlabelled import unlabelled_scans

    images = unlabelled_scans(include_demo_subject=not args.exclude_demo_subject)
    print(f"pretraining on {len(images)} unlabelled volume(s): {', '.join(Path(i).name for i in images)}")
    pre = run_all(args.jobs, [(pretrain_job, m, images, str(out / f"pretrain_{m}"), params) for m in args.methods])
    inits = [("scratch", args.backbone)] + [(p["method"], p["export"]) for p in pre]
    calls = [(finetune_job, name, backbone, s, n, str(out / f"ft_{name}_{n}_{s}"), params)
             for n in sorted(args.finetune_steps, reverse=True) for name, backbone in inits for s in args.seeds]
    fine = run_all(args.jobs, calls)
    summary = report(pre, fine, args.seeds, args.finetune_steps)
    summary.update({"settings": params, "pretraining": pre, "finetuning": fine, "images": images,
                    "wall_seconds": round(time.time() - t0, 1)})
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwall time {time.time() - t0:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

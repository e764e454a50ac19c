"""Benchmark (issue 19, part 4): peak RSS of ``medssl predict`` on a 512x512x300 CT with 14 classes, on the CPU.

    python benchmarks/memory_512.py [--cases a b] [--runtime auto] [--backbone resenc:tiny] [--roi 128]

Each case is one ``/usr/bin/time -v medssl predict ...`` process, end to end (read, preprocess, sliding window,
labels on the input grid, write), on a random int16 volume of 512x512x300 at 0.8x0.8x1.5 mm:

- (a) the plan's spacing is coarser than the scan (1.6 mm: network grid 256x256x281, labels on 512x512x300);
- (b) the network runs at the scan's own resolution (plan without spacing: network grid = input grid).

The packages have random weights (memory does not depend on them). Before the measured run each package
segments a small volume once, so the ONNX export and OpenVINO's compiled-model cache exist as in any later run.
Runs are one at a time, one thread (``OMP_NUM_THREADS=1``) unless ``--threads``; results are appended to
``benchmarks/results/memory_512.json`` (one record per case and runtime, with the git commit). Target <= 1.5 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from predict_vs_monai import make_package  # same folder: the benchmarks run as scripts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "memory_512.json"
TARGET_MB = 1.5 * 1000  # 1.5 GB as the issue states it (decimal GB, as /usr/bin/time's kbytes / 1e6)
SPACING = {"a": 1.6, "b": None}


def write_volume(path: Path, size=(512, 512, 300), spacing=(0.8, 0.8, 1.5)) -> Path:
    rng = np.random.default_rng(0)
    vol = sitk.GetImageFromArray((rng.normal(size=size[::-1]) * 100).astype(np.int16))
    vol.SetSpacing(spacing)
    sitk.WriteImage(vol, str(path), False)
    return path


def predict_cmd(pkg: Path, image: Path, out: Path, runtime: str) -> list:
    medssl = Path(sys.executable).with_name("medssl")
    return [str(medssl), "predict", "--model", str(pkg), "--input", str(image), "--output", str(out),
            "--device", "cpu", "--progress", "none", "--runtime", runtime]


def timed_run(cmd: list, threads: int, timeout_s: int) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``; peak RSS (MB, decimal) and wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", "timeout", str(timeout_s), *cmd], capture_output=True, text=True,
                         env=env)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if out.returncode != 0 or rss is None:
        raise RuntimeError(f"rc {out.returncode}: {out.stderr[-1500:]}")
    return {"peak_rss_mb": int(rss.group(1)) / 1000, "seconds": round(wall, 1)}


def git_commit() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True)
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=sorted(SPACING), default=sorted(SPACING))
    p.add_argument("--runtime", nargs="+", default=["auto"], help="medssl --runtime values, one run each")
    p.add_argument("--backbone", default="resenc:tiny")
    p.add_argument("--roi", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measured run")
    p.add_argument("--work", help="folder kept between runs for the volume and packages (default: a temporary one)")
    p.add_argument("--no-save", action="store_true", help="print only, do not append to the results file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(args.work or d)
        work.mkdir(parents=True, exist_ok=True)
        volume = work / "ct_512x512x300.nii"
        if not volume.exists():
            write_volume(volume)
        small = work / "small.nii"
        if not small.exists():
            write_volume(small, (40, 40, 30))
        records = []
        for case in args.cases:
            tag = f"{args.backbone.replace(':', '_')}_{args.roi}_{case}"
            pkg = work / f"pkg_{tag}"
            if not pkg.exists():
                make_package(pkg, args.backbone, 14, args.roi, SPACING[case], channel="ct")
            for runtime in args.runtime:
                timed_run(predict_cmd(pkg, small, work / "warm.nii.gz", runtime), args.threads, args.timeout)
                r = timed_run(predict_cmd(pkg, volume, work / "labels.nii.gz", runtime), args.threads, args.timeout)
                rec = {"case": case, "plan_spacing_mm": SPACING[case], "runtime": runtime, "backbone": args.backbone,
                       "roi": args.roi, "threads": args.threads, "commit": git_commit(),
                       "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), **r,
                       "meets_1p5_gb": r["peak_rss_mb"] <= TARGET_MB}
                print(f"[{case}] runtime {runtime}: peak RSS {r['peak_rss_mb']:.0f} MB in {r['seconds']:.0f} s "
                      f"(target <= {TARGET_MB:.0f} MB: {'meets' if rec['meets_1p5_gb'] else 'MISSES'})", flush=True)
                records.append(rec)
        if not args.no_save:
            old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
            RESULTS.write_text(json.dumps(old + records, indent=1) + "\n")
    print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: cases per minute of ``medssl predict --input-dir`` against one ``medssl predict`` per case (issue 19, 5).

    python benchmarks/folder_throughput.py --package PKG [--runtime auto] [--repeats 3] [--save NAME]

Cases: real T1 scans of the Debian package mricron-data (Colin27 ``ch2``, ``ch2better``, ``ch2bet``, the
INIA19 template, ...), each copied into one input folder; ``--cases N`` takes the first N. Side by side in one
run, alternating, ``--repeats`` times each, as a user runs them from a shell (a fresh Python process each time,
imports and all, so the per-process costs are in both):
(a) one process ``python -m medssl predict --input-dir IN --output-dir OUT``, which reads, checks and (for
    OpenVINO) loads the compiled model once;
(b) one ``python -m medssl predict --input X --output Y`` process per case, one after the other.
Reported: median wall times, cases per minute of each and their ratio; and whether (a) and (b) wrote the same
labels for every case (they must: the same model on the same scans). The load average is printed, since the
two cores may be shared. Results: printed, and with ``--save NAME`` written to ``benchmarks/results/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from medssl.inference.runtimes import cpu_description

RESULTS = Path(__file__).resolve().parent / "results"
MRICRON = Path("/usr/share/mricron/templates")
SCANS = ["ch2.nii.gz", "ch2better.nii.gz", "ch2bet.nii.gz", "inia19-t1-brain.nii.gz"]


def input_folder(folder: Path, count: int) -> List[Path]:
    """``count`` scans copied into ``folder`` (cycling through `SCANS` under new names past four)."""
    folder.mkdir(parents=True)
    found = [MRICRON / s for s in SCANS if (MRICRON / s).exists()]
    if not found:
        raise SystemExit("error: no scans found; install the Debian package mricron-data")
    out = []
    for i in range(count):
        src = found[i % len(found)]
        dst = folder / (src.name if i < len(found) else f"copy{i}_{src.name}")
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def timed(cmd: List[str]) -> float:
    """Wall seconds of ``cmd``; a failure stops the benchmark with its last output lines."""
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... exited {run.returncode}: {run.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def seg_name(scan: Path) -> str:
    return scan.name.split(".nii")[0] + ".seg.nrrd"


def same_labels(a: Path, b: Path) -> bool:
    return bool(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(b)))))


def run(package: str, runtime: str, cases: int, repeats: int, tmp: Path) -> Dict:
    scans = input_folder(tmp / "in", cases)
    medssl = [sys.executable, "-m", "medssl", "predict", "--model", package, "--runtime", runtime,
              "--progress", "none"]
    folder_out, single_out = tmp / "out_folder", tmp / "out_single"
    single_out.mkdir()
    timed([*medssl, "--input", str(scans[0]), "--output", str(tmp / "warm.seg.nrrd")])  # ONNX export, OV cache
    folder_s, single_s, load = [], [], [os.getloadavg()[0]]
    for _ in range(repeats):
        shutil.rmtree(folder_out, ignore_errors=True)
        folder_s.append(timed([*medssl, "--input-dir", str(tmp / "in"), "--output-dir", str(folder_out)]))
        for f in single_out.iterdir():
            f.unlink()
        t = 0.0
        for scan in scans:
            t += timed([*medssl, "--input", str(scan), "--output", str(single_out / seg_name(scan))])
        single_s.append(t)
        load.append(os.getloadavg()[0])
    folder_med, single_med = statistics.median(folder_s), statistics.median(single_s)
    agree = all(same_labels(folder_out / seg_name(s), single_out / seg_name(s)) for s in scans)
    shapes = [list(sitk.ReadImage(str(s)).GetSize()) for s in scans]
    return {"cases": cases, "scans": [s.name for s in scans], "sizes": shapes, "runtime": runtime,
            "folder_s": folder_med, "one_per_case_s": single_med,
            "folder_cases_per_minute": 60 * cases / folder_med, "one_per_case_cases_per_minute": 60 * cases / single_med,
            "speedup": single_med / folder_med, "same_labels": agree, "runs_folder_s": folder_s,
            "runs_one_per_case_s": single_s, "load_average": [round(x, 1) for x in load], "cpu": cpu_description()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", required=True, help="a model package (e.g. demo_out/model from make demo)")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--save", help="write benchmarks/results/SAVE.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r = run(str(Path(args.package).resolve()), args.runtime, args.cases, args.repeats, Path(d))
    print(f"{r['cases']} cases ({', '.join(r['scans'])}), --runtime {r['runtime']}, {r['cpu']}")
    print(f"  medssl predict --input-dir: {r['folder_s']:.1f} s, {r['folder_cases_per_minute']:.1f} cases per minute")
    print(f"  one medssl predict per case: {r['one_per_case_s']:.1f} s, "
          f"{r['one_per_case_cases_per_minute']:.1f} cases per minute")
    print(f"  folder / per case speed-up {r['speedup']:.2f}x; same labels: {r['same_labels']}; "
          f"load average {r['load_average']}")
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.json").write_text(json.dumps(r, indent=1))
    return 0 if r["same_labels"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: ``medssl predict`` end to end against bare MONAI ``sliding_window_inference``.

    python benchmarks/predict_vs_monai.py [--backbone resenc:tiny] [--roi 96] [--repeats 2] [--skip-speed] [--skip-large] [--skip-bare-large]
    python benchmarks/predict_vs_monai.py --runtimes [--runtime auto] [--package PKG] [--roi 48 --spacing 3]

Part 1 (speed): the Colin27 T1 (181x217x181, real scan) is segmented by a package on its native grid by
(a) ``medssl predict`` in a subprocess: read, preprocess, sliding window, invert, write ``.seg.nrrd``;
(b) a subprocess running only MONAI's ``sliding_window_inference`` + arg-max on the same network, ROI,
overlap and blending, on the already preprocessed tensor. Both processes import their libraries before the
clock starts (a one-off cost of any Python process, not of the pipeline). Runs alternate; the median wall time of each is
reported with the ratio (target <= 1.05) and each process's peak RSS.
Part 2 (memory): a 512x512x300 volume with a 14-class network, predicted on the CPU by ``medssl predict``
(low-memory streamed stitching kicks in automatically) versus bare MONAI stitching the full probability map
(target for medssl: peak RSS <= 3 GB).
Part 3 (``--runtimes``, issue 19): Colin27 at the plan's spacing (default 3 mm, ROI 48 as the demo), side by
side in one run: (a) ``medssl predict --runtime R`` end to end (after one warm-up run that exports the ONNX
file and fills OpenVINO's cache, as any later run finds them) against bare MONAI float32; (b) the sliding-window
part alone on the same preprocessed tensor, ``R``'s window network and medssl's arg-max (`class_argmax`) against
bare MONAI float32 and ``argmax(1)``; (c) labels of
(b) against float32 on the network grid. The load average is printed, as the 2 cores may be shared.
The networks have random weights (time and memory do not depend on them) unless ``--package`` gives a trained
one (label agreement does: near ties are many in a random network). ``--respace MM`` plans that package at MM
(e.g. the demo's 3 mm network on Colin27's own 1 mm grid: 441 windows instead of 8), so that the sliding window
is the work being compared and not the per-case costs (read, load, write: about 1.8 s here, fixed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl.inference.runtimes import cpu_description

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")

BARE_MONAI = r"""
import json, resource, sys, time, torch
import SimpleITK as sitk
from monai.inferers import sliding_window_inference
from medssl.hub.package import load_package
from medssl.data.preprocess import preprocess
torch.set_num_threads(int(sys.argv[3]))
plan, net, _ = load_package(sys.argv[1])
x = torch.from_numpy(preprocess([sitk.ReadImage(sys.argv[2])], plan).image)[None]
sw = plan.sliding_window
t0 = time.perf_counter()
with torch.inference_mode():
    y = sliding_window_inference(x, plan.patch_size, sw.sw_batch_size, lambda w: torch.softmax(net(w), 1),
                                 overlap=sw.overlap, mode=sw.mode, sigma_scale=sw.sigma_scale)
    labels = y.argmax(1)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SW_ONLY = r"""
import json, sys, time, numpy as np, torch
import SimpleITK as sitk
from monai.inferers import sliding_window_inference
from medssl.data.preprocess import preprocess
from medssl.inference.predictor import Predictor
from medssl.data.label_resample import class_argmax
from medssl.inference.sliding_window import count_windows, probabilities
torch.set_num_threads(int(sys.argv[3]))
runtime, out = sys.argv[4], sys.argv[5]
pred = Predictor.from_package(sys.argv[1], "cpu", "torch" if runtime == "monai" else runtime,
                              "float32" if runtime == "monai" else "auto")
x = torch.from_numpy(preprocess([sitk.ReadImage(sys.argv[2])], pred.plan).image)[None]
settings = pred.settings()
net = pred.window_net()
with torch.inference_mode():
    net(torch.zeros(settings.sw_batch_size, x.shape[1], *settings.roi))  # compile / warm up outside the clock
    t0 = time.perf_counter()
    if runtime == "monai":
        y = sliding_window_inference(x, settings.roi, settings.sw_batch_size, lambda w: torch.softmax(net(w), 1),
                                     overlap=settings.overlap, mode=settings.mode, sigma_scale=settings.sigma_scale)
        labels = y.argmax(1)[0].numpy().astype(np.uint8)  # what a MONAI user writes
    else:
        y = probabilities(net, x, settings, pred.device, torch.float32, None, pred.choice.amp_dtype)
        labels = class_argmax(y[0])  # what medssl predict does
dt = time.perf_counter() - t0
np.save(out, labels)
print(json.dumps({"seconds": dt, "choice": pred.choice.describe(pred.device),
                  "windows": count_windows(x.shape[2:], settings)}))
"""

MEDSSL_TIMED = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from medssl.cli.main import main
import medssl.cli.predict_cmd, medssl.inference.predictor  # imported before the clock, as MONAI is in the other run
t0 = time.perf_counter()
import os
rc = main(["predict", "--model", sys.argv[1], "--input", sys.argv[2], "--output", sys.argv[3],
           "--device", os.environ.get("MEDSSL_BENCH_DEVICE", "cpu"),
           "--progress", "none", "--runtime", sys.argv[5] if len(sys.argv) > 5 else "torch"])
dt = time.perf_counter() - t0
print(json.dumps({"rc": rc, "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_package(folder: Path, backbone: str, classes: int, roi: int, spacing: float | None = None,
                 channel: str = "t1") -> Path:
    """A package with random weights whose plan keeps the native grid (so both runs see the same tensor)."""
    import torch

    from medssl.hub.backbone_source import resolve_backbone
    from medssl.hub.package import save_package
    from medssl.models import build_network
    from medssl.plan import ChannelSpec, NormSpec, Plan, SlidingWindowSpec, default_labels

    torch.manual_seed(0)
    arch = resolve_backbone(backbone).arch
    plan = Plan([ChannelSpec(channel)], [NormSpec("zscore", {"per_image": True})], (roi, roi, roi),
                default_labels([f"class_{i}" for i in range(1, classes)]), arch,
                spacing=None if spacing is None else (spacing,) * 3, orientation="native",
                sliding_window=SlidingWindowSpec(overlap=0.5, sw_batch_size=1))
    net = build_network(arch, 1, classes)
    return save_package(folder, plan, net.state_dict(), {"licence": "benchmark only"})


def respaced_package(package: Path, folder: Path, spacing: float) -> Path:
    """A copy of ``package`` (its trained weights) planned at ``spacing`` mm: many more windows for the same network,
    so the sliding window, not the per-case costs, is what the end-to-end ratio measures."""
    from medssl.hub.package import load_package, save_package

    plan, net, meta = load_package(package, check_forward=False)
    return save_package(folder, plan.replace(spacing=(spacing,) * 3), net.state_dict(),
                        {**{k: meta[k] for k in ("licence", "provenance") if k in meta},
                         "name": f"{meta.get('name', 'package')} at {spacing:g} mm (benchmark)"})


def run_json(code_or_args, *args: str) -> dict:
    cmd = [sys.executable, "-c", code_or_args, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_speed(tmp: Path, backbone: str, roi: int, repeats: int, threads: int) -> dict:
    pkg = make_package(tmp / "pkg_speed", backbone, 9, roi)
    medssl, monai = [], []
    for _ in range(repeats):
        medssl.append(run_json(MEDSSL_TIMED, str(pkg), str(COLIN), str(tmp / "seg.seg.nrrd"), str(threads)))
        monai.append(run_json(BARE_MONAI, str(pkg), str(COLIN), str(threads)))
    t_med = statistics.median(r["seconds"] for r in medssl)
    t_mon = statistics.median(r["seconds"] for r in monai)
    return {"medssl_s": t_med, "monai_s": t_mon, "ratio": t_med / t_mon,
            "medssl_peak_rss_mb": max(r["peak_rss_mb"] for r in medssl),
            "monai_peak_rss_mb": max(r["peak_rss_mb"] for r in monai)}


def part_memory(tmp: Path, roi: int, threads: int, with_monai: bool = True) -> dict:
    rng = np.random.default_rng(0)
    vol = sitk.GetImageFromArray((rng.normal(size=(300, 512, 512)) * 100).astype(np.int16))
    vol.SetSpacing((0.8, 0.8, 1.5))
    path = tmp / "large.nii.gz"
    sitk.WriteImage(vol, str(path), False)
    del vol
    pkg = make_package(tmp / "pkg_large", "resenc:test", 14, roi)
    med = run_json(MEDSSL_TIMED, str(pkg), str(path), str(tmp / "large_seg.nii.gz"), str(threads))
    result = {"medssl_s": med["seconds"], "medssl_peak_rss_mb": med["peak_rss_mb"]}
    if with_monai:
        mon = run_json(BARE_MONAI, str(pkg), str(path), str(threads))
        result.update(monai_full_map_s=mon["seconds"], monai_full_map_peak_rss_mb=mon["peak_rss_mb"])
    return result


def part_runtimes(tmp: Path, backbone: str, roi: int, spacing: float | None, repeats: int, threads: int,
                  runtime: str, package: str | None, respace: float | None = None) -> dict:
    """Part 3 of the module docstring; runs alternate, medians reported."""
    pkg = Path(package) if package else make_package(tmp / "pkg_rt", backbone, 9, roi, spacing)
    if respace:
        pkg = respaced_package(pkg, tmp / "pkg_respaced", respace)
    seg = str(tmp / "rt_seg.seg.nrrd")
    run_json(MEDSSL_TIMED, str(pkg), str(COLIN), seg, str(threads), runtime)  # warm-up: ONNX export, OpenVINO cache
    runs: dict = {"e2e": [], "bare": [], "sw": [], "sw_f32": []}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        runs["e2e"].append(run_json(MEDSSL_TIMED, str(pkg), str(COLIN), seg, str(threads), runtime))
        runs["bare"].append(run_json(BARE_MONAI, str(pkg), str(COLIN), str(threads)))
        runs["sw"].append(run_json(SW_ONLY, str(pkg), str(COLIN), str(threads), runtime, str(tmp / "sw.npy")))
        runs["sw_f32"].append(run_json(SW_ONLY, str(pkg), str(COLIN), str(threads), "monai", str(tmp / "f32.npy")))
        load.append(os.getloadavg()[0])
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    agree = float(np.mean(np.load(tmp / "sw.npy") == np.load(tmp / "f32.npy")))
    return {"choice": runs["sw"][0]["choice"], "windows": runs["sw"][0]["windows"], "e2e_s": med["e2e"],
            "bare_monai_s": med["bare"], "e2e_ratio": med["e2e"] / med["bare"], "sw_s": med["sw"],
            "sw_monai_f32_s": med["sw_f32"], "sw_ratio": med["sw"] / med["sw_f32"], "label_agreement": agree,
            "load_average": [round(x, 1) for x in load], "threads": threads, "cpu": cpu_description()}


def _print_runtimes(r: dict, backbone: str, roi: int, spacing) -> None:
    print(f"[runtimes] Colin27 at {spacing or 'native'} mm, {backbone}, roi {roi}, {r['windows']} windows; {r['choice']}")
    print(f"  medssl predict end to end {r['e2e_s']:.2f} s / bare MONAI float32 {r['bare_monai_s']:.2f} s = "
          f"{r['e2e_ratio']:.3f} (target <= 0.35: {_verdict(r['e2e_ratio'] <= 0.35)})")
    print(f"  sliding window alone {r['sw_s']:.2f} s / MONAI float32 {r['sw_monai_f32_s']:.2f} s = {r['sw_ratio']:.3f} "
          f"(target <= 0.15: {_verdict(r['sw_ratio'] <= 0.15)})")
    print(f"  labels agree with float32 on {100 * r['label_agreement']:.3f} % of voxels (target >= 99.9 %: "
          f"{_verdict(r['label_agreement'] >= 0.999)}); load average {r['load_average']} on {os.cpu_count()} cores")


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resenc:tiny")
    p.add_argument("--roi", type=int, default=96)
    p.add_argument("--large-roi", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--skip-large", action="store_true", help="skip part 2 (memory)")
    p.add_argument("--skip-speed", action="store_true", help="skip part 1 (speed)")
    p.add_argument("--skip-bare-large", action="store_true", help="part 2 without the (slow, ~6 GB) bare MONAI run")
    p.add_argument("--runtimes", action="store_true", help="part 3 only: runtime ratios (roi default 48, spacing 3)")
    p.add_argument("--runtime", default="auto", help="part 3: medssl's --runtime (auto, torch, openvino)")
    p.add_argument("--spacing", type=float, default=3.0, help="part 3: plan spacing in mm (0: native grid)")
    p.add_argument("--package", help="part 3: a trained package instead of random weights")
    p.add_argument("--results-suffix", help="part 3: write results/predict_runtimes[_MMmm]_SUFFIX.json (another CPU)")
    p.add_argument("--respace", type=float, help="part 3: run --package planned at this spacing (mm) instead")
    args = p.parse_args()
    if not COLIN.exists():
        print("error: Colin27 is missing; install the Debian package mricron-data", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.time()
        result = {}
        if args.runtimes:
            roi = 48 if args.roi == 96 else args.roi
            r = result["runtimes"] = part_runtimes(tmp, args.backbone, roi, args.spacing or None, args.repeats,
                                                   args.threads, args.runtime, args.package, args.respace)
            _print_runtimes(r, args.backbone, roi, args.respace or args.spacing)
            args.skip_speed = args.skip_large = True
        if not args.skip_speed:
            result["speed"] = speed = part_speed(tmp, args.backbone, args.roi, args.repeats, args.threads)
            print(f"[speed] Colin27 181x217x181, {args.backbone}, roi {args.roi}, overlap 0.5, gaussian:")
            print(f"  medssl predict end to end {speed['medssl_s']:.1f} s (peak RSS {speed['medssl_peak_rss_mb']:.0f} MB)")
            print(f"  bare MONAI sliding window {speed['monai_s']:.1f} s (peak RSS {speed['monai_peak_rss_mb']:.0f} MB)")
            print(f"  time ratio medssl / MONAI = {speed['ratio']:.3f} (target <= 1.05: {_verdict(speed['ratio'] <= 1.05)})")
        if not args.skip_large:
            mem = part_memory(tmp, args.large_roi, args.threads, not args.skip_bare_large)
            print(f"[memory] 512x512x300, 14 classes, resenc:test, roi {args.large_roi}:")
            print(f"  medssl predict peak RSS {mem['medssl_peak_rss_mb']:.0f} MB in {mem['medssl_s']:.0f} s (target <= 3072 MB: "
                  f"{_verdict(mem['medssl_peak_rss_mb'] <= 3072)})")
            if "monai_full_map_peak_rss_mb" in mem:
                print(f"  bare MONAI full probability map peak RSS {mem['monai_full_map_peak_rss_mb']:.0f} MB "
                      f"in {mem['monai_full_map_s']:.0f} s")
            result["memory"] = mem
        print(json.dumps(result))
        print(f"benchmark wall time {time.time() - t0:.0f} s")
        if args.runtimes:  # the figures the README quotes, kept with the date and the machine's load
            name = "predict_runtimes.json" if not args.respace else f"predict_runtimes_{args.respace:g}mm.json"
            if args.results_suffix:
                name = name.replace(".json", f"_{args.results_suffix}.json")
            out = Path(__file__).parent / "results" / name
            out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "backbone": args.backbone,
                                       "package": args.package, "respace_mm": args.respace, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: one window-network call in every runtime and precision, on this CPU (issue 19, part 1).

    python benchmarks/window_runtimes.py [--package PKG | --backbone resenc:tiny --roi 48] [--batch 2] [--rounds 7]
                                         [--threads 2] [--save NAME]

`--runtime auto` picks its engine and precision from the CPU's flags, not by a measurement at run time
(`medssl.inference.runtimes`); this script is the measurement behind that rule, to be run on each kind of CPU
the rule covers (AMX, AVX-512-BF16 without AMX, AVX2 only). It times one call on a batch of ``--batch``
windows (the predictor's window batch) for torch float32, torch bf16 autocast and OpenVINO float32 / bf16
(the ONNX file the predictor exports, the same compile settings), round after round in turn so that a shared
machine's load hits all alike, after one warm-up call each; medians per window. It also reports how far each
one's logits are from float32's (max abs difference) and on what share of voxels their arg-max labels agree,
on a window of the real Colin27 T1 when a package is given (random weights give near ties everywhere).
``--int8`` adds OpenVINO int8, quantized after training by NNCF (``nncf.quantize``, MIXED preset: symmetric
weights per channel, asymmetric activations) from ``--calibration`` random windows of Colin27, when the ``nncf``
package is importable (not a dependency of medssl: it was measured here and not adopted; README).
Results: printed, and with ``--save NAME`` written to ``benchmarks/results/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_vs_monai import COLIN, make_package  # noqa: E402

from medssl.inference.runtimes import cpu_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def colin_volume(pred) -> np.ndarray:
    """Colin27 after the package's preprocessing, ``(C, *grid)`` float32."""
    import SimpleITK as sitk

    from medssl.data.preprocess import preprocess

    return preprocess([sitk.ReadImage(str(COLIN))], pred.plan).image


def crop(x: np.ndarray, start, roi) -> np.ndarray:
    """``(C, *roi)`` window of ``x`` at ``start``."""
    return x[:, start[0]:start[0] + roi[0], start[1]:start[1] + roi[1], start[2]:start[2] + roi[2]]


def window_batch(pred, batch: int, x: np.ndarray | None) -> torch.Tensor:
    """``(batch, C, *roi)``: windows from the middle of ``x`` (Colin27 preprocessed), else noise."""
    roi = tuple(pred.plan.patch_size)
    if x is None:
        return torch.randn(batch, pred.plan.num_channels, *roi)
    starts = [max(0, (s - r) // 2) for s, r in zip(x.shape[1:], roi)]
    crops = []
    for b in range(batch):  # neighbouring windows, shifted by a quarter ROI along the first axis
        s = [min(starts[0] + b * roi[0] // 4, max(0, x.shape[1] - roi[0])), *starts[1:]]
        crops.append(torch.from_numpy(np.ascontiguousarray(crop(x, s, roi))))
    return torch.stack(crops)


def colin_windows(pred, x: np.ndarray, count: int, batch: int) -> List[np.ndarray]:
    """``count`` float32 arrays ``(batch, C, *roi)``, each ``batch`` copies of one random window of ``x``."""
    roi, rng = tuple(pred.plan.patch_size), np.random.default_rng(0)
    out = []
    for _ in range(count):
        s = [int(rng.integers(0, max(1, d - r + 1))) for d, r in zip(x.shape[1:], roi)]
        out.append(np.ascontiguousarray(np.repeat(crop(x, s, roi)[None], batch, 0), dtype=np.float32))
    return out


def int8_call(pred, x: np.ndarray, batch: int, calibration: int,
              threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """OpenVINO int8 (NNCF post-training quantization of the package's ONNX file), compiled like the others."""
    import nncf
    import openvino as ov

    from medssl.inference.onnx_export import package_onnx, runtime_dir
    from medssl.inference.runtimes import _state_sha256

    sha = pred.metadata.get("weights_sha256") or _state_sha256(pred.net)
    onnx = package_onnx(runtime_dir(pred.package_dir, sha), pred.net, pred.plan.patch_size, pred.plan.num_channels,
                        pred.plan.num_classes, sha)
    core = ov.Core()
    model = core.read_model(str(onnx))
    model.reshape([batch, pred.plan.num_channels, *pred.plan.patch_size])
    quantized = nncf.quantize(model, nncf.Dataset(colin_windows(pred, x, calibration, batch)),
                              preset=nncf.QuantizationPreset.MIXED, subset_size=calibration)
    compiled = core.compile_model(quantized, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": "bf16"})
    return lambda x: torch.from_numpy(np.array(compiled(np.ascontiguousarray(x.numpy()))[0]))


def candidates(torch_pred, package: Path) -> Dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> window callable, for each runtime/precision this machine can run (``torch_pred``: the package's
    torch float32 predictor)."""
    from medssl.inference.openvino_runtime import openvino_available
    from medssl.inference.predictor import Predictor

    out: Dict[str, Callable] = {}
    net = torch_pred.net.eval()

    def torch_call(dtype):
        def call(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                return net(x).float()
        return call

    out["torch float32"], out["torch bf16"] = torch_call(None), torch_call(torch.bfloat16)
    if openvino_available():
        for precision in ("float32", "bfloat16"):
            pred = Predictor.from_package(package, "cpu", "openvino", precision)
            ov = pred.window_net()
            out[f"openvino {precision.replace('bfloat16', 'bf16')}"] = lambda x, ov=ov: ov(x).clone()
    return out


def measure(calls: Dict[str, Callable], x: torch.Tensor, rounds: int) -> Dict[str, Dict]:
    ref = calls["torch float32"](x)
    times: Dict[str, List[float]] = {k: [] for k in calls}
    outs = {k: f(x) for k, f in calls.items()}  # warm-up (compiles OpenVINO's model for this batch)
    for _ in range(rounds):
        for name, f in calls.items():
            t0 = time.perf_counter()
            f(x)
            times[name].append(time.perf_counter() - t0)
    n = x.shape[0]
    labels_ref = ref.argmax(1)
    return {k: {"ms_per_window": 1000 * statistics.median(v) / n,
                "max_abs_diff_vs_f32": float((outs[k] - ref).abs().max()),
                "label_agreement_vs_f32": float((outs[k].argmax(1) == labels_ref).float().mean())}
            for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", help="a trained package (default: random weights)")
    p.add_argument("--backbone", default="resenc:tiny")
    p.add_argument("--roi", type=int, default=48)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--int8", action="store_true", help="add OpenVINO int8 by NNCF (needs the nncf package)")
    p.add_argument("--calibration", type=int, default=64, help="--int8: calibration windows")
    p.add_argument("--save", help="write benchmarks/results/SAVE.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(args.package) if args.package else make_package(Path(tmp) / "pkg", args.backbone, 9, args.roi)
        from medssl.inference.predictor import Predictor

        pred = Predictor.from_package(package, "cpu", "torch", "float32")
        calls = candidates(pred, package)
        volume = colin_volume(pred) if COLIN.exists() else None
        x = window_batch(pred, args.batch, volume)
        if args.int8:
            if volume is None:
                raise SystemExit(f"error: --int8 calibrates on Colin27 ({COLIN}); install mricron-data")
            calls["openvino int8"] = int8_call(pred, volume, args.batch, args.calibration, args.threads)
        load0 = os.getloadavg()[0]
        res = measure(calls, x, args.rounds)
    from medssl.inference.runtimes import choose_runtime

    auto = choose_runtime("auto", torch.device("cpu"))
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "threads": args.threads,
              "package": str(args.package or f"{args.backbone} random weights"), "roi": list(x.shape[2:]),
              "batch": args.batch, "rounds": args.rounds,
              **({"int8_calibration_windows": args.calibration} if args.int8 else {}),
              "auto": f"{auto.runtime} {auto.precision}",
              "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)], "calls": res}
    print(f"{result['cpu']}; {args.threads} threads; batch {args.batch} of {tuple(x.shape[2:])}; auto picks "
          f"{result['auto']}; load average {result['load_average']}")
    for name, r in res.items():
        print(f"  {name:18s} {r['ms_per_window']:8.1f} ms a window  max |diff| {r['max_abs_diff_vs_f32']:.2e}  "
              f"labels agree {100 * r['label_agreement_vs_f32']:.3f} %")
    if args.save:
        (RESULTS / f"{args.save}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

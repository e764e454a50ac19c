"""``medssl info``: versions, torch, CUDA and GPU memory, cache folder (for bug reports and Slicer)."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="versions, devices and folders")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def collect() -> dict:
    import torch

    from ..hub.cache import medssl_home
    from ..hub.package import versions
    from ..inference.devices import gpu_summary

    return {**versions(), "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
            "gpus": gpu_summary(), "cpu_threads": torch.get_num_threads(), "medssl_home": str(medssl_home())}


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        if key == "gpus":
            value = "; ".join(f"{g['name']} ({g['memory_total_gb']} GB)" for g in value) or "none"
        print(f"{key:15s} {value}")
    return 0

"""Step times of the published recipes (forward + backward + AdamW step, bf16 autocast; on a CPU only where it
computes bf16 natively, as emulated bf16 is several times slower than float32): section 3 of
``benchmarks/gpu_check.sh`` (issue 19, part 6).

    python benchmarks/gpu_step_times.py --out step_times.json            # on the GPU: the recipes' sizes
    python benchmarks/gpu_step_times.py --out t.json --device cpu --small  # the same code at toy sizes (a test)

Each entry is the median of 3 timed steps after one warm-up (1 step, no warm-up, with ``--small``: a check that the
code runs, not a timing), with the device's peak memory;
a failure is recorded as ``{"error": ...}`` and the next entry runs (a report, not a test). ``--small`` keeps the
models, batch layouts and training step but shrinks the presets and inputs, so `Testing/test_gpu_check.py` can
run this file on a CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict

import torch

from medssl.inference.runtimes import cpu_has_bf16
from medssl.models import build_network, resolve_arch
from medssl.ssl import build_method
from medssl.train.bf16_convs import float32_where_bf16_is_unsound
from medssl.train.segmentation_task import SegmentationTask

RECIPES = {  # name: (preset, input size) of the recipe, and with --small
    "resenc_L_mae3d_160_b2": (("L", 160), ("test", 32)),
    "voco_B_finetune_96_b2": (("B", 96), ("test", 64)),  # SwinUNETR halves the size 5 times: 64 at least
    "3dino_vitL_dino3d_112_b2": (("L", 112), ("test", 32)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(module: torch.nn.Module, make_batch: Callable[[], Dict], device: torch.device, steps: int) -> Dict:
    """Median step time (s) and peak device memory (GB; CUDA only) of ``module(batch)["loss"]``: ``steps`` timed
    after one warm-up; ``steps=1`` (``--small``): the one step, no warm-up."""
    module = module.to(device).train()
    amp = device.type == "cuda" or cpu_has_bf16()  # as the training loop: bf16 on a CPU that has it natively
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    times, warmup = [], int(steps > 1)
    for i in range(steps + warmup):
        batch = make_batch()
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp), \
                float32_where_bf16_is_unsound(amp and device.type == "cpu"):
            loss = module(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    result = {"step_s": sorted(times)[len(times) // 2], "autocast": "bf16" if amp else "off"}
    if device.type == "cuda":
        result["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()
    return result


def mae3d(preset: str, size: int, device: torch.device, steps: int) -> Dict:
    ssl = build_method("mae3d", resolve_arch("resenc", "unet", {"preset": preset}), {}, (size,) * 3)
    g = size // int(ssl.cfg.block)
    return timed(ssl, lambda: {"image": torch.randn(2, 1, size, size, size, device=device),
                               "mask": torch.rand(2, g, g, g, device=device) < 0.75}, device, steps)


def voco_finetune(preset: str, size: int, device: torch.device, steps: int) -> Dict:
    net = build_network(resolve_arch("swin_unetr", "swin_unetr", {"preset": preset}), 1, 14)
    return timed(SegmentationTask(net), lambda: {"image": torch.randn(2, 1, size, size, size, device=device),
                                                 "label": torch.randint(0, 14, (2, size, size, size), device=device)},
                 device, steps)


def dino3d(preset: str, size: int, device: torch.device, steps: int) -> Dict:
    ssl = build_method("dino3d", resolve_arch("vit3d", "unetr", {"preset": preset}), {}, (size,) * 3)
    cfg = ssl.cfg

    def batch() -> Dict:
        masks = torch.zeros(4, ssl.n_tokens, dtype=torch.bool, device=device)
        masks[:, ::2] = True
        return {"global": torch.randn(2 * 2, 1, *(cfg.global_size,) * 3, device=device),
                "local": torch.randn(cfg.n_local * 2, 1, *(cfg.local_size,) * 3, device=device), "masks": masks}

    return timed(ssl, batch, device, steps)


RUNS = {"resenc_L_mae3d_160_b2": mae3d, "voco_B_finetune_96_b2": voco_finetune, "3dino_vitL_dino3d_112_b2": dino3d}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="toy sizes, for checking this file on a CPU")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    results = {}
    for name, (full, small) in RECIPES.items():
        preset, size = small if args.small else full
        try:
            results[name] = {"preset": preset, "size": size, **RUNS[name](preset, size, device, 1 if args.small else 3)}
        except Exception as exc:  # noqa: BLE001 - a report, not a test: record and go on
            results[name] = {"preset": preset, "size": size, "error": str(exc).splitlines()[0][:300]}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

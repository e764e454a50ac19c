"""Benchmark: CPU fine-tuning step time with bf16 autocast against float32 (issue 19, part 2).

    OMP_NUM_THREADS=2 python benchmarks/train_step_bf16.py [--backbone resenc:tiny] [--patch 48] [--batch 2] [--steps 6]

The demo's recipe (resenc:tiny, patch 48^3, batch 2, eight brain regions + background, Dice + CE, AdamW):
one forward + backward + optimiser step on random patches, float32 and bf16 runs alternating (median of
``--steps`` each after one warm-up), so a shared machine's load hits both alike. Prints the ratio and the load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def step_time(task, opt, batch, amp) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = task(batch)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> int:
    from medssl.hub.backbone_source import resolve_backbone
    from medssl.inference.runtimes import cpu_has_bf16
    from medssl.models import build_network
    from medssl.train.segmentation_task import SegmentationTask

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resenc:tiny")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    torch.manual_seed(0)
    net = build_network(resolve_backbone(args.backbone).arch, 1, args.classes)
    task = SegmentationTask(net)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, *(args.patch,) * 3)
    batch = {"image": x, "label": torch.randint(0, args.classes, (args.batch, *(args.patch,) * 3))}
    times = {False: [], True: []}
    for amp in (False, True):
        step_time(task, opt, batch, amp)  # warm-up
    load0 = os.getloadavg()[0]
    for _ in range(args.steps):
        for amp in (False, True):
            times[amp].append(step_time(task, opt, batch, amp))
    f32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(json.dumps({"float32_s": f32, "bf16_s": bf16, "ratio": bf16 / f32, "cpu_bf16": cpu_has_bf16(),
                      "threads": torch.get_num_threads(), "load_average": [load0, os.getloadavg()[0]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

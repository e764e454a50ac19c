"""Benchmark: CPU fine-tuning with bf16 autocast against float32 (issue 19, part 2).

    python benchmarks/train_step_bf16.py [--backbone resenc:tiny] [--patch 48] [--batch 2] [--steps 6] [--threads 1 2]
    python benchmarks/train_step_bf16.py --demo [--demo-steps 300] [--seeds 0 1 2] [--out /tmp/bf16_demo]

Step mode: the demo's recipe (resenc:tiny, patch 48^3, batch 2, eight brain regions + background, Dice + CE,
AdamW): one forward + backward + optimiser step on random patches. Every (threads, precision) setting takes
one step in turn, round after round (median of ``--steps`` each after one warm-up), so a shared machine's load
hits all alike; wall and CPU seconds per step are reported with the load average.

``--demo``: fine-tunes the demo task itself (`medssl.demo`: Colin27, left hemisphere labelled, from random
weights, 3 mm, patch 48) once in float32 (``amp: off``) and once in bf16 for each of ``--seeds`` (same data and
seed in a pair; one trajectory is as noisy as another seed's, so several pairs tell a bias from noise), then
the step mode for the paired step-time ratio (``--reuse``: finished runs in ``--out`` are kept); writes
right/left-hemisphere Dice, fine-tuning wall and CPU seconds and the ratios side by side to
``benchmarks/results/train_step_bf16_demo.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

from medssl.train.bf16_convs import float32_where_bf16_is_unsound

RESULTS = Path(__file__).resolve().parent / "results"


def step_time(task, opt, batch, amp: bool) -> tuple:
    """(wall, CPU) seconds of one optimisation step."""
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), float32_where_bf16_is_unsound(amp):  # as the loop
        loss = task(batch)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0


def step_benchmark(args) -> Dict:
    from medssl.hub.backbone_source import resolve_backbone
    from medssl.models import build_network
    from medssl.train.segmentation_task import SegmentationTask

    torch.manual_seed(0)
    net = build_network(resolve_backbone(args.backbone).arch, 1, args.classes)
    task = SegmentationTask(net)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, *(args.patch,) * 3)
    batch = {"image": x, "label": torch.randint(0, args.classes, (args.batch, *(args.patch,) * 3))}
    settings = [(n, amp) for n in args.threads for amp in (False, True)]
    times: Dict[tuple, List[tuple]] = {s: [] for s in settings}
    for n, amp in settings:  # warm-up
        torch.set_num_threads(n)
        step_time(task, opt, batch, amp)
    load0 = os.getloadavg()[0]
    for _ in range(args.steps):
        for n, amp in settings:
            torch.set_num_threads(n)
            times[(n, amp)].append(step_time(task, opt, batch, amp))
    rows = {}
    for n in args.threads:
        f32 = [statistics.median(t) for t in zip(*times[(n, False)])]
        bf16 = [statistics.median(t) for t in zip(*times[(n, True)])]
        rows[f"{n}_threads"] = {"float32_s": round(f32[0], 3), "bf16_s": round(bf16[0], 3),
                                "float32_cpu_s": round(f32[1], 3), "bf16_cpu_s": round(bf16[1], 3),
                                "ratio": round(bf16[0] / f32[0], 3), "cpu_ratio": round(bf16[1] / f32[1], 3)}
    return {"steps": rows, "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def demo_run(out: Path, amp: str, steps: int, threads: int, reuse: bool = False, seed: int = 0) -> Dict:
    """One fine-tuning of the demo task from random weights; ``reuse``: take ``out/<amp>/seed<seed>/summary.json``
    of an earlier run with the same settings (e.g. the two precisions run at once, one thread each)."""
    from medssl.demo.__main__ import run_demo

    folder = out / amp / f"seed{seed}"
    done = folder / "summary.json"
    s = json.loads(done.read_text()) if reuse and done.exists() else None
    if s is None or (s["steps"], s["amp"], s.get("seed", 0), s["pretraining"]) != (steps, amp, seed, None):
        s = run_demo(folder, steps=steps, backbone="resenc:tiny", device="cpu", progress="none",
                     pretrain="none", amp=amp, threads=threads, seed=seed)
    ft = s["phases"]["finetune"]
    return {"right_dice": round(100 * s["mean_right_dice"], 2), "left_dice": round(100 * s["mean_left_dice"], 2),
            "finetune_wall_s": ft["wall_s"], "finetune_cpu_s": ft["cpu_s"],
            "load_average": [ft["load_start"], ft["load_end"]], "right_per_region": s["right_hemisphere_dice"]}


def demo_benchmark(args) -> Dict:
    from medssl.inference.runtimes import cpu_has_bf16

    if not cpu_has_bf16():
        raise SystemExit("error: this CPU has no AMX/AVX-512-BF16; bf16 would be emulated, the comparison is moot")
    seeds = {}
    for seed in args.seeds:
        runs = {amp: demo_run(Path(args.out), amp, args.demo_steps, args.threads[0], args.reuse, seed)
                for amp in ("off", "bf16")}
        f32, bf16 = runs["off"], runs["bf16"]
        seeds[str(seed)] = {"float32": f32, "bf16": bf16,
                            "right_dice_bf16_minus_float32": round(bf16["right_dice"] - f32["right_dice"], 2),
                            "left_dice_bf16_minus_float32": round(bf16["left_dice"] - f32["left_dice"], 2),
                            "finetune_wall_ratio": round(bf16["finetune_wall_s"] / f32["finetune_wall_s"], 3)}
    mean = {side: round(statistics.mean(r[f"{side}_dice_bf16_minus_float32"] for r in seeds.values()), 2)
            for side in ("right", "left")}
    spread = {f"{side}_float32_range": round(max(r["float32"][f"{side}_dice"] for r in seeds.values())
                                             - min(r["float32"][f"{side}_dice"] for r in seeds.values()), 2)
              for side in ("right", "left")}
    return {"settings": {"backbone": "resenc:tiny", "spacing": 3.0, "patch": 48, "steps": args.demo_steps,
                         "init": "random", "seeds": args.seeds, "threads": args.threads[0]},
            "seeds": seeds, "mean_bf16_minus_float32": mean, "float32_across_seeds": spread,
            "paired_steps": step_benchmark(args)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resenc:tiny")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="thread counts to compare (step mode); --demo trains with the first")
    p.add_argument("--demo", action="store_true", help="fine-tune the demo task in float32 and bf16")
    p.add_argument("--demo-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="--demo: fine-tuning seeds (a pair each)")
    p.add_argument("--out", default="/tmp/bf16_demo", help="--demo: work folder")
    p.add_argument("--reuse", action="store_true", help="--demo: keep finished runs found in --out")
    p.add_argument("--save", default=None, help="also write the JSON to benchmarks/results/SAVE (--demo: "
                                                 "train_step_bf16_demo.json)")
    args = p.parse_args(argv)
    from medssl.inference.runtimes import cpu_description, cpu_has_bf16

    result = demo_benchmark(args) if args.demo else {**step_benchmark(args), "cpu_bf16": cpu_has_bf16(),
                                                     "cpu": cpu_description()}
    text = json.dumps(result, indent=1)
    print(text)
    save = args.save or ("train_step_bf16_demo.json" if args.demo else None)
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / save).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The MedSSL demo: learn brain regions from one labelled hemisphere, segment the other.

    python -m medssl.demo [--out demo_out] [--steps N] [--backbone ID] [--pretrain {mae3d,volume_fusion,none}]
        [--pretrain-steps N] [--pretrain-patch N] [--amp {auto,bf16,off}] [--threads N]

Colin27 T1 + AAL (Debian ``mricron-data``) are grouped into eight coarse regions. The backbone is first
pretrained (mae3d, 100 steps: right-hemisphere Dice 84.3 after it against 84.5 after 600 steps, at a sixth of
the cost, `benchmarks/results/train_step_bf16_demo.json`) on the unlabelled real scans found offline (`.unlabelled`: Colin27,
MNI152, ITK T1, nibabel's anatomical image); `benchmarks/label_efficiency.py` measured that this start helps. A later
run with the same settings reuses that export (``<out>/pretrain``). The network is then fine-tuned
on the *left* hemisphere only (right-hemisphere voxels carry the ignore label, so the loss is masked by
world x), then segments the whole head; Dice is reported per region on the *right* hemisphere, which it
never saw labelled. Writes ``segmentation.seg.nrrd`` (names, colours, terminology), ``overlay.png`` and
``summary.json`` to the output folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from ..cli.common import positive_int
from ..errors import MedSSLError
from ..events import make_sink
from ..hub.backbone_source import is_architecture
from ..io.atomic import ensure_writable_dir, write_text_atomic
from ..io.labels import write_label_map
from ..io.volume_io import read_image
from ..train.losses import dice_per_class
from .brain_regions import coarse_regions, find_demo_data, hemisphere_only, read_aal_names, region_labels
from .overlay import render_overlay
from .timing import PhaseClock

DEFAULTS = {"steps": 300, "spacing": [3.0, 3.0, 3.0], "patch": [48, 48, 48], "backbone": "resenc:tiny", "lr": 1e-2,
            "pretrain": "mae3d", "pretrain_steps": 100}
PRETRAIN_METHODS = ("mae3d", "volume_fusion", "none")  # the methods that pretrain a CNN with its decoder's grid
# Mirror left-right only (axis 0 in RAS): it keeps the anterior/posterior and superior/inferior cues that tell
# lobes apart, and shows the network left-hemisphere anatomy on the right side.
AUGMENT = {"mirror_axes": [0]}


def prepare_data(out: Path) -> Dict[str, Path]:
    """Write the region label maps (left-only for training, full for scoring) next to the results."""
    src = find_demo_data()
    aal = read_image(src["aal"], "AAL atlas")
    regions = coarse_regions(aal, read_aal_names(src["names"]))
    data = ensure_writable_dir(out / "data")
    specs = region_labels()
    write_label_map(hemisphere_only(regions, "left"), specs, data / "regions_left.seg.nrrd")
    write_label_map(regions, specs, data / "regions.seg.nrrd")
    return {"t1": src["t1"], "train_labels": data / "regions_left.seg.nrrd", "regions": data / "regions.seg.nrrd"}


def hemisphere_dice(pred: sitk.Image, truth: sitk.Image, hemisphere: str) -> Dict[str, float]:
    """Dice per region on one hemisphere (the other is ignored)."""
    mask = hemisphere_only(truth, hemisphere)
    scores = dice_per_class(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(mask), 9, 255)
    return {spec.name: float(s) for spec, s in zip(region_labels()[1:], scores)}


def finetune_overrides(steps: int, lr: float, spacing=DEFAULTS["spacing"], patch=DEFAULTS["patch"],
                       amp: str = "auto") -> Dict:
    """The demo's fine-tuning recipe on top of the ``quick`` preset (also used by `benchmarks/label_efficiency.py`);
    ``amp``: the loop's autocast (``auto``: bf16 where the CPU computes it natively, ``off``: float32)."""
    return {"loop": {"steps": steps, "validate_every": 0, "checkpoint_every": 50, "lr": lr, "amp": amp},
            "spacing": list(spacing), "patch_size": list(patch), "augment": AUGMENT}


def pretrained_backbone(out: Path, method: str, steps: int, backbone: str, device: str, sink,
                        spacing=DEFAULTS["spacing"], patch=DEFAULTS["patch"], scans: Optional[List[str]] = None,
                        reuse: bool = True, loop: Optional[Dict] = None) -> Dict:
    """Pretrain ``backbone`` with ``method`` (its CPU preset) on ``scans`` (default: the unlabelled scans);
    returns the record (export folder, settings, seconds, reused). With ``reuse``, an export of the same
    settings in ``out`` is kept; ``loop``: loop settings that leave the result alone (threads).
    `benchmarks/label_efficiency.py` pretrains through this function too."""
    from ..train.pretrain import pretrain
    from .unlabelled import unlabelled_scans

    settings = {"method": method, "steps": steps, "backbone": backbone, "spacing": list(spacing),
                "patch": list(patch), "scans": scans if scans is not None else unlabelled_scans()}
    record_file, folder = out / "pretrain_record.json", out / "pretrain"
    if reuse and record_file.exists() and (folder / "export" / "metadata.json").exists():
        record = json.loads(record_file.read_text())
        if record["settings"] == settings:
            return {**record, "reused": True}
    t0 = time.time()
    overrides = {"loop": {"steps": steps, "checkpoint_every": 100, **(loop or {})}, "patch_size": list(patch),
                 "spacing": list(spacing), "seed": 0}
    export = pretrain(method, settings["scans"], folder, backbone=backbone, preset=f"{method}_cpu",
                      overrides=overrides, device=device, overwrite=True, sink=sink)
    record = {"settings": settings, "export": str(export), "seconds": round(time.time() - t0, 1)}
    write_text_atomic(record_file, json.dumps(record, indent=1))
    return {**record, "reused": False}


def run_demo(out: Path, steps: int, backbone: str, device: str, progress: str,
             spacing=DEFAULTS["spacing"], patch=DEFAULTS["patch"], lr: float = DEFAULTS["lr"],
             pretrain: str = DEFAULTS["pretrain"], pretrain_steps: int = DEFAULTS["pretrain_steps"],
             amp: str = "auto", threads: int = 0, pretrain_patch=None, seed: int = 0) -> Dict:
    """Pretrain (or reuse), fine-tune on the left hemisphere, segment, score; returns (and writes) the summary
    with each phase's wall and CPU seconds (`timing.PhaseClock`). ``amp``/``threads``: the loops' settings;
    ``pretrain_patch``: the pretraining crop (default: ``patch``); ``seed``: the fine-tuning's (initial weights,
    patches, augmentation; the pretraining keeps seed 0)."""
    from ..inference.predictor import Predictor
    from ..train.finetune import finetune

    clock = PhaseClock()
    with clock.phase("prepare"):
        files = prepare_data(out)
    sink = make_sink(progress)
    if pretrain != "none" and not is_architecture(backbone):
        sink.emit("log", message=f"{backbone} brings its own weights: the demo's pretraining is skipped")
        pretrain = "none"
    with clock.phase("pretrain"):
        pre = None if pretrain == "none" else pretrained_backbone(out, pretrain, pretrain_steps, backbone, device,
                                                                  sink, spacing, pretrain_patch or patch,
                                                                  loop={"threads": threads})
    with clock.phase("finetune"):
        overrides = finetune_overrides(steps, lr, spacing, patch, amp)
        overrides["loop"]["threads"] = threads
        overrides["seed"] = seed
        package = finetune([str(files["t1"])], [str(files["train_labels"])], out / "model",
                           backbone=pre["export"] if pre else backbone, preset="quick", overrides=overrides,
                           device=device, overwrite=True, sink=sink)
    with clock.phase("predict"):
        result = Predictor.from_package(package, device).predict([str(files["t1"])], sink=sink)
    sink.close()
    with clock.phase("write"):
        write_label_map(result.labels, region_labels(), out / "segmentation.seg.nrrd")
        truth = read_image(files["regions"], "region labels")
        right, left = hemisphere_dice(result.labels, truth, "right"), hemisphere_dice(result.labels, truth, "left")
        title = f"right hemisphere (unseen) mean Dice {np.mean(list(right.values())):.2f}"
        render_overlay(read_image(files["t1"]), result.labels, region_labels(), out / "overlay.png", title, right)
    total = clock.total()
    summary = {"backbone": backbone, "steps": steps, "amp": amp, "seed": seed, "pretraining": pre,
               "right_hemisphere_dice": right, "left_hemisphere_dice": left, "mean_right_dice": float(np.mean(list(right.values()))),
               "mean_left_dice": float(np.mean(list(left.values()))),
               "train_seconds": round(sum(clock.phases[k]["wall_s"] for k in ("prepare", "pretrain", "finetune")), 1),
               "total_seconds": total["wall_s"], "cpu_seconds": total["cpu_s"], "phases": clock.phases}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def print_summary(summary: Dict, out: Path) -> None:
    pre = summary["pretraining"]
    if pre:
        how = "reused from an earlier run" if pre["reused"] else f"{pre['seconds']:.0f} s"
        print(f"\npretrained with {pre['settings']['method']} for {pre['settings']['steps']} steps on "
              f"{len(pre['settings']['scans'])} unlabelled scans ({how}): {pre['export']}")
    print(f"\n{'region':24s} {'Dice right (unseen)':>20s} {'Dice left (trained)':>20s}")
    for name, value in summary["right_hemisphere_dice"].items():
        print(f"{name:24s} {value:20.3f} {summary['left_hemisphere_dice'][name]:20.3f}")
    print(f"{'mean':24s} {summary['mean_right_dice']:20.3f} {summary['mean_left_dice']:20.3f}")
    print(f"\nwall time {summary['total_seconds']:.0f} s (CPU time {summary['cpu_seconds']:.0f} s); wrote "
          f"{out}/segmentation.seg.nrrd, {out}/overlay.png, "
          f"{out}/summary.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m medssl.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"], help="fine-tuning steps")
    p.add_argument("--backbone", default=DEFAULTS["backbone"], help="backbone to start from")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (AdamW)")
    p.add_argument("--pretrain", choices=PRETRAIN_METHODS, default=DEFAULTS["pretrain"],
                   help="self-supervised pretraining on the unlabelled scans first (default mae3d; none: random init)")
    p.add_argument("--pretrain-steps", type=positive_int, default=DEFAULTS["pretrain_steps"], help="pretraining steps")
    p.add_argument("--pretrain-patch", type=positive_int, default=None, help="pretraining crop edge (voxels)")
    p.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                   help="fine-tuning autocast (auto: bf16 on CPUs with AMX/AVX-512-BF16; off: float32)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for training (default 0: the cores the load average leaves free)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed (initial weights, patches, augmentation)")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar")
    args = p.parse_args(argv)
    try:
        summary = run_demo(Path(args.out), args.steps, args.backbone, args.device, args.progress, lr=args.lr,
                           pretrain=args.pretrain, pretrain_steps=args.pretrain_steps, amp=args.amp,
                           threads=args.threads, seed=args.seed,
                           pretrain_patch=[args.pretrain_patch] * 3 if args.pretrain_patch else None)
    except MedSSLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(summary, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

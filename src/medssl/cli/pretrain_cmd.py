"""``medssl pretrain``: self-supervised pretraining on unlabelled volumes; writes ``RUN/export`` for fine-tuning."""
from __future__ import annotations

import argparse
import os

from .common import add_device, add_progress, positive_int

METHOD_NAMES = ["dino3d", "mae3d", "voco", "volume_fusion"]
EPILOG = """examples:
  medssl pretrain --method mae3d --images scans/ --out run_mae --preset cpu --steps 500
  medssl pretrain --method dino3d --images a.nii.gz b.nii.gz --out run_dino --backbone vit3d:B
  medssl pretrain --method voco --images ct/ --out run_voco --config my_voco.yaml --resume
  torchrun --nproc_per_node 4 -m medssl pretrain --method volume_fusion --images ct/ --out run_vf
  medssl finetune --images ... --labels ... --out model --backbone run_mae/export/backbone.safetensors

presets: auto (default) is the published recipe, scaled down (batch, then crop, then model size) to the memory
of this machine with one line saying what changed; recipe is the recipe as published; cpu a small CPU one."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone on unlabelled volumes",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=METHOD_NAMES, help="pretraining method")
    p.add_argument("--images", nargs="+", required=True, metavar="IMG", help="image files or folders of images")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (RUN/training, RUN/export)")
    p.add_argument("--backbone", metavar="ARCH", help="architecture[:preset], e.g. resenc:L, vit3d:B, swin_unetr:B "
                                                      "(default: the preset's)")
    p.add_argument("--preset", default="auto", help="auto (default: the method's published recipe, scaled down "
                   "when it would not fit this machine's memory), recipe (as published) or cpu")
    p.add_argument("--config", metavar="YAML", help="YAML file with settings overriding the preset")
    p.add_argument("--steps", type=positive_int, help="number of optimisation steps")
    p.add_argument("--batch-size", type=positive_int, help="volumes per step and process")
    p.add_argument("--workers", type=int, metavar="N", help="data-loading worker processes")
    p.add_argument("--cache-dir", metavar="DIR", help="folder for preprocessed volumes (default MEDSSL_HOME)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    add_device(p)
    add_progress(p)
    return p


def overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    loop = {}
    if args.steps:
        loop["steps"] = args.steps
    if args.workers is not None:
        loop["num_workers"] = max(0, args.workers)
    if loop:
        out["loop"] = loop
    if args.batch_size:
        out["batch_size"] = args.batch_size
    if args.cache_dir:
        out["cache_dir"] = args.cache_dir
    return out


def run(args: argparse.Namespace) -> int:
    from ..events import make_sink
    from ..train.pretrain import pretrain

    sink = make_sink(args.progress)
    try:
        export = pretrain(args.method, args.images, args.out, backbone=args.backbone, preset=args.preset,
                          config_yaml=args.config, overrides=overrides(args), device=args.device,
                          resume=args.resume, overwrite=args.overwrite, sink=sink)
    finally:
        sink.close()
    if args.progress != "json" and os.environ.get("RANK", "0") == "0":  # one line under torchrun
        print(f"backbone written to {export}/backbone.safetensors (fine-tune with --backbone {export})")
    return 0

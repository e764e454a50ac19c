"""``medssl finetune``: fine-tune a backbone on labelled volumes and write a model package."""
from __future__ import annotations

import argparse

from .common import add_device, add_progress, positive_int, read_label_names

SPARSE_AXES = ("auto", "axial", "coronal", "sagittal", "i", "j", "k")  # = medssl.data.sparse.AXES (a test checks)
EPILOG = """examples:
  medssl finetune --images ct1.nii.gz ct2.nii.gz --labels seg1.nii.gz seg2.nii.gz --out my_model
  medssl finetune --images t1a.nii.gz,t2a.nii.gz --labels a.seg.nrrd --out mr_model --backbone openmind_resencl_mae
  medssl finetune --images imagesTr/ --labels labelsTr/ --out model --preset standard
  medssl finetune --images ct.nii.gz --labels every10th.seg.nrrd --out m --sparse-slices axial
  medssl finetune ... --out my_model --resume            (continue an interrupted run)
  medssl finetune ... --out model_v2 --backbone my_model (continue training from a package)"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="fine-tune a backbone on labelled volumes", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="+", required=True, metavar="IMG",
                   help="one entry per case (channels joined with commas) or a folder")
    p.add_argument("--labels", nargs="+", required=True, metavar="LAB",
                   help="one label map or .seg.nrrd per case, or a folder")
    p.add_argument("--out", required=True, metavar="PKG", help="model package folder to write")
    p.add_argument("--backbone", default="resenc:tiny",
                   help="architecture[:preset], weight-catalog id, checkpoint file or model package (default resenc:tiny)")
    p.add_argument("--preset", default="auto", help="training preset: auto (default: quick, with the batch and then "
                   "the patch scaled down when they would not fit this machine's memory), quick or standard")
    p.add_argument("--config", metavar="YAML", help="YAML file with settings overriding the preset")
    p.add_argument("--steps", type=positive_int, help="number of training steps")
    p.add_argument("--patch-size", type=positive_int, nargs=3, metavar=("I", "J", "K"), help="training patch size")
    p.add_argument("--spacing", nargs="+", metavar="MM",
                   help="network spacing: one number, three (I J K) or 'native' (each scan's own; default: the "
                        "backbone's, else the training data's median)")
    p.add_argument("--val-images", nargs="+", default=[], metavar="IMG", help="validation cases (default: a split)")
    p.add_argument("--val-labels", nargs="+", default=[], metavar="LAB")
    p.add_argument("--label-names", metavar="JSON", help='names of label values, e.g. {"1": "liver"}')
    p.add_argument("--channel-names", nargs="+", metavar="NAME", help="names of the input channels")
    p.add_argument("--freeze-backbone", action="store_true", help="train the decoder only")
    p.add_argument("--sparse-slices", nargs="?", const="auto", choices=SPARSE_AXES, metavar="AXIS",
                   help="labels painted on a few slices: slices along AXIS (auto, axial, coronal, sagittal, i, j, k; "
                        "default auto) that carry no segment are not labelled (ignored by loss, sampling and "
                        "validation); unpainted voxels on painted slices are background. auto: the axis whose "
                        "painted slices come in runs of at most 2, per case; a case with dense labels is kept")
    p.add_argument("--accept-licence", action="store_true",
                   help="accept the licence of a --backbone FILE read like gated weights (3DINO: CC BY-NC-ND)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package or run in --out")
    add_device(p)
    add_progress(p)
    return p


def overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.steps:
        out["loop"] = {"steps": args.steps}
    if args.patch_size:
        out["patch_size"] = list(args.patch_size)
    if args.spacing:
        out["spacing"] = spacing_option(args.spacing)
    if args.freeze_backbone:
        out["freeze_backbone"] = True
    if args.sparse_slices:
        out["sparse_slices"] = args.sparse_slices
    return out


def spacing_option(values: list):
    """``--spacing native``, ``--spacing 1.5`` or ``--spacing 0.8 0.8 2``."""
    from ..errors import InputError

    if values == ["native"]:
        return "native"
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 3) or min(numbers) <= 0:
        raise InputError(f"--spacing {' '.join(values)}: give 'native', one positive number or three (I J K) in mm")
    return numbers[0] if len(numbers) == 1 else numbers


def run(args: argparse.Namespace) -> int:
    from ..events import make_sink
    from ..train.finetune import finetune

    sink = make_sink(args.progress)
    try:
        out = finetune(args.images, args.labels, args.out, backbone=args.backbone, preset=args.preset,
                       config_yaml=args.config, overrides=overrides(args), val_images=args.val_images,
                       val_labels=args.val_labels, device=args.device, resume=args.resume, overwrite=args.overwrite,
                       label_names=read_label_names(args.label_names), channel_names=args.channel_names, sink=sink,
                       accept_licence=args.accept_licence)
    finally:
        sink.close()
    if args.progress != "json":
        print(f"model package written to {out}")
    return 0

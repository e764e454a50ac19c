"""``medssl rank``: order unlabelled volumes by the model's uncertainty (which case to correct next)."""
from __future__ import annotations

import argparse
import json

from .common import add_device, add_progress

EPILOG = """score (see medssl.inference.ranking):
  H                   normalised entropy (0 certain, 1 uniform) of the class probabilities averaged over
                      mirrored copies (test-time augmentation), per voxel on the model's grid
  mean_entropy        mean H inside the predicted foreground (arg-max not background)
  uncertain_fraction  share of voxels with H > 0.5 among the predicted foreground and all voxels with H > 0.5
  score               (mean_entropy + uncertain_fraction) / 2; 1 when no foreground is predicted
Volumes are listed most uncertain first: correct the first one, add it to the training set, train again.

examples:
  medssl rank --model ~/.medssl/models/liver --images /data/unlabelled/
  medssl rank --model liver --images a.nii.gz b.nii.gz t1.nii.gz,t2.nii.gz --json"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("rank", help="order unlabelled volumes by the model's uncertainty", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PKG", help="model package folder")
    p.add_argument("--images", nargs="+", required=True, metavar="IMG",
                   help="volumes: files (channels of one case joined with commas) or a folder")
    p.add_argument("--no-tta", action="store_true", help="no mirroring (faster; entropy of one prediction)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    add_device(p)
    add_progress(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..events import make_sink
    from ..inference.ranking import rank_images

    sink = make_sink("none" if args.json and args.progress == "bar" else args.progress)
    try:
        scores = rank_images(args.model, args.images, args.device, tta=not args.no_tta, sink=sink)
        if args.progress == "json":  # 3D Slicer reads the ranking from the final event
            sink.emit("done", task="rank", ranking=[s.to_dict() for s in scores])
            return 0
    finally:
        sink.close()
    if args.json:
        print(json.dumps({"ranking": [s.to_dict() for s in scores]}, indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>6}  {'mean H':>6}  {'uncertain':>9}  {'foreground':>10}  case")
    for n, s in enumerate(scores, start=1):
        if s.error:
            print(f"{'-':>4}  {'':>6}  {'':>6}  {'':>9}  {'':>10}  {s.name}: {s.error}")
            continue
        mean_h = f"{s.mean_entropy:.3f}" if s.mean_entropy is not None else "-"
        unc = f"{100 * s.uncertain_fraction:.1f} %" if s.uncertain_fraction is not None else "-"
        print(f"{n:>4}  {s.score:6.3f}  {mean_h:>6}  {unc:>9}  {100 * s.foreground_fraction:8.1f} %  {s.name}")
    return 0

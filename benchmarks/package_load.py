"""Benchmark: loading a model package (`load_package`) with and without the network's random initialisation.

    python benchmarks/package_load.py [--backbones resenc:L vit3d:L swin_unetr:H] [--rounds 3] [--save NAME]
                                      [--start predict|finetune]

`load_package` builds the plan's network and replaces all its weights by the package's; since
`models.no_init` it builds without drawing the random values first (``initialise=False``). Each load here is one
child process (``load_package(check_forward=False)``, as `medssl predict` calls it), the two ways alternating
round after round; the child reports its load time and its peak RSS (``VmHWM``). Medians per way and their
ratio. The packages hold random weights (``predict_vs_monai.make_package``, ROI 96), written once to a temporary
folder. Results: printed, and with ``--save NAME`` written to ``benchmarks/results/NAME.json``.

``--start finetune`` times the network a fine-tune from the package starts with instead (the bootstrap loop:
``medssl finetune --backbone PACKAGE``, `train.finetune._network`): built by `models.fresh_init` drawing random
values only for what the package does not fill ("skipped"; here it fills everything), against a full
initialisation followed by the copy ("initialised").
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_vs_monai import make_package  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import sys, time
import torch
import medssl.models
from medssl.hub import package
build = medssl.models.build_from_plan
if sys.argv[3] == "finetune":
    from medssl.events import NullSink
    from medssl.hub.backbone_source import resolve_backbone
    from medssl.plan import Plan
    from medssl.train.finetune import _network
    plan, source = Plan.load(sys.argv[1] + "/plan.json"), resolve_backbone(sys.argv[1])
    if sys.argv[2] == "initialised":  # every tensor drawn at random, then the package copied over it
        source.loaded_keys = None
    t = time.perf_counter()
    _network(plan, source, torch.device("cpu"), False, NullSink())
else:
    if sys.argv[2] == "initialised":  # the build before models.no_init: random values drawn, then replaced
        medssl.models.build_from_plan = lambda plan, initialise=True: build(plan, True)
    t = time.perf_counter()
    package.load_package(sys.argv[1], check_forward=False, quiet=True)
took = time.perf_counter() - t
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(took, int(peak) / 1e6)  # this process's own peak (kB -> GB); wait4's would count the parent's at fork
"""


def one_load(folder: Path, way: str, start: str = "predict") -> tuple:
    """(seconds in load_package or the fine-tune's network build, peak RSS in GB) of one child process."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), way, start], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {way} load of {folder} failed (exit {proc.returncode})")
    took, peak = proc.stdout.strip().splitlines()[-1].split()
    return float(took), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resenc:L", "vit3d:L", "swin_unetr:H"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--save", metavar="NAME")
    ap.add_argument("--start", choices=["predict", "finetune"], default="predict",
                    help="what the package is loaded for (see the module docstring)")
    args = ap.parse_args()
    from medssl.inference.runtimes import cpu_description

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            folder = make_package(Path(tmp) / backbone.replace(":", "_"), backbone, 3, 96)
            runs = {"initialised": [], "skipped": []}
            for _ in range(args.rounds):
                for way in runs:
                    runs[way].append(one_load(folder, way, args.start))
            med = {w: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for w, v in runs.items()}
            row = {"backbone": backbone, "weights_gb": round(sum(p.stat().st_size for p in folder.iterdir()) / 1e9, 2),
                   "load_s_initialised": round(med["initialised"][0], 3), "load_s_skipped": round(med["skipped"][0], 3),
                   "ratio": round(med["skipped"][0] / med["initialised"][0], 3),
                   "peak_rss_gb_initialised": round(med["initialised"][1], 2),
                   "peak_rss_gb_skipped": round(med["skipped"][1], 2)}
            print(json.dumps(row))
            rows.append(row)
            for p in folder.iterdir():
                p.unlink()  # a few GB each: not kept while the next one is written
    if args.save:
        record = {"cpu": cpu_description(), "rounds": args.rounds, "start": args.start, "rows": rows}
        (RESULTS / f"{args.save}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: the training-memory estimate (`medssl.train.memory.estimate_training`) against one real step.

    python benchmarks/train_step_memory.py [--cases vit3d:L:112:2 resenc:L:128:1 ...] [--amp] [--save NAME]

Each case (``family:preset:side:batch``) runs in its own child process, twice: with every weight trained and with
the encoder frozen (``--freeze-backbone``, 3DINO's recipe). The child builds the network, takes the estimate,
then one forward + backward + AdamW step of a Dice + CE loss on a random batch of ``side``^3 patches, and
reports its peak RSS (``VmHWM``) above its RSS before the network was built (imports and the batch excluded,
as the estimate is compared with the memory left free). ``ratio`` = estimate / measured: at or above 1 the
estimate covers the step. ``--amp``: the step under bf16 autocast as the training loop runs it on a CPU (with
`bf16_convs`' float32 convolutions), against the estimate with ``amp=True`` (activations counted at 0.6). Results: printed, and with ``--save NAME`` written to ``benchmarks/results/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, torch
from medssl.hub.backbone_source import default_decoder
from medssl.models import build_network, resolve_arch
from medssl.train import memory
from medssl.train.bf16_convs import float32_where_bf16_is_unsound
from medssl.train.segmentation_task import SegmentationTask

def kb(key):
    return int([line.split()[1] for line in open("/proc/self/status") if line.startswith(key)][0])

family, preset, side, batch = sys.argv[1].split(":")
side, batch, frozen, amp = int(side), int(batch), sys.argv[2] == "frozen", sys.argv[3] == "amp"
torch.manual_seed(0)
image, label = torch.randn(batch, 1, side, side, side), torch.randint(0, 3, (batch, side, side, side))
before = kb("VmRSS:")
net = build_network(resolve_arch(family, default_decoder(family), {"preset": preset}), 1, 3)
for p in net.encoder.parameters() if frozen else ():
    p.requires_grad_(False)
est = memory.estimate_training(net, 1, (side,) * 3, batch, amp=amp)
opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
task = SegmentationTask(net, frozen_encoder=frozen).train()
with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), float32_where_bf16_is_unsound(amp):
    loss = task({"image": image, "label": label})["loss"]
loss.backward()
opt.step()
print(json.dumps({"estimate_gb": round(est.total_gb, 2), "estimate_activations_gb": round(est.activations_gb, 2),
                  "measured_gb": round((kb("VmHWM:") - before) / 1e6, 2)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["vit3d:L:112:2", "resenc:L:128:1", "swin_unetr:B:64:1"])
    ap.add_argument("--amp", action="store_true", help="bf16 autocast, as the loop trains on a CPU with bf16")
    ap.add_argument("--save", metavar="NAME")
    args = ap.parse_args()
    from medssl.inference.runtimes import cpu_description

    rows = []
    for case in args.cases:
        for way in ("trained", "frozen"):
            proc = subprocess.run([sys.executable, "-c", CHILD, case, way, "amp" if args.amp else "f32"], stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"case {case} ({way}) failed (exit {proc.returncode})")
            row = {"case": case, "encoder": way, "autocast": "bf16" if args.amp else "off", **json.loads(proc.stdout.strip().splitlines()[-1])}
            row["ratio"] = round(row["estimate_gb"] / row["measured_gb"], 2)
            print(json.dumps(row))
            rows.append(row)
    if args.save:
        record = {"cpu": cpu_description(), "rows": rows}
        (RESULTS / f"{args.save}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

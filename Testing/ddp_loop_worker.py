"""One fine-tuning run of `TrainLoop` (the fine-tuning task: `SegmentationTask` on resenc:test), used by
test_oracle_ddp.py: under ``torchrun`` it runs data-parallel (gloo), without it in one process.

    python ddp_loop_worker.py OUT STEPS ACCUMULATE

Each process writes ``OUT/rank<R>.pt``: the batch indices it was given, its per-step losses and its final
weights. Batch ``i`` is a pure function of ``i`` (as `PatchBatches` makes them), so the runs are comparable.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


class IndexedBatches(torch.utils.data.Dataset):
    """Batch ``i``: two 16^3 random patches and a 3-class label map derived from them; records ``i``."""

    def __init__(self) -> None:
        self.seen: list = []

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int) -> dict:
        self.seen.append(int(i))
        g = torch.Generator().manual_seed(int(i))
        image = torch.randn(2, 1, 16, 16, 16, generator=g)
        smooth = torch.nn.functional.avg_pool3d(image, 5, 1, 2)[:, 0]
        label = (smooth > 0.1).long() + (smooth > 0.3).long()
        return {"image": image, "label": label}


def main(out: Path, steps: int, accumulate: int) -> None:
    from medssl.models import build_network, resolve_arch
    from medssl.train.distributed import DistContext
    from medssl.train.loop import LoopConfig, TrainLoop
    from medssl.train.segmentation_task import SegmentationTask

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    dist = DistContext.from_env("cpu")
    torch.manual_seed(0)  # every rank builds the same initial network (DDP also broadcasts rank 0's)
    net = build_network(resolve_arch("resenc", "unet", {"preset": "test"}), 1, 3)
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    batches = IndexedBatches()
    cfg = LoopConfig(steps=steps, lr=1e-2, accumulate=accumulate, checkpoint_every=10**6, log_every_s=0,
                     warmup_steps=0, schedule="constant", amp="off")  # float32: equal to float tolerance
    loop = TrainLoop(SegmentationTask(net), batches, cfg, out / f"run{dist.rank}", torch.device("cpu"), dist=dist)
    result = loop.run()
    torch.save({"seen": batches.seen, "losses": [h["loss"] for h in result.history],
                "start": start,
                "weights": {k: v.detach().clone() for k, v in net.state_dict().items()}}, out / f"rank{dist.rank}.pt")
    dist.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))

"""Write and read the golden files of ``Testing/data/golden`` (numbers only: weights, inputs, outputs).

A golden file is one ``<name>.safetensors`` with flat keys ``weight/<upstream state-dict key>``,
``input/<case>`` and ``output/<case>/<what>[/<i>]``, plus ``<name>.json`` naming the upstream repository,
commit and configuration and listing the cases. Weights sit on the float16 grid (`random_weights`) and are
inputs (also drawn on the float16 grid) are stored as float16, losslessly; outputs are float32.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Dict, List

import torch


def upstream_commit(checkout: Path) -> str:
    """The commit of a git checkout (worktree), or of the tree given by a ``COMMIT`` file of a ``git archive``."""
    stamp = checkout / "COMMIT"
    if stamp.is_file():
        return stamp.read_text().strip()
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{checkout} is not a git checkout; write its commit into {stamp}")
    return done.stdout.strip()


def _half(t: torch.Tensor, name: str) -> torch.Tensor:
    """A floating tensor as float16 (it must lie on the float16 grid); others unchanged."""
    if not t.is_floating_point():
        return t.detach().contiguous()
    stored = t.detach().half()
    if not torch.equal(stored.to(t.dtype), t):
        raise SystemExit(f"{name} is not on the float16 grid")
    return stored.contiguous()


def save(out: Path, state: Dict[str, torch.Tensor], inputs: Dict[str, torch.Tensor],
         outputs: Dict[str, Dict[str, object]], meta: dict) -> None:
    from safetensors.torch import save_file

    flat: Dict[str, torch.Tensor] = {f"weight/{key}": _half(t, key) for key, t in state.items()}
    flat.update({f"input/{case}": _half(x, case) for case, x in inputs.items()})
    for case, named in outputs.items():
        for what, value in named.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for i, t in enumerate(values):
                suffix = f"/{i}" if isinstance(value, (list, tuple)) else ""
                flat[f"output/{case}/{what}{suffix}"] = t.detach().float().contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(out.with_suffix(".safetensors")))
    meta = {**meta, "weights_in_file_order": list(state), "cases": {c: list(o) for c, o in outputs.items()},
            "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def load(path: Path) -> dict:
    """``{"meta", "weights" (float32, file order), "inputs", "outputs": {case: {what: tensor | [tensors]}}}``."""
    from safetensors.torch import load_file

    flat = load_file(str(path.with_suffix(".safetensors")))
    meta = json.loads(path.with_suffix(".json").read_text())
    weights = {k: flat[f"weight/{k}"].float() if flat[f"weight/{k}"].is_floating_point() else flat[f"weight/{k}"]
               for k in meta["weights_in_file_order"]}
    inputs = {k.split("/", 1)[1]: v.float() if v.is_floating_point() else v for k, v in flat.items()
              if k.startswith("input/")}
    outputs: Dict[str, Dict[str, object]] = {}
    for key in sorted(k for k in flat if k.startswith("output/")):
        _, case, what, *index = key.split("/")
        slot = outputs.setdefault(case, {})
        if index:
            items: List[torch.Tensor] = slot.setdefault(what, [])  # type: ignore[assignment]
            items.append((int(index[0]), flat[key]))  # type: ignore[arg-type]
        else:
            slot[what] = flat[key]
    for slot in outputs.values():
        for what, value in slot.items():
            if isinstance(value, list):
                slot[what] = [t for _, t in sorted(value)]
    return {"meta": meta, "weights": weights, "inputs": inputs, "outputs": outputs}

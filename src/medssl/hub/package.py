"""The model package: ``plan.json`` + ``weights.safetensors`` + ``metadata.json`` in one folder.

Self-describing and self-verifying (MONAI bundle / nnssl adaptation-plan ideas): the metadata holds the
labels, the versions of medssl, torch and MONAI, the sha256 of the weights and of the plan, licence and
provenance. `save_package` writes the folder atomically and verifies it; `verify_package` checks the files,
their hashes, rebuilds the network from the plan, loads the weights strictly and runs one forward pass.
Weights are safetensors (no pickle, so a package cannot execute code).
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..errors import PackageError
from ..io.atomic import atomic_dir
from ..plan import Plan

PACKAGE_FORMAT = "medssl-model-package"
PACKAGE_VERSION = 1
FILES = ("plan.json", "weights.safetensors", "metadata.json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> Dict[str, str]:
    """Versions recorded in metadata and printed by ``medssl info``. MONAI's is read from its installed metadata:
    ``import monai`` loads matplotlib and most of MONAI (1.4 s), which saving a package does not need."""
    from importlib import metadata

    from .. import __version__

    try:
        monai_version = metadata.version("monai")
    except metadata.PackageNotFoundError:
        monai_version = "not installed"
    return {"medssl": __version__, "torch": torch.__version__, "monai": monai_version,
            "python": platform.python_version()}


def save_package(folder: str | Path, plan: Plan, state: Dict[str, torch.Tensor],
                 metadata: Optional[Dict[str, Any]] = None, keep: tuple = ("training",)) -> Path:
    """Write a verified package atomically (an existing package is replaced only once the new one is whole).

    ``keep`` names sub-folders of an existing ``folder`` carried over (the training run state).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    on_cpu = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    aliases = shared_tensor_aliases(on_cpu)
    tensors = {k: v.clone() for k, v in on_cpu.items() if k not in aliases}
    # one header entry only: safetensors writes its metadata map in a random order (same weights, other bytes)
    header = {ALIASES_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {"format": "pt"}
    with atomic_dir(folder, keep=keep) as tmp:
        (tmp / "plan.json").write_text(plan.to_json())
        save_file(tensors, str(tmp / "weights.safetensors"), metadata=header)
        meta = _metadata(plan, tmp, metadata or {})
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        verify_package(tmp)
    return folder


ALIASES_KEY = "medssl_aliases"  # safetensors header entry: JSON {state key: key of the tensor it shares}


def shared_tensor_aliases(state: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """{key: first key} for state entries with the same dtype, shape and bytes as an earlier one. nnU-Net's and
    dynamic-network-architectures' ``UNetDecoder`` keeps the encoder as ``decoder.encoder`` (and each conv block
    its layers again in ``all_modules``), so a plain ``state_dict`` holds most weights two or three times. By
    content, not identity: a snapshot of the best weights (clones) is stored exactly as the network itself."""
    first: Dict[tuple, str] = {}
    aliases = {}
    for key, t in state.items():
        data = t.detach().to("cpu").contiguous()
        raw = data.reshape(-1).view(torch.uint8)  # bytes of any dtype (bfloat16 too), 0-d counters included
        ident = (str(t.dtype), tuple(t.shape), hashlib.blake2b(raw.numpy()).hexdigest())
        if t.numel() and ident in first:
            aliases[key] = first[ident]
        else:
            first.setdefault(ident, key)
    return aliases


def _metadata(plan: Plan, tmp: Path, extra: Dict[str, Any]) -> Dict[str, Any]:
    meta = {
        "format": PACKAGE_FORMAT, "format_version": PACKAGE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "labels": [{"value": lab.value, "name": lab.name, "color": list(lab.color)} for lab in plan.labels],
        "channels": [c.name for c in plan.channels],
        "versions": versions(),
        "weights_sha256": sha256_file(tmp / "weights.safetensors"),
        "plan_sha256": sha256_file(tmp / "plan.json"),
        "licence": extra.pop("licence", "see provenance"),
    }
    meta.update(extra)
    return meta


def read_metadata(folder: str | Path) -> Dict[str, Any]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PackageError(f"model package {folder}: metadata.json cannot be read ({exc}); re-create the package") from None
    if meta.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{folder} is not a medssl model package (metadata.json has no medssl format tag)")
    if int(meta.get("format_version", 0)) > PACKAGE_VERSION:
        raise PackageError(f"model package {folder} was written by a newer medssl; upgrade medssl")
    return meta


def check_files(folder: str | Path) -> Tuple[Plan, Dict[str, Any]]:
    """Files present and hashes equal to the metadata; returns (plan, metadata)."""
    folder = Path(folder)
    if folder.is_file():
        raise PackageError(f"model package {folder} is a file; a model package is the folder that 'medssl finetune "
                           f"--out' wrote (plan.json, weights.safetensors, metadata.json)")
    if not folder.is_dir():
        raise PackageError(f"model package {folder} does not exist; give the folder that 'medssl finetune --out' wrote")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise PackageError(f"model package {folder} is incomplete: {', '.join(missing)} missing; copy the whole folder again")
    meta = read_metadata(folder)
    for name, key in (("weights.safetensors", "weights_sha256"), ("plan.json", "plan_sha256")):
        if sha256_file(folder / name) != meta.get(key):
            raise PackageError(
                f"model package {folder}: {name} does not match the sha256 in metadata.json (changed or corrupted); "
                f"re-create or re-download the package"
            )
    return Plan.load(folder / "plan.json"), meta


def load_package_state(folder: str | Path) -> Dict[str, torch.Tensor]:
    """The package's tensors (hash-checked)."""
    check_files(folder)
    return _read_state(folder)


def _read_state(folder: str | Path) -> Dict[str, torch.Tensor]:
    """The tensors of ``weights.safetensors`` (the caller has checked the hashes)."""
    from safetensors import SafetensorError, safe_open

    path = str(Path(folder) / "weights.safetensors")
    try:
        with safe_open(path, "pt") as handle:  # one open for the tensors and the header (load_file opens it too)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
            aliases = json.loads((handle.metadata() or {}).get(ALIASES_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackageError(f"model package {folder}: weights.safetensors cannot be read ({exc})") from None
    for key, target in aliases.items():  # shared tensors were stored once: every key of the network again
        if target not in state:
            raise PackageError(f"model package {folder}: weights.safetensors names {key} as a copy of {target}, "
                               f"which it does not hold; re-create the package")
        state[key] = state[target]
    return state


def load_package(folder: str | Path, device: str | torch.device = "cpu", check_forward: bool = True,
                 quiet: bool = False) -> Tuple[Plan, torch.nn.Module, Dict[str, Any]]:
    """(plan, network with weights in eval mode, metadata): hashes checked, strict load, every weight and buffer
    finite, then one forward pass unless ``check_forward`` is False (prediction, which runs the network next
    anyway: the sha256 already ties the weights to those `save_package` ran forward; saves ~1 s per run).
    `legacy_spacing_note` on stderr unless ``quiet``."""
    from ..models import build_from_plan

    plan, meta = check_files(folder)
    note = legacy_spacing_note(plan, folder)
    if note and not quiet:
        print(note, file=sys.stderr)
    net = build_from_plan(plan, initialise=False)  # every weight is the package's: the strict load checks that
    state = _read_state(folder)
    try:
        net.load_state_dict(state, strict=True, assign=True)  # the loaded tensors themselves: no copies
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise PackageError(f"model package {folder}: weights do not fit the plan's network ({first})") from None
    net.eval()
    _check_finite(state, folder)  # also where the forward pass would miss it (a NaN that meets only zeros)
    if check_forward:
        _check_forward(net, plan, folder)
    return plan, net.to(device), meta


def _finite(t: torch.Tensor) -> bool:
    """All values finite: a float64 sum (NaN or inf anywhere makes it non-finite) in numpy, as hundreds of tiny
    torch ops each start the thread pool (seconds on a busy machine); bfloat16 (no numpy type) through torch."""
    if t.dtype == torch.bfloat16:
        return bool(torch.isfinite(t).all())
    import numpy as np

    return bool(np.isfinite(np.sum(t.numpy(), dtype=np.float64)))


def _check_finite(state: Dict[str, torch.Tensor], folder) -> None:
    """Every floating-point weight and buffer is finite (milliseconds, where a forward pass takes a second)."""
    seen: set = set()  # an alias is the same tensor object as its stored key: checked once
    bad = []
    for name, t in state.items():
        if t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            if not _finite(t):
                bad.append(name)
    if bad:
        raise PackageError(f"model package {folder}: {len(bad)} weight tensors hold NaN or infinite values "
                           f"(first: {bad[0]}); fine-tune the model again")


def legacy_spacing_note(plan: Plan, folder: str | Path) -> Optional[str]:
    """The one-line note for a package written before every fine-tuned plan held a spacing (its plan has
    ``spacing: null`` and no per-field provenance): it keeps predicting at each scan's own spacing."""
    if plan.spacing is not None or not plan.labels or "fields" in plan.provenance:
        return None
    return (f"note: {folder} was written by an older medssl without a planned spacing; it predicts every scan at "
            f"the scan's own spacing, as before (fine-tune it again to plan one)")


def _check_forward(net: torch.nn.Module, plan: Plan, folder) -> None:
    """One forward pass on a small zero input: right number of finite class scores per voxel."""
    side = 2 * max(int(getattr(net, "size_divisor", 8)), 8)  # bottleneck of 2^3 voxels: instance norm needs more than one
    x = torch.zeros(1, plan.num_channels, side, side, side)
    with torch.inference_mode():
        y = net(x)
    if tuple(y.shape) != (1, plan.num_classes, side, side, side) or not torch.isfinite(y).all():
        raise PackageError(f"model package {folder}: the network gives output {tuple(y.shape)}, expected "
                           f"{plan.num_classes} finite class scores per voxel")


def verify_package(folder: str | Path) -> Dict[str, Any]:
    """Full check: files, hashes, strict load into the plan's network, one forward pass with finite output."""
    return load_package(folder, quiet=True)[2]

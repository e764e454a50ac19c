"""Random-valued checkpoint files with exactly the structure of a released one (MedSSL's own writer).

A structure (``Testing/data/fingerprints/*.json``) lists the file's top-level entries, the path to its tensor
dict and every tensor in file order: shape, dtype, an optional ``init`` and an optional ``alias_of`` (the same
storage as an earlier key, as a real ``state_dict()`` shares storages). Values:

* floating tensors: N(0, 0.02) from one seeded generator, in file order, unless ``init`` says ``zeros``, ``ones``,
  ``{"constant": v}``, ``{"normal": std}`` or ``{"randint": [lo, hi]}``; integer tensors default to zeros;
* ``{"relative_position_index_3d": {"window_size": w, "multipliers": m}}``: a Swin relative-position index;
* the non-tensor entries come from each top-level entry's ``example`` with JSON markers decoded
  (``__state_dict__``, ``__tuple__``, ``__intkeys__``, ``__tensor__``, ``__tensor_like__``, ``__device__``);
  entries with ``presence: optional`` only when asked.

``constant=True`` makes large random tensors one broadcast value each (stride 0), distinct per tensor: a 4.6 GB
structure is written in a second, and a load still shows that every tensor reached its own key.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

STRUCTURES = Path(__file__).resolve().parent / "data" / "fingerprints"
_DTYPES = {name: getattr(torch, name) for name in
           ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")}


def structure(name: str) -> dict:
    """The recorded structure ``name`` (a file stem in ``Testing/data/fingerprints``)."""
    return json.loads((STRUCTURES / f"{name}.json").read_text())


def structure_names() -> List[str]:
    return sorted(p.stem for p in STRUCTURES.glob("*.json"))


def swin_relative_position_index(window: List[int], multipliers: List[int]) -> torch.Tensor:
    """(N, N) int64 index, N = prod(window): sum_k (p_i[k] - p_j[k] + window[k] - 1) * multipliers[k].

    Swin Transformer (Liu et al. 2021) indexes its relative-position bias table this way; MONAI uses the
    multipliers ((2w1-1)(2w2-1), 2w2-1, 1), MIS-FM's PCT-Net (17, 11, 1).
    """
    grids = torch.meshgrid(*[torch.arange(int(n)) for n in window], indexing="ij")
    coords = torch.stack([g.flatten() for g in grids])  # (3, N)
    index = torch.zeros(coords.shape[1], coords.shape[1], dtype=torch.int64)
    for axis, (size, mult) in enumerate(zip(window, multipliers)):
        index += (coords[axis][:, None] - coords[axis][None, :] + int(size) - 1) * int(mult)
    return index


class _TensorMaker:
    """Makes the tensors of one file in order from one generator (``constant``: the cheap kind)."""

    def __init__(self, seed: int, constant: bool) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.constant = constant
        self.counter: Iterator[int] = itertools.count(1)

    def __call__(self, spec: Dict[str, Any]) -> torch.Tensor:
        shape = [int(n) for n in spec["shape"]]
        dtype = _DTYPES[spec.get("dtype", "float32")]
        init = spec.get("init")
        if isinstance(init, dict) and "relative_position_index_3d" in init:
            cfg = init["relative_position_index_3d"]
            index = swin_relative_position_index(cfg["window_size"], cfg["multipliers"]).to(dtype)
            if list(index.shape) != shape:
                raise ValueError(f"relative-position index shape {list(index.shape)} != recorded {shape}")
            return index
        if init == "zeros" or (init is None and not dtype.is_floating_point):
            return torch.zeros(shape, dtype=dtype)
        if init == "ones":
            return torch.ones(shape, dtype=dtype)
        if isinstance(init, dict) and "constant" in init:
            return torch.full(shape, float(init["constant"]), dtype=dtype)
        if isinstance(init, dict) and "randint" in init:
            low, high = init["randint"]
            return torch.randint(int(low), int(high), shape, generator=self.generator).to(dtype)
        return self._normal(shape, dtype, float(init["normal"]) if isinstance(init, dict) else 0.02, init)

    def _normal(self, shape: List[int], dtype: torch.dtype, std: float, init: Any) -> torch.Tensor:
        if init not in (None, "normal") and not (isinstance(init, dict) and "normal" in init):
            raise ValueError(f"unknown init {init!r}")
        if self.constant and math.prod(shape) > 4096 and init is None:
            return torch.full([1] * len(shape), next(self.counter) / 1024, dtype=dtype).expand(*shape)
        values = torch.empty(shape, dtype=torch.float32)
        if values.numel():
            values.normal_(0.0, std, generator=self.generator)
        return values.to(dtype)


def tensor_dict(fp: dict, make: _TensorMaker) -> Dict[str, torch.Tensor]:
    """Every tensor of ``fp`` in file order; aliases are the very same tensor object as their source."""
    tensors: Dict[str, torch.Tensor] = {}
    for key, spec in fp["tensors"].items():
        source = spec.get("alias_of")
        if source is None:
            tensors[key] = make(spec)
        elif source not in tensors or list(tensors[source].shape) != list(spec["shape"]):
            raise ValueError(f"{key}: alias of {source!r} must come earlier with the same shape")
        else:
            tensors[key] = tensors[source]
    return tensors


def _decode(value: Any, tensors: Dict[str, torch.Tensor], make: _TensorMaker) -> Any:
    """A top-level entry's JSON ``example`` as the Python object the file holds."""
    if isinstance(value, list):
        return [_decode(v, tensors, make) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("__state_dict__") is True:
        return tensors
    if "__tuple__" in value:
        return tuple(_decode(v, tensors, make) for v in value["__tuple__"])
    if "__intkeys__" in value:
        return {int(k): _decode(v, tensors, make) for k, v in value["__intkeys__"].items()}
    if "__tensor__" in value:
        return make(value["__tensor__"])
    if "__tensor_like__" in value:
        ref = tensors[value["__tensor_like__"]]
        return make({"shape": list(ref.shape), "dtype": str(ref.dtype).removeprefix("torch.")})
    if "__device__" in value:
        return torch.device(value["__device__"])
    return {k: _decode(v, tensors, make) for k, v in value.items()}


def checkpoint(fp: dict, seed: int = 0, with_optional: bool = False, constant: bool = False) -> Any:
    """The object ``torch.save`` writes for a file of structure ``fp``: the tensor dict, or its nesting."""
    make = _TensorMaker(seed, constant)
    tensors = tensor_dict(fp, make)
    path = list(fp.get("state_dict_path") or [])
    if not path:
        return tensors
    top = {name: _decode(entry["example"], tensors, make) for name, entry in fp["top_level_keys"].items()
           if with_optional or entry.get("presence", "required") != "optional"}
    holder = top
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = tensors
    return top


@contextlib.contextmanager
def storage_location(tag: Optional[str]):
    """Record every storage at ``tag`` (e.g. ``cuda:0``, as files saved from a GPU run are) without a GPU."""
    if not tag or tag == "cpu":
        yield
        return
    import torch.serialization as serialization

    original = serialization.location_tag
    serialization.location_tag = lambda storage: tag
    try:
        yield
    finally:
        serialization.location_tag = original


def write(fp: dict, out: Path, seed: int = 0, with_optional: bool = False, constant: bool = False,
          device_tag: Optional[str] = None, edit=None) -> Path:
    """Write a fake of structure ``fp`` to ``out``; ``edit(obj)`` may change the object before saving."""
    obj = checkpoint(fp, seed, with_optional, constant)
    if edit is not None:
        edit(obj)
    with storage_location(device_tag):
        torch.save(obj, str(out))
    return Path(out)

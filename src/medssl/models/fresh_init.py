"""Build a network whose pretrained part is loaded next, drawing random values for the other part only.

Fine-tuning from a checkpoint used to initialise every tensor and then overwrite most of them: for VoCo-H
(SwinUNETR, 1.2 B parameters) 10 s of random numbers on 2 cores, for 3DINO's ViT-L 2.6 s. `build_fresh_only`
builds twice, the first time without weights:

1. a structure build (meta device) records the target of every top-level ``torch.nn.init`` fill call in
   order (`no_init.fills_planned`); ``loaded_keys(structure)`` says which state keys the checkpoint fills
   (`hub.pretrained`'s shape match, which needs no values);
2. the real build skips exactly the calls whose target has only loaded names, in the same order, so every
   fresh tensor (decoder, new input layer, class head) gets its family's own initialisation, and direct
   tensor operations between fills happen as before. The fresh values differ from a full initialisation's
   (fewer random numbers are drawn before them) but are fixed by the seed.

The two builds must make the same calls to the same names; where they do not (a constructor that depends on
the device), the network is built again fully initialised. The caller checks after loading that every
skipped name was loaded (`skipped`).
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Callable, Dict, Iterator, Optional, Set, Tuple

import torch

from .no_init import FillPlan, fills_planned


def build_fresh_only(build: Callable[[], torch.nn.Module], loaded_keys: Callable[[torch.nn.Module], Set[str]]
                     ) -> Tuple[torch.nn.Module, Set[str]]:
    """(network, the loaded names of the tensors left unfilled); see the module. A tensor is left unfilled when
    one of its names is loaded: its aliases (dynamic-network-architectures' ``decoder.encoder.*``) are the same
    tensor object, so they receive the loaded values too."""
    structure, planned = _structure_with_fills(build)
    names = tensor_names(structure)
    loaded = loaded_keys(structure)
    planned_names = [names.get(id(t)) for t in planned.targets]
    skip = {i for i, n in enumerate(planned_names) if n and n & loaded}
    del structure, planned, names
    with fills_planned(skip) as real:
        net = build()
    real_names = tensor_names(net)
    if [real_names.get(id(t)) for t in real.targets] != planned_names:
        return build(), set()
    return net, set().union(*(planned_names[i] & loaded for i in skip))


def _structure_with_fills(build: Callable[[], torch.nn.Module]) -> Tuple[torch.nn.Module, FillPlan]:
    """`structure_build` with the fill calls of the attempt that succeeded."""
    try:
        with fills_planned() as planned, torch.device("meta"):
            return build(), planned
    except (RuntimeError, NotImplementedError):
        with fills_planned() as planned, parameters_on_meta():
            return build(), planned


def tensor_names(net: torch.nn.Module) -> Dict[int, frozenset]:
    """{id(tensor): every name it has in ``net``} over parameters and buffers, aliases included."""
    out: Dict[int, Set[str]] = {}
    named = itertools.chain(net.named_parameters(remove_duplicate=False), net.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        out.setdefault(id(tensor), set()).add(name)
    return {k: frozenset(v) for k, v in out.items()}


def structure_build(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` with no memory for its parameters: on the meta device when its code allows it; else (MONAI
    SwinUNETR calls ``.item()`` while building) on the CPU with each parameter moved to the meta device as it
    is registered (`parameters_on_meta`)."""
    return _structure_with_fills(build)[0]


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """While active, every ``nn.Parameter`` registered on a module is replaced by a meta tensor of its shape.

    The idea of Hugging Face accelerate's ``init_empty_weights`` (buffers stay real: Swin's relative-position
    index is computed as usual). Not thread-safe: it patches ``nn.Module.register_parameter``.
    """
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param: Optional[torch.nn.Parameter]) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]

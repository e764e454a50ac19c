"""The contract of a self-supervised pretraining method, and the METHODS registry.

A method is an ``nn.Module`` whose ``forward(batch)`` *is* the training step: it returns
``{"loss": scalar, <terms>...}`` and never calls ``backward`` (the one loop, `medssl.train.loop.TrainLoop`,
does). Beside it, each method provides (lightly's "method = module + view transform"):

- ``Config``: a dataclass of the method's settings (the ``method:`` section of a pretraining YAML);
- `view_maker` -> a picklable object whose ``batch(volumes, rng, batch_size)`` builds the views of one step
  (run in loader workers, deterministic per step, see `.batches`);
- `on_step_end` (a loop hook): EMA teachers and temperature schedules, functions of the step only;
- `param_groups`: optimiser groups (layer-wise LR decay for ViTs, no weight decay on norms and biases);
- `export_state`: the weights to keep, keyed like `medssl.models.SegmentationNet` (``encoder.*``, plus
  ``decoder.*`` for methods that pretrain the decoder), for the plan's architecture;
- `forward_voxels` and `activation_network`: what the training-memory estimate counts.

Registration is explicit: ``@METHODS.register("name")`` on the class and one import line in
``ssl/methods/__init__.py``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from ..errors import InputError
from ..plan import ArchSpec
from ..registry import Registry
from .param_groups import split_decay

METHODS: Registry[Type["SSLMethod"]] = Registry("pretraining method")


class SSLMethod(nn.Module):
    """Base class; see the module docstring. ``arch`` is the architecture that is exported (the plan's),
    ``patch_size`` the plan's patch (the crop the network sees when a method has one crop size)."""

    Config: ClassVar[type]
    families: ClassVar[Optional[Tuple[str, ...]]] = None  # supported backbone families (None: any)
    exports_decoder: ClassVar[bool] = False

    def __init__(self, arch: ArchSpec, cfg: Any, patch_size: Sequence[int]) -> None:
        super().__init__()
        self.check_arch(arch)
        self.arch, self.cfg, self.patch_size = arch, cfg, tuple(int(p) for p in patch_size)

    @classmethod
    def check_arch(cls, arch: ArchSpec) -> None:
        if cls.families is not None and arch.backbone not in cls.families:
            raise InputError(f"this pretraining method needs a {' or '.join(cls.families)} backbone, not "
                             f"{arch.backbone}; pass e.g. --backbone {cls.families[0]}:test")

    def view_maker(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def on_step_end(self, step: int, total: int) -> None:
        """Called by the loop after every optimiser step (``step`` counts from 1)."""

    def param_groups(self, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """Default: decayed weights, undecayed 1-D parameters (norms, biases)."""
        return split_decay(self.named_parameters(), weight_decay)

    def export_state(self) -> Dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def activation_network(self) -> Optional[nn.Module]:
        """The module the training-memory estimate probes for the `forward_voxels` voxels (`train.memory`): None,
        the plan's segmentation network (encoder and decoder), as the convolutional methods run it."""
        return None

    def memory_probe(self, plan_network: Callable[[], nn.Module], channels: int) -> Tuple[nn.Module, int]:
        """(module, input channels) the training-memory estimate probes: `activation_network`, which a method
        builds for one channel, else ``plan_network()`` (built only then) with the plan's ``channels``."""
        own = self.activation_network()
        return (plan_network(), channels) if own is None else (own, 1)

    def forward_voxels(self) -> int:
        """Voxels the trained network sees per volume of a batch (for the memory estimate): one patch here;
        multi-crop methods (VoCo, DINO) count all their crops."""
        return int(self.patch_size[0] * self.patch_size[1] * self.patch_size[2])


def check_input_size(encoder: nn.Module, size: Sequence[int], what: str, tokens: bool = False) -> None:
    """Raise `InputError` unless every side of ``size`` is a multiple of the encoder's size divisor and, for
    convolutional encoders (instance norm at the deepest stage), at least twice that."""
    div = int(getattr(encoder, "size_divisor", 1))
    least = div if tokens else 2 * div
    if any(int(s) % div or int(s) < least for s in size):
        raise InputError(f"{what} {list(size)} does not fit this backbone: every side must be a multiple of {div} "
                         f"and at least {least}; change it in the 'method:' settings or the patch size")


def prefixed(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """``{prefix + key: tensor}`` detached on the CPU."""
    return {f"{prefix}{k}": v.detach().cpu() for k, v in state.items()}


def method_config(name: str, data: Dict[str, Any]) -> Any:
    """The method's ``Config`` filled from the ``method:`` section (unknown keys are an error)."""
    from ..io.settings import from_dict

    return from_dict(METHODS.get(name).Config, data, where=f"method settings of {name}")


def build_method(name: str, arch: ArchSpec, settings: Dict[str, Any], patch_size: Sequence[int]) -> SSLMethod:
    """Instantiate method ``name`` for ``arch`` with its settings."""
    cls = METHODS.get(name)
    return cls(arch, method_config(name, settings), patch_size)

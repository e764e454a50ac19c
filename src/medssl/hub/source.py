"""What ``--backbone`` resolves to, as data: the architecture, the plan defaults it was pretrained with, and
the function that copies its weights into a built network (with the report of what loaded).

Every resolver (`.backbone_source` for architectures and packages, `.pretrained` for catalog ids and
checkpoint files, `.ssl_export` for ``medssl pretrain`` exports) returns a `BackboneSource`; keeping the type
here lets them import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

import torch

from ..plan import ArchSpec, PlanDefaults


@dataclass
class LoadReport:
    """What happened when pretrained tensors were copied into a network (key names of the network)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.missing)} left at initialisation, "
                f"{len(self.unexpected)} unused, {len(self.shape_mismatch)} with other shapes")


InitFn = Callable[[torch.nn.Module], LoadReport]


@dataclass
class BackboneSource:
    """A resolved ``--backbone``: architecture, inherited preprocessing and weight initialiser."""

    name: str
    arch: ArchSpec
    plan_defaults: PlanDefaults = field(default_factory=PlanDefaults)
    init_weights: Optional[InitFn] = None
    licence: Optional[str] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    recipe: Optional[str] = None  # the seed system's fine-tuning recipe (`medssl.hub.recipes`), None: medssl's
    # the state keys `init_weights` fills in a network, asked of its structure (`models.fresh_init`); None: unknown
    loaded_keys: Optional[Callable[[torch.nn.Module], Set[str]]] = None

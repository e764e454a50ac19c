"""Where a fine-tune starts from: ``--backbone ID|FILE|PACKAGE|ARCH``.

`resolve_backbone` turns the user's string into a `BackboneSource`: the architecture to build, the
preprocessing the backbone was trained with (plan defaults the fine-tuned plan inherits unless the user
overrides them) and a function that copies the pretrained weights into the built network and reports what
loaded. Accepted forms:

- an architecture from the registry, optionally with a preset: ``resenc``, ``resenc:tiny`` (random init);
- a medssl model package folder (plan.json + weights.safetensors): continue training from it, decoder
  included (the output layer is re-initialised when the label set differs);
- a weight-catalog id (``openmind_resencl_mae``) or a checkpoint file: see `medssl.hub.pretrained`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..plan import Plan, PlanDefaults
from .matching import copy_matching, keys_matching
from .source import BackboneSource, LoadReport

def default_decoder(backbone: str) -> str:
    """The decoder a backbone family declares as its usual one (`BackboneFamily.default_decoder`)."""
    from ..models import BACKBONES

    return BACKBONES.get(backbone).default_decoder


def is_architecture(spec: str) -> bool:
    """Whether ``spec`` names a registered architecture (``resenc``, ``resenc:tiny``), not weights."""
    from ..models import BACKBONES

    return spec.partition(":")[0] in BACKBONES


def resolve_backbone(spec: str, decoder: Optional[str] = None, accept_licence: bool = False) -> BackboneSource:
    """See the module docstring; raises `InputError` naming the accepted forms. ``accept_licence`` accepts the
    licence of a checkpoint file read like a catalog entry whose licence must be accepted (3DINO)."""
    from ..models import resolve_arch
    from .ssl_export import is_ssl_export, resolve_ssl_export

    if is_ssl_export(spec):  # RUN/export/backbone.safetensors, RUN/export or RUN of 'medssl pretrain'
        return resolve_ssl_export(spec)
    if is_architecture(spec):
        name, _, preset = spec.partition(":")
        kwargs = {"preset": preset} if preset else {}
        arch = resolve_arch(name, decoder or default_decoder(name), kwargs)
        return BackboneSource(spec, arch, provenance={"backbone": spec, "init": "random"})
    from .local_backbones import local_source

    local = local_source(spec)  # registered with 'medssl weights import RUN --id NAME'
    if local is not None:
        return local
    path = Path(spec)
    if path.is_dir() and (path / "plan.json").exists():
        return _from_package(path)
    from .pretrained import resolve_pretrained

    return resolve_pretrained(spec, decoder=decoder, accept_licence=accept_licence)


def _from_package(path: Path) -> BackboneSource:
    from .package import load_package_state

    plan = Plan.load(path / "plan.json")
    defaults = PlanDefaults.of_plan(plan, f"model package {path}", labels=True)
    family = plan.architecture.backbone

    def init(net: torch.nn.Module) -> LoadReport:
        return copy_matching(load_package_state(path), net, family)

    prov = {"backbone": str(path), "init": "package", "parent_plan_hash": plan.hash()}
    return BackboneSource(str(path), plan.architecture, defaults, init, provenance=prov,
                          recipe=_package_recipe(path),
                          loaded_keys=lambda structure: keys_matching(structure, path / "weights.safetensors", family))


def _package_recipe(path: Path) -> Optional[str]:
    """The recipe a package was fine-tuned with: the bootstrap loop keeps training the same way."""
    import json

    try:
        recipe = json.loads((path / "metadata.json").read_text()).get("recipe")
    except (OSError, ValueError):
        return None
    return recipe.get("name") if isinstance(recipe, dict) else None


def create_backbone(id_or_arch: str, checkpoint: Optional[str] = None, in_channels: int = 1,
                    num_classes: int = 2, accept_licence: bool = False) -> torch.nn.Module:
    """The encoder of a backbone, with pretrained weights when ``id_or_arch`` (or ``checkpoint``) has them.

    ``create_backbone("resenc:tiny")`` gives a random encoder; ``create_backbone("openmind_resencl_mae")``
    (a catalog id) or ``create_backbone("resenc", checkpoint="checkpoint_final.pth")`` load weights.
    """
    from ..models import build_network

    if checkpoint is None:
        source = resolve_backbone(id_or_arch, accept_licence=accept_licence)
    else:
        source = _with_checkpoint(id_or_arch, checkpoint, accept_licence)
    net = build_network(source.arch, in_channels, num_classes)
    if source.init_weights is not None:
        source.init_weights(net)
    return net.encoder


def _with_checkpoint(id_or_arch: str, checkpoint: str, accept_licence: bool) -> BackboneSource:
    from .pretrained import resolve_pretrained

    return resolve_pretrained(checkpoint, catalog_id=id_or_arch, accept_licence=accept_licence)

"""Pretrained backbones from the weight catalog or a checkpoint file: read safely, convert, load, assert.

`resolve_pretrained` turns ``--backbone ID|FILE`` into a `BackboneSource` (see `.backbone_source`): the
architecture (from the catalog entry, or read from the file's shapes), the plan defaults of the system the
backbone comes from (nnssl checkpoints carry their own plan, which wins) and ``init_weights(net)``.

Loading rules (MAE's fine-tuning guard, timm's filter functions, nnssl/PyMIC practice):

- every file is read with ``torch.load(map_location="cpu", weights_only=True)`` (memory-mapped when the
  format allows); a file that needs unsafe unpickling, a truncated file or a non-checkpoint raises
  `CheckpointError`;
- a pure converter renames the file's tensors to network keys (`.converters`);
- tensors are copied where name and shape match; a stem conv with fewer input channels than the network is
  repeated over the channel axis and divided by the channel ratio (nnssl's rule), other shape differences
  are reported;
- the missing and unused key sets are then asserted against the catalog entry: no backbone tensor may be
  missing, other missing keys must match ``allowed_missing``/``class_keys``, unused file keys must match
  ``allowed_unexpected``, shape mismatches must match ``class_keys``. A file that loads nothing can never pass.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from ..errors import CheckpointError, InputError
from ..io.torch_files import safe_torch_load
from ..plan import PlanDefaults
from . import catalog
from .source import BackboneSource, LoadReport
from .converters import (CONVERTERS, FORMATS, Tensors, adapt_input_channels, detect_family, find_state_dict,
                         fresh_input_keys, template_entry)
from .converters_infer import infer_arch, nnssl_plan_defaults


# ----------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, memory-mapped when possible."""
    if not Path(path).is_file():
        raise InputError(f"checkpoint file {path} does not exist; give the path of a downloaded checkpoint")
    return safe_torch_load(path, "checkpoint")


def tensors_of(ckpt: Any, path: str | Path) -> Tensors:
    """The tensor dict of a loaded checkpoint (``teacher``/``network_weights``/``model_state_dict``/... or flat)."""
    sd = find_state_dict(ckpt)
    if sd is None:
        top = ", ".join(list(ckpt)[:6]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} holds no tensor dictionary (top level: {top}); it is not a model checkpoint")
    return sd


# ----------------------------------------------------------------------------------------------- policy
class Policy:
    """What a catalog entry allows when its file is loaded (see the module docstring)."""

    def __init__(self, entry: catalog.CatalogEntry, decoder_changed: bool = False) -> None:
        self.entry_id, self.family = entry.id, entry.family
        self.converter = CONVERTERS[entry.converter]
        # input layers left fresh when the channels differ (VoCo's fine-tuning: name-and-shape matching drops
        # swinViT.patch_embed and encoder1's convs); other families repeat and scale (`adapt_input_channels`)
        self.fresh_input_keys = fresh_input_keys(entry.family)
        self.class_keys = list(entry.class_keys)
        self.allowed_missing = list(entry.allowed_missing) + self.class_keys
        self.allowed_unexpected = list(entry.allowed_unexpected)
        self.decoder_changed = decoder_changed  # another decoder than the entry's: the file's decoder is unused
        if decoder_changed:
            self.allowed_missing.append("decoder.*")

    def match(self, own: Dict[str, torch.Tensor], source: Tensors) -> Tuple[LoadReport, Tensors, List[str]]:
        """Convert ``source`` and match it to ``own``: (report, tensors to load, file keys allowed to stay unused)."""
        converted = self.converter(source)
        unused_ok = []
        if self.decoder_changed:
            decoder_side = {_storage_key(v) for k, v in converted.items() if k.startswith("decoder.")}
            converted = {k: v for k, v in converted.items() if not k.startswith("decoder.")}
            unused_ok = [k for k, v in source.items() if _storage_key(v) in decoder_side]
        report, to_load = plan_load(own, source, converted, self)
        return report, to_load, unused_ok


def _ptr(t: torch.Tensor) -> int:
    """Identity of a network tensor in ``state_dict(keep_vars=True)``: aliases are the same object."""
    return id(t)


def _storage_key(t: torch.Tensor) -> tuple:
    """Identity of a file tensor: aliases of one storage (nnssl's ``decoder.encoder.*``) count as one."""
    if not t.numel():
        return (id(t),)
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def plan_load(own: Dict[str, torch.Tensor], source: Tensors, converted: Tensors, policy: Policy
              ) -> Tuple[LoadReport, Tensors]:
    """Match converted tensors to the network's ``own`` state (shapes only): (report, tensors to load).

    ``own`` is ``net.state_dict(keep_vars=True)``, so a network key sharing a parameter with a loaded key
    (nnssl's ``all_modules``/``decoder.encoder`` aliases) counts as loaded. ``unexpected`` lists the file's
    tensors that fit no network key at all (shape mismatches are reported as such, not as unexpected).
    """
    report, to_load = LoadReport(), {}
    for key, value in converted.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            value = adapt_input_channels(policy.family, key, value, own[key])
            if value is None:
                report.shape_mismatch.append(key)
                continue
        to_load[key] = value
        report.loaded.append(key)
    matched = {_storage_key(converted[k]) for k in report.loaded + report.shape_mismatch}
    report.unexpected = [k for k, v in source.items() if _storage_key(v) not in matched]
    loaded_ptrs = {_ptr(own[k]) for k in report.loaded}
    report.missing = [k for k in own if k not in to_load and _ptr(own[k]) not in loaded_ptrs]
    return report, to_load


def backbone_counts(own: Dict[str, torch.Tensor], report: LoadReport) -> Tuple[int, int]:
    """(missing, total) backbone (``encoder.``) tensors, aliases counted once."""
    total = {_ptr(v) for k, v in own.items() if k.startswith("encoder.")}
    missing = {_ptr(own[k]) for k in report.missing if k.startswith("encoder.")}
    return len(missing), len(total)


def problems(own: Dict[str, torch.Tensor], report: LoadReport, policy: Policy, name: str,
             unused_ok: Sequence[str] = ()) -> List[str]:
    """One-line problems of a load against the policy (empty: the load is what the catalog expects).

    ``unused_ok``: file keys that may stay unused besides the entry's ``allowed_unexpected``.
    """
    fresh = set(report.shape_mismatch) & set(policy.fresh_input_keys)
    kept = LoadReport(report.loaded, [k for k in report.missing if k not in fresh])
    n_miss, n_total = backbone_counts(own, kept)
    out = []
    if n_miss:
        first = next(k for k in kept.missing if k.startswith("encoder."))
        out.append(f"checkpoint {name} does not look like a {policy.family} checkpoint: {n_miss} of {n_total} "
                   f"backbone tensors missing (e.g. {first})")
    bad = [k for k in report.missing if not k.startswith("encoder.") and not catalog.matches(k, policy.allowed_missing)]
    if bad:
        out.append(f"checkpoint {name}: {len(bad)} network tensors are not in it (e.g. {bad[0]})")
    ok = set(unused_ok)
    bad = [k for k in report.unexpected if k not in ok and not catalog.matches(k, policy.allowed_unexpected)]
    if bad:
        out.append(f"checkpoint {name}: {len(bad)} of its tensors fit no part of the network (e.g. {bad[0]})")
    bad = [k for k in report.shape_mismatch if k not in fresh and not catalog.matches(k, policy.class_keys)]
    if bad:
        out.append(f"checkpoint {name}: {len(bad)} tensors have other shapes than the network's (e.g. {bad[0]})")
    return out


def load_into(net: torch.nn.Module, path: str | Path, policy: Policy, name: str) -> LoadReport:
    """Read ``path``, convert, copy into ``net`` and assert the result (raises `CheckpointError`)."""
    source = tensors_of(read_checkpoint(path), path)
    own = net.state_dict(keep_vars=True)
    report, to_load, unused_ok = policy.match(own, source)
    issues = problems(own, report, policy, name, unused_ok)
    if issues:
        raise CheckpointError(issues[0] + ("" if len(issues) == 1 else f" (and {len(issues) - 1} more problem(s))")
                              + "; check that the file matches --id, or re-download it")
    with torch.no_grad():
        net.load_state_dict(to_load, strict=False)
    return report


def keys_filled(net: torch.nn.Module, path: str | Path, policy: Policy) -> Set[str]:
    """The state keys of ``net`` that `load_into` fills from ``path``: the same shape match, so ``net`` may be
    a structure without values (`structure_network`; `models.fresh_init`)."""
    report, _, _ = policy.match(net.state_dict(keep_vars=True), tensors_of(read_checkpoint(path), path))
    return set(report.loaded)


# ----------------------------------------------------------------------------------------------- resolving
def entry_and_file(spec: str, catalog_id: Optional[str]) -> Tuple[catalog.CatalogEntry, Path, bool]:
    """(catalog entry, local file, whether the entry was named) for ``--backbone ID|FILE [--id ID]``."""
    from .download import ensure_local

    path = Path(spec).expanduser()
    if catalog_id is None and spec in catalog.entries() and not path.is_file():
        entry = catalog.get_entry(spec)
        return entry, ensure_local(entry), True
    if not path.is_file():
        from ..models import BACKBONES
        from .local_backbones import local_names

        known = [*catalog.entries(), *local_names()]
        raise InputError(f"--backbone {spec!r} is neither an architecture ({', '.join(BACKBONES.names())}), a model "
                         f"package folder, a weight id ('medssl weights list') nor an existing checkpoint file."
                         f"{catalog.did_you_mean(spec, known)}")
    if catalog_id is not None and catalog_id in catalog.entries():
        return catalog.get_entry(catalog_id), path, True
    return _entry_for_file(path, catalog_id), path, False


def _entry_for_file(path: Path, family_hint: Optional[str]) -> catalog.CatalogEntry:
    """The catalog entry a bare file is read like, chosen by its keys (``family_hint``: an architecture name)."""
    sd = tensors_of(read_checkpoint(path), path)
    family = detect_family(sd)
    hint = family_hint.partition(":")[0] if family_hint else None
    if hint is not None and hint not in FORMATS:
        raise InputError(f"--id {family_hint!r} is neither a weight-catalog id nor a backbone family "
                         f"({', '.join(FORMATS)}); see 'medssl weights list'")
    if family is None or (hint and hint != family):
        want = f"a {hint} checkpoint" if hint else "a checkpoint of a known family (" + ", ".join(FORMATS) + ")"
        got = f"its keys are those of a {family} checkpoint" if family else f"keys such as {next(iter(sd))!r}"
        raise CheckpointError(f"checkpoint {path} does not look like {want}: {got}")
    return catalog.get_entry(template_entry(family, sd))


def file_arch_kwargs(entry: catalog.CatalogEntry, ckpt: Any, path: Path) -> Dict[str, Any]:
    """Backbone kwargs: the entry's preset, overridden by what the file's shapes say."""
    converted = CONVERTERS[entry.converter](tensors_of(ckpt, path))
    try:
        inferred = infer_arch(entry.family, converted)
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise CheckpointError(f"checkpoint {path} does not look like a {entry.family} checkpoint "
                              f"(no tensor {exc}); check the file") from None
    return {**entry.arch["backbone_kwargs"], **inferred}


def plan_defaults(entry: catalog.CatalogEntry, ckpt: Any) -> PlanDefaults:
    """The entry's plan defaults; an nnssl checkpoint's own adaptation plan overrides them."""
    own = nnssl_plan_defaults(ckpt) if entry.family == "resenc" else {}
    origin = f"catalog entry {entry.id}" + (" and the checkpoint's nnssl adaptation plan" if own else "")
    return PlanDefaults.from_json({**entry.plan_defaults, **own}, origin)


def _prepare(spec: str, decoder: Optional[str], catalog_id: Optional[str]):
    """(entry, file, named, arch, plan defaults) of ``--backbone ID|FILE``; checks the file's family early."""
    from ..models import resolve_arch

    entry, path, named = entry_and_file(spec, catalog_id)
    ckpt = read_checkpoint(path)
    source_family = detect_family(tensors_of(ckpt, path))
    if source_family is not None and source_family != entry.family:
        raise CheckpointError(f"checkpoint {path} does not look like a {entry.family} checkpoint ({entry.id}): "
                              f"its keys are those of a {source_family} checkpoint")
    kwargs = dict(entry.arch["backbone_kwargs"]) if named else file_arch_kwargs(entry, ckpt, path)
    dec_kwargs = entry.arch["decoder_kwargs"] if decoder in (None, entry.arch["decoder"]) else {}
    arch = resolve_arch(entry.family, decoder or entry.arch["decoder"], kwargs, dec_kwargs)
    return entry, path, named, arch, plan_defaults(entry, ckpt)


def resolve_pretrained(spec: str, decoder: Optional[str] = None, catalog_id: Optional[str] = None,
                       accept_licence: bool = False) -> BackboneSource:
    """``--backbone ID|FILE`` (with ``catalog_id``: read FILE as that entry, or as that architecture family).

    A FILE carries the licence of the entry it is read like (see `file_licence`; ``accept_licence`` accepts
    one that must be accepted).
    """
    entry, path, named, arch, defaults = _prepare(spec, decoder, catalog_id)
    policy, name = Policy(entry, arch.decoder != entry.arch["decoder"]), entry.id if named else str(path)
    from_cache = named and catalog_id is None  # `entry_and_file` took the cached file of the id
    licence = entry.licence if from_cache else file_licence(entry, path, accept_licence)
    prov = {"backbone": spec, "init": "pretrained", "checkpoint": str(path), "family": entry.family,
            "catalog_id": entry.id if named else None, "read_like": entry.id, "citation": entry.citation,
            "licence": licence}
    return BackboneSource(name, arch, defaults, lambda net: load_into(net, path, policy, name),
                          licence=licence, provenance=prov, recipe=entry.get("recipe"),
                          loaded_keys=lambda structure: keys_filled(structure, path, policy))


def file_licence(entry: catalog.CatalogEntry, path: Path, accepted: bool = False) -> str:
    """The licence a checkpoint file given by path carries: that of the entry it is read like.

    A cached file was accepted when it was downloaded or imported (``--accept-licence``); a file given by path
    was not, so when the entry's licence must be accepted (3DINO: CC BY-NC-ND, gated) `InputError` asks for
    ``--accept-licence`` unless ``accepted``, as ``medssl weights download`` does; the accepted licence is shown
    on stderr and recorded in the fine-tuned package's metadata.
    """
    licence = f"{entry.licence}; licence of {entry.id}, which {path.name} was read like"
    where = f"{entry.licence} ({entry.get('licence_url', entry.source_text)})"
    if entry.licence_requires_acceptance and not accepted:
        raise InputError(f"{path.name} is read like {entry.id}, licensed {where}; read it, then run again with "
                         f"--accept-licence to accept it")
    if entry.licence_requires_acceptance:
        print(f"note: {path} is read like {entry.id}, licensed {where}; accepted with --accept-licence; "
              f"models fine-tuned from it carry that licence", file=sys.stderr)
    return licence


def structure_network(arch, in_channels: int, num_classes: int) -> torch.nn.Module:
    """The network of ``arch`` for a shape check, with no memory for its parameters (`structure_build`), so
    that checking a VoCo-H file does not allocate the 1.2 B parameters of its network."""
    from ..models import build_network
    from ..models.fresh_init import structure_build

    return structure_build(lambda: build_network(arch, in_channels, num_classes))


def check_checkpoint(path: str | Path, catalog_id: Optional[str] = None
                     ) -> Tuple[LoadReport, List[str], catalog.CatalogEntry]:
    """Structure check of a file against a catalog entry (or its detected family): (report, problems, entry).

    The entry's network (one input channel, the checkpoint's own class count) is built, the converted keys and
    shapes are matched against it exactly as `load_into` would, and the policy is applied; nothing is copied.
    """
    entry, path, named, arch, _ = _prepare(str(path), None, catalog_id)
    net = structure_network(arch, 1, entry.native_num_classes or 2)
    source = tensors_of(read_checkpoint(path), path)
    policy = Policy(entry)
    own = net.state_dict(keep_vars=True)
    report, _, unused_ok = policy.match(own, source)
    return report, problems(own, report, policy, entry.id if named else str(path), unused_ok), entry

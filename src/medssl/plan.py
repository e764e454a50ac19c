"""The Plan: the one data contract between pretraining, fine-tuning and inference.

A plan is versioned, pure JSON (no expressions, no import paths) and holds everything that decides what the
network sees and what its outputs mean: channels, target orientation and spacing, per-channel intensity
normalisation with frozen statistics, patch size, labels (names, colours, terminology), the architecture
(registry names + keyword arguments) and the sliding-window settings. Training hyper-parameters are not in
the plan; they live in the run configuration.

Axis convention (used everywhere in medssl): spacing and patch size are given in image axis order (i, j, k)
of the image after it was reoriented to ``orientation``; network tensors are ``(B, C, I, J, K)``. With
``orientation="RAS"`` that is (Right, Anterior, Superior), the MONAI/nibabel convention the seed systems use.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import InputError, PackageError

PLAN_VERSION = 1
ORIENTATIONS = ("native", "RAS", "LPS", "LAS", "RPS", "LPI", "RAI")


@dataclass
class ChannelSpec:
    """One input channel: a name shown to users and its modality (CT, MR, PT, US, ...)."""

    name: str
    modality: str = "MR"


@dataclass
class NormSpec:
    """Intensity normalisation of one channel: a scheme registered in `medssl.data.normalization` and its
    frozen parameters (e.g. ``{"mean": 71.2, "std": 30.5}`` for ``zscore``)."""

    scheme: str
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelSpec:
    """One output class: label value in label maps, name, RGB colour in [0, 1], optional terminology: the
    seven fields of a Slicer terminology entry (`medssl.io.terminology.FIELDS`; codes as (coding scheme,
    code value, meaning) triplets). Older plans hold only ``category`` and ``type``; they stay readable."""

    value: int
    name: str
    color: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    terminology: Optional[Dict[str, Any]] = None


@dataclass
class ArchSpec:
    """Network: a backbone and a decoder from the registries, each with keyword arguments."""

    backbone: str
    decoder: str
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SlidingWindowSpec:
    """Sliding-window inference defaults (MONAI ``sliding_window_inference``)."""

    overlap: float = 0.5
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int = 2
    mirror_axes: Tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Plan:
    """See the module docstring. ``spacing=None`` keeps each scan's own spacing (only when the user asked for it:
    `medssl.planning.rules.plan_spacing`). Frozen: `replace` gives a changed copy."""

    channels: List[ChannelSpec]
    normalization: List[NormSpec]
    patch_size: Tuple[int, int, int]
    labels: List[LabelSpec]
    architecture: ArchSpec
    spacing: Optional[Tuple[float, float, float]] = None
    orientation: str = "RAS"
    sliding_window: SlidingWindowSpec = field(default_factory=SlidingWindowSpec)
    ignore_label: int = 255
    provenance: Dict[str, Any] = field(default_factory=dict)
    plan_version: int = PLAN_VERSION

    # ----------------------------------------------------------------- derived
    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def num_classes(self) -> int:
        """Number of network outputs: one per label, background (value 0) included (0: backbone plan)."""
        return len(self.labels)

    def label_values(self) -> List[int]:
        return [lab.value for lab in self.labels]

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        d["spacing"] = None if self.spacing is None else list(self.spacing)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def hash(self) -> str:
        """sha256 of the canonical JSON, minus provenance: equal hashes mean identical preprocessing and net."""
        d = self.to_dict()
        d.pop("provenance", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Plan":
        """A deep copy with some fields changed."""
        new = dataclasses.replace(copy.deepcopy(self), **changes)
        new.validate()
        return new

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "plan") -> "Plan":
        """Build and validate a plan from parsed JSON; raises `PackageError` with one line per problem."""
        if not isinstance(d, dict):
            raise PackageError(f"{source}: a plan must be a JSON object")
        version = d.get("plan_version")
        if not isinstance(version, int):
            raise PackageError(f"{source}: 'plan_version' is missing; this file is not a medssl plan")
        if version > PLAN_VERSION:
            raise PackageError(
                f"{source}: plan version {version} was written by a newer medssl (this one reads up to "
                f"{PLAN_VERSION}); upgrade medssl with 'pip install -U medssl'"
            )
        try:
            plan = cls(
                channels=[ChannelSpec(**c) for c in _req(d, "channels", list, source)],
                normalization=[NormSpec(**n) for n in _req(d, "normalization", list, source)],
                patch_size=tuple(int(p) for p in _req(d, "patch_size", list, source)),  # type: ignore[arg-type]
                labels=[_label(lab) for lab in _req(d, "labels", list, source)],
                architecture=ArchSpec(**_req(d, "architecture", dict, source)),
                spacing=None if d.get("spacing") is None else tuple(float(s) for s in d["spacing"]),  # type: ignore
                orientation=str(d.get("orientation", "RAS")),
                sliding_window=_sliding_window(d.get("sliding_window", {})),
                ignore_label=int(d.get("ignore_label", 255)),
                provenance=dict(d.get("provenance", {})),
                plan_version=version,
            )
            plan.validate(source)  # inside: a field of the wrong type fails its comparisons with a TypeError
        except (TypeError, ValueError) as exc:
            raise PackageError(f"{source}: malformed plan ({exc}); regenerate it with medssl") from None
        return plan

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PackageError(f"plan file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PackageError(f"plan file {path} is not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    # ----------------------------------------------------------------- checks
    def validate(self, source: str = "plan") -> None:
        """Raise `PackageError` when the plan is internally inconsistent."""
        problems = list(_problems(self))
        if problems:
            raise PackageError(f"{source}: " + "; ".join(problems))


NATIVE = "native"
SpacingDefault = Union[None, str, Tuple[float, float, float]]


@dataclass(frozen=True)
class PlanDefaults:
    """The preprocessing a backbone was pretrained with, which a fine-tuned plan inherits unless the user
    overrides it (nnU-Net's ``like_nnssl`` planner). Produced by the weight catalog, an nnssl checkpoint's
    adaptation plan, a ``medssl pretrain`` export and a model package.

    ``spacing``: ``None`` (unset: the data decide), ``"native"`` (pretrained at each scan's own spacing: nothing
    to inherit, the data decide too) or a triple in (i, j, k) order; other fields: ``None``/empty when unset.
    ``origin`` names who set them (shown in the plan's provenance).
    """

    spacing: SpacingDefault = None
    orientation: Optional[str] = None
    normalization: Tuple[NormSpec, ...] = ()
    patch_size: Optional[Tuple[int, int, int]] = None
    channels: Tuple[ChannelSpec, ...] = ()
    labels: Tuple[LabelSpec, ...] = ()
    origin: str = ""

    @property
    def spacing_triple(self) -> Optional[Tuple[float, float, float]]:
        """The spacing to inherit, or None (unset or native)."""
        return None if self.spacing in (None, NATIVE) else self.spacing  # type: ignore[return-value]

    @classmethod
    def from_json(cls, d: Dict[str, Any], origin: str) -> "PlanDefaults":
        """From catalog/nnssl JSON: ``spacing`` absent = unset, ``null`` = native; ``normalization`` a list of
        ``{scheme, params}``; ``patch_size`` three integers."""
        spacing = None
        if "spacing" in d:
            spacing = NATIVE if d["spacing"] is None else tuple(float(s) for s in d["spacing"])
        patch = d.get("patch_size")
        return cls(spacing=spacing, orientation=d.get("orientation"),  # type: ignore[arg-type]
                   normalization=tuple(NormSpec(n["scheme"], dict(n.get("params", {})))
                                       for n in d.get("normalization") or []),
                   patch_size=None if patch is None else tuple(int(p) for p in patch),  # type: ignore[arg-type]
                   origin=origin)

    @classmethod
    def of_plan(cls, plan: "Plan", origin: str, labels: bool = False) -> "PlanDefaults":
        """The defaults a plan hands on (a package's labels and channels too, with ``labels=True``)."""
        return cls(spacing=NATIVE if plan.spacing is None else tuple(plan.spacing), orientation=plan.orientation,
                   normalization=tuple(NormSpec(n.scheme, dict(n.params)) for n in plan.normalization),
                   patch_size=tuple(plan.patch_size), channels=tuple(plan.channels) if labels else (),
                   labels=tuple(plan.labels) if labels else (), origin=origin)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["spacing"] = list(self.spacing) if isinstance(self.spacing, tuple) else self.spacing
        return d


def _req(d: Dict[str, Any], key: str, typ: type, source: str) -> Any:
    if not isinstance(d.get(key), typ):
        raise PackageError(f"{source}: '{key}' is missing or not a JSON {typ.__name__}")
    return d[key]


def _label(d: Dict[str, Any]) -> LabelSpec:
    d = dict(d)
    if "color" in d:
        d["color"] = tuple(float(c) for c in d["color"])
    return LabelSpec(**d)


def _sliding_window(d: Dict[str, Any]) -> SlidingWindowSpec:
    d = dict(d)
    if "mirror_axes" in d:
        d["mirror_axes"] = tuple(int(a) for a in d["mirror_axes"])
    return SlidingWindowSpec(**d)


def _problems(p: Plan):
    if not p.channels:
        yield "at least one channel is needed"
    if len(p.normalization) != len(p.channels):
        yield f"{len(p.normalization)} normalisation entries for {len(p.channels)} channels"
    if len(p.patch_size) != 3 or min(p.patch_size) < 1:
        yield f"patch_size must be three positive integers, got {list(p.patch_size)}"
    if p.spacing is not None and (len(p.spacing) != 3 or min(p.spacing) <= 0):
        yield f"spacing must be three positive numbers or null, got {list(p.spacing)}"
    if p.orientation not in ORIENTATIONS:
        yield f"orientation {p.orientation!r} is not one of {', '.join(ORIENTATIONS)}"
    values = [lab.value for lab in p.labels]
    if values and (len(values) < 2 or values[0] != 0):  # no labels: a backbone/pretraining plan
        yield "labels must start with background (value 0) and name at least one structure"
    if len(set(values)) != len(values) or any(not 0 <= v < 65536 for v in values):
        yield "label values must be distinct integers in 0..65535"
    if p.ignore_label in values[1:]:
        yield f"ignore_label {p.ignore_label} is also a label value"
    if not 0 <= p.sliding_window.overlap < 1:
        yield f"sliding_window.overlap must be in [0, 1), got {p.sliding_window.overlap}"
    if p.sliding_window.sw_batch_size < 1:
        yield "sliding_window.sw_batch_size must be at least 1"


def default_labels(names: Sequence[str]) -> List[LabelSpec]:
    """Background plus one label per name (values 1..N) with distinct colours."""
    from .colors import label_color

    out = [LabelSpec(0, "background", (0.0, 0.0, 0.0))]
    out += [LabelSpec(i, name, label_color(i)) for i, name in enumerate(names, start=1)]
    return out


def check_channel_count(plan: Plan, n: int, what: str = "input") -> None:
    """Raise `InputError` unless ``n`` images were given for the plan's channels."""
    if n != plan.num_channels:
        names = ", ".join(c.name for c in plan.channels)
        raise InputError(
            f"the model expects {plan.num_channels} channel(s) ({names}) but {n} {what} image(s) were given; "
            f"pass one file per channel, in that order"
        )

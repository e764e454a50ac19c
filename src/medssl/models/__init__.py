"""Networks: backbone and decoder registries and the SegmentationNet built from a plan."""
from . import backbones, decoders  # noqa: F401  (registration)
from .registry import BACKBONES, DECODERS
from .segmentation import SegmentationNet, build_from_plan, build_network, resolve_arch

__all__ = ["BACKBONES", "DECODERS", "SegmentationNet", "build_from_plan", "build_network", "resolve_arch"]

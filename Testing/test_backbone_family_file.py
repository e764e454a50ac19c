"""A backbone family is one file: its registration alone puts it in every table the hub and SSL use."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
from torch import nn

from medssl.models import BACKBONES
from medssl.models.registry import BackboneFamily, CheckpointFormat


class ToyEncoder(nn.Module):
    """Two conv stages: features at /1 and /2."""

    def __init__(self, in_channels: int, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv3d(in_channels, width, 3, padding=1)
        self.down = nn.Conv3d(width, 2 * width, 3, stride=2, padding=1)
        self.in_channels, self.feature_channels, self.feature_strides, self.size_divisor = in_channels, [width, 2 * width], [1, 2], 2

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        a = self.stem(x)
        return [a, self.down(a)]


def toy_format() -> CheckpointFormat:
    def convert(sd):
        return {("encoder." + k[len("toy."):] if k.startswith("toy.") else k): v for k, v in sd.items()}

    def infer(sd) -> Dict[str, Any]:
        return {"width": int(sd["encoder.stem.weight"].shape[0])}

    return CheckpointFormat("toy_format", convert, lambda keys: any(k.startswith("toy.") for k in keys), infer,
                            lambda converted: "toy_entry", input_keys=("encoder.stem.weight",))


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setattr(BACKBONES, "_items", dict(BACKBONES._items))  # registered for this test only
    family = BackboneFamily(lambda c, **kw: ToyEncoder(c, **kw), lambda preset=None, **kw: {"width": 4, **kw},
                            "toy", tokens=False, default_decoder="unet", checkpoint=toy_format())
    BACKBONES.register("toy")(family)
    return family


def test_one_registration_reaches_every_table(toy_family):
    from medssl.hub.backbone_source import default_decoder, resolve_backbone
    from medssl.hub.converters import CONVERTERS, FORMATS, adapt_input_channels, detect_family
    from medssl.hub.converters_infer import infer_arch

    assert FORMATS["toy"] is toy_family.checkpoint and "toy_format" in CONVERTERS
    file_keys = {"toy.stem.weight": torch.zeros(6, 1, 3, 3, 3), "toy.down.weight": torch.zeros(12, 6, 3, 3, 3)}
    assert detect_family(file_keys) == "toy"
    assert infer_arch("toy", CONVERTERS["toy_format"](file_keys)) == {"width": 6}
    assert default_decoder("toy") == "unet" and resolve_backbone("toy").arch.decoder == "unet"
    stem = torch.randn(6, 1, 3, 3, 3)
    wide = adapt_input_channels("toy", "encoder.stem.weight", stem, torch.zeros(6, 2, 3, 3, 3))
    assert torch.allclose(wide, torch.cat([stem, stem], 1) / 2)  # the family's input key, nnssl's rule
    assert adapt_input_channels("toy", "encoder.down.weight", stem, torch.zeros(6, 2, 3, 3, 3)) is None


def test_the_real_families_declare_everything():
    from medssl.hub import catalog
    from medssl.hub.converters import FORMATS

    for entry in catalog.entries().values():
        family = BACKBONES.get(entry.family)
        assert family.checkpoint is FORMATS[entry.family] and family.checkpoint.name == entry.converter
        assert family.default_decoder == entry.arch["decoder"], entry.id
    assert [n for n, f in BACKBONES.items() if f.tokens] == ["vit3d"]

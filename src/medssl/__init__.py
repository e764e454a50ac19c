"""medssl: few-label 3D medical image segmentation from self-supervised pretrained backbones.

Public API (imports are lazy so that ``import medssl`` stays light, e.g. inside 3D Slicer):

- `Plan` (`medssl.plan`): the data contract.
- `preprocess` (`medssl.data.preprocess`): the one deterministic preprocessing.
- `Predictor` (`medssl.inference.predictor`): ``Predictor.from_package(path).predict(images)``.
- `finetune` (`medssl.train.finetune`): fine-tune a backbone on labelled volumes.
- `create_backbone` (`medssl.hub.backbone_source`): a backbone by architecture, catalog id or file.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Plan": ("medssl.plan", "Plan"),
    "preprocess": ("medssl.data.preprocess", "preprocess"),
    "Predictor": ("medssl.inference.predictor", "Predictor"),
    "finetune": ("medssl.train.finetune", "finetune"),
    "create_backbone": ("medssl.hub.backbone_source", "create_backbone"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'medssl' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]

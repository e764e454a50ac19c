"""Self-supervised pretraining: methods (`METHODS`), their heads, losses, masks, EMA schedules and views.

Layout (style guide section 9): `base` (the method contract and registry), `heads`, `losses/`, `masking`,
`ema`, `views` and `intensity` (view generation), `batches` (per-step batch source), `param_groups`
(layer-wise LR decay) and `methods/` (one file per method: dino3d, mae3d, voco, volume_fusion).
"""
from . import methods  # noqa: F401  (registration)
from .base import METHODS, SSLMethod, build_method

__all__ = ["METHODS", "SSLMethod", "build_method"]

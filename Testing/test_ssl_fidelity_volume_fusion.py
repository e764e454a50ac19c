"""Volume Fusion views follow PyMIC's ``Crop4VolumeFusion`` and the MIS-FM paper's box sizes.

Oracle: PyMIC's own ``adaptive_contrast_adjust`` (HiLab-git/PyMIC 0.6.2, installed beside the project by
``make test``), read from its source file and run here; the module itself cannot be imported without
scikit-image, which the project does not install.
"""
from __future__ import annotations

import ast

import numpy as np
import torch

from medssl.data.volumes import VolumeSet
from medssl.ssl import intensity
from medssl.ssl.methods.volume_fusion import FusionViews, VolumeFusionConfig, fusion_map
from upstream import reference_folder


def pymic_function(name: str):
    path = reference_folder("pymic-0.6.2") / "pymic" / "transform" / "intensity.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)  # noqa: S102 - upstream reference code
    return namespace[name]


def test_adaptive_contrast_equals_pymic():
    upstream = pymic_function("adaptive_contrast_adjust")
    x = np.random.default_rng(0).gamma(2.0, 50.0, size=(12, 16, 20))
    for p0, p1 in ((0.1, 99.9), (1.7, 98.2)):
        theirs = upstream(x.copy(), p0, p1)
        ours = intensity.adaptive_contrast(torch.from_numpy(x), p0, p1).numpy()
        assert np.allclose(ours, theirs, atol=1e-9)


def test_box_sides_follow_the_paper():
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(300):
        painted = fusion_map(rng, (128, 128, 64), 2, (1, 1))  # one box of class 1
        idx = np.nonzero(painted)
        sides.append([int(i.max() - i.min() + 1) for i in idx])
    sides = np.array(sides)
    assert sides.min(0).tolist() == [8, 8, 8]  # U(8, 80) in-plane, U(8, 40) across slices
    assert sides.max(0).tolist() == [80, 80, 40]


def test_both_crops_are_inverted_together():
    ramp = np.add.outer(np.add.outer(np.arange(40.0), np.arange(40.0)), np.arange(40.0)).astype(np.float32)
    volumes = VolumeSet([ramp, ramp[::-1].copy()])
    keep = FusionViews(VolumeFusionConfig(p_invert=0.0), (16, 16, 16)).batch(volumes, np.random.default_rng(3), 2)
    flip = FusionViews(VolumeFusionConfig(p_invert=1.0), (16, 16, 16)).batch(volumes, np.random.default_rng(3), 2)
    assert torch.equal(keep["label"], flip["label"])
    assert torch.allclose(flip["image"], 1.0 - keep["image"], atol=1e-6)  # a*(1-I1) + (1-a)*(1-I2) = 1 - fused
    assert float(keep["image"].min()) >= 0.0 and float(keep["image"].max()) <= 1.0  # contrast + gamma: [0, 1]

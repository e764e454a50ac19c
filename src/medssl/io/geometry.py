"""Image grids and the one axis convention of medssl.

SimpleITK images carry geometry in LPS physical coordinates: ``size``/``spacing`` in (i, j, k) order,
``origin`` the centre of voxel (0, 0, 0), ``direction`` a row-major 3x3 matrix whose *columns* are the
i, j, k axes. ``sitk.GetArrayFromImage`` returns (k, j, i); medssl tensors are (i, j, k), so
`array_ijk` / `image_from_ijk` transpose exactly once, here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import SimpleITK as sitk

Vec3 = Tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """The sampling grid of a 3D image (all in LPS, (i, j, k) order)."""

    size: Tuple[int, int, int]
    spacing: Vec3
    origin: Vec3
    direction: Tuple[float, ...]  # 9 values, row-major, columns = axes

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(
            tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
            tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
            tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
            tuple(float(d) for d in image.GetDirection()),
        )

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["size"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))  # type: ignore

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction of ``image`` (whose size must equal ``self.size``)."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {image.GetSize()} != grid size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def matrix(self) -> np.ndarray:
        """4x4 index (i, j, k) -> LPS millimetre transform."""
        m = np.eye(4)
        m[:3, :3] = np.array(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def physical_extent(self) -> np.ndarray:
        """Side lengths in mm covered by the voxels (size x spacing), (i, j, k) order."""
        return np.array(self.size) * np.array(self.spacing)


def same_grid(a: Grid, b: Grid, rtol: float = 1e-4, atol_mm: float = 1e-3) -> bool:
    """True when two grids sample the same points (sizes equal, geometry within tolerance)."""
    if a.size != b.size:
        return False
    return bool(
        np.allclose(a.spacing, b.spacing, rtol=rtol, atol=0)
        and np.allclose(a.origin, b.origin, atol=atol_mm + rtol * max(a.spacing))
        and np.allclose(a.direction, b.direction, atol=rtol)
    )


def array_ijk(image: sitk.Image, dtype=np.float32) -> np.ndarray:
    """Voxel array in (i, j, k) order as a new C-contiguous array of ``dtype``."""
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0), dtype=dtype)


def image_from_ijk(array: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image with voxels ``array`` (i, j, k) on ``grid``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    return grid.apply_to(image)


def orientation_code(image: sitk.Image) -> str:
    """Three-letter code (e.g. ``LPS``, ``RAS``, ``LSA``) of the closest axis-aligned orientation."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def world_lps_coordinates(grid: Grid, axis: int) -> np.ndarray:
    """LPS coordinate ``axis`` (0=x, 1=y, 2=z) of every voxel centre, shape (I, J, K)."""
    idx = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid.size], indexing="ij")
    m = grid.matrix()
    return m[axis, 0] * idx[0] + m[axis, 1] * idx[1] + m[axis, 2] * idx[2] + m[axis, 3]

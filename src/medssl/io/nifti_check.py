"""Detect NIfTI files that ITK's NIfTI reader would read wrongly without a word.

Truncated files (ITK fills the missing voxels with zeros): the header gives the byte offset of the voxels and
their count; the file (decompressed, for ``.nii.gz``) must be at least that long, and a gzip stream must not
end early. Zero or negative ``pixdim`` (ITK silently reads them as a spacing of 1 mm).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple

GZIP_MAGIC = b"\x1f\x8b"


def _read_prefix_and_length(path: Path, n: int) -> Tuple[bytes, Optional[int]]:
    """First ``n`` decompressed bytes and the decompressed length (None if the gzip stream is truncated)."""
    with open(path, "rb") as f:
        raw_start = f.read(2)
        f.seek(0)
        if raw_start != GZIP_MAGIC:
            data = f.read(n)
            return data, path.stat().st_size
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        prefix, total = b"", 0
        for chunk in iter(lambda: f.read(1 << 20), b""):
            out = d.decompress(chunk)
            total += len(out)
            if len(prefix) < n:
                prefix += out[: n - len(prefix)]
            if d.eof:
                break
        return prefix, (total if d.eof else None)


def _expected_length(header: bytes) -> Optional[int]:
    """vox_offset + voxel bytes from a NIfTI-1 or NIfTI-2 header; None if it is not NIfTI."""
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            return _length(dims, bitpix, offset)
        if size == 540 and len(header) >= 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            return _length(dims, bitpix, offset)
    return None


def _length(dims, bitpix: int, offset: int) -> Optional[int]:
    ndim = int(dims[0])
    if not 0 < ndim <= 7 or bitpix <= 0:
        return None
    count = 1
    for d in dims[1: ndim + 1]:
        count *= max(int(d), 1)
    return max(offset, 352) + count * bitpix // 8


def _spacing(header: bytes) -> Optional[Tuple[float, ...]]:
    """``pixdim[1..3]`` of a NIfTI-1 or NIfTI-2 header (None if it is not NIfTI)."""
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            return struct.unpack(endian + "3f", header[80:92])
        if size == 540 and len(header) >= 540:
            return struct.unpack(endian + "3d", header[112:136])
    return None


def nifti_problem(path: str | Path) -> Optional[str]:
    """A one-line description of why a .nii/.nii.gz file is incomplete, or None if it is complete."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    header, length = _read_prefix_and_length(path, 540)
    if length is None:
        return "the compressed data ends early (truncated file)"
    expected = _expected_length(header)
    if expected is not None and length < expected:
        return f"it holds {length} bytes but its header needs {expected} (truncated file)"
    spacing = _spacing(header)
    if spacing is not None and not all(v > 0 for v in spacing):  # NaN fails too
        return f"voxel spacing {tuple(round(v, 6) for v in spacing)} in its header"
    return None

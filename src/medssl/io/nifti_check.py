"""Detect NIfTI files that ITK's NIfTI reader would read wrongly without a word.

Truncated files (ITK fills the missing voxels with zeros): the header gives the byte offset of the voxels and
their count; the file (decompressed, for ``.nii.gz``) must be at least that long, and a gzip stream must not
end early. Zero or negative ``pixdim`` (ITK silently reads them as a spacing of 1 mm). NaN or infinite voxels
in floating-point files (ITK's NIfTI reader turns them into 0): the raw voxels are streamed once, in bounded
chunks, and counted with ``np.isfinite``. Header layout: the NIfTI-1 and NIfTI-2 specifications (nifti1.h,
nifti2.h).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 22  # 4 MiB of decompressed bytes at a time: memory stays bounded for any file size
HEADER_BYTES = 540
FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # float32, float64, complex64, complex128 (as pairs)


@dataclass
class NiftiHeader:
    """The fields of a NIfTI-1/2 header that the checks need."""

    endian: str
    dims: Tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: int
    spacing: Tuple[float, ...]

    @property
    def expected_length(self) -> Optional[int]:
        """vox_offset + voxel bytes; None for a header that makes no sense."""
        ndim = int(self.dims[0])
        if not 0 < ndim <= 7 or self.bitpix <= 0:
            return None
        count = 1
        for d in self.dims[1: ndim + 1]:
            count *= max(int(d), 1)
        return self.data_start + count * self.bitpix // 8

    @property
    def data_start(self) -> int:
        return max(self.vox_offset, 352)


def parse_header(header: bytes) -> Optional[NiftiHeader]:
    """A NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header in either byte order; None if it is not NIfTI."""
    for e in "<>":
        if len(header) < 4:
            return None
        size = struct.unpack(e + "i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            datatype, bitpix = struct.unpack(e + "2h", header[70:74])
            return NiftiHeader(e, struct.unpack(e + "8h", header[40:56]), datatype, bitpix,
                               int(struct.unpack(e + "f", header[108:112])[0]), struct.unpack(e + "3f", header[80:92]))
        if size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(e + "2h", header[12:16])
            return NiftiHeader(e, struct.unpack(e + "8q", header[16:80]), datatype, bitpix,
                               struct.unpack(e + "q", header[168:176])[0], struct.unpack(e + "3d", header[112:136]))
    return None


def _chunks(path: Path) -> Iterator[bytes]:
    """The (decompressed) bytes of ``path`` in pieces of at most `CHUNK`; raises EOFError if a gzip stream ends
    early. ``max_length`` keeps a highly compressed stream from expanding all at once."""
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
        f.seek(0)
        if not compressed:
            yield from iter(lambda: f.read(CHUNK), b"")
            return
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for raw in iter(lambda: f.read(1 << 20), b""):
            data = raw
            while data and not d.eof:
                out = d.decompress(data, CHUNK)
                if out:
                    yield out
                data = d.unconsumed_tail
            if d.eof:
                return
        raise EOFError("truncated gzip stream")


class _FiniteCounter:
    """Counts non-finite values in a byte stream of ``dtype`` voxels starting at ``start``, ``stop`` bytes."""

    def __init__(self, dtype: np.dtype, start: int, stop: int) -> None:
        self.dtype, self.start, self.stop, self.pos, self.rest, self.bad = dtype, start, stop, 0, b"", 0

    def feed(self, chunk: bytes) -> None:
        lo, hi = max(self.start - self.pos, 0), min(self.stop - self.pos, len(chunk))
        self.pos += len(chunk)
        if hi <= lo:
            return
        data = self.rest + chunk[lo:hi]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], self.dtype)
        self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.rest = data[usable:]


@dataclass
class NiftiReport:
    """What `inspect_nifti` found: ``problem`` (truncated or bad spacing) and the count of non-finite voxels."""

    problem: Optional[str] = None
    bad_spacing: bool = False
    nonfinite: int = 0


def inspect_nifti(path: str | Path, count_nonfinite: bool = True) -> NiftiReport:
    """Stream a .nii/.nii.gz file once: truncation, zero or negative spacing and (optionally) NaN/Inf voxels."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return NiftiReport()
    first, hdr, total, counter = True, None, 0, None
    try:
        for chunk in _header_first(_chunks(path)):
            if first:
                first, hdr = False, parse_header(chunk[:HEADER_BYTES])
                counter = _counter(hdr, count_nonfinite)
            if counter is not None:
                counter.feed(chunk)
            total += len(chunk)
    except EOFError:
        return NiftiReport("the compressed data ends early (truncated file)")
    except zlib.error:
        return NiftiReport("the compressed data is damaged")
    return _report(hdr, total, counter)


def _header_first(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The same bytes, the first piece holding at least the whole header (or the whole file if shorter)."""
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) >= HEADER_BYTES:
            break
    if first:
        yield first
    yield from chunks


def _counter(hdr: Optional[NiftiHeader], wanted: bool):
    """A `_FiniteCounter` for a floating-point file, else None."""
    if not wanted or hdr is None or hdr.datatype not in FLOAT_TYPES or hdr.expected_length is None:
        return None
    return _FiniteCounter(np.dtype(hdr.endian + FLOAT_TYPES[hdr.datatype]), hdr.data_start, hdr.expected_length)


def _report(hdr: Optional[NiftiHeader], length: int, counter) -> NiftiReport:
    if hdr is None:
        return NiftiReport()
    expected = hdr.expected_length
    if expected is not None and length < expected:
        return NiftiReport(f"it holds {length} bytes but its header needs {expected} (truncated file)")
    if not all(v > 0 for v in hdr.spacing):  # NaN fails too
        return NiftiReport(f"voxel spacing {tuple(round(v, 6) for v in hdr.spacing)} in its header", bad_spacing=True)
    return NiftiReport(nonfinite=counter.bad if counter is not None else 0)


def nifti_problem(path: str | Path) -> Optional[str]:
    """A one-line description of why a .nii/.nii.gz file is incomplete, or None if it is complete."""
    return inspect_nifti(path, count_nonfinite=False).problem

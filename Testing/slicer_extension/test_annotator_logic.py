"""The annotator's Logic helpers in MedSSLLib (sparse slices, model sharing, ranking, folders), checked
against the real medssl command line."""
from __future__ import annotations

import pytest

from MedSSLLib.commands import SPARSE_AXES, FinetuneOptions, finetuneArgs


def test_sparse_slices_option_parses_in_the_real_cli():
    from medssl.cli.main import build_parser
    from medssl.data.sparse import AXES

    assert SPARSE_AXES == AXES
    args = finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out", FinetuneOptions(sparseSlices="axial"))
    assert build_parser().parse_args(args).sparse_slices == "axial"
    assert build_parser().parse_args(finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out",
                                                  FinetuneOptions())).sparse_slices is None
    with pytest.raises(ValueError, match="sparse-slice axis"):
        finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out", FinetuneOptions(sparseSlices="oblique"))

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


def test_export_and_import_buttons_logic_round_trip(realMedssl, medsslHome, tinyPackage, tmp_path):
    from MedSSLLib.packages import listPackages
    from MedSSLLib.share_logic import ShareLogic

    logic = ShareLogic(realMedssl)
    archive = tmp_path / "tiny.zip"
    job = logic.exportModel(tinyPackage, archive, wait=True, timeout=300)
    assert job.outputs["archive"] == archive and archive.is_file()
    assert job.outputs["licenceLines"][0] == "licence: Apache-2.0 (test model)"
    preview = logic.previewArchive(archive)
    assert (preview.name, preview.licence, preview.licenceNotice) == ("tiny_model", "Apache-2.0 (test model)", "")
    job = logic.importModel(archive, wait=True, timeout=300)
    assert job.outputs["package"].path == medsslHome / "models" / "tiny_model"
    assert [p.name for p in listPackages()] == [job.outputs["package"].name]
    with pytest.raises(RuntimeError, match="already exists"):
        logic.importModel(archive, wait=True, timeout=300)
    with pytest.raises(ValueError, match="model zip"):
        logic.previewArchive(tinyPackage / "plan.json")

"""The weight catalog: schema, completeness, consistency with the code, readable without torch."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers_backbones import REPO

from medssl.hub import catalog

ISSUE_IDS = {"3dino_vit_l", "openmind_resencl_mae", "openmind_resencl_s3d", "openmind_resencl_voco",
             "openmind_resencl_vf", "openmind_resencl_simclr", "openmind_resencl_swinunetr", "voco_b", "voco_l", "voco_h",
             "vocomni_b", "vocomni_l", "vocomni_h", "misfm_pctnet_ct10k", "misfm_fmunet_abd1k"}


def raw() -> dict:
    return json.loads(catalog.CATALOG_FILE.read_text())


def test_catalog_is_valid_and_complete():
    assert catalog.validate_catalog(raw()) == []
    assert set(catalog.ids()) == ISSUE_IDS


def test_catalog_reads_without_torch():
    code = ("import sys; from medssl.hub import catalog; ids = catalog.ids(); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(ids))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(ISSUE_IDS))


@pytest.mark.parametrize("entry_id", sorted(ISSUE_IDS))
def test_entry_fits_the_code(entry_id):
    from medssl.data.normalization import NORMALIZERS, normalize
    from medssl.hub.converters import CONVERTERS, FORMATS
    from medssl.models import DECODERS, resolve_arch

    e = catalog.get_entry(entry_id)
    assert e.converter in CONVERTERS and FORMATS[e.family].name == e.converter  # the family declares its format
    arch = resolve_arch(e.arch["backbone"], e.arch["decoder"], e.arch["backbone_kwargs"], e.arch["decoder_kwargs"])
    assert arch.decoder in DECODERS and "preset" not in arch.backbone_kwargs
    norm = e.plan_defaults["normalization"][0]
    assert norm["scheme"] in NORMALIZERS
    x = np.linspace(-1200, 1200, 1000, dtype=np.float32)
    assert np.isfinite(normalize(x, norm["scheme"], norm["params"])).all()
    assert e.citation and e.licence and e.size_bytes > 1e8 and e.file_name in e.file_names
    assert all(p.startswith("decoder.") for p in e.class_keys)  # class-count layers are never in the backbone


def test_licences_and_sources_follow_the_seed_systems():
    e = catalog.get_entry("3dino_vit_l")
    assert e.licence_requires_acceptance and e.source["gated"] and "NC-ND" in e.licence
    assert not catalog.get_entry("misfm_pctnet_ct10k").downloadable
    assert catalog.get_entry("misfm_fmunet_abd1k").file_names == ["fmunet_abk1k_volf.pt", "fmunet_abd1k_volf.pt"]
    assert all(catalog.get_entry(i).hf for i in ISSUE_IDS if not i.startswith("misfm"))
    assert catalog.get_entry("voco_h").plan_defaults["spacing"] == [1.5, 1.5, 1.5]
    assert catalog.get_entry("3dino_vit_l").plan_defaults["spacing"] is None  # native spacing
    assert "spacing" not in catalog.get_entry("misfm_pctnet_ct10k").plan_defaults  # task spacing: from the data


def _broken(mutate):
    data = copy.deepcopy(raw())
    mutate(data["entries"][0])
    return catalog.validate_catalog(data)


@pytest.mark.parametrize("mutate,pattern", [
    (lambda e: e.pop("licence"), "missing field 'licence'"),
    (lambda e: e.update(sha256="abc"), "sha256 must be 64"),
    (lambda e: e.update(evil="__import__('os')"), "unknown field 'evil'"),
    (lambda e: e.update(size_bytes="1 GB"), "'size_bytes' has type str"),
    (lambda e: e["plan_defaults"].update(patch_size=[112, 112]), "patch_size must be 3"),
    (lambda e: e["plan_defaults"]["normalization"][0].update(scheme="magic"), "normalization must be one"),
    (lambda e: e["plan_defaults"].update(orientation="up"), "orientation must be"),
    (lambda e: e["source"].update(kind="ftp"), "source kind"),
    (lambda e: e.update(family="resnet"), "family must be"),
    (lambda e: e.update(allowed_missing=[1]), "allowed_missing must be a list"),
])
def test_schema_rejects_broken_entries(mutate, pattern):
    problems = _broken(mutate)
    assert any(pattern in p for p in problems), problems


def test_duplicate_ids_and_bad_top_level_are_rejected():
    data = raw()
    data["entries"].append(copy.deepcopy(data["entries"][0]))
    assert any("duplicate ids" in p for p in catalog.validate_catalog(data))
    assert catalog.validate_catalog({"entries": []}) and catalog.validate_catalog([1, 2])


def test_unknown_id_suggests_close_ones():
    from medssl.errors import InputError

    with pytest.raises(InputError, match="Did you mean: voco_b"):
        catalog.get_entry("voco_bb")


def test_catalog_entry_is_typed_with_every_schema_field():
    """Every field the schema allows is a typed attribute (the notes fields stay in ``data``)."""
    import dataclasses

    typed = {f.name for f in dataclasses.fields(catalog.CatalogEntry)} - {"data"}
    assert typed == set(catalog.FIELDS) - {"sha256_note", "md5_note"}
    entry = catalog.get_entry("voco_b")
    assert entry.recipe == "voco" and entry.alt_file_names == [] and entry.size_bytes == entry.data["size_bytes"]

"""The catalog ids without a fingerprint of their own load through the normal path: the five other OpenMind
ResEnc-L releases (the nnssl fingerprint's structure, registered under each id and loaded by id), VoComni-L
(full load, values compared) and VoComni-H (structure check, no network memory), both built from the VoCo-L/H
fingerprints plus the decoder keys VoComni-B adds. Also: optional top-level entries of 3DINO and MIS-FM
files, the licence a file carries, licence-gated weights offline, and ``create_backbone`` with a catalog id
and a file."""
from __future__ import annotations

import pytest
import torch
from helpers_backbones import (FINGERPRINT_IDS, assert_loaded_exactly, fake_checkpoint, fingerprint, timed_load,
                               vocomni_fingerprint, write_fingerprint_fake)

from medssl.errors import InputError
from medssl.hub import catalog, download, file_import
from medssl.hub.pretrained import check_checkpoint, read_checkpoint, resolve_pretrained, tensors_of

OPENMIND = ["openmind_resencl_s3d", "openmind_resencl_voco", "openmind_resencl_vf", "openmind_resencl_simclr",
            "openmind_resencl_swinunetr"]


def test_every_catalog_id_is_covered_here_or_by_a_fingerprint():
    assert set(OPENMIND) | {"vocomni_l", "vocomni_h"} | set(FINGERPRINT_IDS.values()) == set(catalog.ids())


@pytest.mark.parametrize("entry_id", OPENMIND)
def test_openmind_release_loads_by_its_id(entry_id):
    """Checked as ``weights import FILE --id ID`` checks it, put in the cache (a hard link, as import does; the
    import itself, hashing included, is tested in test_weights_cli) and loaded by id, as ``--backbone ID`` does."""
    import os

    fake, entry = fake_checkpoint("nnssl_resencl_mae"), catalog.get_entry(entry_id)
    report, issues, _ = check_checkpoint(fake, entry_id)
    assert issues == [] and len(report.loaded) == 448
    cached = download.entry_dir(entry_id) / entry.file_name
    cached.parent.mkdir(parents=True)
    os.link(fake, cached)
    assert download.cached_file(entry) == cached
    net, report, _, source = timed_load(entry_id, entry_id)
    assert source.provenance["catalog_id"] == entry_id and source.provenance["checkpoint"] == str(cached)
    assert source.licence == catalog.get_entry(entry_id).licence  # accepted when it was imported
    assert len(report.loaded) == 448
    assert_loaded_exactly(net, report, cached, entry_id)


def test_vocomni_l_loads_exactly(tmp_path):
    """A constant-valued fake (one distinct value per tensor): every tensor must reach its own key."""
    path = write_fingerprint_fake(vocomni_fingerprint("L"), tmp_path / "VoComni_L.pt", constant=True)
    assert resolve_pretrained(str(path)).provenance["read_like"] == "vocomni_l"  # a bare file is recognised
    net, report, _, _ = timed_load(str(path), "vocomni_l", catalog_id="vocomni_l")
    assert len(report.loaded) == 167 and not report.missing and not report.unexpected
    assert net.encoder.feature_size == 96 and net.decoder.out.conv.conv.weight.shape == (21, 96, 1, 1, 1)
    assert_loaded_exactly(net, report, path, "vocomni_l")


CHECK_PEAK = """
import resource, sys, time
from medssl.hub.pretrained import check_checkpoint
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
report, issues, entry = check_checkpoint(sys.argv[1], "vocomni_h")
assert issues == [] and len(report.loaded) == 167, issues
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, time.perf_counter() - start)
"""


def test_vocomni_h_has_the_structure_of_its_network(tmp_path, capsys):
    """Structure only: a constant-valued fake (8 MB for 4.6 GB of weights) against the meta-built network. The
    memory is the peak RSS growth of a fresh process doing only the check (a process-lifetime peak measured in
    this one would depend on what earlier tests allocated)."""
    import subprocess
    import sys

    path = write_fingerprint_fake(vocomni_fingerprint("H"), tmp_path / "VoComni_H.pt", constant=True)
    done = subprocess.run([sys.executable, "-c", CHECK_PEAK, str(path)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb, seconds = map(float, done.stdout.split())
    print(f"\n[load time] vocomni_h: structure check {seconds:.2f}s, peak RSS +{grown_mb:.0f} MB")
    assert grown_mb < 1500, f"the check allocated {grown_mb:.0f} MB: the 1.2 B parameters were built"
    report, issues, entry = check_checkpoint(path, "vocomni_h")
    assert issues == [] and entry.id == "vocomni_h"
    assert len(report.loaded) == 167 and not (report.missing or report.unexpected or report.shape_mismatch)
    assert resolve_pretrained(str(path)).provenance["read_like"] == "vocomni_h"  # a bare file is recognised
    report, issues, _ = check_checkpoint(path, "vocomni_l")  # the shapes are checked, not only the names
    assert issues and len(report.shape_mismatch) > 100


@pytest.mark.parametrize("name", ["misfm_pctnet_volf", "misfm_fmunet_volf"])
def test_pymic_file_with_its_optional_entries_loads(name):
    path = fake_checkpoint(name, with_optional=True)
    assert {"iteration", "valid_pred", "model_state_dict", "optimizer_state_dict"} == set(read_checkpoint(path))
    net, report, _, _ = timed_load(str(path), FINGERPRINT_IDS[name])  # a bare file, as users pass it
    assert_loaded_exactly(net, report, path, FINGERPRINT_IDS[name])


def test_3dino_file_with_its_epoch_passes_the_check(tmp_path):
    """Through the checker (the matching `load_into` does, on the meta-built ViT-L: building the real one takes
    most of the time of a load); the full load of the file without ``epoch`` is in test_backbones_pretrained."""
    path = write_fingerprint_fake(fingerprint("3dino_vit_large"), tmp_path / "3dino_vit_weights.pth",
                                  constant=True, with_optional=True)
    assert list(read_checkpoint(path)) == ["teacher", "epoch"]
    for catalog_id in (None, "3dino_vit_l"):  # a bare file, and the file named by its id
        report, issues, entry = check_checkpoint(path, catalog_id)
        assert issues == [] and entry.id == "3dino_vit_l" and len(report.loaded) == 342
        assert not [k for k in report.missing if k.startswith("encoder.")] and not report.shape_mismatch
        assert set(report.unexpected) == {k for k in tensors_of(read_checkpoint(path), path)
                                          if k.startswith(("dino_head.", "ibot_head.")) or k == "backbone.mask_token"}


def _tiny_vit_file(path):
    from medssl.models import build_network, resolve_arch

    net = build_network(resolve_arch("vit3d", "unetr", {"preset": "test"}), 1, 2)
    state = {"backbone." + k[len("encoder."):]: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    torch.save({"teacher": state}, path)
    return path


def test_a_file_carries_the_licence_of_the_entry_it_is_read_like(tmp_path, capsys):
    misfm = catalog.get_entry("misfm_fmunet_abd1k")
    source = resolve_pretrained(str(fake_checkpoint("misfm_fmunet_volf")))
    assert source.licence.startswith(misfm.licence) and "misfm_fmunet_abd1k" in source.licence
    assert source.provenance["licence"] == source.licence and "note:" not in capsys.readouterr().err
    dino = catalog.get_entry("3dino_vit_l")
    for catalog_id in ("vit3d", "3dino_vit_l"):  # read like 3DINO by family, or named
        if catalog_id == "3dino_vit_l":
            path = write_fingerprint_fake(fingerprint("3dino_vit_large"), tmp_path / "v.pth", constant=True)
        else:
            path = _tiny_vit_file(tmp_path / "tiny_vit.pth")
        with pytest.raises(InputError, match=f"{path.name} is read like 3dino_vit_l, licensed CC BY-NC-ND.*"
                                             "run again with --accept-licence"):
            resolve_pretrained(str(path), catalog_id=catalog_id)
        source = resolve_pretrained(str(path), catalog_id=catalog_id, accept_licence=True)
        assert source.licence.startswith(dino.licence) and "NC-ND" in source.licence
        err = capsys.readouterr().err
        assert "note:" in err and "3dino_vit_l" in err and dino.licence_url in err


def test_finetune_from_a_3dino_like_file_needs_the_licence_accepted(tmp_path, kmeans_t1, kmeans_labels):
    """``medssl finetune --backbone FILE`` read like 3DINO: one line without ``--accept-licence`` (nothing
    written); with it, the package records the licence."""
    import json

    from medssl_test_utils import NO_GPU, run_cli

    argv = ["finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out", str(tmp_path / "m"),
            "--backbone", str(_tiny_vit_file(tmp_path / "tiny_vit.pth")), "--steps", "1", "--patch-size", "32", "32", "32",
            "--spacing", "4", "--progress", "none"]
    refused = run_cli(*argv, env=NO_GPU)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and not (tmp_path / "m").exists()
    assert "tiny_vit.pth is read like 3dino_vit_l" in refused.stderr and "--accept-licence" in refused.stderr
    accepted = run_cli(*argv, "--accept-licence", env=NO_GPU)
    assert accepted.returncode == 0, accepted.stderr
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert "CC BY-NC-ND" in json.dumps(meta) and meta["provenance"]["read_like"] == "3dino_vit_l"


def test_licence_gated_weights_offline_name_the_import_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = catalog.get_entry("3dino_vit_l")
    for call in (lambda: download.ensure_local(entry), lambda: resolve_pretrained("3dino_vit_l")):
        with pytest.raises(InputError) as info:
            call()
        msg = str(info.value)
        assert "HF_HUB_OFFLINE" in msg and "huggingface.co/AICONSlab/3DINO-ViT" in msg and "CC BY-NC-ND" in msg
        assert msg.endswith("medssl weights import 3dino_vit_weights.pth --id 3dino_vit_l --accept-licence")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(InputError, match="weights download 3dino_vit_l --accept-licence', or download "):
        download.ensure_local(entry)
    path = write_fingerprint_fake(fingerprint("3dino_vit_large"), tmp_path / "3dino_vit_weights.pth", constant=True)
    with pytest.raises(InputError, match="--accept-licence"):
        file_import.import_file(path, "3dino_vit_l")
    file_import.import_file(path, "3dino_vit_l", accept_licence=True)
    capsys.readouterr()
    source = resolve_pretrained("3dino_vit_l")  # from the cache: accepted when imported
    assert source.licence == entry.licence and "note:" not in capsys.readouterr().err


def test_create_backbone_with_a_catalog_id_and_a_file():
    import medssl

    path = fake_checkpoint("misfm_fmunet_volf")
    enc = medssl.create_backbone("misfm_fmunet_abd1k", checkpoint=str(path), in_channels=2)
    file_sd = tensors_of(read_checkpoint(path), path)
    own = enc.state_dict()
    assert type(enc).__name__ == "FMUNetEncoder" and set(own) == {k for k in file_sd if k.split(".")[0] in
                                                                  ("project", "encoder")}
    assert all(torch.equal(own[k], file_sd[k]) for k in own if k != "project.weight")
    assert torch.allclose(own["project.weight"], file_sd["project.weight"].repeat(1, 2, 1, 1, 1) / 2)

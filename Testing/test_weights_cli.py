"""``medssl weights`` (list, download, import, check, path, remove), offline behaviour, and fine-tuning through
``medssl finetune --backbone FILE`` from fake released checkpoints."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from helpers_backbones import fake_checkpoint, run_medssl

from medssl.cli.main import main
from medssl.hub import catalog, download
from medssl.errors import CheckpointError

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A fresh weight cache and no network for every test (also without the shared conftest)."""
    monkeypatch.setenv("MEDSSL_HOME", str(tmp_path / "medssl_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def cli(capsys, *argv: str):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_list_shows_every_entry(capsys):
    code, out, _ = cli(capsys, "weights", "list")
    assert code == 0 and all(i in out for i in catalog.ids())
    code, out, _ = cli(capsys, "weights", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == catalog.ids() and not any(r["cached"] for r in rows)
    assert [r["citation"] for r in rows] == [catalog.get_entry(i).citation for i in catalog.ids()]  # the README's field
    assert all(r["citation"] for r in rows)


def test_offline_download_names_the_file_and_the_import_command(capsys):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    code, _, err = cli(capsys, "weights", "download", "voco_b")
    line = one_error_line(err)
    assert code == 2 and "HF_HUB_OFFLINE" in line and "https://huggingface.co/Luffy503/VoCo" in line
    assert line.endswith("medssl weights import VoCo_B_SSL_head.pt --id voco_b")


def test_gated_non_commercial_weights_need_the_licence_accepted(capsys):
    code, _, err = cli(capsys, "weights", "download", "3dino_vit_l")
    assert code == 2 and "CC BY-NC-ND 4.0" in err and "--accept-licence" in one_error_line(err)
    code, _, err = cli(capsys, "weights", "download", "3dino_vit_l", "--accept-licence")
    assert code == 2 and one_error_line(err).endswith(
        "medssl weights import 3dino_vit_weights.pth --id 3dino_vit_l --accept-licence")


def test_drive_only_weights_must_be_imported(capsys):
    code, _, err = cli(capsys, "weights", "download", "misfm_pctnet_ct10k")
    line = one_error_line(err)
    assert code == 2 and "drive.google.com" in line and "medssl weights import pctnet_ct10k_volf.pt" in line


def test_no_network_is_reported_like_offline(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from medssl.errors import InputError

    def fail(*args, **kwargs):
        raise LocalEntryNotFoundError("connection failed")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(InputError, match="cannot download voco_b .*medssl weights import VoCo_B_SSL_head.pt --id voco_b"):
        download.download(catalog.get_entry("voco_b"))


def test_gated_repo_names_the_hf_login_and_hides_the_token(monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from medssl.errors import InputError

    url = "https://huggingface.co/AICONSlab/3DINO-ViT/resolve/main/3dino_vit_weights.pth"

    def refuse(*args, **kwargs):  # what the Hub answers before the terms are accepted (403)
        response = httpx2.Response(403, request=httpx2.Request("GET", url, headers={"authorization": "Bearer hf_x"}))
        raise GatedRepoError("403 Client Error: Cannot access gated repo hf_x", response=response)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(InputError) as info:
        download.download(catalog.get_entry("3dino_vit_l"), accept_licence=True)
    msg = str(info.value)
    assert msg.startswith("AICONSlab/3DINO-ViT is gated: accept its terms at https://huggingface.co/AICONSlab/")
    assert "'hf auth login' (or set HF_TOKEN)" in msg and "huggingface-cli" not in msg and "hf_x" not in msg
    assert msg == download.gated_message(catalog.get_entry("3dino_vit_l"))


def test_download_verifies_records_and_resolves_from_the_cache(monkeypatch, tmp_path):
    import huggingface_hub

    fake = fake_checkpoint("misfm_fmunet_volf")
    calls = []

    def hf_download(repo_id, filename, revision=None, local_dir=None, **kw):  # stands in for the Hub
        calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.write_bytes(fake.read_bytes())
        return str(target)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_download)
    entry = catalog.CatalogEntry({**catalog.get_entry("voco_b").data, "id": "voco_b", "md5": None})
    path = download.download(entry)
    rec = download.read_record("voco_b")
    assert calls == [("Luffy503/VoCo", "VoCo_B_SSL_head.pt")] and rec["how"] == "download"
    assert rec["sha256"] == download.file_digests(path)["sha256"] and rec["sha256_in_catalog"] is None
    bad = catalog.CatalogEntry({**entry.data, "sha256": "0" * 64})
    (path.parent / "record.json").unlink()
    path.unlink()
    with pytest.raises(CheckpointError, match=r"voco_b: the downloaded file's sha256 [0-9a-f]{64} does not match the "
                                              r"catalog; it was moved to .*VoCo_B_SSL_head\.pt\.bad; download again"):
        download.download(bad)
    assert download.cached_file(bad) is None and not any(p.suffix == ".pt" for p in path.parent.iterdir())


def test_import_check_path_remove_roundtrip(capsys, tmp_path):
    fake = tmp_path / "fmunet_abd1k_volf.pt"  # the name the MIS-FM config uses
    fake.write_bytes(fake_checkpoint("misfm_fmunet_volf").read_bytes())
    code, out, err = cli(capsys, "weights", "import", str(fake), "--id", "misfm_fmunet_abd1k")
    assert code == 0 and "imported misfm_fmunet_abd1k" in out, err
    code, out, _ = cli(capsys, "weights", "path", "misfm_fmunet_abd1k")
    cached = Path(out.strip())
    assert code == 0 and cached.name == "fmunet_abk1k_volf.pt" and cached.read_bytes() == fake.read_bytes()
    assert str(cached).startswith(os.environ["MEDSSL_HOME"])
    from medssl.hub.backbone_source import resolve_backbone

    source = resolve_backbone("misfm_fmunet_abd1k")  # offline, from the cache
    assert source.name == "misfm_fmunet_abd1k" and source.plan_defaults.patch_size == (128, 128, 64)
    code, out, _ = cli(capsys, "weights", "list", "--json")
    assert [r["cached"] for r in json.loads(out) if r["id"] == "misfm_fmunet_abd1k"] == [str(cached)]
    code, out, _ = cli(capsys, "weights", "remove", "misfm_fmunet_abd1k")
    assert code == 0 and not cached.exists()
    code, _, err = cli(capsys, "weights", "path", "misfm_fmunet_abd1k")
    assert code == 2 and "not in the cache" in one_error_line(err)


def test_import_refuses_a_file_of_another_family(capsys):
    code, _, err = cli(capsys, "weights", "import", str(fake_checkpoint("voco_b_ssl_head")), "--id", "misfm_fmunet_abd1k")
    assert code == 2 and re.search("does not look like a fmunet checkpoint", one_error_line(err))
    assert download.cached_file(catalog.get_entry("misfm_fmunet_abd1k")) is None


@pytest.mark.parametrize("name,entry_id", [("nnssl_resencl_mae", "openmind_resencl_mae"), ("voco_b_ssl_head", "voco_b"),
                                           ("misfm_pctnet_volf", "misfm_pctnet_ct10k")])
def test_check_json_reports_a_loadable_file(capsys, name, entry_id):
    code, out, err = cli(capsys, "weights", "check", str(fake_checkpoint(name)), "--id", entry_id, "--json")
    rep = json.loads(out)
    assert code == 0, err
    assert set(rep) == {"id", "loaded", "missing", "unexpected", "shape_mismatch", "sha256", "sha256_ok"}
    assert rep["id"] == entry_id and rep["loaded"] and not [k for k in rep["missing"] if k.startswith("encoder.")]
    assert re.fullmatch("[0-9a-f]{64}", rep["sha256"]) and rep["sha256_ok"] in (None, False)  # random values


def test_check_fails_when_backbone_tensors_are_missing(capsys, tmp_path):
    sd = torch.load(fake_checkpoint("misfm_fmunet_volf"), weights_only=True)
    del sd["model_state_dict"]["encoder.en_conv4.conv_list.1.3.weight"]
    torch.save(sd, tmp_path / "partial.pt")
    code, out, err = cli(capsys, "weights", "check", str(tmp_path / "partial.pt"), "--id", "misfm_fmunet_abd1k", "--json")
    assert code == 1 and json.loads(out)["missing"] == ["encoder.encoder.en_conv4.conv_list.1.3.weight"]
    assert "1 of 58 backbone tensors missing" in err
    code, _, err = cli(capsys, "weights", "check", str(fake_checkpoint("voco_b_ssl_head")), "--id", "3dino_vit_l")
    assert code == 2 and "does not look like a vit3d checkpoint" in one_error_line(err)


def _finetune(tmp_path, backbone: str, *extra: str):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"spacing": [4, 4, 4], "batch_size": 1, "loop": {"validate_every": 1, "checkpoint_every": 1}}))
    image, labels = ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz", ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"
    if not image.exists():
        pytest.fail(f"{image} is missing (insighttoolkit5-examples)") if os.environ.get("CI") else pytest.skip("no ITK data")
    proc = run_medssl("finetune", "--images", str(image), "--labels", str(labels), "--out", str(tmp_path / "m"),
                      "--backbone", backbone, "--steps", "1", "--patch-size", "64", "64", "64", "--config", str(cfg),
                      "--device", "cpu", "--progress", "json", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from medssl.hub.package import load_package

    return load_package(tmp_path / "m")


@pytest.mark.slow
def test_finetune_cli_from_a_fake_openmind_checkpoint(tmp_path):
    """Frozen backbone: the package's encoder must be the file's encoder.stem/stages (nnssl converter)."""
    from medssl.hub.converters import CONVERTERS
    from medssl.hub.pretrained import read_checkpoint, tensors_of

    fake = fake_checkpoint("nnssl_resencl_mae")
    plan, net, meta = _finetune(tmp_path, str(fake), "--freeze-backbone")
    assert plan.architecture.backbone == "resenc" and plan.architecture.backbone_kwargs["features_per_stage"][-1] == 320
    assert plan.normalization[0].scheme == "zscore" and plan.normalization[0].params["per_image"]  # nnssl's plan
    assert plan.spacing == (4.0, 4.0, 4.0) and plan.patch_size == (64, 64, 64)  # user overrides win
    assert meta["provenance"]["read_like"] == "openmind_resencl_mae"
    assert meta["licence"].startswith(catalog.get_entry("openmind_resencl_mae").licence)  # the file's licence
    own = net.state_dict()
    converted = CONVERTERS["nnssl"](tensors_of(read_checkpoint(fake), fake))
    encoder = [k for k in own if k.startswith("encoder.")]
    assert len(encoder) > 400 and all(torch.equal(own[k], converted[k]) for k in encoder)
    raw = tensors_of(read_checkpoint(fake), fake)
    stem = "encoder.stem.convs.0.conv.weight"
    assert torch.equal(own[stem], raw[stem])  # by hand: the same name in the file
    fresh = [k for k in own if k.startswith(("decoder.stages.", "decoder.transpconvs.")) and k in raw]
    assert fresh and not any(torch.equal(own[k], raw[k]) for k in fresh)  # nnssl: the decoder is built fresh
    assert meta["recipe"]["name"] == "nnssl" and meta["training"]["loop"]["optimizer"] == "sgd"  # nnssl's recipe


@pytest.mark.slow
def test_finetune_cli_frozen_voco_backbone_keeps_the_pretrained_weights(tmp_path):
    fake = fake_checkpoint("voco_b_ssl_head")
    plan, net, meta = _finetune(tmp_path, str(fake), "--freeze-backbone")
    assert plan.architecture.decoder == "swin_unetr" and plan.orientation == "RAS"
    assert plan.normalization[0].scheme == "ct_window" and plan.normalization[0].params["lower"] == -175.0
    file_sd = torch.load(fake, weights_only=True)
    own = net.state_dict()
    assert all(torch.equal(own["encoder." + k], v) for k, v in file_sd.items())  # frozen: still the checkpoint
    assert meta["recipe"]["name"] == "voco" and meta["training"]["loop"]["lr"] == 3e-4  # VoCo's recipe


def test_import_and_check_say_what_they_were_given(capsys, tmp_path):
    """Found by an audit: `weights import` called a missing path, an unfinished run, a folder and a model package
    "an unknown weight-catalog id"; `weights check` called medssl's own exports no checkpoint."""
    from medssl.hub.ssl_export import save_export
    from medssl.models import build_network, resolve_arch
    from medssl.plan import ChannelSpec, NormSpec, Plan

    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    plan = Plan(channels=[ChannelSpec("image", "MR")], normalization=[NormSpec("zscore", {"mean": 0.0, "std": 1.0})],
                patch_size=(16, 16, 16), labels=[], architecture=arch, spacing=(2.0, 2.0, 2.0))
    run = tmp_path / "run"
    save_export(run / "export", plan, build_network(arch, 1, 2).state_dict(), "mae3d", 3, {})
    for spec in (run, run / "export", run / "export" / "backbone.safetensors"):
        code, out, err = cli(capsys, "weights", "check", str(spec))
        assert code == 0 and "a medssl pretraining export" in out and "check out" in out, err
    code, _, err = cli(capsys, "export", str(run / "export"), "--out", str(tmp_path / "x.zip"))
    assert code == 2 and "is a pretraining export, not a fine-tuned model package" in one_error_line(err)
    (tmp_path / "unfinished" / "training").mkdir(parents=True)
    (tmp_path / "unfinished" / "training" / "plan.json").write_text("{}")
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "weights.safetensors").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    for spec, message in ((tmp_path / "nope", "does not exist"),
                          (tmp_path / "unfinished", "is a pretraining run without an export yet"),
                          (tmp_path / "package", "is a fine-tuned model package, not pretrained weights"),
                          (tmp_path / "folder", "is a folder, neither a checkpoint file nor")):
        code, _, err = cli(capsys, "weights", "import", str(spec), "--id", "mine")
        assert code == 2 and message in one_error_line(err), err

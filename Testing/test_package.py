"""Model packages: save -> load -> verify, tampering, missing files, versions, Predictor API."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medssl.errors import PackageError
from medssl.hub.package import check_files, load_package, read_metadata, save_package, verify_package
from medssl.inference.predictor import Predictor
from medssl.io.geometry import Grid, same_grid
from medssl.plan import PLAN_VERSION, Plan


def copy(pkg, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(pkg, dst)
    return dst


def test_package_is_verified_and_self_describing(tiny_package):
    meta = verify_package(tiny_package)
    assert meta["weights_sha256"] and meta["versions"]["torch"] and meta["versions"]["monai"]
    assert [lab["name"] for lab in meta["labels"]][1:] == [f"label_{v}" for v in range(1, 7)]
    assert meta["provenance"]["backbone"] == "resenc:test" and meta["provenance"]["steps"] == 30
    plan, net, _ = load_package(tiny_package)
    assert plan.num_classes == 7 and not net.training


def test_save_load_round_trip_is_exact(tiny_package, tmp_path):
    plan, net, meta = load_package(tiny_package)
    out = save_package(tmp_path / "again", plan, net.state_dict(), {"licence": "CC0-1.0"})
    _, net2, meta2 = load_package(out)
    for (k, a), (k2, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k == k2 and np.array_equal(a.numpy(), b.numpy())
    assert meta2["weights_sha256"] == meta["weights_sha256"] and meta2["licence"] == "CC0-1.0"


def test_package_files_are_readable_by_colleagues(tiny_package, tmp_path):
    """Files get 0666 less the umask, not the 0600 of the writers' temporary files (a shared model folder)."""
    import os

    plan, net, _ = load_package(tiny_package)
    old = os.umask(0o022)
    try:
        out = save_package(tmp_path / "shared", plan, net.state_dict(), {"licence": "CC0-1.0"})
    finally:
        os.umask(old)
    assert {name: (out / name).stat().st_mode & 0o777 for name in ("weights.safetensors", "plan.json",
            "metadata.json")} == dict.fromkeys(("weights.safetensors", "plan.json", "metadata.json"), 0o644)


def test_tampered_weights_are_refused(tiny_package, tmp_path):
    pkg = copy(tiny_package, tmp_path)
    data = bytearray((pkg / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (pkg / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="weights.safetensors does not match the sha256"):
        load_package(pkg)


def _with_rehashed_weights(pkg, change) -> None:
    """Change the package's weights and write their new sha256 into metadata.json (passes the file checks)."""
    from safetensors.torch import save_file

    from medssl.hub.package import sha256_file

    from medssl.hub.package import _read_state, shared_tensor_aliases

    state = _read_state(pkg)
    change(state)
    aliases = shared_tensor_aliases(state)
    save_file({k: v for k, v in state.items() if k not in aliases}, str(pkg / "weights.safetensors"),
              metadata={"medssl_aliases": json.dumps(aliases)})
    meta = json.loads((pkg / "metadata.json").read_text())
    meta["weights_sha256"] = sha256_file(pkg / "weights.safetensors")
    (pkg / "metadata.json").write_text(json.dumps(meta))


def test_nan_weights_with_a_matching_hash_are_refused_by_predict_and_by_verify(tiny_package, tmp_path):
    pkg = copy(tiny_package, tmp_path)
    name = {}

    def poison(state):
        name["key"] = key = sorted(k for k, v in state.items() if v.is_floating_point() and v.ndim == 5)[-1]
        state[key].view(-1)[0] = float("nan")

    _with_rehashed_weights(pkg, poison)
    with pytest.raises(PackageError, match=f"[1-4] weight tensors hold NaN or infinite values \\(first: "
                                           f"{name['key']}\\); fine-tune the model again"):
        Predictor.from_package(pkg, "cpu")  # prediction loads without a forward pass: the finite check catches it
    with pytest.raises(PackageError, match="[1-4] weight tensors hold NaN"):
        verify_package(pkg)  # the full check too (its forward pass on zeros would miss this one)


def test_predict_loads_without_a_forward_pass_and_hashes_the_weights_once(tiny_package, monkeypatch):
    import medssl.hub.package as package

    hashed, forwards = [], []
    real_sha = package.sha256_file
    monkeypatch.setattr(package, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or real_sha(path, *a))
    monkeypatch.setattr(package, "_check_forward", lambda *a: forwards.append(a))
    Predictor.from_package(tiny_package, "cpu", runtime="torch")
    assert hashed.count("weights.safetensors") == 1 and forwards == []
    verify_package(tiny_package)
    assert len(forwards) == 1


def test_edited_plan_is_refused(tiny_package, tmp_path):
    pkg = copy(tiny_package, tmp_path)
    plan = json.loads((pkg / "plan.json").read_text())
    plan["spacing"] = [1, 1, 1]
    (pkg / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(PackageError, match="plan.json does not match"):
        check_files(pkg)


@pytest.mark.parametrize("name", ["plan.json", "weights.safetensors", "metadata.json"])
def test_missing_file_is_named(tiny_package, tmp_path, name):
    pkg = copy(tiny_package, tmp_path)
    (pkg / name).unlink()
    with pytest.raises(PackageError, match=f"incomplete: {name} missing"):
        check_files(pkg)


def test_plan_from_a_newer_medssl_is_refused(tiny_package):
    data = json.loads((tiny_package / "plan.json").read_text())
    data["plan_version"] = PLAN_VERSION + 1
    with pytest.raises(PackageError, match="newer medssl.*upgrade"):
        Plan.from_dict(data)


def test_plan_json_round_trip_and_hash(tiny_package):
    plan = Plan.load(tiny_package / "plan.json")
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.hash() == plan.hash()
    assert plan.replace(spacing=(1.0, 1.0, 1.0)).hash() != plan.hash()


def test_read_metadata_rejects_foreign_folder(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(PackageError, match="not a medssl model package"):
        read_metadata(tmp_path)


def test_predictor_api_low_memory_matches_full(tiny_package, kmeans_t1):
    pred = Predictor.from_package(tiny_package, device="cpu")
    full = pred.predict([str(kmeans_t1)], probabilities=True, uncertainty=True)
    slabs = pred.predict([str(kmeans_t1)], low_memory=True, uncertainty=True)
    a, b = sitk.GetArrayFromImage(full.labels), sitk.GetArrayFromImage(slabs.labels)
    assert same_grid(Grid.of(full.labels), Grid.of(slabs.labels))
    assert np.mean(a == b) > 0.995  # same windows and weights; scores kept in float16 before resampling
    probs = sitk.GetArrayFromImage(full.probabilities)
    assert probs.shape[-1] == 7 and np.allclose(probs.sum(-1), 1, atol=1e-3)
    assert full.probabilities.GetSize() == sitk.ReadImage(str(kmeans_t1)).GetSize()


def test_shared_encoder_weights_are_stored_once_and_load_back_under_every_key(tiny_package, tmp_path):
    """dna's UNetDecoder keeps the encoder as ``decoder.encoder``: its tensors are written once, named as aliases."""
    from safetensors import safe_open

    from medssl.hub.package import ALIASES_KEY, shared_tensor_aliases

    plan, net, _ = load_package(tiny_package)
    state = net.state_dict()
    aliases = shared_tensor_aliases(state)
    assert {k for k in state if k.startswith("decoder.encoder.")} <= set(aliases)  # the encoder's second copy
    assert all(torch_equal(state[k], state[v]) for k, v in aliases.items())
    out = save_package(tmp_path / "deduped", plan, state, {"licence": "CC0-1.0"})
    with safe_open(str(out / "weights.safetensors"), "pt") as handle:
        assert set(handle.keys()) == set(state) - set(aliases)
        assert json.loads(handle.metadata()[ALIASES_KEY]) == aliases
    _, back, _ = load_package(out)  # strict load: every key of the network is there again
    assert all(torch_equal(a, b) for a, b in zip(state.values(), back.state_dict().values()))
    from safetensors.torch import save_file

    save_file({k: v.clone() for k, v in state.items()}, str(tmp_path / "every_key.safetensors"))
    assert (out / "weights.safetensors").stat().st_size < 0.6 * (tmp_path / "every_key.safetensors").stat().st_size


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_aliases_cover_scalars_and_every_dtype_but_never_join_different_values():
    import torch

    from medssl.hub.package import shared_tensor_aliases

    state = {"bn.num_batches_tracked": torch.tensor(3), "bn2.num_batches_tracked": torch.tensor(3),
             "other.num_batches_tracked": torch.tensor(4), "h": torch.ones(2, dtype=torch.bfloat16),
             "h2": torch.ones(2, dtype=torch.bfloat16), "f": torch.ones(2), "empty": torch.zeros(0),
             "empty2": torch.zeros(0)}
    assert shared_tensor_aliases(state) == {"bn2.num_batches_tracked": "bn.num_batches_tracked", "h2": "h"}

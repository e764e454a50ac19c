"""Inference runtimes: the choice `auto` makes, the ONNX file in the package, OpenVINO against torch float32."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from medssl_test_utils import run_cli

from medssl.errors import InputError
from medssl.events import ListSink
from medssl.inference import runtimes
from medssl.inference.predictor import Predictor

if not runtimes.openvino_available():  # installed by 'make install' and CI: missing there is a failure
    if os.environ.get("CI"):
        raise ImportError("openvino is missing: 'make install' must install medssl[openvino]")
    pytest.skip("openvino is not installed (run 'make install')", allow_module_level=True)


def _pick(*args):
    choice = runtimes.choose_runtime(*args)
    return choice.runtime, choice.precision


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"avx2", "fma"}))


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"avx512f", "amx_bf16"}))


def test_auto_picks_openvino_bf16_on_an_amx_cpu_and_f32_without(amx, monkeypatch):
    monkeypatch.setattr(runtimes, "is_x86", lambda: True)
    cpu = torch.device("cpu")
    assert _pick("auto", cpu) == ("openvino", "bfloat16")
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"avx2"}))
    assert _pick("auto", cpu) == ("openvino", "float32")
    assert _pick("torch", cpu) == ("torch", "float32")


def test_auto_without_openvino_is_torch_bf16_where_the_cpu_has_it(amx, monkeypatch):
    monkeypatch.setattr(runtimes, "openvino_available", lambda: False)
    choice = runtimes.choose_runtime("auto", torch.device("cpu"))
    assert (choice.runtime, choice.precision, choice.amp_dtype) == ("torch", "bfloat16", torch.bfloat16)
    assert "pip install medssl[openvino]" in choice.reason
    with pytest.raises(InputError, match="needs the openvino package"):
        runtimes.choose_runtime("openvino", torch.device("cpu"))


def test_cuda_is_torch_autocast_and_openvino_refuses_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    choice = runtimes.choose_runtime("auto", torch.device("cuda"))
    assert (choice.runtime, choice.amp_dtype) == ("torch", torch.float16)
    with pytest.raises(InputError, match="runs on the CPU; add --device cpu"):
        runtimes.choose_runtime("openvino", torch.device("cuda"))
    with pytest.raises(InputError, match="float16 is for GPUs"):
        runtimes.choose_runtime("torch", torch.device("cpu"), "float16")


def test_openvino_float16_only_where_the_cpu_computes_it(amx, monkeypatch):
    """Found by a user audit: on a CPU without f16 arithmetic OpenVINO ran an f16 hint as bf16 (probabilities equal
    to bf16's) while the log said float16."""
    monkeypatch.setattr(runtimes, "openvino_available", lambda: True)
    with pytest.raises(InputError, match="float16 needs a CPU with AVX512-FP16 or AMX-FP16"):
        runtimes.choose_runtime("openvino", torch.device("cpu"), "float16")
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"amx_bf16", "amx_fp16"}))
    assert _pick("openvino", torch.device("cpu"), "float16") == ("openvino", "float16")


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n")
    assert {"avx512_bf16", "amx_tile"} <= runtimes.cpu_flags.__wrapped__(str(info))
    assert runtimes.cpu_flags.__wrapped__(str(tmp_path / "none")) == frozenset()


@pytest.mark.parametrize("flags, units", [
    ("avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX (native bf16)"),
    ("avx2 avx512f avx512_bf16", "AVX-512-BF16 (native bf16), no AMX"),  # AMD Zen 4
    ("avx2 avx512f", "AVX-512 without bf16 (no native bf16)"),
    ("fma avx2", "AVX2 (no native bf16)"),  # AMD Zen 3
    ("", "no AVX2 (no native bf16)")])
def test_cpu_description_names_the_model_and_its_vector_units(tmp_path, flags, units):
    info = tmp_path / f"cpuinfo_{len(flags)}"
    info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 {flags}\n")
    assert runtimes.cpu_description(str(info)) == f"AMD EPYC 9R14, {units}"
    assert runtimes.cpu_description(str(tmp_path / "none")) == "unknown CPU, no AVX2 (no native bf16)"


def _arrays(pred):
    return {k: sitk.GetArrayFromImage(v) for k, v in vars(pred).items() if v is not None}


def test_openvino_float32_equals_torch_with_tta_streaming_and_uncertainty(tiny_package, kmeans_t1, one_thread,
                                                                          tmp_path):
    """Same windows, flips and stitching: probabilities within 1e-4 of torch float32, on both stitching paths
    (on a 64x80x62 corner of the real scan: the 8 flips of every window on 4 passes make the full scan cost 90 s)."""
    corner = sitk.ReadImage(str(kmeans_t1))[:64, 24:104, :]
    sitk.WriteImage(corner, str(tmp_path / "corner.nii.gz"))
    kmeans_t1 = str(tmp_path / "corner.nii.gz")
    torch_pred = Predictor.from_package(tiny_package, "cpu", "torch", "float32")
    ov_pred, sink = Predictor.from_package(tiny_package, "cpu", "openvino", "float32"), ListSink()
    for kwargs in ({"probabilities": True, "tta": True, "uncertainty": True},
                   {"low_memory": True, "tta": True, "uncertainty": True}):
        ref = _arrays(torch_pred.predict([kmeans_t1], **kwargs))
        got = _arrays(ov_pred.predict([kmeans_t1], sink=sink, **kwargs))
        assert ref.keys() == got.keys()
        for key in ref.keys() - {"labels"}:
            np.testing.assert_allclose(got[key], ref[key], atol=1e-4, err_msg=key)
        assert np.mean(got["labels"] == ref["labels"]) > 0.999  # near ties only (streamed: float16 scores)
    assert [e["message"] for e in sink.of("log")] == ["runtime: openvino float32 on cpu (--precision float32, "
                                                       "openvino installed)"]  # compiled once for both cases
    assert (tiny_package / "model.onnx").is_file() and any((tiny_package / runtimes.OPENVINO_CACHE).iterdir())


def test_onnx_is_exported_once_and_again_for_other_weights(tiny_package, tmp_path):
    from medssl.inference.onnx_export import ONNX_NAME

    proc = run_cli("export-onnx", str(tiny_package), "--output", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0 and "output 'logits' N x 7 class scores" in proc.stdout, proc.stderr
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    again = run_cli("export-onnx", str(tiny_package), "--output", str(tmp_path / "m.onnx"))  # the user's file: kept
    assert again.returncode == 2 and "m.onnx already exists; pass --overwrite" in again.stderr
    (tmp_path / "scan.nii.gz").write_bytes(b"a scan")
    other = run_cli("export-onnx", str(tiny_package), "--output", str(tmp_path / "scan.nii.gz"))
    assert other.returncode == 2 and "medssl writes .onnx files" in other.stderr
    assert (tmp_path / "scan.nii.gz").read_bytes() == b"a scan"
    assert run_cli("export-onnx", str(tiny_package), "--output", str(tmp_path / "m.onnx"), "--overwrite").returncode == 0
    assert side["weights_sha256"] == json.loads((tiny_package / "metadata.json").read_text())["weights_sha256"]
    pred = Predictor.from_package(tiny_package, "cpu", "openvino", "float32")
    pred.window_net()
    onnx, stamp = tiny_package / ONNX_NAME, (tiny_package / ONNX_NAME).stat().st_mtime_ns
    Predictor.from_package(tiny_package, "cpu", "openvino", "float32").window_net()
    assert onnx.stat().st_mtime_ns == stamp  # reused
    sidecar = tiny_package / (ONNX_NAME + ".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "weights_sha256": "0" * 64}))
    Predictor.from_package(tiny_package, "cpu", "openvino", "float32").window_net()
    assert onnx.stat().st_mtime_ns != stamp and json.loads(sidecar.read_text())["weights_sha256"] != "0" * 64


def test_a_network_over_2_gb_gets_its_weights_in_one_file_beside_the_onnx(tiny_package, tmp_path, monkeypatch):
    """Over protobuf's 2 GB torch's exporter writes every tensor as a file of its own beside the model (139 for
    SwinUNETR-H, seen here, in the package folder); the export now leaves model.onnx + model.onnx.data only.
    That layout is made here on the tiny network: the real exporter, then ONNX's per-tensor external data."""
    import shutil

    import onnx

    from medssl.inference.onnx_export import ONNX_NAME

    real_export = torch.onnx.export

    def export_as_over_2_gb(net, args, path, **kwargs):
        real_export(net, args, path, **kwargs)
        onnx.save_model(onnx.load(path), path, save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=0, convert_attribute=True)  # Constant-node tensors too, as torch does
        assert len(os.listdir(os.path.dirname(path))) > 10  # one file per tensor, as torch writes them

    package = tmp_path / "pkg"
    shutil.copytree(tiny_package, package, ignore=shutil.ignore_patterns("model.onnx*", runtimes.OPENVINO_CACHE))
    before = set(os.listdir(package))
    x = torch.randn(2, 1, 32, 32, 32)
    usual = Predictor.from_package(tiny_package, "cpu", "openvino", "float32").window_net()(x).clone()
    monkeypatch.setattr(torch.onnx, "export", export_as_over_2_gb)
    net = Predictor.from_package(package, "cpu", "openvino", "float32").window_net()
    added = set(os.listdir(package)) - before - {runtimes.OPENVINO_CACHE}  # the cache: made at the first call
    assert added == {ONNX_NAME, ONNX_NAME + ".data", ONNX_NAME + ".json"}, added
    assert json.loads((package / (ONNX_NAME + ".json")).read_text())["external_data"] is True
    assert torch.equal(net(x), usual)  # the same graph and weights as the usual one-file export
    (package / (ONNX_NAME + ".data")).unlink()  # a folder copied without it: exported again, not used broken
    Predictor.from_package(package, "cpu", "openvino", "float32").window_net()
    assert (package / (ONNX_NAME + ".data")).is_file()


def test_the_tensors_gathered_are_the_ones_onnx_itself_finds_with_external_data():
    """`_model_tensors` (public fields only) yields the tensors of onnx's private ``_get_all_tensors``:
    initializers, Constant-node values, and those of an If's branches."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import _get_all_tensors

    from medssl.inference.onnx_export import _model_tensors

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.full(3, value, np.float32)))

    branch = lambda name, v: helper.make_graph([const(name, v)], name, [], [helper.make_tensor_value_info(
        name, TensorProto.FLOAT, [3])], initializer=[numpy_helper.from_array(np.full(3, v + 10, np.float32), name + "_w")])
    graph = helper.make_graph(
        [const("c", 1.0), helper.make_node("If", ["cond"], ["y"], then_branch=branch("a", 2.0),
                                           else_branch=branch("b", 3.0))],
        "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(np.zeros(3, np.float32), "w")])
    model = helper.make_model(graph)
    ours, theirs = list(_model_tensors(model)), list(_get_all_tensors(model))
    assert len(ours) == len(theirs) == 6
    assert sorted(t.SerializeToString() for t in ours) == sorted(t.SerializeToString() for t in theirs)  # as a set
    onnx.checker.check_model(model)


def test_auto_falls_back_to_torch_when_the_network_cannot_be_exported(tiny_package, monkeypatch):
    from medssl.errors import PackageError
    from medssl.inference import onnx_export

    def fail(*a, **k):
        raise PackageError("this network cannot be exported to ONNX (unsupported op); use --runtime torch")

    monkeypatch.setattr(onnx_export, "package_onnx", fail)
    monkeypatch.setattr(runtimes, "is_x86", lambda: True)
    sink, pred = ListSink(), Predictor.from_package(tiny_package, "cpu", "auto", "float32")
    assert pred.window_net(sink) is pred.net and pred.choice.runtime == "torch"
    assert "OpenVINO not used: this network cannot be exported" in sink.of("log")[0]["message"]
    with pytest.raises(PackageError):
        Predictor.from_package(tiny_package, "cpu", "openvino", "float32").window_net()


def test_auto_runs_torch_when_the_openvino_build_would_not_fit_in_memory(tiny_package, monkeypatch):
    """OpenVINO compiling SwinUNETR-H took 17.4 GB beyond the network: with too little free memory `auto`
    predicts in torch and says why; an explicit --runtime openvino is refused in one line, never killed."""
    from medssl.errors import ResourceError
    from medssl.inference import resources

    monkeypatch.setattr(resources, "available_gb", lambda device: 0.001)  # less than 3.8x the tiny network
    sink, pred = ListSink(), Predictor.from_package(tiny_package, "cpu", "auto", "float32")
    monkeypatch.setattr(runtimes, "is_x86", lambda: True)
    assert pred.window_net(sink) is pred.net and pred.choice.runtime == "torch"
    said = sink.of("log")[0]["message"]
    assert "OpenVINO not used: exporting and compiling this 0.0 GB network needs about 0.0 GB more memory" in said
    with pytest.raises(ResourceError, match="0.0 GB free; use --runtime torch"):
        Predictor.from_package(tiny_package, "cpu", "openvino", "float32").window_net()


@pytest.mark.slow
def test_bf16_labels_agree_with_float32_on_a_real_scan(tiny_package, colin):
    """Colin27 (181x217x181): OpenVINO bf16 against torch float32. Every confidently labelled voxel (top two
    classes 0.05 apart in float32) keeps its label; overall agreement >= 99.5 % for this 30-step model (near
    ties are many in an undertrained network; the demo model agrees on 99.98 %, README)."""
    ref = Predictor.from_package(tiny_package, "cpu", "torch", "float32").predict([colin["t1"]], probabilities=True)
    got = Predictor.from_package(tiny_package, "cpu", "openvino", "bfloat16").predict([colin["t1"]])
    a, b = sitk.GetArrayFromImage(ref.labels), sitk.GetArrayFromImage(got.labels)
    top2 = np.sort(sitk.GetArrayFromImage(ref.probabilities), axis=-1)[..., -2:]
    confident = (top2[..., 1] - top2[..., 0]) > 0.05
    assert np.mean(a == b) >= 0.995
    assert np.mean(a[confident] == b[confident]) >= 0.999


def test_a_short_last_batch_is_padded_not_compiled_again(tiny_package):
    """The last batch of a sliding window is often shorter: it runs padded to the window batch."""
    pred = Predictor.from_package(tiny_package, "cpu", "openvino", "float32")
    net, roi = pred.window_net(), pred.plan.patch_size
    net.run_at_batch(2)  # what both sliding-window paths do first
    x = torch.randn(2, 1, *roi)
    both = net(x).clone()
    one = net(x[1:])
    assert sorted(net._compiled) == [2] and one.shape[0] == 1
    torch.testing.assert_close(one, both[1:], atol=1e-5, rtol=1e-5)


ALIKE_ALONE_AND_AFTER = r"""
import sys, numpy as np, SimpleITK as sitk
from medssl.inference.predictor import Predictor
package, image = sys.argv[1], sitk.ReadImage(sys.argv[2])
small = image[: image.GetWidth() // 3, : image.GetHeight() // 3, :20]  # one window at 3 mm (28x28x20)
alone = Predictor.from_package(package, "cpu", "openvino", "auto")
first = alone.predict([small], probabilities=True)
assert sorted(alone.window_net()._compiled) == [alone.settings().sw_batch_size] == [2], alone.window_net()._compiled
folder = Predictor.from_package(package, "cpu", "openvino", "auto")
folder.predict([image])
after = folder.predict([small], probabilities=True)
print(np.array_equal(sitk.GetArrayFromImage(first.probabilities), sitk.GetArrayFromImage(after.probabilities)))
"""


def test_a_case_segments_alike_alone_and_after_other_cases(tiny_package, kmeans_t1):
    """A folder run reuses one predictor. A one-window case (its only batch is short) alone compiled a batch of
    one, after a larger case it was padded to the batch already compiled, and OpenVINO's bf16 kernels at batch 1
    and 2 differ (up to 0.125 in a logit): a template segmented in a folder got 253 voxels other than alone.
    Every short batch is now padded to the run's window batch, so the scores are equal bit for bit. Run in a
    child process: in this test process, the suite's pytest later died of a segmentation fault in test_security
    (not explained yet; the same code in a process of its own, collected and reused after, runs clean)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ALIKE_ALONE_AND_AFTER, str(tiny_package), str(kmeans_t1)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "True", done.stderr[-2000:]

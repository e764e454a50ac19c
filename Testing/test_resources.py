"""Resources: out-of-memory errors become one clear line with advice; the pre-run memory estimate refuses a
run that cannot fit (fine-tuning and pretraining); a CUDA out-of-memory during prediction is retried with a
smaller sliding-window batch, then on the CPU, with the same result; a failed write of one prediction output
leaves every previous output untouched (issue: reliability and security, "Resources")."""
from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from medssl_test_utils import blob_labels, oblique_image

from medssl.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from kill_resume import pretrain_args  # noqa: E402

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 8589934592 bytes")


@pytest.fixture
def cli(capsys):
    """Run ``medssl ARGS`` in this process: (exit code, stderr lines). The SIGTERM handler is restored."""
    previous = signal.getsignal(signal.SIGTERM)

    def run(*argv: str):
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err.strip().splitlines()
    yield run
    signal.signal(signal.SIGTERM, previous)


def _finetune_argv(tmp: Path, t1: Path, lab: Path, *extra: str) -> list:
    return ["finetune", "--images", t1, "--labels", lab, "--out", tmp / "m", "--backbone", "resenc:test",
            "--patch-size", "32", "32", "32", "--steps", "2", "--device", "cpu", "--progress", "none", *extra]


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_cuda_oom_during_training_is_one_line_with_advice(cli, monkeypatch, tmp_path, kmeans_t1, kmeans_labels,
                                                         one_thread):
    from medssl.train.loop import TrainLoop

    monkeypatch.setattr(TrainLoop, "_one_step", _raise(torch.OutOfMemoryError(CUDA_OOM)))
    code, err = cli(*_finetune_argv(tmp_path, kmeans_t1, kmeans_labels))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the GPU ran out of memory during finetune; use a smaller --patch-size")
    assert "--device cpu" in err[0] and not (tmp_path / "m" / "weights.safetensors").exists()


def test_cpu_allocator_error_in_prediction_suggests_low_memory(cli, monkeypatch, tmp_path, kmeans_t1):
    from medssl.inference.predictor import Predictor

    monkeypatch.setattr(Predictor, "from_package", _raise(RuntimeError(CPU_OOM)))
    out = tmp_path / "seg.nii.gz"
    code, err = cli("predict", "--model", tmp_path, "--input", kmeans_t1, "--output", out, "--debug")
    assert code == 2 and err[-1].startswith("error: this machine ran out of memory during predict; use --low-memory")
    assert any("Traceback" in line for line in err)  # --debug shows where it happened
    assert not out.exists()


def test_other_runtime_errors_are_not_disguised(cli, monkeypatch, tmp_path, kmeans_t1):
    from medssl.inference.predictor import Predictor

    monkeypatch.setattr(Predictor, "from_package", _raise(RuntimeError("a programming error")))
    with pytest.raises(RuntimeError, match="a programming error"):
        cli("predict", "--model", tmp_path, "--input", kmeans_t1, "--output", tmp_path / "seg.nii.gz")


def test_memory_estimate_refuses_a_finetune_that_cannot_fit(cli, monkeypatch, tmp_path, kmeans_t1, kmeans_labels):
    from medssl.train import memory as resources

    monkeypatch.setattr(resources, "available_gb", lambda device: 0.0001)
    code, err = cli(*_finetune_argv(tmp_path, kmeans_t1, kmeans_labels))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: training needs about") and "0.0 GB free" in err[0]
    assert "--patch-size 16 16 16" in err[0]


def test_memory_estimate_refuses_a_pretraining_that_cannot_fit(cli, monkeypatch, tmp_path, kmeans_t1):
    from medssl.train import memory as resources

    monkeypatch.setattr(resources, "available_gb", lambda device: 0.0001)
    code, err = cli(*pretrain_args(tmp_path / "pt", 2, "mae3d"))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: training needs about") and "--batch-size 1 or a smaller patch_size" in err[0]
    assert not (tmp_path / "pt" / "training" / "checkpoint_last.pt").exists()


def test_check_training_fits_scales_with_batch_and_names_the_gpu(monkeypatch):
    from medssl.errors import ResourceError
    from medssl.train import memory as resources
    from medssl.models import build_network, resolve_arch

    net = build_network(resolve_arch("resenc", "unet", {"preset": "test"}), 1, 2)
    one = resources.estimate_training(net, 1, (32, 32, 32), 1, amp=False)
    two = resources.estimate_training(net, 1, (32, 32, 32), 2, amp=False)
    assert two.activations_gb == pytest.approx(2 * one.activations_gb) and one.parameters_gb > 0
    monkeypatch.setattr(resources, "available_gb", lambda device: 1.1 * one.total_gb / 0.9)
    assert resources.check_training_fits(net, 1, (32, 32, 32), 1, torch.device("cpu"), amp=False).total_gb > 0
    with pytest.raises(ResourceError, match=r"GPU cuda:0 has .* GB free; .*--patch-size 16 16 16.*or --device cpu"):
        resources.check_training_fits(net, 1, (32, 32, 32), 2, torch.device("cuda", 0), amp=False)


def _predictor(sw_batch_size: int = 4):
    from medssl.inference.predictor import Predictor
    from medssl.models import build_from_plan, resolve_arch
    from medssl.plan import ChannelSpec, NormSpec, Plan, SlidingWindowSpec, default_labels

    plan = Plan([ChannelSpec("t1")], [NormSpec("zscore", {"per_image": True})], (16, 16, 16),
                default_labels(["a", "b"]), resolve_arch("resenc", "unet", {"preset": "test"}),
                sliding_window=SlidingWindowSpec(overlap=0.25, sw_batch_size=sw_batch_size))
    torch.manual_seed(0)
    return Predictor(plan, build_from_plan(plan), torch.device("cpu"), precision="float32")  # exact labels on any CPU


class _Log:
    def __init__(self):
        self.messages = []

    def emit(self, event, **fields):
        if event == "log":
            self.messages.append(fields["message"])

    def close(self):
        pass


@pytest.mark.parametrize("gpu_fits_one_window", [False, True])
def test_cuda_oom_in_prediction_retries_smaller_batch_then_cpu(monkeypatch, one_thread, gpu_fits_one_window):
    """A 'GPU' that runs out of memory for every window batch (or for batches above one): the predictor halves
    the sliding-window batch 4 -> 2 -> 1, then moves to the CPU; the labels equal a plain CPU prediction."""
    from medssl.inference import predictor as predictor_module

    image = oblique_image(size=(30, 28, 24))
    expected = sitk.GetArrayFromImage(_predictor().predict([image], low_memory=False).labels)
    real, calls = predictor_module.probabilities, []

    def gpu(net, img, settings, device, *args):
        calls.append((device.type, settings.sw_batch_size))
        if device.type == "cuda" and (settings.sw_batch_size > 1 or not gpu_fits_one_window):
            raise torch.OutOfMemoryError(CUDA_OOM)
        return real(net, img, settings, torch.device("cpu"), *args)  # this machine's stand-in for the GPU

    monkeypatch.setattr(predictor_module, "probabilities", gpu)
    pred, log = _predictor(), _Log()
    pred.device = torch.device("cuda")  # as Predictor.from_package(device="cuda") would have set it
    got = pred.predict([image], low_memory=False, sink=log)
    ladder = [("cuda", 4), ("cuda", 2), ("cuda", 1)]
    assert calls == (ladder if gpu_fits_one_window else ladder + [("cpu", 1)])
    assert pred.device.type == ("cuda" if gpu_fits_one_window else "cpu")
    assert any("retrying with sw batch size 1" in m for m in log.messages)
    assert any("retrying on the CPU" in m for m in log.messages) != gpu_fits_one_window
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got.labels), expected)


def test_cpu_oom_in_prediction_is_not_retried(monkeypatch):
    from medssl.inference import predictor as predictor_module

    calls = []
    monkeypatch.setattr(predictor_module, "probabilities",
                        lambda *a: calls.append(1) or (_ for _ in ()).throw(torch.OutOfMemoryError(CPU_OOM)))
    with pytest.raises(torch.OutOfMemoryError):
        _predictor().predict([oblique_image(size=(20, 20, 20))], low_memory=False)
    assert calls == [1]


def test_failed_probability_write_leaves_the_previous_label_map(monkeypatch, tmp_path):
    """Writing the probabilities fails (full disk) after the labels were written: nothing is replaced."""
    from medssl.cli import predict_cmd
    from medssl.errors import ResourceError
    from medssl.inference.predictor import Prediction
    from medssl.io import volume_io
    from medssl.plan import default_labels

    image = oblique_image(size=(12, 12, 12))
    result = Prediction(blob_labels(image, 2), sitk.Compose([image, image]), image)
    out, probs, unc = tmp_path / "seg.seg.nrrd", tmp_path / "probs.nii.gz", tmp_path / "unc.nii.gz"
    for p in (out, probs, unc):
        p.write_bytes(b"previous result")
    args = argparse.Namespace(output=str(out), input=[str(out.with_name("image.nii.gz"))], probabilities=str(probs),
                              uncertainty=str(unc))
    real = volume_io.write_image

    def disk_full_for_probabilities(img, path, *a, **k):
        if img.GetNumberOfComponentsPerPixel() > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(img, path, *a, **k)

    monkeypatch.setattr(volume_io, "write_image", disk_full_for_probabilities)
    with pytest.raises(ResourceError, match="the disk is full"):
        predict_cmd._write_outputs(args, result, default_labels(["a", "b"]))
    assert all(p.read_bytes() == b"previous result" for p in (out, probs, unc))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probs.nii.gz", "seg.seg.nrrd", "unc.nii.gz"]
    monkeypatch.setattr(volume_io, "write_image", real)
    predict_cmd._write_outputs(args, result, default_labels(["a", "b"]))
    assert sitk.ReadImage(str(probs)).GetNumberOfComponentsPerPixel() == 2 and out.read_bytes() != b"previous result"

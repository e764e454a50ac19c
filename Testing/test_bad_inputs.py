"""Bad inputs through the command line: every case exits 2 with one line ``error: ...`` saying what is wrong
and what to do, shows no traceback, and creates or overwrites no output (issue: reliability and security)."""
from __future__ import annotations

import hashlib
import json
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import NO_GPU, cli_in_process, run_cli

OUT_SENTINEL = b"previous result, must survive"


def _image(tmp: Path, name: str, arr: np.ndarray, like: sitk.Image | None = None, **geom) -> str:
    img = sitk.GetImageFromArray(arr)
    if like is not None:
        img.CopyInformation(like)
    for key, value in geom.items():
        getattr(img, f"Set{key}")(value)
    path = tmp / name
    sitk.WriteImage(img, str(path))
    return str(path)


def _truncated(tmp: Path, src: Path, suffix: str) -> str:
    path = tmp / f"cut{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(path), True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _seg_nrrd_header_disagreeing(tmp: Path, lab: Path) -> str:
    """A .seg.nrrd whose first segment's value was edited (as the audit did): its voxels hold a value no segment
    names."""
    from medssl.io.labels import write_label_map
    from medssl.plan import LabelSpec

    image = sitk.Cast(sitk.ReadImage(str(lab)) > 0, sitk.sitkUInt8)
    path = tmp / "edited.seg.nrrd"
    write_label_map(image, [LabelSpec(0, "background"), LabelSpec(1, "brain")], path)
    data = path.read_bytes()
    assert b"Segment0_LabelValue:=1" in data
    path.write_bytes(data.replace(b"Segment0_LabelValue:=1", b"Segment0_LabelValue:=9", 1))
    return str(path)


def _tampered_package(tmp: Path, pkg: Path, how: str) -> str:
    dst = tmp / "pkg"
    shutil.copytree(pkg, dst)
    if how == "missing":
        (dst / "weights.safetensors").unlink()
    elif how == "tampered":
        data = bytearray((dst / "weights.safetensors").read_bytes())
        data[-3] ^= 1
        (dst / "weights.safetensors").write_bytes(bytes(data))
    elif how == "newer":
        plan = json.loads((dst / "plan.json").read_text())
        plan["plan_version"] = 99
        (dst / "plan.json").write_text(json.dumps(plan))
        meta = json.loads((dst / "metadata.json").read_text())  # as a newer medssl would write it: hashes agree
        meta["plan_sha256"] = hashlib.sha256((dst / "plan.json").read_bytes()).hexdigest()
        (dst / "metadata.json").write_text(json.dumps(meta))
    return str(dst)


def build_case(name: str, tmp: Path, t1: Path, lab: Path, pkg: Path) -> tuple:
    """(argv, expected message pattern) for one bad-input case."""
    ref = sitk.ReadImage(str(t1))
    arr = sitk.GetArrayFromImage(ref)
    ft = lambda images, labels, *extra: ["finetune", "--images", *images, "--labels", *labels, "--out",  # noqa: E731
                                         str(tmp / "model"), "--backbone", "resenc:test", "--steps", "2", *extra]
    # --overwrite: the earlier result (OUT_SENTINEL) may be replaced, so each run reaches its own error, which must
    # still leave it as it was
    pr = lambda inputs, model=str(pkg), *extra: ["predict", "--model", model, "--input", *inputs,  # noqa: E731
                                                 "--output", str(tmp / "out.nii.gz"), "--overwrite", *extra]
    cases = {
        "missing_image": (pr([str(tmp / "nope.nii.gz")]), r"nope.nii.gz does not exist"),
        "missing_label": (ft([str(t1)], [str(tmp / "nolabel.nii.gz")]), r"nolabel.nii.gz does not exist"),
        "truncated_nifti": (lambda: pr([_truncated(tmp, t1, ".nii.gz")]), r"truncated file.*again"),
        "truncated_nrrd": (lambda: pr([_truncated(tmp, t1, ".nrrd")]), r"cannot be read"),
        "image_2d": (lambda: pr([_image(tmp, "flat.nii.gz", arr[10].astype(np.float32))]),
                     r"flat.nii.gz is 2D; medssl needs 3D volumes: give the 3D volume \(for DICOM, the series folder"),
        "image_4d": (lambda: pr([_series(tmp, ref)]), r"4D with 2 time points; pick one by writing .*::t=0"),
        "nan_voxels": (lambda: pr([_image(tmp, "nan.nrrd", np.where(arr > 250, np.nan, arr).astype(np.float32), ref)]),
                       r"NaN or infinite voxels; replace them"),
        "nan_nifti": (lambda: pr([_nifti_with(tmp, t1, np.nan)]), r"nan_nifti.nii.gz has 1 NaN or infinite voxels; replace"),
        "inf_nifti": (lambda: pr([_nifti_with(tmp, t1, np.inf, ".nii")]), r"inf_nifti.nii has 1 NaN or infinite voxels; replace"),
        "constant_volume": (lambda: pr([_image(tmp, "const.nii.gz", np.full_like(arr, 7), ref)]),
                            r"same value \(7\) in every voxel"),
        "label_other_grid": (lambda: ft([str(t1)], [_image(tmp, "shifted.nii.gz", sitk.GetArrayFromImage(sitk.ReadImage(str(lab))),
                                                          ref, Origin=(4.0, 0.0, 0.0))]),
                             r"label map .*shifted\.nii\.gz is on a different grid than its image .*resample"),
        "seg_nrrd_values_unnamed": (lambda: ft([str(t1)], [_seg_nrrd_header_disagreeing(tmp, lab)]),
                                    r"edited\.seg\.nrrd holds voxel values \[1\] that none of its segments names "
                                    r"\(its segments have the values \[9\]\).*save the segmentation again"),
        "labels_outside_plan": (lambda: ft([str(t1)], [_image(tmp, "nine.nii.gz", np.where(arr > 200, 9, 0).astype(np.uint8), ref)],
                                           "--backbone", str(pkg)), r"values \[9\] that are not labels of the model"),
        "empty_labels": (lambda: ft([str(t1)], [_image(tmp, "empty.nii.gz", np.zeros_like(arr, np.uint8), ref)]),
                         r"empty \(only background\)"),
        "float_labels": (lambda: ft([str(t1)], [_image(tmp, "half.nii.gz", (arr > 100) * 0.5, ref)]),
                         r"non-integer values"),
        "count_mismatch": (ft([str(t1), str(t1)], [str(lab)]), r"2 image case\(s\) but 1 label map"),
        "channel_mismatch": (pr([str(t1), str(t1)]), r"expects 1 channel\(s\) \(image\) but 2"),
        "package_missing_file": (lambda: pr([str(t1)], _tampered_package(tmp, pkg, "missing")), r"incomplete: weights.safetensors missing"),
        "package_tampered": (lambda: pr([str(t1)], _tampered_package(tmp, pkg, "tampered")), r"does not match the sha256"),
        "plan_newer_version": (lambda: pr([str(t1)], _tampered_package(tmp, pkg, "newer")), r"newer medssl.*upgrade"),
        "overlap_out_of_range": (pr([str(t1)], str(pkg), "--overlap", "-0.2"), r"out of range"),
        "steps_out_of_range": (ft([str(t1)], [str(lab)], "--steps", "-5"), r"out of range"),
        "output_not_writable": (lambda: ["predict", "--model", str(pkg), "--input", str(t1), "--output",
                                         str(_file(tmp / "afile") / "out.nii.gz")], r"cannot be created"),
        "unknown_backbone": (ft([str(t1)], [str(lab)], "--backbone", "resenc:smal"),
                            r"unknown resenc preset 'smal'\. Did you mean: small\? Known: test, tiny, small, M, L"),
        "config_typo": (lambda: ft([str(t1)], [str(lab)], "--config", _yaml(tmp / "c.yaml", "loop:\n  stpes: 3\n")),
                        r"unknown setting 'loop\.stpes'.*Did you mean: steps"),
        "config_wrong_type": (lambda: ft([str(t1)], [str(lab)], "--config",
                                         _yaml(tmp / "n.yaml", "normalization:\n  MR: {scheme: zscore}\n")),
                              r"c?n\.yaml: normalization must be text, not \{'MR'"),
        "config_out_of_range": (lambda: ft([str(t1)], [str(lab)], "--config", _yaml(tmp / "r.yaml", "loop:\n  lr: -1\n")),
                                r"r\.yaml: loop\.lr -1 is out of range; use 0 or more"),
        "config_unknown_amp": (lambda: ft([str(t1)], [str(lab)], "--config", _yaml(tmp / "a.yaml", "loop:\n  amp: of\n")),
                               r"loop\.amp 'of' is not one of auto, bf16, fp16, off"),
        "resume_without_run": (ft([str(t1)], [str(lab)], "--resume"), r"holds no interrupted run"),
        "resume_and_overwrite": (ft([str(t1)], [str(lab)], "--resume", "--overwrite"),
                                 r"--resume continues the run in --out and --overwrite replaces it; give one of them"),
        "label_is_the_image": (ft([str(t1)], [str(t1)]), r"the label map .* is the image itself"),
        "val_labels_alone": (ft([str(t1)], [str(lab)], "--val-labels", str(lab)),
                             r"--val-images and --val-labels go together"),
        "device_without_gpu": (pr([str(t1)], str(pkg), "--device", "cuda:0"), r"no CUDA GPU.*--device cpu"),
        "zero_spacing": (lambda: pr([_zero_pixdim(tmp, t1)]), r"zero or negative voxel spacing \(0\.0, .*fix its header"),
        "wrong_family_checkpoint": (lambda: ["weights", "import", _resenc_checkpoint(tmp), "--id", "voco_b"],
                                    r"does not look like a swin_unetr checkpoint.*keys are those of a resenc"),
        "truncated_checkpoint": (lambda: ft([str(t1)], [str(lab)], "--backbone", _cut(_resenc_checkpoint(tmp))),
                                 r"truncated or not a PyTorch checkpoint.*again"),
        "unknown_catalog_id": (["weights", "download", "voco_bb"], r"unknown weight-catalog id 'voco_bb'.*Did you mean: voco_b"),
        "offline_missing_weight": (ft([str(t1)], [str(lab)], "--backbone", "voco_b"),
                                   r"cannot download voco_b.*by hand.*medssl weights import .* --id voco_b"),
    }
    argv, pattern = cases[name]
    return (argv() if callable(argv) else argv), pattern


def _zero_pixdim(tmp: Path, src: Path) -> str:
    """A NIfTI whose pixdim[1] is 0 (ITK would read it as 1 mm without a word)."""
    path = tmp / "zero_spacing.nii"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(path))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", 0.0)
    path.write_bytes(bytes(data))
    return str(path)


def _nifti_with(tmp: Path, src: Path, value: float, suffix: str = ".nii.gz") -> str:
    """The scan as float32 NIfTI (written by nibabel) with one voxel set to ``value``: ITK's NIfTI reader would
    read the NaN/Inf as 0 without a word."""
    import nibabel as nib

    img = nib.load(str(src))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2] = value
    path = tmp / f"{'nan' if np.isnan(value) else 'inf'}_nifti{suffix}"
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    return str(path)


def _resenc_checkpoint(tmp: Path) -> str:
    """An nnssl-style checkpoint of a tiny ResEnc (the wrong family for a SwinUNETR id)."""
    import torch

    from medssl.models import build_network, resolve_arch

    net = build_network(resolve_arch("resenc", "unet", {"preset": "test"}), 1, 2)
    path = tmp / "resenc.pt"
    torch.save({"network_weights": net.state_dict()}, path)
    return str(path)


def _cut(path: str) -> str:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return path


def _series(tmp: Path, ref: sitk.Image) -> str:
    path = tmp / "dyn.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([ref, ref]), str(path))
    return str(path)


def _file(path: Path) -> Path:
    path.write_text("a file, not a folder")
    return path


def _yaml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


CASES = ["missing_image", "missing_label", "truncated_nifti", "truncated_nrrd", "image_2d", "image_4d", "nan_voxels",
         "nan_nifti", "inf_nifti", "constant_volume", "label_other_grid", "seg_nrrd_values_unnamed", "labels_outside_plan", "empty_labels", "float_labels", "count_mismatch",
         "channel_mismatch", "package_missing_file", "package_tampered", "plan_newer_version", "overlap_out_of_range",
         "steps_out_of_range", "output_not_writable", "unknown_backbone", "config_typo", "config_wrong_type", "config_out_of_range", "config_unknown_amp", "resume_without_run", "resume_and_overwrite", "val_labels_alone", "label_is_the_image",
         "device_without_gpu", "zero_spacing", "wrong_family_checkpoint", "truncated_checkpoint", "unknown_catalog_id",
         "offline_missing_weight"]


# Through a real ``python -m medssl`` process (what users and 3D Slicer run): one case per command, and the GPU
# case (CUDA can only be hidden from a fresh process). The others run in-process: the same main(), ~2 s faster each.
SUBPROCESS_CASES = {"missing_image", "steps_out_of_range", "unknown_catalog_id", "device_without_gpu"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_writes_nothing(case, tmp_path, kmeans_t1, kmeans_labels, tiny_package):
    argv, pattern = build_case(case, tmp_path, kmeans_t1, kmeans_labels, tiny_package)
    (tmp_path / "out.nii.gz").write_bytes(OUT_SENTINEL)
    before = {p for p in tmp_path.rglob("*")}
    if case in SUBPROCESS_CASES:
        proc = run_cli(*argv, env=NO_GPU)  # CUDA hidden: 'device_without_gpu' holds on GPU machines too
    else:
        proc = cli_in_process(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert (tmp_path / "out.nii.gz").read_bytes() == OUT_SENTINEL
    assert not (tmp_path / "model" / "weights.safetensors").exists()
    new = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in new if p.is_file()], new


def test_full_disk_is_reported_and_resumable(tmp_path, kmeans_t1, kmeans_labels):
    """A file-size limit (as a full disk) during training: exit 2, one line, the run can be resumed."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    args = [sys.executable, "-m", "medssl", "finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels),
            "--out", str(tmp_path / "m"), "--backbone", "resenc:test", "--patch-size", "32", "32", "32",
            "--steps", "4", "--progress", "none", "--device", "cpu"]
    proc = subprocess.run(args, preexec_fn=limit, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the disk is full"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "weights.safetensors").exists()
    assert not [p for p in (tmp_path / "m").rglob(".*") if p.is_file()]  # no temporary files left
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

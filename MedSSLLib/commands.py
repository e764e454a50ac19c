"""Command lines of the medssl CLI, and how to launch it (``PythonSlicer -m medssl`` inside Slicer).

Only argument lists are built here; `MedSSLLib.process.ProcessRunner` runs them. The options mirror
``medssl predict``, ``medssl finetune``, ``medssl weights`` and ``medssl info``; every long-running
command gets ``--progress json`` so the modules can show progress.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from . import bundled_core

PathLike = Union[str, os.PathLike]
DEVICES = ("auto", "cuda", "cpu")
RUNTIMES = ("auto", "torch", "openvino")  # medssl predict --runtime (medssl.inference.runtimes.RUNTIMES)
# medssl finetune --preset: auto (the CLI default: quick with the batch, then the crop, fitted to the memory)
PRESETS = ("auto", "quick", "standard")
SPARSE_AXES = ("auto", "axial", "coronal", "sagittal", "i", "j", "k")  # ``finetune --sparse-slices`` (test-checked)
# The medssl (sub)commands that accept ``--progress json`` (checked against the real CLI by the tests).
PROGRESS_COMMANDS = (("predict",), ("finetune",), ("pretrain",), ("weights", "download"), ("rank",))


@dataclass
class MedSSLCommand:
    """An interpreter that can run ``-m medssl`` plus the environment to run it in."""

    prefix: list[str]
    env: Optional[dict[str, str]] = None

    def args(self, *arguments: str) -> list[str]:
        return [*self.prefix, *arguments]


def _slicerApplication():
    """``slicer.app`` when running inside the Slicer application, else None."""
    try:
        import slicer
    except ImportError:
        return None
    return getattr(slicer, "app", None)


def defaultCommand() -> MedSSLCommand:
    """``PythonSlicer -m medssl`` with Slicer's start-up environment in Slicer, else this interpreter."""
    app = _slicerApplication()
    if app is None:
        return MedSSLCommand([sys.executable, "-m", "medssl"])
    import slicer

    executable = shutil.which("PythonSlicer")
    if not executable:
        raise RuntimeError("PythonSlicer was not found next to Slicer; reinstall Slicer")
    env = slicer.util.startupEnvironment()
    for name in ("MEDSSL_HOME", "HF_HOME", "HF_HUB_OFFLINE"):
        if name in os.environ:
            env[name] = os.environ[name]
    return MedSSLCommand([executable, *bundled_core.launchArgs()], env)  # the core from its folder, never pip


def _checkNoComma(paths: Sequence[PathLike]) -> None:
    """medssl joins the channels of one case with commas, so a path must not contain one."""
    for path in paths:
        if "," in str(path):
            raise ValueError(f"the file name {path} contains a comma, which medssl reads as a channel "
                             f"separator; rename the file or its folder")


@dataclass
class PredictOptions:
    """Options of ``medssl predict`` shown in MedSSLSegment."""

    device: str = "auto"
    overlap: Optional[float] = None
    tta: bool = False
    lowMemory: bool = False
    uncertainty: bool = False
    runtime: str = "auto"  # medssl predict --runtime: auto | torch | openvino
    overwrite: bool = False  # medssl predict --overwrite: replace existing outputs (folder mode asks first)

    def validate(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ValueError(f"overlap {self.overlap} is out of range; use a value in [0, 1), e.g. 0.5")


def _predictOptionArgs(options: PredictOptions) -> list[str]:
    options.validate()
    args = ["--device", options.device, "--progress", "json"]
    if options.runtime != "auto":
        args += ["--runtime", options.runtime]
    if options.overlap is not None:
        args += ["--overlap", f"{options.overlap:g}"]
    if options.tta:
        args.append("--tta")
    if options.lowMemory:
        args.append("--low-memory")
    if options.overwrite:
        args.append("--overwrite")
    return args


def predictArgs(package: PathLike, inputs: Sequence[PathLike], output: PathLike,
                options: PredictOptions, uncertaintyOutput: Optional[PathLike] = None) -> list[str]:
    """``predict --model PKG --input IMG... --output OUT ... --progress json``."""
    _checkNoComma(inputs)
    args = ["predict", "--model", str(package), "--input", *map(str, inputs), "--output", str(output),
            *_predictOptionArgs(options)]
    if options.uncertainty and uncertaintyOutput is not None:
        args += ["--uncertainty", str(uncertaintyOutput)]
    return args


def predictFolderArgs(package: PathLike, inputDir: PathLike, outputDir: PathLike, options: PredictOptions,
                      outputSuffix: str = ".seg.nrrd") -> list[str]:
    """``predict --model PKG --input-dir DIR --output-dir OUT --output-suffix S ... --progress json``: every case of
    ``inputDir`` with the model loaded once (``medssl.cli.predict_folder``, which emits per-case events)."""
    if options.uncertainty:
        raise ValueError("uncertainty maps are written for one volume at a time; untick the uncertainty map for "
                         "folder mode or segment the volumes one by one")
    return ["predict", "--model", str(package), "--input-dir", str(inputDir), "--output-dir", str(outputDir),
            "--output-suffix", outputSuffix, *_predictOptionArgs(options)]


@dataclass
class FinetuneOptions:
    """Options of ``medssl finetune`` shown in MedSSLTrain."""

    backbone: str = "resenc:tiny"
    preset: str = "auto"
    steps: Optional[int] = None
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    config: Optional[str] = None
    sparseSlices: Optional[str] = None  # "A few painted slices": None (dense labels) or an axis of SPARSE_AXES
    extraArgs: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.sparseSlices is not None and self.sparseSlices not in SPARSE_AXES:
            raise ValueError(f"sparse-slice axis {self.sparseSlices!r} is not one of {', '.join(SPARSE_AXES)}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError("the number of steps must be at least 1")
        if not self.backbone:
            raise ValueError("choose a backbone (a catalog id, a model package or an architecture)")


def finetuneArgs(images: Sequence[Sequence[PathLike]], labels: Sequence[PathLike], out: PathLike,
                 options: FinetuneOptions) -> list[str]:
    """``finetune --images c1,c2 ... --labels L... --out PKG ... --progress json`` (one image entry per case)."""
    options.validate()
    if not images or len(images) != len(labels):
        raise ValueError(f"{len(images)} case(s) but {len(labels)} label file(s); every case needs one label file")
    for channels in images:
        _checkNoComma(channels)
    args = ["finetune", "--images", *[",".join(map(str, channels)) for channels in images],
            "--labels", *map(str, labels), "--out", str(out), "--backbone", options.backbone,
            "--preset", options.preset, "--device", options.device, "--progress", "json"]
    if options.steps:
        args += ["--steps", str(options.steps)]
    if options.config:
        args += ["--config", str(options.config)]
    if options.sparseSlices:
        args += ["--sparse-slices", options.sparseSlices]
    if options.resume:
        args.append("--resume")
    if options.overwrite:
        args.append("--overwrite")
    return args + list(options.extraArgs)


def weightsDownloadArgs(weightsId: str, acceptLicence: bool) -> list[str]:
    args = ["weights", "download", weightsId, "--progress", "json"]  # byte progress drives the bar
    return args + ["--accept-licence"] if acceptLicence else args


def weightsImportArgs(path: PathLike, weightsId: str, acceptLicence: bool = False) -> list[str]:
    if not Path(path).exists():
        raise ValueError(f"{path} does not exist; choose the downloaded weights file")
    args = ["weights", "import", str(path), "--id", weightsId]
    return args + ["--accept-licence"] if acceptLicence else args


def withJsonProgress(args: Sequence[str]) -> list[str]:
    """``args`` plus ``--progress json`` for the commands of `PROGRESS_COMMANDS`, unless ``--progress`` or
    ``--help`` is already given (any medssl command line run from Slicer then reports progress events)."""
    args = [str(a) for a in args]
    if any(a.startswith("--progress") or a in ("-h", "--help") for a in args):
        return args
    if any(tuple(args[:len(command)]) == command for command in PROGRESS_COMMANDS):
        return [*args, "--progress", "json"]
    return args


def infoArgs() -> list[str]:
    return ["info", "--json"]


def exportArgs(package: PathLike, archive: PathLike, overwrite: bool = False) -> list[str]:
    """``export PKG --out ZIP [--overwrite]`` (share a model package as one zip)."""
    if not str(archive).lower().endswith(".zip"):
        raise ValueError(f"{archive} must end in .zip")
    args = ["export", str(package), "--out", str(archive)]
    return args + ["--overwrite"] if overwrite else args


def importArgs(archive: PathLike, out: Optional[PathLike] = None, overwrite: bool = False) -> list[str]:
    """``import ZIP [--out DIR] [--overwrite]`` (check and unpack a model zip)."""
    if not Path(archive).is_file():
        raise ValueError(f"{archive} does not exist; choose the model .zip")
    args = ["import", str(archive)] + (["--out", str(out)] if out is not None else [])
    return args + ["--overwrite"] if overwrite else args


def rankArgs(package: PathLike, images: Sequence[Sequence[PathLike]], device: str = "auto",
             tta: bool = True) -> list[str]:
    """``rank --model PKG --images c1 c2,c2b ... --device D --progress json`` (one entry per volume or folder);
    the ranking arrives in the final ``done`` event."""
    if not images:
        raise ValueError("choose at least one volume (or a folder) to rank")
    for channels in images:
        _checkNoComma(channels)
    args = ["rank", "--model", str(package), "--images", *[",".join(map(str, c)) for c in images],
            "--device", device, "--progress", "json"]
    return args if tta else args + ["--no-tta"]

"""``medssl predict --input-dir DIR --output-dir DIR``: every case of a folder with one loaded model.

The package is read, checked and (for OpenVINO) compiled once; each case is then read, segmented and written
as ``<output-dir>/<case>.seg.nrrd`` (or ``--output-suffix``). Cases: with a one-channel plan every image file
of the folder; with several channels, nnU-Net's naming ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ...
(one file per channel, in the plan's order); hidden files (``.name``, e.g. macOS ``._scan.nii.gz``) are left
out. A case that fails is reported in one line and the others go on; the exit code is then 2.

Per case, ``--progress json`` emits ``progress`` events of stage ``case`` (what MedSSL Segment's folder mode reads):
``status`` ``started`` (``done`` = cases finished before it), then ``written`` with ``output`` (the file, complete:
written atomically) or ``failed`` with ``error`` (the one-line reason), both with ``done`` counting this case.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError, MedSSLError

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def folder_cases(folder: Path, channels: int, incomplete: Optional[List[str]] = None) -> Dict[str, List[Path]]:
    """{case name: one file per channel}, sorted by name; see the module docstring. A case without a file for
    every channel is an `InputError`, or, given the list ``incomplete``, is left out and named there."""
    from ..io.volume_io import find_images, strip_suffix

    if not folder.is_dir():
        raise InputError(f"--input-dir {folder} is not a folder; give the folder holding the images")
    files = [f for f in find_images(folder) if not f.name.lower().endswith(".seg.nrrd") and not f.name.startswith(".")]
    if channels == 1:
        cases = {strip_suffix(f.name): [f] for f in files}  # a.nii.gz beside a.mha: one case (`run_folder` says so)
    else:
        grouped: Dict[str, Dict[int, Path]] = {}
        for f in files:
            m = CHANNEL_FILE.match(strip_suffix(f.name))
            if m:
                grouped.setdefault(m["case"], {})[int(m["channel"])] = f
        bad = sorted(c for c, chans in grouped.items() if sorted(chans) != list(range(channels)))
        if bad and incomplete is None:
            raise InputError(f"--input-dir: case {bad[0]} does not have files _0000 .. _{channels - 1:04d} for the "
                             f"model's {channels} channels")
        if incomplete is not None:
            incomplete.extend(bad)
        cases = {c: [chans[i] for i in range(channels)] for c, chans in grouped.items() if c not in bad}
    if not cases and not incomplete:
        raise InputError(f"--input-dir {folder} holds no images (.nii.gz, .nrrd, .mha ...)")
    return dict(sorted(cases.items()))


def _image_files(folder: Path) -> List[Path]:
    """Every scan of the folder, used by a case or not (an output must replace none of them); segmentations
    (``.seg.nrrd``, e.g. an earlier run's outputs) are not scans."""
    from ..io.volume_io import find_images

    return [f for f in find_images(folder) if not f.name.lower().endswith(".seg.nrrd")]


def _same_name_files(folder: Path, cases: Dict[str, List[Path]]) -> List[Path]:
    """Scans of ``folder`` that no case uses because another file has the same case name."""
    from ..io.volume_io import strip_suffix

    used = {f for files in cases.values() for f in files}
    return [f for f in _image_files(folder) if f not in used and strip_suffix(f.name) in cases]


def run_folder(args: argparse.Namespace, predictor, sink) -> int:
    """Segment every case; returns the exit code (2 when a case failed)."""
    import time

    from ..io.atomic import atomic_path, ensure_writable_dir
    from ..io.labels import write_label_map
    from ..io.outputs import check_folder_outputs
    from ..io.volume_io import strip_suffix

    if args.probabilities or args.uncertainty:
        raise InputError("--probabilities and --uncertainty name one file; with --input-dir use them per case "
                         "with --input/--output")
    incomplete: List[str] = []  # multi-channel cases missing a channel file: failed, the others go on
    cases = folder_cases(Path(args.input_dir), predictor.plan.num_channels, incomplete)
    targets = {name: Path(args.output_dir) / f"{name}{args.output_suffix}" for name in cases}
    check_folder_outputs(list(targets.values()), _image_files(Path(args.input_dir)), args.overwrite,
                         Path(args.output_dir))
    out_dir = ensure_writable_dir(Path(args.output_dir), "output folder")
    failed, first_failure, t0 = [], "", time.perf_counter()
    sink.emit("start", task="predict", total=len(cases), model=str(args.model), device=str(predictor.device))
    for skipped in _same_name_files(Path(args.input_dir), cases):
        sink.emit("log", message=f"{skipped.name} left out: another file of the folder has the case name "
                                 f"{strip_suffix(skipped.name)} (rename one to segment both)")
    for name in incomplete:
        reason = (f"case {name} does not have files _0000 .. _{predictor.plan.num_channels - 1:04d} for the model's "
                  f"{predictor.plan.num_channels} channels")
        failed.append(name)
        first_failure = first_failure or f"{name}: {reason}"
        sink.emit("log", message=f"case {name} skipped: {reason}")
    for n, (name, files) in enumerate(cases.items()):
        sink.emit("progress", stage="case", done=n, total=len(cases), case=name, status="started")
        target = targets[name]
        try:
            result = predictor.predict([str(f) for f in files], overlap=args.overlap, tta=args.tta,
                                       sw_batch_size=args.sw_batch_size, low_memory=True if args.low_memory else None,
                                       sink=sink)
            with atomic_path(target) as tmp:
                write_label_map(result.labels, predictor.plan.labels, tmp)
        except MedSSLError as exc:
            failed.append(name)
            first_failure = first_failure or f"{name}: {exc}"
            sink.emit("log", message=f"case {name} skipped: {exc}")
            sink.emit("progress", stage="case", done=n + 1, total=len(cases), case=name, status="failed", error=str(exc))
        else:
            sink.emit("progress", stage="case", done=n + 1, total=len(cases), case=name, status="written",
                      output=str(target))
    minutes, total = (time.perf_counter() - t0) / 60, len(cases) + len(incomplete)
    written = total - len(failed)
    sink.emit("done", task="predict", output=str(out_dir), cases=written, failed=failed,
              cases_per_minute=written / max(minutes, 1e-9))
    if args.progress != "json":
        print(f"{written} case(s) segmented into {out_dir} ({written / max(minutes, 1e-9):.1f} cases per minute)")
    if failed:
        raise InputError(f"{len(failed)} of {total} case(s) failed ({', '.join(failed[:3])}"
                         f"{' ...' if len(failed) > 3 else ''}; first: {first_failure}); the others are in {out_dir}")
    return 0

"""``medssl predict``: segment images with a model package; the output lies on the input grid."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device, add_progress, fraction, positive_int

EPILOG = """examples:
  medssl predict --model my_model --input ct.nii.gz --output ct_seg.seg.nrrd
  medssl predict --model mr_model --input t1.nii.gz t2.nii.gz --output seg.nii.gz --tta --uncertainty unc.nii.gz
  medssl predict --model my_model --input-dir scans/ --output-dir segs/   # model loaded and compiled once"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="segment images with a model package", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PKG", help="model package folder")
    p.add_argument("--input", nargs="+", metavar="IMG", help="one image per channel (or DICOM folder)")
    p.add_argument("--output", metavar="OUT", help="label map to write (.seg.nrrd keeps names and colours; .dcm: "
                                                   "DICOM SEG of a DICOM series input)")
    p.add_argument("--input-dir", metavar="DIR", help="segment every case in DIR (several channels: case_0000.nii.gz, "
                                                      "case_0001.nii.gz, ...) instead of --input")
    p.add_argument("--output-dir", metavar="DIR", help="with --input-dir: where <case>.seg.nrrd files are written")
    p.add_argument("--output-suffix", default=".seg.nrrd", help="with --output-dir: file ending (default .seg.nrrd)")
    p.add_argument("--overlap", type=fraction, help="sliding-window overlap in [0, 1) (default: the plan's)")
    p.add_argument("--sw-batch-size", type=positive_int, help="windows per forward pass")
    p.add_argument("--tta", action="store_true", help="average over mirrored copies (slower, smoother)")
    p.add_argument("--probabilities", metavar="OUT", help="also write class probabilities (vector image)")
    p.add_argument("--uncertainty", metavar="OUT", help="also write a voxel-wise uncertainty (entropy) map")
    p.add_argument("--low-memory", action="store_true", help="stitch in a rolling buffer to bound memory (automatic for large volumes)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (an input is never replaced)")
    add_device(p)
    add_runtime(p)
    add_progress(p)
    return p


def add_runtime(p: argparse.ArgumentParser) -> None:
    from ..inference.runtimes import PRECISIONS, RUNTIMES

    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="engine for the network: auto (torch on a GPU, OpenVINO on an x86 CPU where installed, else "
                        "torch), torch or openvino")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (bfloat16 where the GPU/CPU computes it natively, float16 on older GPUs, else float32)")


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work (`io.outputs`): the right options together, endings a writer takes, no output that is an
    input, the same file twice, a folder, or (without ``--overwrite``) an existing file; writable folders."""
    from ..errors import InputError
    from ..io.atomic import ensure_writable_dir
    from ..io.outputs import LABEL_SUFFIXES, check_outputs, check_suffix, input_paths
    from ..io.volume_io import IMAGE_SUFFIXES

    if bool(args.input_dir) != bool(args.output_dir) or bool(args.input_dir) == bool(args.input or args.output):
        raise InputError("give either --input IMG... with --output OUT, or --input-dir DIR with --output-dir DIR")
    if args.input_dir:
        check_suffix(Path("case" + args.output_suffix), "--output-suffix", LABEL_SUFFIXES[:-1], args.output_suffix)
        return
    if not (args.input and args.output):
        raise InputError("--input and --output go together; give both")

    outs = {option: Path(o) for option, o in (("--output", args.output), ("--probabilities", args.probabilities),
                                              ("--uncertainty", args.uncertainty)) if o}
    for option, path in outs.items():
        check_suffix(path, option, LABEL_SUFFIXES if option == "--output" else IMAGE_SUFFIXES[:-1])
        if option != "--output" and path.name.lower().endswith(".seg.nrrd"):
            raise InputError(f"{option} {path}: .seg.nrrd is for segmentations; this map is an image (.nii.gz, .nrrd)")
    check_outputs(outs, input_paths(args.input), args.overwrite)
    for o in outs.values():
        ensure_writable_dir(o.resolve().parent, "output folder")
    if str(args.output).lower().endswith(".dcm"):  # DICOM SEG: the input must be a DICOM series (checked first)
        from ..io.dicom_seg import check_seg_references, require_highdicom, source_series_files

        files = source_series_files(args.input)
        require_highdicom()
        check_seg_references(files)


def _write_outputs(args: argparse.Namespace, result, segments) -> None:
    """Every output is written to a temporary file first and renamed only once all are complete: a failure
    writing the probabilities or the uncertainty leaves the previous label map untouched too."""
    from ..io.atomic import atomic_paths
    from ..io.dicom_seg import label_writer
    from ..io.volume_io import write_image

    outputs = [(args.output, label_writer(args.output, args.input, result.labels, segments))]
    if result.probabilities is not None:
        outputs.append((args.probabilities, lambda tmp: write_image(result.probabilities, tmp)))
    if result.uncertainty is not None:
        outputs.append((args.uncertainty, lambda tmp: write_image(result.uncertainty, tmp)))
    with atomic_paths([Path(target) for target, _ in outputs]) as tmps:
        for (_, write), tmp in zip(outputs, tmps):
            write(tmp)


def run(args: argparse.Namespace) -> int:
    from ..events import make_sink
    from ..inference.predictor import Predictor

    _check_outputs(args)
    sink = make_sink(args.progress)
    try:
        predictor = Predictor.from_package(args.model, args.device, args.runtime, args.precision)
        if args.input_dir:
            from .predict_folder import run_folder

            return run_folder(args, predictor, sink)
        sink.emit("start", task="predict", total=1, model=str(args.model), device=str(predictor.device))
        result = predictor.predict(args.input, overlap=args.overlap, tta=args.tta, sw_batch_size=args.sw_batch_size,
                                   low_memory=True if args.low_memory else None,
                                   probabilities=bool(args.probabilities), uncertainty=bool(args.uncertainty), sink=sink)
        _write_outputs(args, result, predictor.plan.labels)
        sink.emit("done", task="predict", output=str(args.output), probabilities=args.probabilities,
                  uncertainty=args.uncertainty)
    finally:
        sink.close()
    if args.progress != "json":
        print(f"segmentation written to {args.output}")
    return 0

"""A stand-in for ``python -m medssl`` that answers instantly with known results (test fixture).

It speaks the same command line and JSON-lines events as medssl. ``predict`` writes a label map that is a
known function of the input voxels (``value % 3`` where the input is above 0) through medssl's own
``.seg.nrrd`` writer, so geometry and labels can be checked exactly; with ``--input-dir`` it does so for every
case and emits the per-case events of ``medssl.cli.predict_folder`` (a file SimpleITK cannot read fails, the
others go on, exit code 2; existing outputs are refused without ``--overwrite`` by medssl's own check). ``finetune`` emits training events and
copies the package given in ``$FAKE_MEDSSL_PACKAGE`` to ``--out``. Environment switches:

- ``FAKE_MEDSSL_RECORD``: write the received arguments to this JSON file;
- ``FAKE_MEDSSL_SLEEP``: after ``start``, spawn a child that sleeps too (pids go to ``$FAKE_MEDSSL_PIDS``)
  and sleep this many seconds (cancel tests);
- ``FAKE_MEDSSL_CASE_SLEEP``: with ``--input-dir``, sleep this many seconds in every case (stop-between-cases tests);
- ``FAKE_MEDSSL_FAIL``: print ``error: <value>`` on stderr and exit 2.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk


def emit(event, **fields):
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


def sleepWithChild():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pids = os.environ["FAKE_MEDSSL_PIDS"]
    with open(pids + ".part", "w") as f:  # written whole, then renamed: a reader never sees it half-written
        json.dump({"parent": os.getpid(), "child": child.pid}, f)
    os.replace(pids + ".part", pids)
    time.sleep(float(os.environ["FAKE_MEDSSL_SLEEP"]))


def segmentCase(plan, path, output):
    from medssl.io.labels import write_label_map

    image = sitk.ReadImage(path)
    values = sitk.GetArrayFromImage(image)
    labels = np.where(values > 0, values.astype(np.int64) % 3, 0).astype(np.uint8)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    for done in (1, 2, 3):
        emit("progress", stage="sliding_window", done=done, total=3, eta_s=3 - done)
    write_label_map(out, plan.labels, output)
    return values, image


def predictFolder(plan, args):
    from medssl.cli.predict_folder import _image_files, folder_cases
    from medssl.errors import InputError
    from medssl.io.outputs import check_folder_outputs

    cases = folder_cases(pathlib.Path(args.input_dir), 1)
    targets = [pathlib.Path(args.output_dir) / (name + args.output_suffix) for name in cases]
    try:  # medssl's own check: no input replaced, existing outputs only with --overwrite
        check_folder_outputs(targets, _image_files(pathlib.Path(args.input_dir)), args.overwrite,
                             pathlib.Path(args.output_dir))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    emit("start", task="predict", total=len(cases), model=args.model, device="cpu")
    failed = []
    for n, (name, files) in enumerate(cases.items()):
        emit("progress", stage="case", done=n, total=len(cases), case=name, status="started")
        emit("progress", stage="preprocess", done=1, total=1)
        time.sleep(float(os.environ.get("FAKE_MEDSSL_CASE_SLEEP", "0")))
        output = os.path.join(args.output_dir, name + args.output_suffix)
        try:
            segmentCase(plan, str(files[0]), output)
        except RuntimeError as exc:
            failed.append(name)
            reason = f"image {files[0]} cannot be read: {str(exc).strip().splitlines()[-1]}"
            emit("progress", stage="case", done=n + 1, total=len(cases), case=name, status="failed", error=reason)
        else:
            emit("progress", stage="case", done=n + 1, total=len(cases), case=name, status="written", output=output)
    emit("done", task="predict", output=args.output_dir, cases=len(cases) - len(failed), failed=failed)
    if failed:
        print(f"error: {len(failed)} of {len(cases)} case(s) failed", file=sys.stderr)
        return 2
    return 0


def predict(args):
    from medssl.plan import Plan

    plan = Plan.load(os.path.join(args.model, "plan.json"))
    if args.input_dir:
        return predictFolder(plan, args)
    emit("start", task="predict", total=1, model=args.model, device="cpu")
    emit("progress", stage="preprocess", done=1, total=1)
    if os.environ.get("FAKE_MEDSSL_SLEEP"):
        sleepWithChild()
    values, image = segmentCase(plan, args.input[0], args.output)
    if args.uncertainty:
        unc = sitk.GetImageFromArray((values.astype(np.float32) % 7) / 7.0)
        unc.CopyInformation(image)
        sitk.WriteImage(unc, args.uncertainty)
    emit("done", task="predict", output=args.output)


def finetune(args):
    emit("log", message="fake finetune")
    emit("start", task="finetune", total=4, initial=0, device="cpu")
    if os.environ.get("FAKE_MEDSSL_SLEEP"):
        sleepWithChild()
    for step in range(1, 5):
        emit("step", step=step, total=4, loss=1.0 / step, lr=0.001, eta_s=4 - step)
        if step % 2 == 0:
            emit("validation", step=step, dice={"liver": 0.2 * step}, mean_dice=0.2 * step)
    os.makedirs(args.out, exist_ok=True)
    for name in ("plan.json", "weights.safetensors", "metadata.json"):
        shutil.copy(os.path.join(os.environ["FAKE_MEDSSL_PACKAGE"], name), args.out)
    emit("done", task="finetune", package=args.out, best_mean_dice=0.8, best_step=4, steps=4)


def parser():
    p = argparse.ArgumentParser(prog="medssl")
    sub = p.add_subparsers(dest="command")
    pr = sub.add_parser("predict")
    for name in ("--model", "--output", "--device", "--overlap", "--uncertainty", "--progress", "--input-dir",
                 "--output-dir", "--runtime"):
        pr.add_argument(name)
    pr.add_argument("--output-suffix", default=".seg.nrrd")
    pr.add_argument("--input", nargs="+")
    pr.add_argument("--tta", action="store_true")
    pr.add_argument("--low-memory", action="store_true")
    pr.add_argument("--overwrite", action="store_true")
    ft = sub.add_parser("finetune")
    for name in ("--out", "--backbone", "--preset", "--device", "--steps", "--progress", "--config", "--sparse-slices"):
        ft.add_argument(name)
    ft.add_argument("--images", nargs="+")
    ft.add_argument("--labels", nargs="+")
    ft.add_argument("--resume", action="store_true")
    ft.add_argument("--overwrite", action="store_true")
    return p


def main():
    if os.environ.get("FAKE_MEDSSL_RECORD"):
        with open(os.environ["FAKE_MEDSSL_RECORD"], "w") as f:
            json.dump(sys.argv[1:], f)
    if os.environ.get("FAKE_MEDSSL_FAIL"):
        print("some progress text before the failure")
        print(f"error: {os.environ['FAKE_MEDSSL_FAIL']}", file=sys.stderr)
        return 2
    args = parser().parse_args()
    return {"predict": predict, "finetune": finetune}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())

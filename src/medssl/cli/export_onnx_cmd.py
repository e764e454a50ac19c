"""``medssl export-onnx``: write the package's window network as ``model.onnx`` (for OpenVINO or other tools)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  medssl export-onnx my_model              # writes my_model/model.onnx (+ model.onnx.json)
  medssl export-onnx my_model --output seg.onnx"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export-onnx", help="export a model package's network to ONNX", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", metavar="PKG", help="model package folder")
    p.add_argument("--output", metavar="FILE", help="ONNX file to write (default: PKG/model.onnx, which is replaced)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..hub.package import load_package
    from ..inference.onnx_export import ONNX_NAME, export_onnx, onnx_record, runtime_dir
    from ..io.atomic import ensure_writable_dir

    if args.output:  # a file of the user's: never one of another kind, never replaced unasked (`io.outputs`)
        from ..io.outputs import check_outputs, check_suffix

        check_suffix(Path(args.output), "--output", (".onnx",))
        check_outputs({"--output": Path(args.output)}, [], args.overwrite)
    plan, net, meta = load_package(args.package)
    sha = meta["weights_sha256"]
    out = Path(args.output) if args.output else runtime_dir(args.package, sha) / ONNX_NAME
    ensure_writable_dir(out.resolve().parent, "output folder")
    record = onnx_record(plan.patch_size, sha, plan.num_channels, plan.num_classes)
    export_onnx(net, plan.patch_size, plan.num_channels, out, record)
    print(f"ONNX written to {out} (input 'image' N x {plan.num_channels} x "
          f"{' x '.join(map(str, plan.patch_size))}, output 'logits' N x {plan.num_classes} class scores)")
    return 0

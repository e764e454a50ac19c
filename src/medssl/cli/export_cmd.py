"""``medssl export``: write a model package as one zip to share (sha256 manifest, licence, provenance)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  medssl export ~/.medssl/models/liver --out liver.zip
  medssl import liver.zip                 (on the other computer: checked, then registered)

The zip holds plan.json, weights.safetensors, metadata.json and manifest.json (sha256 and size of every file,
licence, provenance); the training run state is not exported. A model whose backbone licence is
non-commercial or no-derivatives (3DINO: CC BY-NC-ND) is exported with that warning."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a model package as one zip to share", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", metavar="PKG", help="model package folder (what 'medssl finetune --out' wrote)")
    p.add_argument("--out", required=True, metavar="ZIP", help="zip file to write (.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zip")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..hub.share import export_package
    from ..hub.ssl_export import is_ssl_export

    if is_ssl_export(args.package):  # had been called an incomplete model package
        raise InputError(f"{args.package} is a pretraining export, not a fine-tuned model package; fine-tune it "
                         f"(--backbone {args.package}) and export the package, or copy the export folder as it is")
    shared = export_package(args.package, args.out, overwrite=args.overwrite)
    size = shared.archive.stat().st_size / 1e6
    print(f"exported {shared.folder} to {shared.archive} ({len(shared.files)} files, {size:.1f} MB, sha256 in manifest.json)")
    for line in shared.describe():
        print(line)
    return 0

"""``medssl import``: check and unpack a model zip written by ``medssl export``."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  medssl import liver.zip                 (into ~/.medssl/models/liver, listed by MedSSL Segment)
  medssl import liver.zip --out /data/models/liver

Refused, with nothing written: entries outside the model folder (zip slip), links, unexpected files, a file
whose sha256 or size differs from manifest.json or from the package's own metadata, and an existing
destination (unless --overwrite). The licence and provenance are shown; a non-commercial or no-derivatives
backbone licence (3DINO: CC BY-NC-ND) is pointed out."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="check and unpack a model zip written by 'medssl export'", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archive", metavar="ZIP", help="the .zip written by 'medssl export'")
    p.add_argument("--out", metavar="DIR", help="package folder to create (default: <medssl home>/models/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package folder")
    return p


def run(args: argparse.Namespace) -> int:
    from ..hub.share import import_package

    shared = import_package(args.archive, args.out, overwrite=args.overwrite)
    print(f"imported {shared.archive} into {shared.folder} (every file's sha256 checked)")
    for line in shared.describe():
        print(line)
    return 0

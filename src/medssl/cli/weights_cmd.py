"""``medssl weights``: list, download, import, check, locate and remove pretrained backbone weights."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

EPILOG = """examples:
  medssl weights list
  medssl weights download openmind_resencl_mae
  medssl weights download 3dino_vit_l --accept-licence      (gated, CC BY-NC-ND 4.0)
  medssl weights import ~/Downloads/pctnet_ct10k_volf.pt --id misfm_pctnet_ct10k
  medssl weights import runs/mae_brain --id mae_brain     (your own medssl pretrain run; then --backbone mae_brain)
  medssl weights check checkpoint_final.pth --id openmind_resencl_mae --json
  medssl weights path voco_b
  medssl weights remove voco_h"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("weights", help="manage pretrained backbone weights (catalog, download, import)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ws = p.add_subparsers(dest="weights_command", metavar="ACTION")
    ls = ws.add_parser("list", help="catalog entries and whether they are downloaded")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dl = ws.add_parser("download", help="download a catalog entry from Hugging Face (resumable, hash-checked)")
    dl.add_argument("id", help="weight-catalog id (see 'medssl weights list')")
    dl.add_argument("--accept-licence", action="store_true", help="accept a gated or non-commercial licence")
    dl.add_argument("--progress", choices=["bar", "json"], default="bar",
                    help="a progress bar (default) or JSON-line progress events on stdout (for 3D Slicer)")
    im = ws.add_parser("import", help="register a hand-downloaded file, or a 'medssl pretrain' run under a name "
                                      "of your own, after checking its structure")
    im.add_argument("file", help="checkpoint file, or a pretraining run (RUN, RUN/export)")
    im.add_argument("--id", required=True, help="weight-catalog id the file belongs to; for a pretraining run, the "
                                                "name to use with --backbone")
    im.add_argument("--accept-licence", action="store_true", help="accept a gated or non-commercial licence")
    im.add_argument("--overwrite", action="store_true", help="replace a registered pretraining run of that name")
    ck = ws.add_parser("check", help="check that a file loads into its backbone (exit 0 only if it does)")
    ck.add_argument("file", help="checkpoint file")
    ck.add_argument("--id", help="weight-catalog id (default: detect the family from the keys)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    pa = ws.add_parser("path", help="print the cached file of a catalog entry")
    pa.add_argument("id")
    rm = ws.add_parser("remove", help="delete the cached files of a catalog entry")
    rm.add_argument("id")
    p.set_defaults(_weights_parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "weights_command", None)
    if action is None:
        args._weights_parser.print_help()
        return 2
    return {"list": _list, "download": _download, "import": _import, "check": _check, "path": _path,
            "remove": _remove}[action](args)


def _list(args: argparse.Namespace) -> int:
    from ..hub import catalog
    from ..hub.download import cached_file
    from ..hub.local_backbones import describe, local_names

    rows = []
    for e in catalog.entries().values():
        path = cached_file(e)
        rows.append({"id": e.id, "family": e.family, "size_gb": round(e.size_bytes / 1e9, 2), "licence": e.licence,
                     "source": e.source_text, "citation": e.citation, "downloadable": e.downloadable,
                     "cached": str(path) if path else None})
    mine = [describe(name) for name in local_names()]
    if args.json:
        print(json.dumps(rows + [{**r, "local": True} for r in mine], indent=1))
        return 0
    print(f"{'id':28} {'family':11} {'size':>8}  {'cached':6}  licence")
    for r in rows:
        flag = "yes" if r["cached"] else ("-" if r["downloadable"] else "import")
        print(f"{r['id']:28} {r['family']:11} {r['size_gb']:>6.2f}GB  {flag:6}  {r['licence'].split(' (')[0]}")
    if mine:
        print("\nyour pretrained backbones ('medssl weights import RUN --id NAME'):")
        for r in mine:
            print(f"{r['id']:28} {r['family']:11} {r['size_gb']:>6.2f}GB  {r['method']}, {r['steps']} steps")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..hub.catalog import get_entry
    from ..hub.download import cached_file, download

    entry = get_entry(args.id)
    if entry.licence_requires_acceptance and args.accept_licence:
        print(f"accepting the licence of {entry.id}: {entry.licence} {entry.get('licence_url', '')}")
    path = cached_file(entry)
    if path is not None:
        print(f"{entry.id} is already downloaded: {path}")
        return 0
    sink = None
    if args.progress == "json":
        from ..events import JsonLinesSink

        sink = JsonLinesSink()
        sink.emit("start", task="download", total=entry.size_bytes, id=entry.id)
    path = download(entry, accept_licence=args.accept_licence, sink=sink)
    if sink is not None:
        sink.emit("done", task="download", path=str(path), id=entry.id)
    else:
        print(path)
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..hub.file_import import import_file
    from ..hub.local_backbones import import_export
    from ..hub.ssl_export import is_ssl_export

    if is_ssl_export(args.file):
        path = import_export(args.file, args.id, overwrite=args.overwrite)
        print(f"registered {args.id}: {path}; fine-tune from it with --backbone {args.id}")
        return 0
    _refuse_what_is_no_checkpoint(Path(args.file))

    path, record = import_file(args.file, args.id, accept_licence=args.accept_licence)
    note = {True: "matches the catalog", False: "DIFFERS from the catalog's (third-party) value",
            None: "not in the catalog; recorded"}[record["hash_ok"]]
    print(f"imported {args.id}: {path} (sha256 {record['sha256']}, {note})")
    return 0


def _refuse_what_is_no_checkpoint(path: Path) -> None:
    """One-line errors for what ``weights import`` is given that is no weights file (each had been reported as an
    unknown catalog id): a missing path, a pretraining run without an export yet, a model package, a folder."""
    from ..errors import InputError

    if not path.exists():
        raise InputError(f"{path} does not exist; give a checkpoint file or a 'medssl pretrain' run folder")
    if path.is_dir() and (path / "weights.safetensors").is_file():
        raise InputError(f"{path} is a fine-tuned model package, not pretrained weights; use it as "
                         f"'--backbone {path}' directly, or share it with 'medssl export'")
    if path.is_dir() and (path / "training" / "plan.json").is_file() and not (path / "export").exists():
        raise InputError(f"{path} is a pretraining run without an export yet; finish it with 'medssl pretrain ... "
                         f"--resume', then import it")
    if path.is_dir():
        raise InputError(f"{path} is a folder, neither a checkpoint file nor a 'medssl pretrain' run; give the "
                         f"weights file (.pt, .pth, .ckpt, .safetensors)")


def check_report(file: str, entry_id: str | None) -> Dict[str, Any]:
    """The ``check --json`` object for ``file`` (structure check plus hashes)."""
    from ..hub.download import file_digests, hash_status
    from ..hub.pretrained import check_checkpoint

    report, issues, entry = check_checkpoint(file, entry_id)
    digests = file_digests(Path(file))
    return {"id": entry.id, "loaded": report.loaded, "missing": report.missing, "unexpected": report.unexpected,
            "shape_mismatch": report.shape_mismatch, "sha256": digests["sha256"],
            "sha256_ok": hash_status(entry, digests), "problems": issues}


def _check_export(spec: str) -> bool:
    """``weights check`` of medssl's own backbones (a ``medssl pretrain`` export, its run folder, its
    ``backbone.safetensors`` or a name registered with ``weights import RUN --id NAME``): `verify_export`'s hashes,
    tensors and encoder load instead of the catalog's checkpoint check (which had called them no checkpoint).
    Returns False when ``spec`` is none of these."""
    from ..hub.local_backbones import local_path
    from ..hub.ssl_export import export_folder, verify_export

    folder = export_folder(spec) or (local_path(spec) if not Path(spec).exists() else None)
    if folder is None:
        return False
    verify_export(Path(folder))
    print(f"{spec}: a medssl pretraining export ({folder}); sha256 of its files, its tensors and the encoder load "
          f"into its plan's network check out; fine-tune with --backbone {spec}")
    return True


def _check(args: argparse.Namespace) -> int:
    if args.id is None and not args.json and _check_export(args.file):
        return 0
    out = check_report(args.file, args.id)
    issues = out.pop("problems")
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{args.file} read as {out['id']}: {len(out['loaded'])} tensors load, {len(out['missing'])} stay at "
              f"initialisation, {len(out['unexpected'])} unused, {len(out['shape_mismatch'])} with other shapes; "
              f"sha256 {out['sha256']} ({ {True: 'matches', False: 'differs from', None: 'not in'}[out['sha256_ok']] } "
              f"the catalog)")
    for issue in issues:
        print(f"problem: {issue}", file=sys.stderr)
    return 0 if not issues else 1


def _path(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..hub.catalog import get_entry
    from ..hub.download import cached_file
    from ..hub.local_backbones import local_path

    if local_path(args.id):
        print(local_path(args.id))
        return 0
    entry = get_entry(args.id)
    path = cached_file(entry)
    if path is None:
        how = f"medssl weights download {entry.id}" if entry.downloadable else "medssl weights import FILE --id " + entry.id
        raise InputError(f"{entry.id} is not in the cache; get it with: {how}")
    print(path)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from ..hub.download import remove
    from ..hub.local_backbones import remove_local

    if remove_local(args.id):
        print(f"removed your backbone {args.id}")
        return 0
    print(f"removed {args.id}" if remove(args.id) else f"{args.id} was not downloaded; nothing to remove")
    return 0

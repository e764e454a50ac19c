"""``medssl weights import FILE --id ID``: a hand-downloaded checkpoint checked against its catalog entry (the
structure check of `.pretrained`) and registered in the weight cache as a download would be (`.download`)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Tuple

from ..errors import CheckpointError
from .catalog import get_entry
from .download import entry_dir, file_digests, hash_status, read_record, require_licence, write_record
from .pretrained import check_checkpoint


def import_file(file: str | Path, entry_id: str, accept_licence: bool = False) -> Tuple[Path, Dict[str, Any]]:
    """Check a hand-downloaded file's structure against ``entry_id`` and register it in the cache.

    Returns (cached path, record). The file is hard-linked when possible, else copied.
    """
    entry = get_entry(entry_id)
    require_licence(entry, accept_licence, f"run 'medssl weights import {file} --id {entry.id}'")
    _, issues, _ = check_checkpoint(file, entry.id)
    if issues:
        raise CheckpointError(issues[0] + f"; {file} was not imported")
    target = entry_dir(entry.id) / entry.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    link_or_copy(Path(file), target)
    digests = file_digests(target)
    write_record(entry, target, f"import from {Path(file).resolve()}", digests, accept_licence)
    return target, read_record(entry.id) | {"hash_ok": hash_status(entry, digests)}


def link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)

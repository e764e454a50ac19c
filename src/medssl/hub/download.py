"""Local weight cache: download (Hugging Face, resumable, hash-checked), import, locate and remove files.

Layout: ``weights_dir()/<catalog id>/<file name>`` plus ``record.json`` (how the file got there, its sha256,
whether a licence was accepted). ``MEDSSL_HOME`` moves the whole cache (`.cache`).

Downloads go through ``huggingface_hub.hf_hub_download`` (progress bar, resume of partial files, the user's
own login: ``hf auth login``, huggingface_hub's command since 0.34 and the only one from 1.0 on (older
versions call it ``huggingface-cli login``), or ``HF_TOKEN``; medssl never reads, prints or stores a token).
A known sha256 (and md5) is verified; an unknown one is recorded and reported. Gated or non-commercial
weights need ``accept_licence``. Offline (``HF_HUB_OFFLINE=1`` or no network) the error names the file to
fetch by hand and the exact ``medssl weights import`` command, licence-gated entries included. Files that
are not on Hugging Face (MIS-FM, Google Drive) are always imported by hand.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import CheckpointError, InputError
from ..home import weights_dir
from .catalog import CatalogEntry, get_entry

RECORD = "record.json"


def entry_dir(entry_id: str) -> Path:
    """The cache folder of one catalog entry."""
    return weights_dir() / entry_id


def cached_file(entry: CatalogEntry) -> Optional[Path]:
    """The cached file of ``entry`` (any of its accepted file names), or None."""
    for name in entry.file_names:
        path = entry_dir(entry.id) / name
        if path.is_file():
            return path
    return None


def read_record(entry_id: str) -> Dict[str, Any]:
    """The ``record.json`` of a cached entry ({} when absent or unreadable)."""
    try:
        return json.loads((entry_dir(entry_id) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def write_record(entry: CatalogEntry, path: Path, how: str, digests: Dict[str, str], accepted: bool) -> None:
    rec = {"id": entry.id, "file": path.name, "how": how, "sha256": digests["sha256"], "md5": digests["md5"],
           "sha256_in_catalog": entry.sha256, "licence": entry.licence, "licence_accepted": accepted,
           "source": entry.source_text, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (path.parent / RECORD).write_text(json.dumps(rec, indent=1))


def file_digests(path: Path, chunk: int = 1 << 22) -> Dict[str, str]:
    """sha256 and md5 of a file in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def hash_status(entry: CatalogEntry, digests: Dict[str, str]) -> Optional[bool]:
    """True/False when the catalog knows a sha256 (or md5) for the entry, None when it knows neither."""
    if entry.sha256:
        return digests["sha256"] == entry.sha256
    if entry.get("md5"):
        return digests["md5"] == entry.get("md5")
    return None


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def import_command(entry: CatalogEntry) -> str:
    """The exact command that registers a hand-downloaded file of ``entry``."""
    flag = " --accept-licence" if entry.licence_requires_acceptance else ""
    return f"medssl weights import {entry.file_name} --id {entry.id}{flag}"


def require_licence(entry: CatalogEntry, accepted: bool, verb: str) -> None:
    """Show a licence that must be accepted; raise unless ``accepted``."""
    if entry.licence_requires_acceptance and not accepted:
        raise InputError(f"{entry.id} is licensed {entry.licence} ({entry.get('licence_url', entry.source_text)}); "
                         f"read it, then {verb} again with --accept-licence to accept it")


def ensure_local(entry: CatalogEntry) -> Path:
    """The cached file, downloaded now when allowed (never for licences that must be accepted first)."""
    path = cached_file(entry)
    if path is not None:
        return path
    if not entry.downloadable:
        raise InputError(f"{entry.id} cannot be downloaded automatically (it is on {entry.source_text}); download "
                         f"{entry.file_name} by hand, then run: {import_command(entry)}")
    if entry.licence_requires_acceptance:
        raise InputError(f"{entry.id} is not downloaded yet and its licence ({entry.licence}) must be accepted: "
                         f"{_accept_and_fetch(entry)}")
    return download(entry)


def _accept_and_fetch(entry: CatalogEntry) -> str:
    """How to get a licence-gated file: download it (online), or fetch it by hand and import it (always)."""
    by_hand = f"download {entry.file_name} by hand from {entry.source_text}, then run: {import_command(entry)}"
    if offline():
        return f"HF_HUB_OFFLINE is set, so {by_hand}"
    return f"run 'medssl weights download {entry.id} --accept-licence', or {by_hand}"


def event_tqdm(sink):
    """A tqdm class whose updates become ``progress`` events (stage ``download``, bytes done/total, ETA)."""
    import time

    from tqdm.auto import tqdm

    class EventTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no bar: the events are the display
            super().__init__(*args, **kwargs)
            self._t0, self._last, self._done = time.monotonic(), 0.0, self.n  # n: bytes resumed (initial)

        def update(self, n=1):
            self._done += n or 0
            now = time.monotonic()
            if now - self._last >= 0.5 or (self.total and self._done >= self.total):
                self._last = now
                rate = self._done / max(now - self._t0, 1e-6)
                eta = (self.total - self._done) / rate if self.total and rate > 0 else None
                sink.emit("progress", stage="download", done=self._done, total=self.total, eta_s=eta)
            return super().update(n)

    return EventTqdm


def download(entry: CatalogEntry, accept_licence: bool = False, sink=None) -> Path:
    """Download ``entry`` into the cache (resuming a partial download) and verify it; returns the file.

    With an event ``sink`` the download reports ``progress`` events instead of drawing a bar.
    """
    require_licence(entry, accept_licence, f"run 'medssl weights download {entry.id}'")
    if not entry.downloadable:
        raise InputError(f"{entry.id} is not on Hugging Face ({entry.source_text}); download {entry.file_name} by "
                         f"hand, then run: {import_command(entry)}")
    if offline():
        raise InputError(_offline_message(entry, "HF_HUB_OFFLINE is set"))
    target = entry_dir(entry.id)
    target.mkdir(parents=True, exist_ok=True)
    print(f"downloading {entry.file_name} ({entry.size_bytes / 1e9:.2f} GB) for {entry.id} from {entry.source_text}",
          file=sys.stderr)
    started = time.time()
    path = Path(_hf_download(entry, target, event_tqdm(sink) if sink is not None else None))
    _remove_stale_partials(target, started)
    return _verify_and_record(entry, path, "download", accept_licence)


def _remove_stale_partials(target: Path, before: float) -> None:
    """Delete partial files that killed downloads left (huggingface_hub writes each download to a temporary
    ``*.incomplete`` file of its own, removed only when the process survives); a download still being written
    by another process has a newer modification time and is kept."""
    for partial in (target / ".cache" / "huggingface" / "download").glob("*.incomplete"):
        with contextlib.suppress(OSError):
            if partial.stat().st_mtime < before:
                partial.unlink()


def _hf_download(entry: CatalogEntry, target: Path, tqdm_class=None) -> str:
    """``hf_hub_download`` into ``target`` with errors turned into one-line messages (tokens never shown)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import utils as hf_errors  # the error classes live here in every supported version

    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would break the one-line error contract
    src = entry.source
    try:
        extra = {"tqdm_class": tqdm_class} if tqdm_class is not None else {}
        return hf_hub_download(src["repo_id"], entry.file_name, revision=src.get("revision"), local_dir=str(target),
                               **extra)
    except hf_errors.GatedRepoError:
        raise InputError(gated_message(entry)) from None
    except hf_errors.LocalEntryNotFoundError as exc:  # no network (a subclass of EntryNotFoundError)
        raise InputError(_offline_message(entry, type(exc).__name__)) from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError) as exc:
        raise InputError(f"{entry.file_name} was not found in {src['repo_id']} ({type(exc).__name__}); the catalog "
                         f"entry may be outdated: download the file by hand and run: {import_command(entry)}") from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise InputError(_offline_message(entry, type(exc).__name__)) from None


def gated_message(entry: CatalogEntry) -> str:
    """What to do when Hugging Face refuses a gated repository (terms not accepted, or not logged in)."""
    return (f"{entry.source['repo_id']} is gated: accept its terms at {entry.source_text} while logged in, then log "
            f"in here with 'hf auth login' (or set HF_TOKEN) and retry")


def _offline_message(entry: CatalogEntry, why: str) -> str:
    return (f"cannot download {entry.id} ({why}; no network?): download {entry.file_name} by hand from "
            f"{entry.source_text}, then run: {import_command(entry)}")


def _verify_and_record(entry: CatalogEntry, path: Path, how: str, accepted: bool) -> Path:
    digests = file_digests(path)
    if hash_status(entry, digests) is False:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise CheckpointError(f"{entry.id}: the downloaded file's sha256 {digests['sha256']} does not match the "
                              f"catalog; it was moved to {bad}; download again, or report the catalog entry")
    if not entry.sha256:
        print(f"{entry.id}: sha256 {digests['sha256']} (not in the catalog; recorded)", file=sys.stderr)
    write_record(entry, path, how, digests, accepted)
    return path


def remove(entry_id: str) -> bool:
    """Delete the cached files of ``entry_id``; False when there were none."""
    get_entry(entry_id)
    folder = entry_dir(entry_id)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True

"""Logic of the *Export* / *Import* model buttons without Qt: ``medssl export`` / ``medssl import``.

Usage from Slicer's Python console::

    from MedSSLLib.share_logic import ShareLogic
    logic = ShareLogic()
    job = logic.exportModel(logic.listModels()[0], "/tmp/liver.zip", wait=True)
    print("\\n".join(job.outputs["licenceLines"]))      # licence, provenance, any restriction (3DINO: NC-ND)
    print(logic.previewArchive("/tmp/liver.zip"))        # what the zip says before importing it
    job = logic.importModel("/tmp/liver.zip", wait=True)  # every file's sha256 checked by medssl
    print(job.outputs["package"].summary())               # registered: listed by MedSSL Segment

The checks themselves (manifest hashes, zip slip, links, overwriting) are medssl's (``medssl.hub.share``);
this file only builds the command lines, reads the manifest for a preview and reads the imported package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .commands import MedSSLCommand, exportArgs, importArgs
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, licenceNotice, listPackages, packageFolder, readPackage
from .process import RunnerFactory

PathLike = Union[str, Path]
MANIFEST = "manifest.json"


@dataclass
class ArchivePreview:
    """What a model zip's manifest claims (shown before importing; medssl verifies it on import)."""

    name: str
    licence: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def licenceNotice(self) -> str:
        return licenceNotice(self.licence)

    def summary(self) -> str:
        lines = [f"Model: {self.name}", f"Licence: {self.licence or 'not stated'}"]
        if self.provenance.get("backbone"):
            lines.append(f"Backbone: {self.provenance['backbone']}")
        return "\n".join(lines + ([self.licenceNotice] if self.licenceNotice else []))


def previewArchive(archive: PathLike) -> ArchivePreview:
    """Read ``<name>/manifest.json`` of a model zip (nothing is extracted); raises ValueError if it has none."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/" + MANIFEST)]
            if len(entries) != 1 or zf.getinfo(entries[0]).file_size > 1 << 20:
                raise ValueError(f"{archive} is not a model zip written by 'medssl export' (no {MANIFEST})")
            manifest = json.loads(zf.read(entries[0]))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{archive} cannot be read as a model zip ({exc})") from None
    return ArchivePreview(entries[0].split("/")[0], str(manifest.get("licence", "")),
                          dict(manifest.get("provenance") or {}))


def _licenceLines(job: Job) -> list[str]:
    return [line for line in job.log if line.startswith(("licence", "provenance"))]


class ShareLogic:
    """Export a registered model as a zip, import a zip as a registered model; see the module docstring."""

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        self.jobs = JobRunner(command, runnerFactory, schedule)

    listModels = staticmethod(listPackages)
    previewArchive = staticmethod(previewArchive)

    def exportModel(self, model: Union[PackageInfo, PathLike], archive: PathLike, overwrite: bool = False,
                    wait: bool = False, timeout: Optional[float] = None,
                    onFinished: Optional[Callable[[Job], None]] = None, **callbacks) -> Job:
        """``medssl export``; ``job.outputs``: ``archive`` and ``licenceLines`` (licence, provenance, restriction)."""
        folder = model.path if isinstance(model, PackageInfo) else Path(model)

        def done(job: Job) -> None:
            job.outputs.update(archive=Path(archive), licenceLines=_licenceLines(job))

        self.jobs.run(exportArgs(folder, archive, overwrite), onSuccess=done, onFinished=onFinished, **callbacks)
        return self.jobs.waitOrRaise(timeout, "export") if wait else self.jobs.job

    def importModel(self, archive: PathLike, out: Optional[PathLike] = None, overwrite: bool = False,
                    wait: bool = False, timeout: Optional[float] = None,
                    onFinished: Optional[Callable[[Job], None]] = None, **callbacks) -> Job:
        """``medssl import`` into ``out`` (default: registered under the zip's model name); ``job.outputs``:
        ``package`` (PackageInfo) and ``licenceLines``."""
        dest = Path(out) if out is not None else packageFolder(previewArchive(archive).name)

        def done(job: Job) -> None:
            job.outputs.update(package=readPackage(dest), licenceLines=_licenceLines(job))

        self.jobs.run(importArgs(archive, dest, overwrite), onSuccess=done, onFinished=onFinished, **callbacks)
        return self.jobs.waitOrRaise(timeout, "import") if wait else self.jobs.job


"""The *Export...* / *Import...* model buttons of both panels (Qt side of `MedSSLLib.share_logic`).

Both .ui files have ``exportModelButton`` and ``importModelButton``. Export writes the panel's model as one zip
(``medssl export``: sha256 of every file, licence, provenance); Import shows what the zip's manifest claims,
asks before replacing a registered model, then runs ``medssl import`` (every file's sha256 checked). After
either, the licence and provenance lines medssl printed are shown; a non-commercial or no-derivatives licence
(3DINO's CC BY-NC-ND) is pointed out before export and import. A refusal is medssl's one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import slicer
from slicer.i18n import tr as _

from . import slicerui
from .jobs import Job
from .packages import PackageInfo, packageFolder
from .share_logic import ShareLogic


class ModelSharing:
    """Connects the two buttons; ``selectedPackage()`` is the model Export writes, ``onImported(package)`` runs
    after a successful import (the panel lists and selects it)."""

    def __init__(self, ui, requester: str, selectedPackage: Callable[[], Optional[PackageInfo]],
                 onImported: Callable[[PackageInfo], None]) -> None:
        self.ui, self.requester = ui, requester
        self.selectedPackage, self.onImported = selectedPackage, onImported
        self.logic = ShareLogic(schedule=slicerui.qtSchedule)
        ui.exportModelButton.connect("clicked(bool)", self.onExport)
        ui.importModelButton.connect("clicked(bool)", self.onImport)

    @property
    def busy(self) -> bool:
        return self.logic.jobs.busy

    def updateButtons(self) -> None:
        self.ui.exportModelButton.enabled = not self.busy and self.selectedPackage() is not None
        self.ui.importModelButton.enabled = not self.busy

    def cancel(self) -> None:
        self.logic.jobs.cancel()

    def onExport(self) -> None:
        package = self.selectedPackage()
        if package is None:
            slicer.util.errorDisplay(_("Select a model to export first."))
            return
        if package.licenceNotice and not slicer.util.confirmOkCancelDisplay(
                _("{name}: {notice}.\nExport it anyway?").format(name=package.path.name, notice=package.licenceNotice)):
            return
        path = slicerui.chooseSaveFile(_("Export the model {name}").format(name=package.path.name),
                                       "Model zip (*.zip)", f"{package.path.name}.zip")
        if not path:
            return
        archive = path if path.lower().endswith(".zip") else path + ".zip"
        if archive != path and Path(archive).exists() and not slicer.util.confirmOkCancelDisplay(
                _("{archive} already exists. Replace it?").format(archive=archive)):
            return  # the save dialog asked about the name typed, not about the one with .zip added
        self._run(lambda done: self.logic.exportModel(package, archive, overwrite=Path(archive).exists(),
                                                      onFinished=done), _("Export"))

    def onImport(self) -> None:
        path = slicerui.chooseFile(_("Model zip to import"), "Model zip (*.zip)")
        if not path:
            return
        try:
            preview = self.logic.previewArchive(path)
            destination = packageFolder(preview.name)
        except ValueError as exc:
            slicer.util.errorDisplay(_("Import refused: {error}").format(error=exc))
            return
        question = _("Import this model?\n{summary}").format(summary=preview.summary())
        if destination.exists():
            question += "\n" + _("A model {name} is already registered ({folder}); importing replaces it.").format(
                name=destination.name, folder=destination)
        if slicer.util.confirmOkCancelDisplay(question):
            self._run(lambda done: self.logic.importModel(path, overwrite=destination.exists(), onFinished=done),
                      _("Import"))

    def _run(self, starter: Callable[[Callable[[Job], None]], Job], what: str) -> None:
        if self.busy:
            slicer.util.errorDisplay(_("An export or import is still running; wait for it to finish."))
            return
        if not slicerui.ensureDependencies(self.requester):
            return
        with slicer.util.tryWithErrorDisplay(_("{what} could not start.").format(what=what), waitCursor=True):
            starter(lambda job: self._finished(job, what))
        self.updateButtons()

    def _finished(self, job: Job, what: str) -> None:
        self.updateButtons()
        if job.cancelled:
            return
        if not job.ok:  # medssl's refusal (hash mismatch, zip slip, existing file...): one line
            slicer.util.errorDisplay(_("{what} refused: {error}").format(what=what, error=job.error))
            return
        lines = job.outputs.get("licenceLines", [])
        if "package" in job.outputs:
            package = job.outputs["package"]
            title = _("Imported {name} into {folder} (every file's sha256 checked).").format(
                name=package.path.name, folder=package.path)
            self.onImported(package)
        else:
            title = _("Exported to {archive} (sha256 of every file in manifest.json).").format(
                archive=job.outputs["archive"])
        slicer.util.infoDisplay("\n".join([title, *lines]), windowTitle=_("MedSSL {what}").format(what=what))

"""What the panel-section tests share: the dialogs a user answers, recorded, on top of test_module_widgets' harness.

Only what needs a person is replaced: the file dialogs (MedSSLLib.slicerui.chooseFile / chooseSaveFile), the
message boxes (slicer.util.infoDisplay, confirmOkCancelDisplay; errorDisplay is the harness's), the
dependency check that would offer to pip-install (slicerui.ensureDependencies) and the switch to Segment
Editor (slicerui.openSegmentEditor, which needs the application). medssl runs for real unless a test swaps a
logic's command for fake_medssl.py.
"""

import contextlib
import json
import sys
import types

import slicer

RESTRICTED = "CC BY-NC-ND 4.0 (3DINO backbone)"


def answerDialogs(monkeypatch, env, files=(), confirm=True) -> types.SimpleNamespace:
    """Record the dialogs; ``files`` are the paths the file dialogs return, in order."""
    ui = sys.modules["MedSSLLib.slicerui"]
    record = types.SimpleNamespace(questions=[], infos=[], files=list(files), editor=[], errors=env.errors)
    monkeypatch.setattr(ui, "ensureDependencies", lambda requester, repair=False: True)
    monkeypatch.setattr(ui, "chooseFile", lambda title, nameFilter: record.files.pop(0))
    monkeypatch.setattr(ui, "chooseSaveFile", lambda title, nameFilter, suggested: record.files.pop(0))
    monkeypatch.setattr(ui, "openSegmentEditor", lambda segmentation, volume: record.editor.append((segmentation, volume)))
    monkeypatch.setattr(ui, "showResult", lambda *nodes: None)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kw: record.questions.append(text) or confirm, raising=False)
    monkeypatch.setattr(slicer.util, "infoDisplay", lambda text, **kw: record.infos.append(text), raising=False)

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        """Slicer's (Base/Python/slicer/util.py): show the message with the error, then raise it again."""
        try:
            yield
        except Exception as exc:
            env.errors.append(f"{message}\n\n{exc}")
            raise

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", tryWithErrorDisplay, raising=False)
    return record


def restrictLicence(package, licence: str = RESTRICTED):
    """Give a package 3DINO's licence (what medssl finetune writes for a 3DINO backbone)."""
    path = package / "metadata.json"
    meta = json.loads(path.read_text())
    meta["licence"] = licence
    path.write_text(json.dumps(meta))
    return package
